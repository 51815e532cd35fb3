"""Numerical checks of a converted model.

- ``reconstruction_error``: how well each layer's input is reconstructed from the top of its stack
  by the inverse (MEFT.md, pitfalls: dividing by lam or beta = 0.1 can amplify error about tenfold
  per layer), in a chosen dtype.
- ``starting_point_similarity``: how close the converted model at initialisation is to the
  pre-trained model (the paper's key finding: a PEFT method works when it keeps the starting point).

Both run the model in eval mode (no dropout) under ``torch.no_grad()``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

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
            couplings = stack.couplings()
            inputs, x1, x2 = [], hidden, hidden
            for c in couplings:
                inputs.append((x1, x2))
                x1, x2 = c(x1, x2, call)
            per_stack = []
            for i in reversed(range(len(couplings))):
                x1, x2 = couplings[i].inverse(x1, x2, call)
                if not (torch.isfinite(x1).all() and torch.isfinite(x2).all()):
                    wider = "float32" if torch.finfo(dtype).bits < 32 else "float64"
                    raise MEFTError(
                        f"reconstructed input of {stack.name} layer {i} is not finite in {dtype} after inverting "
                        f"{len(couplings) - i} layers; use {wider}, or fewer reversible layers "
                        f"(num_rev_layers <= {max(len(couplings) - i - 1, 0)})"
                    )
                true1, true2 = inputs[i]
                per_stack.append(LayerReconstruction(stack.name, i, _relative(x1, true1), _relative(x2, true2)))
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
