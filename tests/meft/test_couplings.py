"""One inverse per coupling, shared by the reversible backward and meft.diagnostics, and couplings built
once per stack and dtype (meft.reversible NOTE [ Couplings built once ])."""

from __future__ import annotations

import copy

import pytest
import torch
from meft_testing import batch_for, converted_pair, grads_after_step, tiny_model

import meft
import meft.reversible
from meft.adapter import Adapter
from meft.convert import stacks
from meft.coupling import Coupling, evaluate


def _float_model(layers: int = 4):
    """Float arithmetic, where an inverse computed any other way rounds differently; no dropout (the
    model's nor the adapters'), so training and eval compute the same values; every layer reversible
    (no cached top layer)."""
    config = meft.MEFTConfig(variant="meft3", arithmetic="float", cache_top_layer=False, adapter_dropout=0.0)
    return meft.convert(tiny_model("bert-cls", dtype=torch.float32, dropout=0.0, num_hidden_layers=layers), config)


def test_backward_reconstructs_each_layer_as_the_diagnostics_do_bit_for_bit():
    model = _float_model()
    batch = batch_for("bert-cls")
    backward = [(r.layer, r.relative) for r in meft.gradient_fidelity(model, batch).layers]
    diagnostics = [(r.layer, r.error) for r in meft.reconstruction_error(model, batch, torch.float32)]
    assert backward == diagnostics
    assert all(error > 0 for _, error in backward)  # float rounding shows, so another inverse would too


def test_backward_and_diagnostics_both_call_coupling_inverse(monkeypatch):
    calls = []
    original = Coupling.inverse

    def counting(self, o1, o2, kept, call, run=evaluate):
        calls.append((self.name, "backward" if run is not evaluate else "diagnostics"))
        return original(self, o1, o2, kept, call, run)

    monkeypatch.setattr(Coupling, "inverse", counting)
    model = _float_model(layers=2)
    batch = batch_for("bert-cls")
    grads_after_step(model, batch)
    meft.reconstruction_error(model, batch, torch.float32)
    assert calls == [
        ("encoder layer 1", "backward"),
        ("encoder layer 0", "backward"),
        ("encoder layer 1", "diagnostics"),
        ("encoder layer 0", "diagnostics"),
    ]


def _used_couplings(monkeypatch) -> list[list[Coupling]]:
    """The couplings each call of the reversible Function ran, one list per call."""
    used = []
    original = meft.reversible.reversible

    def spying(couplings, *args, **kwargs):
        used.append(couplings)
        return original(couplings, *args, **kwargs)

    monkeypatch.setattr(meft.reversible, "reversible", spying)
    return used


def _same_objects(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _shares_any(a: list, b: list) -> bool:
    return any(x is y for x in a for y in b)


def test_couplings_are_built_once_and_again_for_a_new_dtype(monkeypatch):
    used = _used_couplings(monkeypatch)
    rev, ref = converted_pair("bert-cls", meft.MEFTConfig(variant="meft1"), dtype=torch.float64)
    batch = batch_for("bert-cls")
    grads_after_step(rev, batch)
    grads_after_step(rev, batch)
    assert len(used) == 2 and _same_objects(used[0], used[1])
    assert used[0][0].arith.dtype == torch.float64

    rev.to(torch.float32)
    ref.to(torch.float32)
    loss_rev, grads_rev = grads_after_step(rev, batch)
    loss_ref, grads_ref = grads_after_step(ref, batch)
    assert used[2][0].arith.dtype == torch.float32 and not _shares_any(used[0], used[2])
    # exact arithmetic: the same bits as ordinary backprop in float32 (docs/MEFT.md section 4, item 7)
    assert torch.equal(loss_rev, loss_ref)
    assert all(torch.equal(grads_rev[n], g) for n, g in grads_ref.items())


def test_couplings_are_rebuilt_when_what_they_hold_changes(monkeypatch):
    used = _used_couplings(monkeypatch)
    model = meft.convert(tiny_model("bert-cls"), meft.MEFTConfig(variant="meft3", cache_top_layer=False))
    (_, stack), batch = stacks(model)[0], batch_for("bert-cls")
    grads_after_step(model, batch)
    fresh = Adapter(16, 8, "gelu", 0.1, 0.02, dtype=torch.float64)
    stack.adapters[1]["ffn"] = fresh  # G of layer 1 reads the new adapter
    grads_after_step(model, batch)
    assert not _shares_any(used[0], used[1])
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in fresh.parameters())

    stack.meft_config.arithmetic = "float"  # MEFTConfig is mutable: the couplings follow it
    grads_after_step(model, batch)
    assert [c.arith.name for c in used[2]] == ["float", "float"]


def test_a_deep_copy_runs_its_own_layers(monkeypatch):
    used = _used_couplings(monkeypatch)
    model = meft.convert(tiny_model("bert-cls"), meft.MEFTConfig(cache_top_layer=False))
    batch = batch_for("bert-cls")
    grads_after_step(model, batch)  # the original's couplings are built, and copied with it
    model.zero_grad(set_to_none=True)
    twin = copy.deepcopy(model)
    _, grads = grads_after_step(twin, batch)
    ((_, stack),) = stacks(twin)
    pairs = zip(used[1], stack.base_layers, stack.adapters)
    assert all(c.modules[0] is layer and c.modules[1] is adapters for c, layer, adapters in pairs)
    assert all(p.grad is None for p in model.parameters())  # the original's adapters got nothing
    assert all(g.abs().max() > 0 for n, g in grads.items() if ".adapters." in n)


@pytest.mark.parametrize("arithmetic", ["exact", "float"])
def test_eval_forward_reuses_the_training_couplings(arithmetic):
    model = meft.convert(tiny_model("bert-cls"), meft.MEFTConfig(arithmetic=arithmetic))
    ((_, stack),) = stacks(model)
    first = stack.couplings(torch.float64)
    model.eval()
    with torch.no_grad():
        model(**batch_for("bert-cls"))
    assert _same_objects(stack.couplings(torch.float64), first)
