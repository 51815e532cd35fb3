"""Module names as results write them, and the layer row each belongs to: the one place for both.

A result's ``module`` column holds ``named_modules`` paths (``memprof.instrument.modules`` records
them), except below a MEFT reversible stack, which is named for what it is.

NOTE [ Reversible stacks ]
``meft.convert`` replaces each stack's ModuleList of layers with a one-element ModuleList holding a
``MEFTStack``, so the stack's path ends in ``.0`` (``bert.encoder.layer.0``) and a per-layer table
would show all twelve layers as "layer 0". The stack is written ``bert.encoder.layer (reversible
stack, 12 layers)`` instead (``11 of 12 layers reversible`` when only the lowest layers run through
the reversible Function), and its row holds what that Function keeps for all its layers together.
The stack's own layers keep the paths they had before the conversion (``bert.encoder.layer.11``,
the adapters of that layer under ``bert.encoder.layer.11.adapters``), so a layer that runs as an
ordinary one (above ``num_rev_layers``, or a top layer whose graph is kept) gets its own row, in
line with the same layer of the other methods. The stack's name holds no layer number and no dot,
so splitting a path on dots keeps it whole.

This module imports neither torch nor meft: reporters read results without them.
"""

from __future__ import annotations

import re

_INDEX = re.compile(r"\d+")
_REVERSIBLE_STACK = re.compile(r".+ \(reversible stack, [^().]*\)")


def reversible_stack_name(container: str, layers: int, reversible: int) -> str:
    """The name of a reversible stack of ``layers`` layers (the lowest ``reversible`` of them
    reversible) that stands in for the layer list at path ``container``."""
    which = f"{layers} layers" if reversible == layers else f"{reversible} of {layers} layers reversible"
    return f"{container} (reversible stack, {which})"


def stack_member_name(rest: str, container: str, stack: str) -> str:
    """The name of a stack's submodule at ``rest`` (relative to the stack), for a stack named
    ``stack`` that stands in for the layer list at ``container``: ``base_layers.3.attention`` ->
    ``{container}.3.attention``, ``adapters.3.ffn`` -> ``{container}.3.adapters.ffn``, anything
    else below the stack's name."""
    head, _, tail = rest.partition(".")
    if head == "base_layers" and tail:
        return f"{container}.{tail}"
    if head == "adapters" and tail:
        index, _, inner = tail.partition(".")
        return f"{container}.{index}.adapters" + (f".{inner}" if inner else "")
    return f"{stack}.{rest}"


def is_layer_component(part: str) -> bool:
    """Whether one dot-separated component of a path ends a layer row: a layer number or a reversible stack."""
    return bool(_INDEX.fullmatch(part) or _REVERSIBLE_STACK.fullmatch(part))


def is_layer_number(part: str) -> bool:
    return bool(_INDEX.fullmatch(part))


def layer_row(module: str) -> str:
    """The layer row a module path is shown in: the path up to its first layer number
    (``bert.encoder.layer.3``) or reversible stack (``bert.encoder.layer (reversible stack, 12 layers)``);
    any other path keeps its first two components (``bert.embeddings``); ``""`` stays ``""``."""
    if not module:
        return ""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if is_layer_component(part):
            return ".".join(parts[: i + 1])
    return ".".join(parts[:2])


#: Wrappers above the model's own module names: peft's, then the task model's base model.
_WRAPPERS = ("base_model.model.", "model.")


def layer_group(module: str, depth: int | None = None) -> str:
    """The row a module is shown in, by every view (``memprof profile``'s table, the per-layer plot).

    The path loses peft's ``base_model.model.`` and a leading ``model.``; then ``depth=None`` gives
    its layer row (``layer_row``: ``encoder.layers.3``, a reversible stack, or the first two
    components) and ``depth=N`` its first N components, a layer number riding along with the name
    before it (``layer.3`` counts once). The root module (``""``) is ``(model)``.
    """
    for prefix in _WRAPPERS:
        if module.startswith(prefix):
            module = module[len(prefix) :]
    if not module:
        return "(model)"
    if depth is None:
        return layer_row(module)
    kept, named = [], 0
    for part in module.split("."):
        if is_layer_number(part):
            kept.append(part)
            continue
        if named == depth:
            break
        kept.append(part)
        named += 1
    return ".".join(kept)
