"""memprof's meft methods and the ``memprof diagnose`` command (memprof uses meft; meft never imports memprof)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

import meft

memprof = pytest.importorskip("memprof.methods")
from memprof import methods  # noqa: E402
from memprof.instrument.params import count_params  # noqa: E402
from memprof.models import backbones  # noqa: E402
from memprof.models.tasks import build_model  # noqa: E402

TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 128,
    "max_position_embeddings": 64,
}


def test_meft_methods_are_registered_with_meft1_as_the_alias():
    assert {"meft", "meft1", "meft2", "meft3"} <= set(methods.names())
    bb = backbones.Backbone("tiny-bert", "bert", TINY_BERT)
    configs = {}
    for name in ("meft", "meft1", "meft2", "meft3"):
        model = methods.get(name).apply(build_model(bb, device="meta"), bb, "classification")
        configs[name] = meft.config_of(model)
        trainable, _ = count_params(model)
        h, r = 32, 8
        # 2 layers x 2 adapters + classifier; meft1's top layer has no G adapter under merge="plm"
        adapters = 3 if name in ("meft", "meft1") else 4
        assert trainable == adapters * (h * r + r + r * h + h) + (h * 2 + 2)
    assert configs["meft"] == configs["meft1"] == meft.MEFTConfig(variant="meft1")
    assert configs["meft3"].variant == "meft3"


def test_meft_does_not_import_memprof():
    package = Path(meft.__file__).parent
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "memprof" for a in node.names), path
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "memprof", path


def _cli(monkeypatch, capsys, *args):
    from memprof.cli import run

    monkeypatch.setattr(sys, "argv", ["memprof", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "200")
    code = 0
    try:
        run()
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_diagnose_prints_every_layer_and_the_safe_depth(monkeypatch, capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_BERT))
    code, out, err = _cli(
        monkeypatch,
        capsys,
        "diagnose",
        "--backbone",
        tmp_path / "config.json",
        "--variant",
        "meft2",
        "--seq-len",
        "8",
        "--arithmetic",
        "float",
    )
    assert code == 0, err
    assert "meft2 float fp32" in " ".join(out.split())
    rows = [line for line in out.splitlines() if "encoder" in line and "e-" in line]
    assert len(rows) == 2
    assert "encoder: 0 of 2 layers reconstructed bit for bit, 2 under 1% error (float arithmetic, float32)" in out
    code, out, err = _cli(
        monkeypatch, capsys, "diagnose", "--backbone", tmp_path / "config.json", "--seq-len", "8", "--dtype", "bf16"
    )
    assert code == 0, err
    assert "encoder: 2 of 2 layers reconstructed bit for bit, 2 under 1% error (exact arithmetic, bfloat16)" in out
    assert "trainable parameters without a gradient: none" in out


def test_diagnose_json_has_every_layer_and_parameter(monkeypatch, capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_BERT))
    code, out, err = _cli(
        monkeypatch,
        capsys,
        "diagnose",
        "--backbone",
        tmp_path / "config.json",
        "--variant",
        "meft3",
        "--seq-len",
        "8",
        "--dtype",
        "mixed-bf16",
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert (data["arithmetic"], data["dtype"], data["variant"]) == ("exact", "mixed-bf16", "meft3")
    assert [(r["stack"], r["layer"], r["max_abs"]) for r in data["layers"]] == [
        ("encoder", 0, 0.0),
        ("encoder", 1, 0.0),
    ]
    # 2 layers x 2 adapters x 4 tensors, and the classifier's weight and bias
    assert len(data["parameters"]) == 18 and data["missing"] == []
    assert data["lowest_cosine"] >= 0.999


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--dtype", "int8"], "dtype 'int8' is not one of fp32, bf16, fp16, fp64, mixed-bf16, mixed-fp16"),
        (["--arithmetic", "fixed"], "arithmetic 'fixed' is unknown; use one of exact, float"),
        (["--variant", "meft9"], "variant 'meft9' is unknown"),
        (["--seq-len", "0"], "sequence length 0 must be a whole number of at least 1"),
    ],
)
def test_diagnose_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, args, needle):
    (tmp_path / "config.json").write_text(json.dumps(TINY_BERT))
    code, out, err = _cli(monkeypatch, capsys, "diagnose", "--backbone", tmp_path / "config.json", *args)
    assert code == 2
    assert needle in " ".join(err.split())
    assert "Traceback" not in err
