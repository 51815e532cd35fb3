"""convert / unconvert / save_adapters / load_adapters, and the errors they raise."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as tf
from meft_testing import MODELS, batch_for, hf_config, tiny_model

import meft
from meft.reversible import MEFTStack

HEADS = {"bert-cls": "classifier.", "roberta-cls": "classifier.", "bart-cls": "classification_head.",
         "bart-seq2seq": None, "opt-causal-lm": None, "opt350m-causal-lm": None}


@pytest.mark.parametrize("case", list(MODELS))
def test_only_adapters_and_task_head_are_trainable(case):
    model = meft.convert(tiny_model(case), meft.MEFTConfig())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = HEADS[case]
    assert trainable == {n for n in trainable if ".adapters." in n or (head and n.startswith(head))}
    assert any(head and n.startswith(head) for n in trainable) == bool(head)
    assert not model.get_input_embeddings().weight.requires_grad
    out = model.get_output_embeddings()
    assert out is None or not out.weight.requires_grad  # tied LM heads are embeddings: frozen
    assert set(meft.trained_parameters(model)) == trainable


@pytest.mark.parametrize(("case", "stacks"), [("bert-cls", ["encoder"]), ("bart-seq2seq", ["encoder", "decoder"]),
                                              ("opt-causal-lm", ["decoder"])])
def test_every_layer_stack_is_wrapped_with_its_original_layers_inside(case, stacks):
    model = tiny_model(case)
    layers = [m for m in model.modules() if type(m).__name__.endswith("Layer")]
    meft.convert(model, meft.MEFTConfig(variant="meft3"))
    found = [m for m in model.modules() if isinstance(m, MEFTStack)]
    assert [s.name for s in found] == stacks
    assert [layer for s in found for layer in s.base_layers] == layers
    assert all(len(s.adapters) == 2 and set(s.adapters[0]) == {"attn", "ffn"} for s in found)


def test_adapters_follow_init_std_and_zero_biases():
    model = meft.convert(tiny_model("bert-cls", hidden_size=32, intermediate_size=64), meft.MEFTConfig(adapter_dim=64))
    adapter = model.bert.encoder.layer[0].adapters[0]["ffn"]
    assert abs(adapter.down.weight.std().item() - 0.02) < 0.002
    assert adapter.down.bias.abs().max() == 0 and adapter.up.bias.abs().max() == 0
    assert adapter.down.weight.dtype == torch.float64  # follows the layer's dtype


def test_unconvert_restores_the_original_model():
    model = tiny_model("opt-causal-lm").eval()
    names = [n for n, _ in model.named_parameters()]
    batch = batch_for("opt-causal-lm")
    with torch.no_grad():
        before = model(**batch).logits
    meft.convert(model, meft.MEFTConfig())
    meft.unconvert(model)
    assert [n for n, _ in model.named_parameters()] == names
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)


@pytest.mark.parametrize("case", ["bert-cls", "bart-seq2seq", "opt-causal-lm"])
def test_save_then_load_into_a_fresh_conversion_gives_identical_outputs(case, tmp_path):
    original = tiny_model(case)
    config = meft.MEFTConfig(variant="meft2", adapter_dim=4)
    trained = meft.convert(copy.deepcopy(original), config)
    with torch.no_grad():  # stand-in for training: move every trained parameter
        for p in meft.trained_parameters(trained).values():
            p.add_(torch.randn_like(p))
    folder = meft.save_adapters(trained, tmp_path / "adapters")
    torch.manual_seed(123)
    fresh = meft.load_adapters(meft.convert(copy.deepcopy(original), config), folder)

    batch = batch_for(case)
    trained.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(**batch).logits, trained(**batch).logits)
    saved = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(folder / "adapter_model.safetensors"))
    assert set(saved) == set(meft.trained_parameters(trained))  # adapters and head only


def test_load_refuses_adapters_of_another_config(tmp_path):
    folder = meft.save_adapters(meft.convert(tiny_model("bert-cls"), meft.MEFTConfig(adapter_dim=4)), tmp_path)
    with pytest.raises(meft.MEFTError, match="adapter_dim=4.*adapter_dim=8.*MEFTConfig.from_dict"):
        meft.load_adapters(meft.convert(tiny_model("bert-cls"), meft.MEFTConfig()), folder)
    with pytest.raises(meft.MEFTError, match="meft.save_adapters"):
        meft.load_adapters(meft.convert(tiny_model("bert-cls"), meft.MEFTConfig()), tmp_path / "nothing")


def _gpt2():
    return tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=64, n_positions=16))


def _twice():
    model = meft.convert(tiny_model("bert-cls"), meft.MEFTConfig())
    return meft.convert(model, meft.MEFTConfig())


ERRORS = {
    "unsupported architecture": (lambda: meft.convert(_gpt2(), meft.MEFTConfig()),
                                 ["GPT2LMHeadModel", "'gpt2'", "bert, roberta, bart, opt"]),
    "not a model": (lambda: meft.convert(torch.nn.Linear(2, 2), meft.MEFTConfig()), ["Linear", "not supported"]),
    "converted twice": (_twice, ["converted to MEFT already", "unconvert"]),
    "num_rev_layers above depth": (lambda: meft.convert(tiny_model("bert-cls"), meft.MEFTConfig(num_rev_layers=3)),
                                   ["num_rev_layers=3", "2 layers", "<= 2"]),
    "bart num_rev_layers counts per stack": (
        lambda: meft.convert(tiny_model("bart-seq2seq"), meft.MEFTConfig(num_rev_layers=4)), ["encoder", "<= 2"]),
    "layerdrop": (lambda: meft.convert(tiny_model("opt-causal-lm", layerdrop=0.1), meft.MEFTConfig()),
                  ["layerdrop=0.1", "layerdrop = 0.0"]),
    "bert decoder": (lambda: meft.convert(tf.BertForSequenceClassification(hf_config("bert-cls", is_decoder=True)),
                                          meft.MEFTConfig()), ["is_decoder=True", "set both to False"]),
    "config type": (lambda: meft.convert(tiny_model("bert-cls"), {"variant": "meft1"}), ["dict", "MEFTConfig"]),
    "unconvert plain model": (lambda: meft.unconvert(tiny_model("bert-cls")), ["not converted"]),
    "save plain model": (lambda: meft.save_adapters(tiny_model("bert-cls"), "/tmp/unused-meft"), ["not converted"]),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors_are_one_line_with_value_constraint_and_fix(name):
    call, needles = ERRORS[name]
    with pytest.raises(meft.MEFTError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
