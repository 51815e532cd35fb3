"""Runtime behaviour: plain eval/no-grad forwards, generate(), RNG handling, FakeTensorMode."""

from __future__ import annotations

import copy

import pytest
import torch
from meft_testing import batch_for, converted_pair, grads_after_step, tiny_model
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode, is_fake

import meft
import meft.reversible


def test_reversible_function_runs_only_when_training_with_grad(function_calls):
    rev, ref = converted_pair("bart-seq2seq", meft.MEFTConfig(variant="meft1", num_rev_layers=1))
    batch = batch_for("bart-seq2seq")
    rev(**batch)
    assert function_calls == [1, 1]  # encoder and decoder, the lowest layer of each

    rev.train()
    with torch.no_grad():
        out = rev(**batch)
    assert out.loss.grad_fn is None
    rev.eval(), ref.eval()
    out = rev(**batch)
    assert function_calls == [1, 1]
    assert torch.equal(out.logits, ref(**batch).logits)  # the same plain forward as ordinary backprop


@pytest.mark.parametrize("case", ["bart-seq2seq", "opt-causal-lm", "opt350m-causal-lm"])
def test_generate_with_cache_matches_generate_without(case, function_calls):
    model = tiny_model(case, dtype=torch.float32)
    torch.manual_seed(1)
    meft.convert(model, meft.MEFTConfig(variant="meft3", init_std=0.5)).eval()  # large adapters: they matter
    batch = batch_for(case)
    kwargs = dict(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=4, do_sample=False
    )
    cached = model.generate(**kwargs)
    assert cached.shape[1] == (5 if case.startswith("bart") else batch["input_ids"].shape[1] + 4)
    assert torch.equal(cached, model.generate(**kwargs, use_cache=False))
    assert function_calls == []


def _train(model, batch, steps=3, seed=7):
    model = copy.deepcopy(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    torch.manual_seed(seed)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_same_seed_gives_same_losses_run_after_run():
    rev, ref = converted_pair("bert-cls", meft.MEFTConfig(variant="meft1"), dtype=torch.float32)
    batch = batch_for("bert-cls")
    first = _train(rev, batch)
    assert _train(rev, batch) == first
    assert len(set(first)) == 3  # the steps did train
    assert _train(rev, batch, seed=8) != first  # and dropout does depend on the seed


def test_backward_leaves_the_global_rng_as_ordinary_backprop_does():
    # Recomputation restores the forward's RNG state inside fork_rng: it neither reseeds nor draws.
    rev, ref = converted_pair("opt-causal-lm", meft.MEFTConfig(variant="meft2"))
    batch = batch_for("opt-causal-lm")
    grads_after_step(rev, batch, seed=3)
    after_rev = torch.get_rng_state()
    grads_after_step(ref, batch, seed=3)
    assert torch.equal(after_rev, torch.get_rng_state())


def _fake(model: nn.Module, mode: FakeTensorMode) -> None:
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[name] = nn.Parameter(mode.from_tensor(p), requires_grad=p.requires_grad)
        for name, b in list(module._buffers.items()):
            if b is not None:  # position_ids / token_type_ids buffers are used by the embeddings
                module._buffers[name] = mode.from_tensor(b)


@pytest.mark.parametrize(
    ("case", "variant", "attn"),
    [
        ("bert-cls", "meft1", "eager"),
        ("bart-seq2seq", "meft2", "eager"),
        ("opt-causal-lm", "meft3", "eager"),
        ("bert-cls", "meft3", "sdpa"),
        ("opt350m-causal-lm", "meft1", "sdpa"),
    ],
)
def test_forward_and_backward_under_fake_tensor_mode(case, variant, attn, function_calls):
    model = tiny_model(case, dtype=torch.float32, device="meta", attn=attn)
    meft.convert(model, meft.MEFTConfig(variant=variant))
    mode = FakeTensorMode()
    _fake(model, mode)
    with mode:
        batch = {k: torch.full(v.shape, 2, dtype=v.dtype, device="meta") for k, v in batch_for(case).items()}
        model(**batch).loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(is_fake(p.grad) and p.grad.shape == p.shape for p in trainable)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    assert function_calls  # the reversible path ran


def test_recomputation_runs_under_the_forward_autocast():
    rev, _ = converted_pair("bert-cls", meft.MEFTConfig(variant="meft1"), dtype=torch.float32)
    seen = []
    adapter = rev.bert.encoder.layer[0].adapters[0]["ffn"]
    adapter.register_forward_hook(lambda *_: seen.append((torch.is_grad_enabled(), torch.is_autocast_enabled("cpu"))))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = rev(**batch_for("bert-cls")).loss
    loss.backward()
    # forward: once under no_grad (inside the Function); backward: recomputed with grad, autocast back on
    assert seen == [(False, True), (True, True)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_dropout_masks_are_reproduced_and_the_cuda_rng_left_alone():
    rev, ref = converted_pair("bart-seq2seq", meft.MEFTConfig(variant="meft2"), device="cuda")
    batch = {k: v.cuda() for k, v in batch_for("bart-seq2seq").items()}
    loss_rev, grads_rev = grads_after_step(rev, batch, seed=5)
    after = torch.cuda.get_rng_state()
    loss_ref, grads_ref = grads_after_step(ref, batch, seed=5)
    assert torch.equal(after, torch.cuda.get_rng_state())
    assert torch.equal(loss_rev, loss_ref)
    for name, g in grads_ref.items():
        if g.abs().max() > 0:
            assert float((grads_rev[name] - g).norm() / g.norm()) < 1e-7, name
