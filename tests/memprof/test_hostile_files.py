"""Hostile files (issue 25 item 5): a backbone config.json with a key twice, a huge integer, deep
nesting or NaN; a model folder with corrupt weights; user text a spreadsheet would run as a formula
in results.csv and layers.csv; every spelling of a zero size. Each refusal is one MemprofError line
naming the file (exit 2 in the CLI), never a traceback."""

import csv
import dataclasses
import json
import pickle
import zipfile

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from synthetic_results import make_result

from meft.strict_json import MAX_DEPTH
from memprof.errors import MemprofError
from memprof.models import backbones
from memprof.models.tasks import build_model
from memprof.reporters import table
from memprof.results.files import BadJSON, parse_json
from memprof.results.result import ResultSet
from memprof.units import parse_bytes
from tests.memprof.conftest import TINY_BERT

GOOD = json.dumps(TINY_BERT)
CONFIG_FIX = "pass a readable config.json or a model folder that holds one"
WEIGHTS_FIX = "download or save the model again, or pass its config.json alone for random weights"

# config.json text -> what the message says after "the file "
HOSTILE_CONFIGS = {
    "a key twice": (
        GOOD.replace('"hidden_size": 16', '"hidden_size": 16, "hidden_size": 4096'),
        "holds the key 'hidden_size' twice in one object, so it cannot be read unambiguously",
    ),
    "a key twice, nested": (
        GOOD[:-1] + ', "rope_scaling": {"type": "linear", "type": "dynamic"}}',
        "holds the key 'type' twice in one object, so it cannot be read unambiguously",
    ),
    "an integer of 5000 digits": (
        GOOD.replace('"num_hidden_layers": 2', '"num_hidden_layers": ' + "9" * 5000),
        "holds an integer of 5000 digits, beyond 64 bits (at most 2**63 - 1)",
    ),
    "10**30 layers": (
        GOOD.replace('"num_hidden_layers": 2', f'"num_hidden_layers": {10**30}'),
        "holds an integer of 31 digits, beyond 64 bits (at most 2**63 - 1)",
    ),
    "10**20 layers": (
        GOOD.replace('"num_hidden_layers": 2', f'"num_hidden_layers": {10**20}'),
        f"holds the integer {10**20}, beyond 64 bits (at most 2**63 - 1)",
    ),
    "2**63": (
        GOOD.replace('"vocab_size": 64', f'"vocab_size": {2**63}'),
        f"holds the integer {2**63}, beyond 64 bits (at most 2**63 - 1)",
    ),
    "-2**63 - 1": (
        GOOD.replace('"vocab_size": 64', f'"vocab_size": {-(2**63) - 1}'),
        f"holds the integer {-(2**63) - 1}, beyond 64 bits (at most 2**63 - 1)",
    ),
    "arrays 100,000 deep": (
        GOOD[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
        f"nests JSON deeper than {MAX_DEPTH} levels",
    ),
    "objects 101 deep": (
        GOOD[:-1] + ', "x": ' + '{"a": ' * 100 + "1" + "}" * 100 + "}",
        f"nests JSON deeper than {MAX_DEPTH} levels",
    ),
    "NaN": (
        GOOD.replace('"hidden_size": 16', '"hidden_size": 16, "layer_norm_eps": NaN'),
        "holds NaN, which is not JSON (JSON has no NaN or Infinity)",
    ),
    "-Infinity": (
        GOOD.replace('"hidden_size": 16', '"hidden_size": 16, "layer_norm_eps": -Infinity'),
        "holds -Infinity, which is not JSON (JSON has no NaN or Infinity)",
    ),
    "1e999": (
        GOOD.replace('"hidden_size": 16', '"hidden_size": 16, "layer_norm_eps": 1e999'),
        "holds the number 1e999, beyond a float's range (infinite)",
    ),
    "bad UTF-8": (GOOD.replace('"bert"', '"bert\xff"'), None),  # written as Latin-1 below
    "not JSON": (
        "{not json",
        "is not valid JSON (Expecting property name enclosed in double quotes at line 1 column 2)",
    ),
}


def _write_config(folder, text):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_bytes(text.encode("latin-1") if "\xff" in text else text.encode())
    return path


@pytest.mark.parametrize("case", list(HOSTILE_CONFIGS))
def test_a_hostile_config_is_one_line_naming_the_file_and_the_problem(tmp_path, case):
    text, why = HOSTILE_CONFIGS[case]
    path = _write_config(tmp_path / "model", text)
    why = why or "is not valid JSON (not UTF-8 text at byte 20)"
    for given in (path, path.parent):  # the file, or the model folder holding it
        with pytest.raises(MemprofError) as exc:
            backbones.resolve(str(given))
        assert str(exc.value) == f"cannot read backbone config {str(path)!r}: the file {why}; {CONFIG_FIX}"


def test_the_largest_64_bit_integers_are_read_and_then_checked_as_counts(tmp_path):
    path = _write_config(tmp_path / "m", GOOD.replace('"vocab_size": 64', f'"vocab_size": {2**63 - 1}'))
    with pytest.raises(MemprofError) as exc:
        backbones.resolve(str(path))
    assert str(exc.value) == (
        f"backbone config {str(path)!r}: vocab_size={2**63 - 1} must be a count from 1 to 2147483648; "
        "pass a positive count such as 30522"
    )


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("num_hidden_layers", 2**40, "must be a count from 1 to 2147483648; pass a positive count such as 12"),
        ("num_hidden_layers", -3, "must be a count from 1 to 2147483648; pass a positive count such as 12"),
        ("num_hidden_layers", 5000, "gives 5000 layers, more than 1000; pass a real model's depth"),
        ("hidden_size", 10**18, "must be a count from 1 to 2147483648; pass a positive count such as 768"),
        ("hidden_dropout_prob", 10**18, "is a probability outside [0, 1]; pass a value between 0 and 1, e.g. 0.1"),
        ("pad_token_id", 2**62, "is not a token id of the vocabulary (0 to 63); pass an id below vocab_size=64, or "),
    ],
)
def test_absurd_values_of_the_right_type_are_refused(tmp_path, field, value, says):
    path = _write_config(tmp_path / "m", json.dumps({**TINY_BERT, field: value}))
    with pytest.raises(MemprofError) as exc:
        backbones.resolve(str(path))
    assert str(exc.value).startswith(f"backbone config {str(path)!r}: {field}={value} {says}")


def test_parse_json_keeps_nan_and_long_integers_for_results_files():
    # results files name the field of a NaN or a huge count in their schema (test_fail_closed_results)
    data = parse_json(b'{"a": NaN, "b": ' + b"9" * 400 + b"}")
    assert data["a"] != data["a"] and data["b"] == int("9" * 400)
    with pytest.raises(BadJSON) as exc:
        parse_json(b'{"a": NaN}', bounded_numbers=True)
    assert exc.value.why == "holds NaN, which is not JSON (JSON has no NaN or Infinity)" and exc.value.key is None
    assert parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) == eval("[" * MAX_DEPTH + "]" * MAX_DEPTH)


# -- corrupt weights ------------------------------------------------------------------------------


def _real_weights(folder):
    """A folder holding TINY_BERT's config.json and its weights as transformers saves them."""
    import transformers

    transformers.BertModel(transformers.BertConfig(**TINY_BERT)).save_pretrained(folder)
    return folder


def _zip_bytes(tmp_path):
    torch.save({"w": torch.zeros(3)}, tmp_path / "t.bin")
    return (tmp_path / "t.bin").read_bytes()


# weights file name -> its bytes, from a real safetensors file (``real``) or a torch.save zip (``zipped``)
CORRUPT_WEIGHTS = {
    "safetensors truncated": ("model.safetensors", lambda real, zipped: real[: len(real) // 2]),
    "safetensors one byte short": ("model.safetensors", lambda real, zipped: real[:-1]),
    "safetensors empty": ("model.safetensors", lambda real, zipped: b""),
    "safetensors of garbage": ("model.safetensors", lambda real, zipped: b"garbage bytes, not weights" * 10),
    "safetensors with a huge header length": ("model.safetensors", lambda real, zipped: b"\xff" * 8 + b"{}"),
    "bin of garbage": ("pytorch_model.bin", lambda real, zipped: b"garbage bytes, not weights"),
    "bin a truncated zip": ("pytorch_model.bin", lambda real, zipped: zipped[: len(zipped) // 2]),
    "bin empty": ("pytorch_model.bin", lambda real, zipped: b""),
}


@pytest.fixture(scope="module")
def weight_bytes(tmp_path_factory):
    folder = _real_weights(tmp_path_factory.mktemp("real") / "bert")
    return (folder / "model.safetensors").read_bytes(), _zip_bytes(tmp_path_factory.mktemp("zip"))


def _corrupt_folder(tmp_path, weight_bytes, case):
    name, make = CORRUPT_WEIGHTS[case]
    folder = tmp_path / "model"
    _write_config(folder, GOOD)
    (folder / name).write_bytes(make(*weight_bytes))
    return folder, folder / name


@pytest.mark.parametrize("case", list(CORRUPT_WEIGHTS))
def test_corrupt_weights_are_one_line_naming_the_file(tmp_path, weight_bytes, case):
    folder, file = _corrupt_folder(tmp_path, weight_bytes, case)
    with pytest.raises(MemprofError) as exc:
        backbones.resolve(str(folder))
    message = str(exc.value)
    assert message.startswith(f"weights file {str(file)!r} is corrupt or truncated (")
    assert message.endswith(f"); {WEIGHTS_FIX}") and "\n" not in message and len(message) < 600, message
    # its config alone is still a backbone, with random weights
    assert backbones.resolve(str(folder / "config.json")).weights is None


def test_real_weights_pass_the_check_and_load(tmp_path):
    folder = _real_weights(tmp_path / "bert")
    backbone = backbones.resolve(str(folder))
    assert backbone.weights == str(folder)
    model = build_model(backbone, "classification", pretrained=True)
    saved = dict(zip(*_safetensors_items(folder / "model.safetensors")))
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, saved["embeddings.word_embeddings.weight"])


def _safetensors_items(path):
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    return list(tensors), list(tensors.values())


@pytest.mark.parametrize(
    "name, write",
    [
        # a well-formed file holding a tensor of another shape than the model's
        ("model.safetensors", lambda p: save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(3, 5)}, p)),
        # a legacy (pre-zip) pickle passes the structure check, then fails to load
        ("pytorch_model.bin", lambda p: open(p, "wb").write(pickle.dumps("x", protocol=2)[:3] + b"garbage")),
    ],
    ids=["wrong shape", "legacy pickle of garbage"],
)
def test_weights_that_fail_only_when_loaded_are_one_line_too(tmp_path, name, write):
    folder = tmp_path / "model"
    _write_config(folder, GOOD)
    write(str(folder / name))
    backbone = backbones.resolve(str(folder))  # the structure is fine
    with pytest.raises(MemprofError) as exc:
        build_model(backbone, "classification", pretrained=True)
    message = str(exc.value)
    assert message.startswith(f"backbone 'model': cannot load the weights in {str(folder)!r} (")
    assert message.endswith(f"); {WEIGHTS_FIX}") and "\n" not in message, message


def test_a_zip_bin_that_is_whole_passes_the_structure_check(tmp_path, weight_bytes):
    folder = tmp_path / "model"
    _write_config(folder, GOOD)
    (folder / "pytorch_model.bin").write_bytes(weight_bytes[1])
    assert zipfile.is_zipfile(folder / "pytorch_model.bin")
    assert backbones.resolve(str(folder)).weights == str(folder)


# -- the CLI: exit 2, one line ---------------------------------------------------------------------


def _one_error_line(code, out, err):
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("case", ["a key twice", "an integer of 5000 digits", "arrays 100,000 deep", "NaN"])
def test_cli_refuses_a_hostile_config_in_one_line(cli, tmp_path, case):
    text, why = HOSTILE_CONFIGS[case]
    path = _write_config(tmp_path / "model", text)
    line = _one_error_line(*cli("profile", "--backbone", str(path.parent), "--seq-len", "8"))
    assert line == f"error: cannot read backbone config {str(path)!r}: the file {why}; {CONFIG_FIX}"


@pytest.mark.parametrize("case", ["safetensors truncated", "bin of garbage"])
def test_cli_refuses_corrupt_weights_in_one_line(cli, tmp_path, weight_bytes, case):
    folder, file = _corrupt_folder(tmp_path, weight_bytes, case)
    line = _one_error_line(*cli("profile", "--backbone", str(folder), "--seq-len", "8"))
    assert line.startswith(f"error: weights file {str(file)!r} is corrupt or truncated (")
    assert line.endswith(WEIGHTS_FIX)


def test_cli_refuses_weights_that_fail_when_loaded_in_one_line(cli, tmp_path):
    folder = tmp_path / "model"
    _write_config(folder, GOOD)
    save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(3, 5)}, str(folder / "model.safetensors"))
    args = ("--engine", "cpu", "--method", "ft", "--seq-len", "8", "--batch-size", "1")
    line = _one_error_line(*cli("profile", "--backbone", str(folder), *args))
    assert line.startswith(f"error: backbone 'model': cannot load the weights in {str(folder)!r} (RuntimeError: ")
    assert line.endswith(WEIGHTS_FIX)


# -- CSV cells a spreadsheet would run ----------------------------------------------------------------

FORMULAS = ['=HYPERLINK("http://x.example","ok")', "-2+3", "+1", "@SUM(A1)", "\tx", "\rx"]


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_text_cells_that_start_a_formula_are_quoted_and_numbers_stay(tmp_path):
    results = [dataclasses.replace(make_result("ft", 8, 1, backbone=t), message=t) for t in FORMULAS]
    rs = ResultSet(results=results, command="memprof compare", options={})
    paths = table.render(rs, tmp_path)
    rows = _rows(paths["results.csv"])
    assert [row["backbone"] for row in rows] == ["'" + t for t in FORMULAS]
    assert [row["message"] for row in rows] == ["'" + t for t in FORMULAS]
    frame = table.results_frame(rs)  # the frames themselves keep the text as given
    assert frame["backbone"].tolist() == FORMULAS
    assert [row["peak"] for row in rows] == [str(v) for v in frame["peak"]]
    layers = _rows(paths["layers.csv"])
    assert {row["backbone"] for row in layers} == {"'" + t for t in FORMULAS}


def test_csv_safe_quotes_only_text():
    frame = pd.DataFrame(
        {
            "text": ["=1+1", "-2+3", "plain", "a=b", None, "-5", "", "'quoted"],
            "ints": [-1, -2, 3, 0, 5, -6, 7, 8],
            "floats": [-1.5, float("nan"), 2.0, -0.0, 1e9, -3.25, 0.5, 1.0],
            "nullable": pd.array([-4, None, 1, 2, 3, 4, 5, 6], dtype="Int64"),
        }
    )
    out = table.csv_safe(frame)
    assert out["text"].fillna("<missing>").tolist() == [
        "'=1+1",
        "'-2+3",
        "plain",
        "a=b",
        "<missing>",
        "'-5",
        "",
        "'quoted",
    ]
    assert out["text"].dtype == frame["text"].dtype
    for column in ("ints", "floats", "nullable"):
        pd.testing.assert_series_equal(out[column], frame[column])
    assert frame["text"].tolist()[0] == "=1+1"  # the frame given is left as it was


# -- every spelling of a zero size ---------------------------------------------------------------------

ZEROS = ["0", "-0", "+0", "0e50", "0e-40", "-0e-40", "0.0 GiB", "-0 KiB", "-0.0", ".0 TB", "0e99999999999999999999"]


@pytest.mark.parametrize("text", ZEROS)
def test_every_spelling_of_zero_is_zero(text):
    assert parse_bytes(text) == 0


@pytest.mark.parametrize(
    "text, says",
    [
        ("-1", "is a negative size"),
        ("-0.5 KiB", "is a negative size"),
        ("1e50", "is too large a size"),
        ("1e99999999999999999999", "is too large a size"),
        ("1e-40", "is a fraction of one byte"),
        ("1e-99999999999999999999", "is a fraction of one byte"),
        ("0 G", "is not a size"),
        ("-0 G", "is not a size"),  # as "0 G": a zero is not negative, whatever its unit
        ("- 0", "is not a size"),
        ("--0", "is not a size"),
    ],
)
def test_sizes_that_are_not_zero_are_refused_as_before(text, says):
    with pytest.raises(MemprofError) as exc:
        parse_bytes(text)
    assert str(exc.value).startswith(f"size {text!r} {says}")
