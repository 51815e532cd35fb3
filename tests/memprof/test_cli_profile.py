"""``memprof profile``: the table and JSON it writes, its grouping of module paths, and bad input
turned into one line and exit code 2."""

import sys

import pytest
import torch
from typer.testing import CliRunner

import memprof
from memprof.cli import app
from memprof.cli.app import run
from memprof.reporters.table import layers_by_group as grouped_layers
from memprof.results.module_names import layer_group as group_path
from memprof.results.result import load_results


def test_profile_prints_tables_and_writes_json(tiny_opt, tmp_path):
    out = tmp_path / "r.json"
    res = CliRunner().invoke(
        app,
        [
            "profile",
            "--backbone",
            tiny_opt,
            "--method",
            "lora",
            "--seq-len",
            "16",
            "--batch-size",
            "2",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "saved activations by module" in res.output and "memory of the step" in res.output
    assert "decoder.layers.1 " in res.output  # one row per layer by default, without peft's prefixes
    assert "base_model" not in res.output
    (result,) = load_results(out).results
    expected = memprof.profile(tiny_opt, "lora", seq_len=16, batch_size=2)
    assert result.memory == expected.memory
    assert result.layers.equals(expected.layers)


def test_profile_names_the_reversible_stack(tiny_opt):
    res = CliRunner().invoke(
        app,
        [
            "profile",
            "--backbone",
            tiny_opt,
            "--method",
            "meft3",
            "--seq-len",
            "16",
            "--batch-size",
            "2",
            "--engine",
            "fake",
            "--target",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "decoder.layers (reversible stack, 2 layers)" in res.output
    assert "decoder.layers.0" not in res.output


def test_profile_runs_with_no_options():
    res = CliRunner().invoke(app, ["profile"])
    assert res.exit_code == 0, res.output
    assert "bert-base" in res.output and "sdpa-efficient" in res.output
    assert "bert.encoder.layer.11" in res.output


@pytest.mark.parametrize(
    "path, depth, expected",
    [
        ("bert.encoder.layer.3.attention.self", None, "bert.encoder.layer.3"),
        ("bert.embeddings.word_embeddings", None, "bert.embeddings"),
        ("classifier", None, "classifier"),
        ("", None, "(model)"),
        ("bert.encoder.layer.3.attention.self", 2, "bert.encoder"),
        ("bert.encoder.layer.3.attention.self", 3, "bert.encoder.layer.3"),
        ("bert.encoder.layer.3.attention.self", 4, "bert.encoder.layer.3.attention"),
        ("model.decoder.layers.11.encoder_attn.q_proj", 9, "decoder.layers.11.encoder_attn.q_proj"),
        ("base_model.model.model.shared", None, "shared"),
        # MEFT's reversible stack: one row by default; its name counts as one component
        ("bert.encoder.layer (reversible stack, 12 layers)", None, "bert.encoder.layer (reversible stack, 12 layers)"),
        (
            "bert.encoder.layer (reversible stack, 12 layers).base_layers.3.output",
            None,
            "bert.encoder.layer (reversible stack, 12 layers)",
        ),
        (
            "bert.encoder.layer (reversible stack, 12 layers).base_layers.3.output",
            4,
            "bert.encoder.layer (reversible stack, 12 layers).base_layers.3",
        ),
    ],
)
def test_group_path(path, depth, expected):
    assert group_path(path, depth) == expected


def test_grouped_layers_sum_in_order(tiny_opt):
    r = memprof.profile(tiny_opt, seq_len=16, batch_size=2)
    grouped = grouped_layers(r.layers)
    assert grouped["saved_bytes"].sum() == r.memory.saved_activations
    assert list(grouped["module"]) == list(dict.fromkeys(group_path(m) for m in r.layers["module"]))
    assert len(grouped) < len(r.layers)


# -- bad input: one line, exit code 2 ------------------------------------------------------------


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["memprof", *args])
    with pytest.raises(SystemExit) as exc:
        run()
    err = capsys.readouterr().err
    return exc.value.code, err


@pytest.fixture
def bad_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    return str(path)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--backbone", "bert-huge"], "unknown backbone 'bert-huge'; use one of bart-base"),
        (["--seq-len", "4096"], "exceeds bert-base's maximum of 512"),
        (["--batch-size", "0"], "batch size 0 must be a whole number of at least 1"),
        (["--method", "prefix-tuning"], "unknown method 'prefix-tuning'; use one of ft, lora"),
        (["--dtype", "fp8"], "unknown dtype 'fp8'; use one of fp32"),
        (["--engine", "tpu"], "unknown engine 'tpu'"),
        (["--attn", "flash"], "unknown attention implementation 'flash'"),
        (["--depth", "0"], "depth 0 must be at least 1"),
        (["--backbone", "{tmp}"], "cannot read backbone config"),  # a folder without config.json
        (["--backbone", "{bad_json}"], "cannot read backbone config"),  # a file that is not JSON
    ],
)
def test_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, bad_json, args, needle):
    args = [a.format(tmp=tmp_path, bad_json=bad_json) for a in args]
    code, err = run_cli(monkeypatch, capsys, "profile", *args)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_engine_without_gpu_is_one_line(monkeypatch, capsys):
    code, err = run_cli(monkeypatch, capsys, "profile", "--engine", "cuda")
    assert code == 2
    assert "engine 'cuda' needs a CUDA GPU and none is visible" in err
    assert len(err.strip().splitlines()) == 1
