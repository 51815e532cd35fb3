"""Results files fail closed: the schema is checked on load, the gate refuses what is not a byte
count, writes are atomic, and every command that reads results exits 2 with one line.

(1) ``load_results`` / ``Result.from_dict`` / ``ResultSet.from_dict`` against the schema;
(2) ``gate.compare`` on values built in Python; (3) ``write_json``, ``write_baseline`` and
``prepare_out_dir``; (4) ``report``, ``check``, ``baseline`` and ``compare --resume`` end to end.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import json
import math
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from memprof.checks import gate
from memprof.cli import run
from memprof.errors import MemprofError
from memprof.reporters import prepare_out_dir
from memprof.results.result import SCHEMA_VERSION, Memory, Result, ResultSet, layers_frame, load_results, write_json

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024**2
FIX = "regenerate the file with memprof"
FT = "bert-base ft seq=128 batch=8 fp32 fake->cuda"
LORA = "bert-base lora seq=128 batch=8 fp32 fake->cuda"


def result(method="ft", saved=100 * MiB, status="ok", engine="fake", target="cuda", **memory):
    return Result(
        backbone="bert-base",
        method=method,
        engine=engine,
        target=target,
        dtype="fp32",
        attn_implementation="sdpa",
        seq_len=128,
        batch_size=8,
        task="classification",
        status=status,
        memory=Memory(saved_activations=saved, peak_activations=2 * saved, peak=5 * saved, **memory),
        layers=layers_frame(
            [
                {
                    "module": "bert.encoder",
                    "saved_bytes": saved,
                    "categories": {"linear_input": saved - 4096, "other": 4096},
                }
            ]
        ),
        environment={"torch": "2.13.0", "transformers": "5.24.0"},
    )


def two_results() -> dict:
    """A results.json as memprof writes it: results[0] ft, results[1] lora."""
    return ResultSet(
        [result(), result("lora", saved=50 * MiB)],
        command="memprof compare",
        options={"backbone": "bert-base", "seq_lens": [128]},
    ).to_dict()


def write_text(path: Path, data) -> Path:
    """``data`` as JSON text; Python's NaN and inf become the literals NaN and Infinity, as json writes them."""
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def at(data: dict, dotted: str):
    """(container, last key) of ``results.1.memory.peak``-style paths."""
    keys = [int(k) if k.isdigit() else k for k in dotted.split(".")]
    for k in keys[:-1]:
        data = data[k]
    return data, keys[-1]


def refusal(tmp_path, dotted, value, *, delete=False) -> str:
    """The one-line message ``load_results`` refuses the two results with, ``dotted`` set to ``value``."""
    data = two_results()
    box, key = at(data, dotted)
    if delete:
        del box[key]
    else:
        box[key] = value
    path = write_text(tmp_path / "x.json", data)
    with pytest.raises(MemprofError) as exc:
        load_results(path)
    message = str(exc.value)
    assert "\n" not in message
    return message.replace(str(path), "x.json")


# --- (1) the schema, checked on load ---------------------------------------------------------------


def test_the_example_of_the_issue_is_the_message(tmp_path):
    assert refusal(tmp_path, "results.1.memory.peak", -5) == (
        f"results file 'x.json': results[1] ({LORA}): memory.peak is -5, must be a whole number of bytes >= 0; {FIX}"
    )


BAD_FIELDS = [
    # (path in two_results(), value or "DELETE", what the message says after "<where>: ")
    ("results.1.memory.peak", "DELETE", "memory.peak is missing, must be a whole number of bytes >= 0"),
    ("results.1.memory.peak", math.nan, "memory.peak is NaN, must be a whole number of bytes >= 0"),
    ("results.1.memory.peak", math.inf, "memory.peak is Infinity, must be a whole number of bytes >= 0"),
    ("results.1.memory.peak", -math.inf, "memory.peak is -Infinity, must be a whole number of bytes >= 0"),
    ("results.1.memory.peak", None, "memory.peak is null, must be a whole number of bytes >= 0"),
    ("results.1.memory.peak", "5 GiB", "memory.peak is '5 GiB' (a string), must be a whole number of bytes >= 0"),
    ("results.1.memory.peak", 5.0, "memory.peak is 5.0, must be a whole number of bytes >= 0"),
    ("results.1.memory.peak", True, "memory.peak is true (a boolean), must be a whole number of bytes >= 0"),
    (
        "results.1.memory.peak",
        2**63,
        "memory.peak is 9223372036854775808, must be a whole number of bytes >= 0 and below 2**63",
    ),
    (
        "results.1.memory.peak",
        10**400,
        "memory.peak is a number of about 401 digits, must be a whole number of bytes >= 0 and below 2**63",
    ),
    (
        "results.1.memory.saved_activations",
        [1],
        "memory.saved_activations is an array, must be a whole number of bytes >= 0",
    ),
    (
        "results.1.memory.cuda_max_allocated",
        -1,
        "memory.cuda_max_allocated is -1, must be a whole number of bytes >= 0, or null",
    ),
    (
        "results.1.memory.peek",
        1,
        "memory.peek is not a field memprof writes (the fields are parameters, gradients, "
        "optimizer_state, saved_activations, peak_activations, temporaries, peak, "
        "unattributed, activations_at_peak, cuda_max_allocated, cuda_max_reserved, "
        "nvml_used)",
    ),
    ("results.1.memory", [], "memory is an array, must be an object"),
    ("results.1.memory", "DELETE", "memory is missing, must be an object"),
    ("results.1.seq_len", "128", "seq_len is '128' (a string), must be a whole number >= 1"),
    ("results.1.seq_len", 0, "seq_len is 0, must be a whole number >= 1"),
    ("results.1.batch_size", True, "batch_size is true (a boolean), must be a whole number >= 1"),
    ("results.1.trainable_params", -1, "trainable_params is -1, must be a whole number >= 0"),
    ("results.1.total_params", 1.5, "total_params is 1.5, must be a whole number >= 0"),
    ("results.1.status", "done", "status is 'done' (a string), must be one of ok, oom, error"),
    ("results.1.status", "DELETE", "status is missing, must be a string"),
    ("results.1.message", None, "message is null, must be a string"),
    ("results.1.step_time_s", math.nan, "step_time_s is NaN, must be a finite number of seconds >= 0, or null"),
    ("results.1.step_time_s", -0.5, "step_time_s is -0.5, must be a finite number of seconds >= 0, or null"),
    (
        "results.1.step_time_s",
        "fast",
        "step_time_s is 'fast' (a string), must be a finite number of seconds >= 0, or null",
    ),
    ("results.1.environment", [], "environment is an array, must be an object of strings"),
    ("results.1.environment.torch", math.nan, "environment.torch is NaN, must be a string"),
    ("results.1.layers", {}, "layers is an object, must be an array of {module, saved_bytes, categories} records"),
    ("results.1.layers.0", "bert", "layers[0] is 'bert' (a string), must be an object"),
    ("results.1.layers.0.saved_bytes", -1, "layers[0].saved_bytes is -1, must be a whole number of bytes >= 0"),
    ("results.1.layers.0.module", 7, "layers[0].module is 7, must be a string"),
    ("results.1.layers.0.categories", "DELETE", "layers[0].categories is missing, must be an object"),
    (
        "results.1.layers.0.categories.other",
        math.nan,
        "layers[0].categories.other is NaN, must be a whole number of bytes >= 0",
    ),
    (
        "results.1.layers.0.categories.attention",
        1,
        "layers[0].categories.attention is not a field memprof writes "
        "(the fields are linear_input, attention_scores, softmax_output, "
        "dropout_mask, normalization, activation_fn, embedding, "
        "reversible_bits, other)",
    ),
    (
        "results.1.peek",
        1,
        "peek is not a field memprof writes (the fields are backbone, method, engine, target, "
        "dtype, attn_implementation, seq_len, batch_size, task, step, loss, status, message, trainable_params, "
        "total_params, memory, layers, step_time_s, environment, timeline, schema_version)",
    ),
    (
        "results.1.schema_version",
        5,
        "schema_version is 5, must be 1 or 2 or 3 or 4 (the versions this memprof reads); "
        "re-run the profile with this version of memprof",
    ),
    ("results.1.step", "last", "step is 'last' (a string), must be one of first, steady"),
    ("results.1.step", "DELETE", "step is missing, must be a string"),
    ("results.1.loss", "sum", "loss is 'sum' (a string), must be one of full, chunked"),
    ("results.1.loss", "DELETE", "loss is missing, must be a string"),
]


@pytest.mark.parametrize("path, value, says", BAD_FIELDS, ids=[f"{p}={v!r}" for p, v, _ in BAD_FIELDS])
def test_a_bad_field_is_refused_naming_file_result_configuration_and_field(tmp_path, path, value, says):
    message = refusal(tmp_path, path, value, delete=value == "DELETE")
    fix = "" if "re-run" in says else f"; {FIX}"
    label = {
        "results.1.seq_len": LORA.replace("seq=128", f"seq={value if value == 0 else 128}"),
        "results.1.batch_size": LORA.replace("batch=8", "batch=?"),
        "results.1.step": f"{LORA} {'?' if value == 'DELETE' else value}",
        "results.1.loss": f"{LORA} {'?' if value == 'DELETE' else value} loss",
    }.get(path, LORA)  # what the file says
    assert message == f"results file 'x.json': results[1] ({label}): {says}{fix}"


def test_a_bad_key_field_shows_in_the_configuration_label(tmp_path):
    assert refusal(tmp_path, "results.0.backbone", 5) == (
        f"results file 'x.json': results[0] (5 ft seq=128 batch=8 fp32 fake->cuda): backbone is 5, must be a string; {FIX}"
    )
    assert refusal(tmp_path, "results.0.backbone", ["bert"]).startswith(
        "results file 'x.json': results[0] (? ft seq=128 batch=8 fp32 fake->cuda): backbone is an array, "
    )


BAD_SETS = [
    ("results.0", "x", "results[0] is 'x' (a string), must be an object holding a result"),
    ("results", {}, "results is an object, must be an array of results"),
    ("options", [1], "options is an array, must be an object"),
    (
        "options.seq_lens",
        [128, math.nan],
        "options.seq_lens[1] is NaN, must be a finite number (JSON has no NaN or Infinity)",
    ),
    (
        "options.deep",
        {"a": [{"b": -math.inf}]},
        "options.deep.a[0].b is -Infinity, must be a finite number (JSON has no NaN or Infinity)",
    ),
    ("command", "DELETE", "command is missing, must be a string"),
    ("comand", "x", "comand is not a field memprof writes (the fields are schema_version, command, options, results)"),
]


@pytest.mark.parametrize("path, value, says", BAD_SETS, ids=[p for p, _, _ in BAD_SETS])
def test_a_bad_results_file_field_is_refused(tmp_path, path, value, says):
    assert refusal(tmp_path, path, value, delete=value == "DELETE") == f"results file 'x.json': {says}; {FIX}"


def test_nan_and_infinity_literals_are_refused_wherever_they_are(tmp_path):
    # json.loads reads NaN, Infinity and -Infinity (and 1e999 as inf); none of them is JSON.
    text = json.dumps(two_results())
    for literal, shown in (("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("1e999", "Infinity")):
        path = write_text(tmp_path / "x.json", text.replace(f'"peak": {5 * 50 * MiB}', f'"peak": {literal}'))
        with pytest.raises(MemprofError, match=rf"results\[1\] \({LORA}\): memory.peak is {shown}, "):
            load_results(path)
        path = write_text(tmp_path / "x.json", text.replace('"seq_lens": [128]', f'"seq_lens": [{literal}]'))
        with pytest.raises(MemprofError, match=rf"options.seq_lens\[0\] is {shown}, must be a finite number"):
            load_results(path)


def test_a_key_given_twice_is_refused(tmp_path):
    text = json.dumps(two_results()).replace('"peak": ', '"peak": -5, "peak": ', 1)
    with pytest.raises(MemprofError) as exc:
        load_results(write_text(tmp_path / "x.json", text))
    assert str(exc.value) == (
        f"results file {str(tmp_path / 'x.json')!r} holds the key 'peak' twice in one object, "
        "so it cannot be read unambiguously; regenerate the file with memprof"
    )


def test_a_single_result_file_and_from_dict_without_a_file(tmp_path):
    data = result().to_dict()
    data["memory"]["peak"] = -5
    path = write_text(tmp_path / "one.json", data)
    with pytest.raises(MemprofError) as exc:
        load_results(path)
    assert str(exc.value) == (
        f"results file {str(path)!r}: result ({FT}): memory.peak is -5, must be a whole number of bytes >= 0; {FIX}"
    )
    with pytest.raises(MemprofError) as exc:
        Result.from_dict(data)
    assert str(exc.value) == (
        f"result ({FT}): memory.peak is -5, must be a whole number of bytes >= 0; regenerate the result with memprof"
    )
    with pytest.raises(MemprofError) as exc:
        ResultSet.from_dict({**two_results(), "results": [data]})
    assert str(exc.value) == (
        f"results: results[0] ({FT}): memory.peak is -5, must be a whole number of bytes >= 0; "
        "regenerate the results with memprof"
    )
    with pytest.raises(MemprofError, match=r"^results is an array, must be an object holding schema_version"):
        ResultSet.from_dict([data])
    with pytest.raises(MemprofError, match=r"^result is null, must be an object holding a result"):
        Result.from_dict(None)


def test_schema_version_must_be_the_integer_1_or_2(tmp_path):
    for version, shown in ((True, "true (a boolean)"), (2.0, "2.0"), ("2", "'2' (a string)"), (None, "null")):
        path = write_text(tmp_path / "x.json", {**two_results(), "schema_version": version})
        with pytest.raises(MemprofError) as exc:
            load_results(path)
        assert str(exc.value) == (
            f"results file has schema_version {shown}, this memprof reads 1 or 2 or 3 or 4; re-run the "
            f"sweep that wrote {str(path)!r} with this version of memprof"
        )


def test_valid_files_still_load_and_round_trip(tmp_path):
    # The committed baseline, exactly as written (CUDA-only metrics null, no layers).
    committed = ROOT / "reports" / "baseline" / "baseline.json"
    rs = load_results(committed)
    assert rs.source == str(committed) and rs.to_dict() == json.loads(committed.read_text())
    # The baseline committed before it, written before ``loss`` (schema version 3): it reads with the
    # model's own loss, in this version's form.
    v3 = ROOT / "tests" / "golden" / "baseline_v3.json"
    rs = load_results(v3)
    written = json.loads(v3.read_text())
    assert written["schema_version"] == 3 and len(rs.results) == 108
    written["schema_version"] = SCHEMA_VERSION
    for r in written["results"]:
        r.update(schema_version=SCHEMA_VERSION, loss="full")
    assert rs.to_dict() == written
    # An earlier baseline, written before ``step``, ``timeline`` and ``loss`` (schema version 2): read
    # as the first step without a timeline, with the model's own loss, written as this version.
    baseline = ROOT / "tests" / "golden" / "baseline_v2.json"
    rs = load_results(baseline)
    assert len(rs.results) == 72 and rs.source == str(baseline)
    written = json.loads(baseline.read_text())
    assert written["schema_version"] == 2
    written["schema_version"] = SCHEMA_VERSION
    for r in written["results"]:
        r.update(schema_version=SCHEMA_VERSION, step="first", timeline=None, loss="full")
    assert rs.to_dict() == written
    # A sweep with layers, a failed result, a measured CUDA metric, a step time; and version 1 without
    # the CUDA-only fields at all (they read as null).
    data = ResultSet(
        [
            result(cuda_max_allocated=7),
            dataclasses.replace(result("lora"), status="oom", message="m", step_time_s=0.25),
        ],
        command="c",
        options={"seq_lens": [128]},
    ).to_dict()
    assert load_results(write_text(tmp_path / "a.json", data)).to_dict() == data
    v1 = copy.deepcopy(data)
    v1["schema_version"] = 1
    for r in v1["results"]:
        r["schema_version"] = 1
        for name in ("cuda_max_allocated", "cuda_max_reserved", "nvml_used"):
            del r["memory"][name]
    (ft, lora) = load_results(write_text(tmp_path / "v1.json", v1)).results
    assert (ft.memory.cuda_max_allocated, ft.memory.cuda_max_reserved, lora.status) == (None, None, "oom")


GARBAGE = [None, True, -1, 1.5, math.nan, math.inf, 2**64, "x", [], {}, {"a": [math.nan]}, "DELETE"]


def _paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


def test_every_field_replaced_by_garbage_is_refused_or_read_exactly(tmp_path):
    """Each value of a result (and its removal) replaced by each kind of garbage: load_results raises
    MemprofError naming the field, or reads the file, and then exactly the documents below."""
    base = ResultSet([result()], command="c", options={}).to_dict()
    accepted = set()
    for path in _paths(base["results"][0]):
        for value in GARBAGE:
            data = copy.deepcopy(base)
            box = data["results"][0]
            for k in path[:-1]:
                box = box[k]
            if value == "DELETE":
                if isinstance(box, list):
                    continue
                del box[path[-1]]
            else:
                box[path[-1]] = value
            file = write_text(tmp_path / "g.json", data)
            name = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")
            try:
                rs = load_results(file)
            except MemprofError as exc:
                message = str(exc)
                assert "\n" not in message and re.search(rf": {re.escape(name)}[ .\[]", message), (path, value, message)
                continue
            accepted.add((name, repr(value)))
            assert load_results(write_json(rs, tmp_path / "again.json")).to_dict() == rs.to_dict()
    text = [
        f"{f}"
        for f in (
            "backbone",
            "method",
            "engine",
            "target",
            "dtype",
            "attn_implementation",
            "task",
            "message",
            "layers[0].module",
            "environment.torch",
            "environment.transformers",
        )
    ]
    assert accepted == {
        *((f, "'x'") for f in text),
        ("step_time_s", "None"),
        ("step_time_s", "1.5"),
        ("step_time_s", repr(2**64)),
        ("timeline", "None"),
        ("timeline", "'DELETE'"),  # a result without a timeline (tests/memprof/test_timeline.py)
        ("environment", "{}"),
        ("environment.torch", "'DELETE'"),
        ("environment.transformers", "'DELETE'"),
        *(
            (f"memory.{m}", v)
            for m in ("cuda_max_allocated", "cuda_max_reserved", "nvml_used")
            for v in ("None", "'DELETE'")
        ),
        ("layers", "[]"),
        ("layers[0].categories", "{}"),
        ("layers[0].categories.linear_input", "'DELETE'"),
        ("layers[0].categories.other", "'DELETE'"),
    }


HOSTILE = {
    "empty": b"",
    "null": b"null",
    "a string": b'"results"',
    "a list": b"[1, 2]",
    "a number": b"3",
    "NaN": b"NaN",
    "deep arrays": b"[" * 100_000 + b"]" * 100_000,
    "deep objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "deep results": b'{"schema_version": 2, "results": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    "deep options": b'{"schema_version": 2, "command": "", "results": [], "options": {"a": '
    + b"[" * 900
    + b"]" * 900
    + b', "b": NaN}}',
    "a huge integer": b"9" * 5000,
    "a huge schema_version": b'{"schema_version": ' + b"9" * 4000 + b', "results": []}',
    "a huge peak": json.dumps(two_results()).replace('"peak": 524288000', '"peak": ' + "9" * 4000).encode(),
    "bad UTF-8": b'{"schema_version": 2, "results": [], "command": "\xff\xfe"}',
    "results of garbage": b'{"schema_version": 2, "command": "", "options": {}, "results": [null, [], "x", 1]}',
    "a result of garbage": b'{"schema_version": 2, "backbone": {"a": [1]}, "memory": [[[]]]}',
    "backbone only": b'{"backbone": "bert-base"}',
    "unhashable": b'{"schema_version": [2], "results": []}',
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_json_raises_only_memprof_error_in_one_line(tmp_path, name):
    path = tmp_path / "h.json"
    path.write_bytes(HOSTILE[name])
    with pytest.raises(MemprofError) as exc:
        load_results(path)
    message = str(exc.value)
    assert "\n" not in message and repr(str(path)) in message and len(message) < 400, message


@pytest.mark.parametrize(
    "encode", [lambda t: b"\xef\xbb\xbf" + t.encode(), lambda t: t.encode("utf-16")], ids=["UTF-8 with a BOM", "UTF-16"]
)
def test_other_unicode_encodings_of_a_valid_file_still_load(tmp_path, encode):
    path = tmp_path / "bom.json"
    path.write_bytes(encode(json.dumps(two_results())))
    assert [r.method for r in load_results(path).results] == ["ft", "lora"]


# --- (2) the gate fails closed ----------------------------------------------------------------------


def with_memory(r: Result, **values) -> Result:
    return dataclasses.replace(r, memory=dataclasses.replace(r.memory, **values))


def unusable(current: ResultSet, baseline: ResultSet, **kw) -> str:
    with pytest.raises(MemprofError) as exc:
        gate.compare(current, baseline, **kw)
    return str(exc.value)


RULE = (
    "an ok result's peak must be a whole number of bytes >= 0 (only a CUDA-only metric its engine does not "
    "measure may be null); regenerate it with memprof"
)


@pytest.mark.parametrize(
    "value, shown",
    [
        (math.nan, "NaN"),
        (None, "null"),
        ("500", "'500' (a string)"),
        (-1, "-1"),
        (math.inf, "Infinity"),
        (1.5, "1.5"),
        (True, "true (a boolean)"),
        (2**64, "18446744073709551616"),
    ],
)
def test_an_unusable_current_metric_is_unusable_input_not_a_pass(value, shown):
    message = unusable(ResultSet([with_memory(result(), peak=value)]), ResultSet([result()]))
    assert message == f"cannot compare peak of {FT}: the current results have {shown}; {RULE}"


def test_a_nan_baseline_does_not_disable_the_check():
    base, cur = ResultSet([with_memory(result(), peak=math.nan)]), ResultSet([result(saved=110 * MiB)])
    assert unusable(cur, base) == f"cannot compare peak of {FT}: the baseline has NaN; {RULE}"
    # The same baseline with a number there: the 10% growth is a regression.
    assert not gate.compare(cur, ResultSet([result()])).passed


def test_both_sides_unusable_names_both_files():
    base = ResultSet([with_memory(result(), peak=math.nan)], source="b.json")
    cur = ResultSet([with_memory(result(), peak=None)], source="c.json")
    assert unusable(cur, base) == (
        f"cannot compare peak of {FT}: the baseline ('b.json') has NaN and the current results ('c.json') have null; "
        + RULE.replace("regenerate it", "regenerate both")
    )


def test_a_memory_without_the_metric_is_unusable_input():
    odd = dataclasses.replace(result(), memory=SimpleNamespace(saved_activations=1, peak_activations=1))
    assert unusable(ResultSet([odd]), ResultSet([result()]), metrics=("peak",)) == (
        f"cannot compare peak of {FT}: the current results have no such value; {RULE}"
    )


def test_which_null_is_unmeasured():
    cuda = result(engine="cuda", target="cuda", cuda_max_allocated=10, cuda_max_reserved=20, nvml_used=30)
    label = "bert-base ft seq=128 batch=8 fp32 cuda"
    # The fake engine measures no CUDA-only metric: null there is unmeasured, and passes.
    report = gate.compare(ResultSet([result()]), ResultSet([result()]), metrics=gate.CUDA_ONLY_METRICS)
    assert [r.verdict for r in report.rows] == ["unmeasured"] * 3 and report.passed
    # The cuda engine always measures cuda_max_*: null there is unusable input; NVML is optional.
    for metric in ("cuda_max_allocated", "cuda_max_reserved"):
        message = unusable(ResultSet([with_memory(cuda, **{metric: None})]), ResultSet([cuda]), metrics=(metric,))
        assert message.startswith(f"cannot compare {metric} of {label}: the current results have null; ")
    report = gate.compare(
        ResultSet([with_memory(cuda, nvml_used=None)]), ResultSet([cuda]), metrics=gate.CUDA_ONLY_METRICS
    )
    assert [(r.metric, r.verdict) for r in report.rows] == [
        ("cuda_max_allocated", "ok"),
        ("cuda_max_reserved", "ok"),
        ("nvml_used", "unmeasured"),
    ]
    # A CUDA-only metric that is there but not a byte count is unusable on any engine.
    assert unusable(
        ResultSet([with_memory(result(), nvml_used=math.nan)]), ResultSet([result()]), metrics=("nvml_used",)
    ).startswith(f"cannot compare nvml_used of {FT}: the current results have NaN")


def test_a_key_that_cannot_be_matched_is_unusable_input():
    odd = dataclasses.replace(result(), backbone=["bert-base"])
    assert unusable(ResultSet([result()]), ResultSet([odd])) == (
        "the baseline holds a configuration whose key is not text and numbers (backbone=['bert-base'], method='ft', "
        "seq_len=128, batch_size=8, dtype='fp32', engine='fake', target='cuda', step='first', loss='full'); regenerate it with memprof"
    )


def test_failed_configurations_are_compared_by_status_not_by_metrics():
    oom = with_memory(dataclasses.replace(result(), status="oom"), peak=None, saved_activations=math.nan)
    report = gate.compare(ResultSet([oom]), ResultSet([result()]))
    assert [(r.metric, r.verdict) for r in report.rows] == [("status", "failed")]
    odd = result()
    odd.status = "done"  # past __post_init__'s check
    assert unusable(ResultSet([odd]), ResultSet([result()])) == (
        f"cannot compare {FT}: the current results have status 'done' (a string), must be one of ok, oom, error; "
        "regenerate it with memprof"
    )


# --- (3) writes are atomic --------------------------------------------------------------------------


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder nothing can be created in: chmod 555, and where that does not hold (root), os.open and
    os.mkdir refuse inside it as the kernel would."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        real_open, real_mkdir = os.open, os.mkdir

        def refuse(real):
            def call(path, *args, **kwargs):
                if Path(path).parent == folder and (real is real_mkdir or args and args[0] & os.O_CREAT):
                    raise PermissionError(errno.EACCES, "Permission denied", str(path))
                return real(path, *args, **kwargs)

            return call

        monkeypatch.setattr(os, "open", refuse(real_open))
        monkeypatch.setattr(os, "mkdir", refuse(real_mkdir))
    yield folder
    folder.chmod(0o755)


def test_write_json_renames_a_temporary_file_of_the_same_folder_and_leaves_nothing_else(tmp_path, monkeypatch):
    renames, real_replace = [], os.replace
    monkeypatch.setattr(
        os, "replace", lambda src, dst: (renames.append((Path(src), Path(dst))), real_replace(src, dst))
    )
    write_json(ResultSet([result()]), tmp_path / "results.json")
    write_json(ResultSet([result("lora")]), tmp_path / "results.json")
    assert [(src.parent, src.suffix, dst) for src, dst in renames] == [
        (tmp_path, ".tmp", tmp_path / "results.json")
    ] * 2
    assert listing(tmp_path) == ["results.json"]
    assert [r.method for r in load_results(tmp_path / "results.json").results] == ["lora"]


@pytest.mark.parametrize("fail", ["os.replace", "write"])
@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch, fail, error):
    old = write_json(ResultSet([result()]), tmp_path / "results.json").read_text()

    def boom(*args, **kwargs):
        raise error

    if fail == "os.replace":
        monkeypatch.setattr(os, "replace", boom)
    else:
        monkeypatch.setattr(os, "fsync", boom)  # after the text, before the rename
    with pytest.raises(MemprofError if isinstance(error, OSError) else KeyboardInterrupt) as exc:
        write_json(ResultSet([result("lora")]), tmp_path / "results.json")
    if isinstance(error, OSError):
        assert str(exc.value) == (
            f"cannot write {str(tmp_path / 'results.json')!r} (No space left on device); pass "
            "a path in a folder you can write to"
        )
    assert listing(tmp_path) == ["results.json"] and (tmp_path / "results.json").read_text() == old


def test_write_json_into_a_missing_folder_a_folder_or_a_read_only_folder(tmp_path, read_only):
    rs = ResultSet([result()])
    missing = tmp_path / "no" / "such" / "results.json"
    with pytest.raises(MemprofError) as exc:
        write_json(rs, missing)
    assert str(exc.value) == (
        f"cannot write {str(missing)!r}: the folder {str(missing.parent)!r} does not exist; "
        "create it or pass a path in an existing folder"
    )
    assert not (tmp_path / "no").exists()
    (tmp_path / "dir").mkdir()
    with pytest.raises(MemprofError) as exc:
        write_json(rs, tmp_path / "dir")
    assert str(exc.value) == (
        f"cannot write {str(tmp_path / 'dir')!r}: it is a folder; pass the path of a file, "
        f"e.g. {str(tmp_path / 'dir' / 'results.json')!r}"
    )
    with pytest.raises(MemprofError) as exc:
        write_json(rs, read_only / "results.json")
    assert str(exc.value) == (
        f"cannot write {str(read_only / 'results.json')!r} (Permission denied); pass a path "
        "in a folder you can write to"
    )
    assert listing(tmp_path) == ["dir", "ro"]


def test_write_json_refuses_what_json_cannot_hold_before_writing(tmp_path):
    with pytest.raises(MemprofError) as exc:
        write_json(ResultSet([with_memory(result(), peak=math.nan)]), tmp_path / "results.json")
    assert str(exc.value) == (
        f"cannot write {str(tmp_path / 'results.json')!r}: results: results[0] ({FT}): "
        "memory.peak is NaN, must be a whole number of bytes >= 0; regenerate the results with "
        "memprof"
    )
    with pytest.raises(MemprofError) as exc:
        write_json(dataclasses.replace(result(), environment={"torch": object()}), tmp_path / "one.json")
    assert str(exc.value) == (
        f"cannot write {str(tmp_path / 'one.json')!r}: result ({FT}): environment.torch is a "
        "Python object, must be a string; regenerate the result with memprof"
    )
    with pytest.raises(MemprofError) as exc:
        write_json(ResultSet([result()], options={"x": {1, 2}}), tmp_path / "set.json")
    assert str(exc.value) == (
        f"cannot write {str(tmp_path / 'set.json')!r}: it holds a value JSON cannot hold "
        "(Object of type set is not JSON serializable); nothing was written"
    )
    assert listing(tmp_path) == []


def test_write_baseline_refuses_a_folder_before_writing_anything(tmp_path):
    write_json(ResultSet([result()]), tmp_path / "results.json")
    (tmp_path / "X").mkdir()
    with pytest.raises(MemprofError) as exc:
        gate.write_baseline(tmp_path / "results.json", tmp_path / "X")
    assert str(exc.value) == (
        f"baseline --out {str(tmp_path / 'X')!r} is a folder; pass the path of a JSON file, "
        f"e.g. --out {str(tmp_path / 'X' / 'baseline.json')!r}"
    )
    assert listing(tmp_path) == ["X", "results.json"]  # no X.tmp, nothing in X


def test_write_baseline_under_a_file_or_a_read_only_folder(tmp_path, read_only):
    write_json(ResultSet([result()]), tmp_path / "results.json")
    with pytest.raises(MemprofError, match=r"cannot create the folder .*results.json/sub.* of baseline --out"):
        gate.write_baseline(tmp_path / "results.json", tmp_path / "results.json" / "sub" / "b.json")
    with pytest.raises(MemprofError, match=r"cannot write .*ro/b.json' \(Permission denied\)"):
        gate.write_baseline(tmp_path / "results.json", read_only / "b.json")
    assert listing(tmp_path) == ["results.json", "ro"]


def test_prepare_out_dir_under_a_read_only_parent(read_only):
    with pytest.raises(MemprofError) as exc:
        prepare_out_dir(read_only / "report" / "deeper")
    assert str(exc.value) == (
        f"output directory {str(read_only / 'report' / 'deeper')!r} cannot be created "
        "(Permission denied); pass an --out in a folder you can write to"
    )
    assert list(read_only.iterdir()) == []


# --- (4) every command that reads results: exit 2 and one line --------------------------------------


def cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["memprof", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("MEMPROF_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exc:
        run()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture
def negative_peak(tmp_path):
    """A compare folder whose results.json holds a lora result with a negative peak."""
    data = two_results()
    data["results"][1]["memory"]["peak"] = -5
    (tmp_path / "run").mkdir()
    return write_text(tmp_path / "run" / "results.json", data)


def refused_line(path: Path) -> str:
    return (
        f"error: results file {str(path)!r}: results[1] ({LORA}): memory.peak is -5, must be a whole number of "
        f"bytes >= 0; {FIX}\n"
    )


def test_report_refuses_a_negative_peak(monkeypatch, capsys, tmp_path, negative_peak):
    code, out, err = cli(monkeypatch, capsys, "report", negative_peak, "--out", tmp_path / "elsewhere")
    assert (code, out, err) == (2, "", refused_line(negative_peak))
    assert listing(tmp_path) == ["run", "run/results.json"]  # no report, no folder


def test_check_refuses_a_bad_current_or_baseline(monkeypatch, capsys, tmp_path, negative_peak):
    good = write_text(tmp_path / "good.json", two_results())
    code, out, err = cli(monkeypatch, capsys, "check", negative_peak, "--baseline", good)
    assert (code, err) == (2, refused_line(negative_peak))
    code, out, err = cli(monkeypatch, capsys, "check", good, "--baseline", negative_peak)
    assert (code, err) == (2, refused_line(negative_peak))
    code, out, err = cli(monkeypatch, capsys, "check", tmp_path / "run", "--baseline", good)  # a folder
    assert (code, err) == (2, refused_line(negative_peak))


@pytest.mark.parametrize(
    "side, value, says",
    [
        ("current", "NaN", "memory.peak is NaN"),
        ("current", "null", "memory.peak is null"),
        ("baseline", "NaN", "memory.peak is NaN"),
        ("current", '"524288000"', "memory.peak is '524288000' (a string)"),
    ],
)
def test_check_on_the_reproduced_cases_is_exit_2_not_0_or_1(monkeypatch, capsys, tmp_path, side, value, says):
    # Before: NaN or null current passed (0), a NaN baseline disabled the check, a string was exit 1.
    grown = ResultSet([result(saved=110 * MiB), result("lora", saved=50 * MiB)]).to_dict()
    paths = {"current": tmp_path / "current.json", "baseline": tmp_path / "baseline.json"}
    write_text(paths["current"], grown)
    write_text(paths["baseline"], two_results())
    text = (
        paths[side]
        .read_text()
        .replace(f'"peak": {5 * 100 * MiB if side == "baseline" else 5 * 110 * MiB}', f'"peak": {value}')
    )
    paths[side].write_text(text)
    code, out, err = cli(monkeypatch, capsys, "check", paths["current"], "--baseline", paths["baseline"])
    assert code == 2 and err.count("\n") == 1 and out == ""
    assert err.startswith(
        f"error: results file {str(paths[side])!r}: results[0] ({FT}): {says}, must be a whole number of bytes >= 0"
    ), err


def test_baseline_refuses_a_bad_source_and_writes_nothing(monkeypatch, capsys, tmp_path, negative_peak):
    code, out, err = cli(monkeypatch, capsys, "baseline", negative_peak, "--out", tmp_path / "b" / "baseline.json")
    assert (code, out, err) == (2, "", refused_line(negative_peak))
    assert listing(tmp_path) == ["run", "run/results.json"]


def test_baseline_out_a_folder_is_exit_2(monkeypatch, capsys, tmp_path):
    good = write_text(tmp_path / "good.json", two_results())
    (tmp_path / "X").mkdir()
    code, _, err = cli(monkeypatch, capsys, "baseline", good, "--out", tmp_path / "X")
    # (memprof.cli.baseline may refuse it first, with its own words; write_baseline refuses it too, above)
    assert code == 2 and err.count("\n") == 1 and f"{str(tmp_path / 'X')!r}" in err and "is a folder" in err, err
    assert listing(tmp_path) == ["X", "good.json"]


def test_resume_refuses_a_bad_results_file_and_leaves_it(monkeypatch, capsys, tmp_path, negative_peak):
    before = negative_peak.read_text()
    code, out, err = cli(monkeypatch, capsys, "compare", "--resume", tmp_path / "run")
    assert (code, err) == (2, refused_line(negative_peak))
    assert listing(tmp_path) == ["run", "run/results.json"] and negative_peak.read_text() == before
