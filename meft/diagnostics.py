"""Numerical checks of a converted model.

- ``gradient_fidelity``: one real training step (dropout active), reversible against ordinary
  backprop through the same model: each reversible layer's reconstructed input against the
  forward's, and each trainable parameter's gradient (relative error, cosine), in any dtype.
- ``reconstruction_error``: how well each layer's input is reconstructed from the top of its stack
  by the inverse (``Coupling.inverse``, the one the reversible backward runs), as if every layer
  were reversible (eval mode, no dropout). In float arithmetic dividing by lam or beta = 0.1
  amplifies error about tenfold per layer; in exact arithmetic it is 0.
- ``starting_point_similarity``: how close the converted model at initialisation is to the
  pre-trained model (the paper's key finding: a PEFT method works when it keeps the starting point).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from meft import fixed_point
from meft.convert import config_of, stacks
from meft.errors import MEFTError


@dataclass(frozen=True)
class LayerReconstruction:
    """Relative error ||x_rec - x|| / ||x|| of one layer's two input streams, reconstructed top-down."""

    stack: str
    layer: int
    error_x1: float
    error_x2: float

    @property
    def error(self) -> float:
        return max(self.error_x1, self.error_x2)


def _relative(rec: torch.Tensor, true: torch.Tensor) -> float:
    true64 = true.double()
    return float((rec.double() - true64).norm() / true64.norm().clamp_min(1e-300))


def _real(raw: torch.Tensor) -> torch.Tensor:
    """A raw stream as float64 real values (fixed-point streams are decoded exactly)."""
    return raw.double() if raw.is_floating_point() else fixed_point.decode(raw, torch.float64)


def reconstruction_error(
    model: nn.Module, batch: dict[str, Any], dtype: torch.dtype = torch.float32
) -> list[LayerReconstruction]:
    """Per-layer relative reconstruction error of each layer's input, for every stack of ``model``.

    ``model`` (or a copy cast to ``dtype``, when its dtype differs) is run on ``batch`` in eval mode;
    each stack's layers are replayed forward to record their true inputs, then inverted from the
    top of the stack down (as if every layer were reversible) and compared. The model's weights and
    train/eval mode are left as they were.

    Raises MEFTError when a reconstruction is not finite, naming the layer.
    """
    config_of(model)  # raises if not converted
    same_dtype = all(p.dtype == dtype for p in model.parameters() if p.is_floating_point())
    work = model if same_dtype else copy.deepcopy(model).to(dtype)
    was_training = work.training
    work.eval()
    try:
        return _reconstruct(work, batch, dtype)
    finally:
        work.train(was_training)


def _reconstruct(work: nn.Module, batch: dict[str, Any], dtype: torch.dtype) -> list[LayerReconstruction]:
    captured: list[tuple[Any, tuple, dict]] = []

    def capture(module, args, kwargs):
        captured.append((module, args, kwargs))

    handles = [stack.register_forward_pre_hook(capture, with_kwargs=True) for _, stack in stacks(work)]
    try:
        with torch.no_grad():
            work(**batch)
    finally:
        for h in handles:
            h.remove()

    results = []
    with torch.no_grad():
        for stack, args, kwargs in captured:
            hidden, call = stack.bind(args, kwargs)
            call = stack.kind.without_cache(call)
            couplings = stack.couplings(hidden.dtype)
            arith = couplings[0].arith
            inputs, kept = [], []
            x1 = x2 = arith.encode(hidden)
            for c in couplings:
                inputs.append((x1, x2))
                x1, x2, bits = c.step(x1, x2, call)
                kept.append(bits)
            per_stack = []
            for i in reversed(range(len(couplings))):
                x1, x2 = couplings[i].inverse(x1, x2, kept[i], call)
                if not (torch.isfinite(arith.decode(x1)).all() and torch.isfinite(arith.decode(x2)).all()):
                    wider = "float32" if torch.finfo(dtype).bits < 32 else "float64"
                    raise MEFTError(
                        f"reconstructed input of {stack.name} layer {i} is not finite in {dtype} after inverting "
                        f"{len(couplings) - i} layers; use {wider}, or fewer reversible layers "
                        f"(num_rev_layers <= {max(len(couplings) - i - 1, 0)})"
                    )
                true1, true2 = inputs[i]
                per_stack.append(
                    LayerReconstruction(
                        stack.name, i, _relative(_real(x1), _real(true1)), _relative(_real(x2), _real(true2))
                    )
                )
            results.extend(reversed(per_stack))
    return results


def _final_hidden(model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model.base_model(**inputs).last_hidden_state  # (B, T, H)
    finally:
        model.train(was_training)


def starting_point_similarity(converted: nn.Module, original: nn.Module, batch: dict[str, Any]) -> float:
    """Token-mean cosine similarity of the final hidden states of ``converted`` and ``original``.

    Final hidden states are ``model.base_model(...).last_hidden_state`` (BART: the decoder's output;
    OPT: after the final LayerNorm). Tokens are weighted by ``attention_mask`` when its shape matches.
    """
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    a, b = _final_hidden(converted, inputs), _final_hidden(original, inputs)
    cos = F.cosine_similarity(a.double(), b.double(), dim=-1)  # (B, T)
    mask = inputs.get("attention_mask")
    weights = mask.to(cos.dtype) if mask is not None and mask.shape == cos.shape else torch.ones_like(cos)
    return float((cos * weights).sum() / weights.sum())


@dataclass(frozen=True)
class LayerFidelity:
    """How exactly one reversible layer's input streams came back in backward (0 and 0: bit for bit)."""

    stack: str
    layer: int
    max_abs: float  # max |reconstructed - forward| over both streams, in real units
    relative: float  # ||reconstructed - forward|| / ||forward||, the larger of the two streams


@dataclass(frozen=True)
class ParameterFidelity:
    """One trainable parameter's reversible gradient against ordinary backprop's."""

    name: str
    stack: str  # "encoder", "decoder", ... or "head" for parameters outside the reversible stacks
    layer: int | None
    relative_error: float  # ||g_rev - g_ref|| / ||g_ref|| (0 when both are 0)
    cosine: float  # cosine similarity of g_rev and g_ref (1 when both are 0)
    present: bool  # the reversible step gave it a gradient that is not all zeros


@dataclass
class GradientFidelity:
    """``gradient_fidelity``'s answer: per reversible layer and per trainable parameter."""

    arithmetic: str
    dtype: str
    layers: list[LayerFidelity]
    parameters: list[ParameterFidelity]

    @property
    def worst_relative_error(self) -> float:
        return max((p.relative_error for p in self.parameters), default=0.0)

    @property
    def lowest_cosine(self) -> float:
        return min((p.cosine for p in self.parameters), default=1.0)

    @property
    def max_reconstruction_error(self) -> float:
        return max((r.max_abs for r in self.layers), default=0.0)

    @property
    def missing(self) -> list[str]:
        """Trainable parameters whose reversible gradient is absent or all zeros."""
        return [p.name for p in self.parameters if not p.present]

    def to_dict(self) -> dict[str, Any]:
        return {
            "arithmetic": self.arithmetic,
            "dtype": self.dtype,
            "worst_relative_error": self.worst_relative_error,
            "lowest_cosine": self.lowest_cosine,
            "max_reconstruction_error": self.max_reconstruction_error,
            "missing": self.missing,
            "layers": [vars(r) for r in self.layers],
            "parameters": [vars(p) for p in self.parameters],
        }


def gradient_fidelity(
    model: nn.Module, batch: dict[str, Any], *, autocast: torch.dtype | None = None, seed: int = 0
) -> GradientFidelity:
    """One training step of ``model`` on ``batch`` with its reversible layers, and one with ordinary
    backprop through the same model (every stack's ``num_rev_layers`` set to 0 for the step), with
    the same seed, so dropout draws the same masks (the caller's RNG state is restored afterwards).

    ``batch`` must make the model return a loss (include labels). ``autocast``: run both steps under
    ``torch.autocast`` with this dtype (mixed precision over the model's own weights). The model is
    run in train mode; its weights, gradients, mode and ``num_rev_layers`` are left as they were.
    """
    config = config_of(model)
    found = stacks(model)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    _check_fidelity_inputs(model, batch, autocast, params)
    saved_grads = {n: p.grad for n, p in params.items()}
    was_training = model.training
    forward: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
    layers: list[LayerFidelity] = []

    def observer_for(stack_name: str):
        def observe(phase: str, layer: int, x1: torch.Tensor, x2: torch.Tensor) -> None:
            if phase == "forward":
                forward[stack_name, layer] = (x1, x2)
                return
            true1, true2 = forward.pop((stack_name, layer))
            diffs = [(_real(x) - _real(t)) for x, t in ((x1, true1), (x2, true2))]
            max_abs = max(float(d.abs().max()) for d in diffs)
            rel = max(float(d.norm() / _real(t).norm().clamp_min(1e-300)) for d, t in zip(diffs, (true1, true2)))
            layers.append(LayerFidelity(stack_name, layer, max_abs, rel))

        return observe

    def step(observe: bool) -> dict[str, torch.Tensor | None]:
        for _, stack in found:
            stack.observer = observer_for(stack.name) if observe else None
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        device_type = next(model.parameters()).device.type
        context = torch.autocast(device_type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
        with context:
            out = model(**batch)
        loss = getattr(out, "loss", None)
        if loss is None:
            raise MEFTError("the model returned no loss for this batch; pass a batch with labels")
        loss.backward()
        return {n: p.grad for n, p in params.items()}

    rev_layers = {name: stack.num_rev_layers for name, stack in found}
    devices = [p.device for p in params.values() if p.device.type not in ("cpu", "meta")][:1]
    rng = torch.random.fork_rng(devices=devices, device_type=devices[0].type if devices else "cuda")
    model.train()
    try:
        with rng:  # the caller's RNG state is left as it was
            grads_rev = step(observe=True)
            for _, stack in found:
                stack.num_rev_layers = 0
            grads_ref = step(observe=False)
    finally:
        for name, stack in found:
            stack.num_rev_layers, stack.observer = rev_layers[name], None
        for n, p in params.items():
            p.grad = saved_grads[n]
        model.train(was_training)

    where = _parameter_places(found)
    out = []
    for name in params:
        rev, ref = grads_rev[name], grads_ref[name]
        present = rev is not None and bool(rev.abs().max() > 0)
        rev = torch.zeros_like(params[name]) if rev is None else rev
        ref = torch.zeros_like(params[name]) if ref is None else ref
        stack, layer = where.get(name, ("head", None))
        out.append(ParameterFidelity(name, stack, layer, _relative(rev, ref), _cosine(rev, ref), present))
    dtype = str(autocast or next(iter(params.values())).dtype).replace("torch.", "")
    if autocast is not None:
        dtype = f"mixed-{dtype}"
    layers.sort(key=lambda r: ([n for n, _ in found].index(next(n for n, s in found if s.name == r.stack)), r.layer))
    return GradientFidelity(config.arithmetic, dtype, layers, out)


#: the dtypes torch.autocast runs in, and how a user may spell them
_AUTOCAST = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def _check_fidelity_inputs(model: nn.Module, batch: Any, autocast: Any, params: dict[str, nn.Parameter]) -> None:
    """One-line errors for what gradient_fidelity cannot run, before anything runs."""
    if not isinstance(batch, Mapping):
        raise MEFTError(
            f"batch must be a dict of the model's inputs with labels, got {type(batch).__name__}; pass e.g. "
            "{'input_ids': ids, 'attention_mask': mask, 'labels': labels}"
        )
    if autocast is not None and autocast not in (torch.bfloat16, torch.float16):
        hint = _AUTOCAST.get(str(autocast).lower().removeprefix("torch."))
        fix = (
            f"pass autocast=torch.{str(hint).removeprefix('torch.')}"
            if hint
            else "pass torch.bfloat16 or torch.float16"
        )
        raise MEFTError(f"autocast={autocast!r} is not a torch.autocast dtype (torch.bfloat16 or torch.float16); {fix}")
    if not params:
        raise MEFTError(
            f"{type(model).__name__} has no trainable parameter, so there is no gradient to compare (a model loaded "
            "for inference?); load it with MEFTModel.from_pretrained(..., is_trainable=True) or use meft.convert"
        )


def _parameter_places(found) -> dict[str, tuple[str, int]]:
    places = {}
    for path, stack in found:
        for i, adapters in enumerate(stack.adapters):
            for pname, _ in adapters.named_parameters():
                places[f"{path}.adapters.{i}.{pname}"] = (stack.name, i)
    return places


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.double().flatten(), b.double().flatten()
    if torch.equal(a64, b64):
        return 1.0
    return float(F.cosine_similarity(a64, b64, dim=0, eps=1e-300))
