"""Hostile input, generated: config.json files, results files and command lines.

The property, for every command: exit 0; or exit 1 only from ``check`` on a real regression; or
exit 2 with one line on stderr; never a traceback, never a half-written output.

The default run is bounded (``FUZZ_EXAMPLES`` examples per test, seconds each); a longer run:
``MEMPROF_FUZZ_EXAMPLES=2000 python -m pytest tests/memprof/test_fuzz.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic_results import golden_resultset  # noqa: E402  (tests/memprof is on sys.path)

from memprof.checks import gate
from memprof.models import backbones
from memprof.results.result import load_results

FUZZ_EXAMPLES = int(os.environ.get("MEMPROF_FUZZ_EXAMPLES", "20"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=FUZZ_EXAMPLES <= 100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

#: two-layer, 16-wide configs of every family (vocabulary 64): a valid one profiles in a second
TINY = {
    "bert-base": dict(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        vocab_size=64,
    ),
    "bart-base": dict(
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=32,
        vocab_size=64,
    ),
    "llama-3.2-1b": dict(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        intermediate_size=32,
        max_position_embeddings=32,
        vocab_size=64,
    ),
    "gpt2": dict(n_embd=16, n_layer=2, n_head=2, n_positions=32, n_ctx=32, vocab_size=64),
}

HOSTILE_TEXT = st.sampled_from(
    [
        "",
        "[/]",
        "ft[/i]",
        "<script>x</script>",
        "|`*_",
        "gelu[/]",
        "nan",
        "-1",
        "1e400",
        "bert-base",
        "\u00e9\u4e2d",
        "a\nb",
        "x" * 300,
    ]
)
#: small numbers, and huge ones only from a list: a valid config of 5,000 layers is no bad input,
#: just a long profile
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-10, 64)
    | st.sampled_from([10**6, 2**31, 2**40, 2**70, -(2**70)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3),
    max_leaves=6,
)


def invoke(*args: str) -> tuple[int, str, str]:
    """Run the ``memprof`` command line in this process: (exit code, stdout, stderr)."""
    from memprof.cli import main

    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.object(sys, "argv", ["memprof", *args]),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        mock.patch.dict(os.environ, {"COLUMNS": "200"}),
    ):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = 0 if exc.code is None else exc.code
    return code, out.getvalue(), err.getvalue()


def assert_clean(code: int, out: str, err: str, allowed: tuple[int, ...] = (0, 2)) -> None:
    assert code in allowed, (code, out, err)
    assert "Traceback" not in out + err, err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


# -- config.json ----------------------------------------------------------------------------------


@FUZZ
@given(base=st.sampled_from(sorted(TINY)), data=st.data())
def test_generated_config_files(base, data):
    config = {**backbones.builtin()[base], **TINY[base]}
    keys = data.draw(st.lists(st.sampled_from(sorted(config) + ["model_type", "extra_field"]), max_size=3, unique=True))
    for key in keys:
        config[key] = data.draw(JSON_VALUES, label=key)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "config.json").write_text(json.dumps(config))
        out = folder / "out" / "r.json"
        (folder / "out").mkdir()
        code, stdout, stderr = invoke(
            "profile", "--backbone", str(folder), "--seq-len", "8", "--batch-size", "1", "--json", str(out)
        )
        assert_clean(code, stdout, stderr)
        if code == 0:
            assert load_results(out).results[0].status in ("ok", "oom", "error")
        else:
            assert not out.exists()
        assert not leftovers(folder)


# -- results files --------------------------------------------------------------------------------


def _paths(obj, prefix=()):
    """Every path into a JSON document (dict keys and list indices)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _replace(doc, path, value):
    if not path:
        return value
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


BASE_RESULTS = golden_resultset().to_dict()
RESULT_PATHS = [p for p in _paths(BASE_RESULTS) if len(p) <= 5]


@FUZZ
@given(path=st.sampled_from(RESULT_PATHS), value=JSON_VALUES)
def test_generated_results_files(path, value):
    doc = _replace(json.loads(json.dumps(BASE_RESULTS)), path, value)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        current = folder / "results.json"
        current.write_text(json.dumps(doc))  # NaN and Infinity go in as JSON's non-standard literals
        baseline = folder / "baseline.json"
        baseline.write_text(json.dumps(BASE_RESULTS))

        code, out, err = invoke("check", str(current), "--baseline", str(baseline))
        assert_clean(code, out, err, allowed=(0, 1, 2))
        if code == 1:  # only a real regression
            report = gate.compare(load_results(current), load_results(baseline))
            assert report.failures

        report_dir = folder / "report"
        code, out, err = invoke("report", str(current), "--out", str(report_dir), "--quiet")
        assert_clean(code, out, err)
        if code == 2:
            assert not report_dir.exists() or not any(report_dir.iterdir())
        assert not leftovers(folder)


# -- command lines --------------------------------------------------------------------------------

FLAGS = {
    "--method": st.sampled_from(["ft", "lora", "meft1", "meft", "adapter", "ft[/i]", "", "prefix"]),
    "--seq-len": st.one_of(st.integers(-3, 40).map(str), HOSTILE_TEXT),
    "--batch-size": st.one_of(st.integers(-3, 4).map(str), HOSTILE_TEXT),
    "--engine": st.sampled_from(["fake", "cpu", "cuda", "tpu", "[/]"]),
    "--target": st.sampled_from(["cuda", "cpu", "gpu"]),
    "--dtype": st.sampled_from(["fp32", "bf16", "fp16", "mixed-bf16", "fp8", ""]),
    "--attn": st.sampled_from(["sdpa", "eager", "flash"]),
    "--task": st.sampled_from(["classification", "causal-lm", "seq2seq", "qa"]),
    "--depth": st.one_of(st.integers(-1, 5).map(str), HOSTILE_TEXT),
    "--bogus": HOSTILE_TEXT,
}


@FUZZ
@given(base=st.sampled_from(sorted(TINY)), data=st.data())
def test_generated_profile_command_lines(base, data):
    flags = data.draw(st.lists(st.sampled_from(sorted(FLAGS)), max_size=4, unique=True))
    args = [part for flag in flags for part in (flag, data.draw(FLAGS[flag], label=flag))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps({**backbones.builtin()[base], **TINY[base]}))
        defaults = ["--seq-len", "8", "--batch-size", "1"]  # given first: a generated value overrides them
        code, out, err = invoke("profile", "--backbone", str(path), *defaults, *args)
        assert_clean(code, out, err)
        assert not leftovers(Path(tmp))


@FUZZ
@given(
    methods=st.lists(st.sampled_from(["ft", "lora", "meft", "meft1", "x[/]", ""]), max_size=3),
    seq_lens=st.sampled_from(["8", "8,16", "8,8", "0", "abc", "", "8,,16", "64"]),
    batch_sizes=st.sampled_from(["1", "1,2", "-1", "1e3", ""]),
)
def test_generated_compare_command_lines(methods, seq_lens, batch_sizes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps({**backbones.builtin()["bert-base"], **TINY["bert-base"]}))
        out = Path(tmp) / "sweep"
        code, stdout, stderr = invoke(
            "compare",
            "--backbone",
            str(path),
            "--methods",
            ",".join(methods),
            "--seq-lens",
            seq_lens,
            "--batch-sizes",
            batch_sizes,
            "--out",
            str(out),
            "--jobs",
            "1",
            "--quiet",
        )
        assert_clean(code, stdout, stderr, allowed=(0, 1, 2))
        if code == 0:
            assert (out / "report.html").is_file()
        if code == 2:
            assert not (out / "results.json").exists()
        assert not leftovers(Path(tmp))


# -- MEFT configs ---------------------------------------------------------------------------------

#: each field of MEFTConfig: values it takes, beside the generated hostile ones
MEFT_FIELDS = {
    "variant": st.sampled_from(["meft1", "meft2", "meft3", "MEFT1", "meft4"]),
    "adapter_dim": st.sampled_from([1, 4, 8, 0, -1, 2**31, 10**12]),
    "lam": st.sampled_from([None, 0.1, 1.0, 0.5, 1 / 3, 0.0, -0.1]),
    "beta": st.sampled_from([None, 0.1, 1.0, 0.25, 1e-30, 7.0]),
    "num_rev_layers": st.sampled_from([None, 0, 1, 2, 3, -1]),
    "adapter_dropout": st.sampled_from([0.0, 0.1, 0.99, 1.0]),
    "init_std": st.sampled_from([0.0, 0.02, 1e300]),
    "merge": st.sampled_from(["plm", "mean", "sum"]),
    "cache_top_layer": st.sampled_from([None, True, False]),
    "arithmetic": st.sampled_from(["exact", "float", "fixed"]),
}


@FUZZ
@given(data=st.data())
def test_generated_meft_configs(data):
    """A MEFTConfig from a generated dict is built or refused in one MEFTError line; a built one
    converts a tiny model and trains a step, or is refused with the model left as it was."""
    import torch
    import transformers as tf

    import meft

    names = data.draw(st.lists(st.sampled_from([*MEFT_FIELDS, "rank"]), max_size=4, unique=True))
    spec = {name: data.draw(st.one_of(MEFT_FIELDS.get(name, JSON_VALUES), JSON_VALUES), label=name) for name in names}
    try:
        config = meft.MEFTConfig.from_dict(spec)
    except meft.MEFTError as exc:
        assert "\n" not in str(exc)
        return
    torch.manual_seed(0)
    model = tf.BertForSequenceClassification(tf.BertConfig(**TINY["bert-base"], num_labels=2))
    before = {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}
    try:
        meft.convert(model, config)
    except meft.MEFTError as exc:
        assert "\n" not in str(exc)
        after = dict(model.named_parameters())
        assert after.keys() == before.keys()
        assert all(torch.equal(p, before[n][0]) and p.requires_grad == before[n][1] for n, p in after.items())
        return
    ids = torch.randint(4, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    try:
        model(input_ids=ids, labels=torch.tensor([0, 1])).loss.backward()
    except meft.MEFTError as exc:  # e.g. a stream outside the fixed-point range: named, one line
        assert "\n" not in str(exc)


# -- output paths ---------------------------------------------------------------------------------

#: where a generated command writes, relative to a folder holding ``model/config.json``, a sweep
#: ``run/`` and a single result ``one.json``
OUTPUTS = st.sampled_from(
    ["new", "model", "model/config.json", "run", "run/results.json", "one.json", "new/deeper", "one.json/x", "."]
)


@FUZZ
@given(command=st.sampled_from(["compare", "profile", "report", "baseline", "formula"]), out=OUTPUTS)
def test_generated_output_paths(command, out):
    """Any output path: the command writes or refuses in one line, and never changes an input it read
    (the backbone's config.json) or a results file it was not asked to replace."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "model").mkdir()
        (root / "model" / "config.json").write_text(
            json.dumps({**backbones.builtin()["bert-base"], **TINY["bert-base"]})
        )
        (root / "run").mkdir()
        (root / "run" / "results.json").write_text(json.dumps(BASE_RESULTS))
        (root / "one.json").write_text(json.dumps(BASE_RESULTS["results"][0]))
        inputs = {p: p.read_bytes() for p in (root / "model" / "config.json", root / "run" / "results.json")}
        target, size = str(root / out), ["--seq-len", "8", "--batch-size", "1"]
        args = {
            "compare": ["--backbone", str(root / "model"), "--methods", "ft", "--seq-lens", "8", "--batch-sizes", "1",
                        "--jobs", "1", "--quiet", "--out", target],
            "profile": ["--backbone", str(root / "model"), *size, "--json", target],
            "report": [str(root / "run" / "results.json"), "--out", target, "--quiet"],
            "baseline": [str(root / "run"), "--out", target],
            "formula": ["--backbone", str(root / "model"), "--json", target],
        }[command]  # fmt: skip
        code, stdout, stderr = invoke(command, *args)
        assert_clean(code, stdout, stderr)
        kept = {p: p.read_bytes() for p in inputs}
        assert kept[root / "model" / "config.json"] == inputs[root / "model" / "config.json"]
        if not (command == "compare" and out == "run"):  # a compare into a sweep's folder replaces its results
            assert kept[root / "run" / "results.json"] == inputs[root / "run" / "results.json"]
        assert not leftovers(root)
