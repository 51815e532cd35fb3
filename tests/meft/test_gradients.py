"""Reversible backprop gives the gradients of ordinary backprop through the same converted model.

One generic check, a table of cases (family/task x variant x arithmetic, partial reversibility),
dropout active, in float64. Deep stacks and low precision: test_exact.py.
"""

from __future__ import annotations

import pytest
import torch
from meft_testing import (
    BATCH,
    MODELS,
    SEQ,
    batch_for,
    check_float64_gradients,
    converted_pair,
    grads_after_step,
    relative_error,
    tiny_model,
)

import meft

VARIANTS = ("meft1", "meft2", "meft3")
FAMILY_CASES = ("bert-cls", "roberta-cls", "bart-seq2seq", "bart-cls", "opt-causal-lm", "opt350m-causal-lm")
CASES = [
    (case, {"variant": v, "arithmetic": a}) for case in FAMILY_CASES for v in VARIANTS for a in ("exact", "float")
] + [
    ("bert-cls", {"variant": "meft1", "num_rev_layers": 1}),
    ("bart-seq2seq", {"variant": "meft3", "num_rev_layers": 1}),
    ("opt-causal-lm", {"variant": "meft2", "merge": "mean"}),
    ("opt-causal-lm", {"variant": "meft1", "merge": "mean", "arithmetic": "float"}),
    ("roberta-cls", {"variant": "meft1", "lam": 1.0, "beta": 1.0}),
    ("roberta-cls", {"variant": "meft3", "lam": 0.5, "beta": -0.75}),
]


def check_gradients(case: str, config: meft.MEFTConfig, **model_kwargs) -> None:
    """The generic check (float64, relative 1e-7; ``meft_testing.check_float64_gradients``)."""
    check_float64_gradients(case, config, tolerance=1e-7, **model_kwargs)


@pytest.mark.matrix(
    keep=lambda p: (
        p["case"] == "bert-cls"
        or set(p["kwargs"]) - {"variant", "arithmetic"}
        or p["kwargs"] == {"variant": "meft1", "arithmetic": "exact"}
    )
)
@pytest.mark.parametrize(
    ("case", "kwargs"), CASES, ids=[f"{c}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for c, kw in CASES]
)
def test_reversible_gradients_equal_ordinary_backprop(case, kwargs):
    check_gradients(case, meft.MEFTConfig(**kwargs))


@pytest.mark.parametrize("case", ["bert-cls", "bart-seq2seq", "opt-causal-lm"])
def test_sdpa_attention_with_dropout_gives_the_same_gradients(case):
    # sdpa draws its attention-dropout mask inside the fused kernel; the RNG restore covers it too.
    check_gradients(case, meft.MEFTConfig(variant="meft2"), attn="sdpa")


@pytest.mark.parametrize("case", ["bart-seq2seq", "bart-cls"])
def test_bart_encoder_gets_gradients_through_cross_attention(case):
    # The encoder's output reaches the loss only through the decoder layers' cross-attention.
    rev, ref = converted_pair(case, meft.MEFTConfig(variant="meft2"))
    _, grads = grads_after_step(rev, batch_for(case))
    encoder = {n: g for n, g in grads.items() if ".encoder." in n}
    assert len(encoder) == 16  # 2 layers x 2 adapters x (2 weights + 2 biases)
    assert all(g.abs().max() > 0 for g in encoder.values())


def test_trainable_embeddings_get_the_gradient_of_the_function_inputs():
    # With the embeddings trainable, x1 and x2 require grad: the Function's dx1 + dx2 reach them.
    rev, ref = converted_pair("opt-causal-lm", meft.MEFTConfig(variant="meft3"))
    for model in (rev, ref):
        model.get_input_embeddings().weight.requires_grad_(True)
    batch = batch_for("opt-causal-lm")
    _, grads_rev = grads_after_step(rev, batch)
    _, grads_ref = grads_after_step(ref, batch)
    name = "model.decoder.embed_tokens.weight"
    assert grads_ref[name].abs().max() > 0
    assert relative_error(grads_rev[name], grads_ref[name]) < 1e-7


def test_no_frozen_parameter_gets_a_gradient_or_becomes_trainable():
    rev, _ = converted_pair("bart-seq2seq", meft.MEFTConfig(variant="meft1"))
    before = {n: p.requires_grad for n, p in rev.named_parameters()}
    grads_after_step(rev, batch_for("bart-seq2seq"))
    assert {n: p.requires_grad for n, p in rev.named_parameters()} == before
    assert all(p.grad is None for p in rev.parameters() if not p.requires_grad)


def test_autograd_grad_works_without_backward():
    # Gradients are returned from the Function, not accumulated inside it, so torch.autograd.grad works.
    rev, ref = converted_pair("opt-causal-lm", meft.MEFTConfig(variant="meft3"))
    batch = batch_for("opt-causal-lm")
    params = [p for p in rev.parameters() if p.requires_grad]
    torch.manual_seed(0)
    grads = torch.autograd.grad(rev(**batch).loss, params)
    _, expected = grads_after_step(ref, batch)
    for g, e in zip(grads, expected.values()):
        assert relative_error(g, e) < 1e-7
    assert all(p.grad is None for p in params)


def _saved_bytes(model, batch) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**batch).loss  # noqa: B018 - the forward is the point; its saved tensors are counted
    return total


@pytest.mark.parametrize("case", ["bert-cls", "opt-causal-lm"])
@pytest.mark.parametrize(("variant", "kept_streams"), [("meft1", 1), ("meft2", 1), ("meft3", 2)])
def test_saved_activations_grow_with_depth_only_by_the_kept_bits(case, variant, kept_streams):
    batch = batch_for(case)
    saved = {}
    for arithmetic in ("exact", "float"):
        for depth in (2, 4):
            for rev in (None, 0):
                model = tiny_model(case, num_hidden_layers=depth)
                meft.convert(model, meft.MEFTConfig(variant=variant, num_rev_layers=rev, arithmetic=arithmetic))
                saved[arithmetic, depth, rev] = _saved_bytes(model, batch)
    # float: only the top two streams (and masks) are kept, whatever the depth
    assert saved["float", 4, None] == saved["float", 2, None]
    # exact: 4 bits per element of each scaled stream per layer (lam or beta = 13/128), packed: B * T * H / 2
    # bytes each, and the checksums (2 int64 per layer)
    per_layer = kept_streams * BATCH * SEQ * 16 // 2 + 2 * 8
    assert saved["exact", 4, None] - saved["exact", 2, None] == 2 * per_layer
    for arithmetic in ("exact", "float"):
        assert saved[arithmetic, 4, 0] > saved[arithmetic, 2, 0] > saved[arithmetic, 2, None]


def test_case_table_covers_every_model():
    assert set(FAMILY_CASES) == set(MODELS)
