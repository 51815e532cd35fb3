"""The formula of a deep model from symbolic traces of shallow copies of it (NOTE [ Composing depth ]
in memprof.results.depth): three traces of a few layers instead of one of them all.

The copies differ from the model only in their number of layers (every layer field of the family:
BART's encoder and decoder together, so a model whose stacks differ in depth is traced whole) and
in per-layer lists cut to that depth (Qwen2's ``layer_types``); a model whose layers are not all of
one type (transformers' ``layer_types``: sliding-window layers above ``max_window_layers``) is traced
whole, as is one whose stacks differ in depth. Traces at ``START``, ``START + 1`` and ``START + 2``
layers: the first two grown by one layer must give the third exactly, or the model is traced whole
(``NotComposable`` says why). ``START`` is three: a stack's bottom and top layer, which MEFT treats
apart from the others (its bottom skips the input's gradient, its top can keep its graph), and a
layer of the middle are in every copy, so what the next copy adds is one more layer like the middle
one, next to it. Only a method that says its layers are alike at any depth is composed
(``Method.layers_alike``; top-k, whose trainable layers the depth decides, is traced whole).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from memprof import methods
from memprof.engines.config import ProfileConfig
from memprof.models.backbones import Backbone
from memprof.results.depth import NotComposable, Token, grow_count, grow_rows, grow_timeline, replay
from memprof.results.formula import Formula
from memprof.results.polynomial import Poly

__all__ = ["MIN_DEPTH", "START", "NotComposable", "compose", "depth_of", "shallow_copy"]

#: the depth of the shallowest copy traced: a bottom, a middle and a top layer
START = 3
#: composing is worth its three traces from about this depth on: 0.52-0.68 of one trace's time at
#: 32 layers, 1.16-1.24 at 16 (benchmarks/composition_speed.py, BENCHMARKS.md "Composing depth")
MIN_DEPTH = 24

TraceFn = Callable[[ProfileConfig], tuple[Formula, list[Token]]]


def depth_of(backbone: Backbone) -> int | None:
    """The model's number of layers, where every layer field of its family gives the same; else None."""
    depths = {int(backbone.get(name) or 0) for name in backbone.spec.fields.layers}
    return depths.pop() if len(depths) == 1 else None


def shallow_copy(config: ProfileConfig, depth: int) -> ProfileConfig:
    """``config`` with a model of ``depth`` layers (same name: the copy answers for the model)."""
    backbone = config.resolved
    full = depth_of(backbone)
    if full is None:
        raise NotComposable(f"{backbone.name}'s stacks differ in depth")
    cfg = dict(backbone.config)
    for name in backbone.spec.fields.layers:
        cfg[name] = depth
    for key, value in backbone.config.items():
        if isinstance(value, list) and len(value) == full > 1:  # one entry per layer
            if any(v != value[0] for v in value):
                raise NotComposable(f"{backbone.name}'s layers differ ({key} = {value!r})")
            cfg[key] = value[:depth]
    # a type per layer that transformers derives from a threshold (Qwen2's sliding-window layers from
    # max_window_layers): copies below the threshold would have one type where the model has two
    types = getattr(backbone.hf_config(), "layer_types", None)
    if types is not None and len(set(types)) > 1:
        raise NotComposable(
            f"{backbone.name}'s layers are of {len(set(types))} types ({', '.join(sorted(set(types)))})"
        )
    return replace(config, resolved=replace(backbone, config=cfg))


def compose(config: ProfileConfig, trace: TraceFn, start: int = START) -> Formula:
    """The formula of ``config``'s step grown from traces of ``start``, ``start + 1`` and ``start + 2``
    layers (``trace``: a config -> its formula and storage timeline). NotComposable where the third
    is not the first two grown by one layer, or the model is no deeper than the copies.

    It pays from about ``MIN_DEPTH`` layers: a trace costs a fixed part (building the model, the
    symbolic machinery's calls outside the layers) and a part per layer, and three shallow traces
    pay the fixed part three times."""
    if not methods.get(config.method).layers_alike:
        raise NotComposable(
            f"method {config.method!r} does not say its layers are alike at any depth (Method.layers_alike)"
        )
    depth = depth_of(config.resolved)
    if depth is None:
        raise NotComposable(f"{config.resolved.name}'s stacks differ in depth")
    if depth <= start + 2:
        raise NotComposable(f"{config.resolved.name} has {depth} layers, no more than the copies traced")
    (f0, t0), (f1, t1), (f2, t2) = (trace(shallow_copy(config, start + i)) for i in range(3))
    for f in (f1, f2):
        if (f.attn_implementation, f.bounds, f.valid, f.how) != (f0.attn_implementation, f0.bounds, f0.valid, f0.how):
            raise NotComposable("the shallow copies take other branches (attention, bounds or conditions)")
    counts = [(f.trainable_params, f.total_params) for f in (f0, f1, f2)]
    if any(grow_count(counts[0][i], counts[1][i], 2) != counts[2][i] for i in range(2)):
        raise NotComposable(f"{start + 2} layers are not {start + 1} layers and one more: the parameter counts differ")
    k = depth - start
    parts = replay(grow_timeline((t0, t1, t2), k))  # each checks the growth by two layers against the third
    layers = grow_rows((f0.layers, f1.layers, f2.layers), k)
    parts["sums"]["saved_activations"] = sum((p for _, cats in layers for p in cats.values()), Poly())
    return replace(
        f2,
        trainable_params=grow_count(f0.trainable_params, f1.trainable_params, k),
        total_params=grow_count(f0.total_params, f1.total_params, k),
        sums=parts["sums"],
        peaks=parts["peaks"],
        peak_activations=parts["peak_activations"],
        layers=layers,
        note=f"composed from symbolic traces of {start}, {start + 1} and {start + 2} of its {depth} layers",
    )
