"""The fake mode of a formula trace: symbolic sizes, and example values for what the batch decides
(NOTE [ Example values ] in ``symbolic.py``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch._decomp import decomposition_table
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensorMode,
    UnsupportedOperatorException,
)
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode, ShapeEnv

from memprof.engines.fake import FACTORIES, asks_all_finite

#: what a fake kernel raises when an output depends on values
DATA_DEPENDENT = (
    DataDependentOutputException,
    DynamicOutputShapeException,
    GuardOnDataDependentSymNode,
    UnsupportedOperatorException,
)


class SymbolicFakeMode(FakeTensorMode):
    """FakeTensorMode with a ShapeEnv whose batch carries example values (NOTE [ Example values ])."""

    def __init__(self) -> None:
        super().__init__(shape_env=ShapeEnv(specialize_zero_one=False), allow_non_fake_inputs=False)
        #: example size -> the symbol it stands for (``HINT`` b, s and b·s)
        self.sizes: dict[int, Any] = {}

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if asks_all_finite(func, args):
            return True
        if func is aten.slice_backward.default and _elided_slice(*args):
            func, args, kwargs = aten.alias.default, (args[0],), {}  # NOTE [ Slices indexing elides ]
        example = _example_call(func, args, kwargs)
        if example is _NONE:
            if func is aten.index.Tensor and _has_example(args[1]):
                args = (args[0], [p for i in args[1] for p in self._positions(i)])
            return self._fake(func, types, args, kwargs)
        if func is aten._local_scalar_dense.default:
            return example  # the value at the example sizes: a check on the batch, the same at any size
        try:
            out = self._fake(func, types, args, kwargs)
        except DATA_DEPENDENT:
            out = _NONE
        if out is _NONE or _value_sized(out):  # unique_consecutive, nonzero: sizes only values decide
            out = _tree(example, self._like)
        _attach(out, example)
        return out

    def _fake(self, func, types, args, kwargs):
        if func in _DECOMPOSED:
            with self:
                return decomposition_table[func](*args, **kwargs)
        return super().__torch_dispatch__(func, types, args, kwargs)

    def _like(self, real: torch.Tensor) -> torch.Tensor:
        """A fake tensor shaped like ``real``, its sizes mapped back to symbols."""
        with self:
            fake = torch.empty([self.sizes.get(n, n) for n in real.shape], dtype=real.dtype)
        fake._memprof_example = real
        return fake

    def _positions(self, index: Any) -> list[Any]:
        """A boolean index with an example value as the integer positions it selects, one index per
        dimension it covers (``x[mask] == x[mask.nonzero().unbind(1)]``), each carrying its example."""
        if not (isinstance(index, torch.Tensor) and index.dtype == torch.bool and _has_example([index])):
            return [index]
        return [self._like(p) for p in index._memprof_example.nonzero().unbind(1)]


_NONE = object()
aten = torch.ops.aten
#: Operators whose fake kernel reads concrete sizes (and so would fix b and s to their example
#: values): run through their Python decomposition, which keeps sizes symbolic. Causal-LM losses
#: pad the labels (``F.pad(labels, (0, 1))``).
_DECOMPOSED = frozenset({aten.constant_pad_nd.default})


# NOTE [ Slices indexing elides ]
# Python indexing skips a slice that keeps a whole dimension (``x[:, 0]``: ``:`` from 0 to the end):
# on concrete sizes it runs only the select, so backward allocates one gradient (select_backward's).
# On a symbolic dimension torch cannot tell that the open end (2**63 - 1) is past the size, so it runs
# the slice too: a view, free in the forward, but backward's slice_backward then allocates a second
# gradient of the whole input (b·s·hidden for BERT's and RoBERTa's first-token pooling), which a
# profile never allocates, and the formula's peak came out above the profile's where that moment is
# the peak (a RoBERTa LST step at b = 2, s = 37). Such a slice's backward is the gradient itself: an
# alias, no new storage, as the concrete step has it.
_OPEN_END = 2**62  # Python's open slice end is sys.maxsize; anything this large is past any size


def _elided_slice(grad: Any, input_sizes: Any, dim: int, start: Any, end: Any, step: Any) -> bool:
    """Whether slice_backward's slice kept a whole symbolic dimension, as indexing's ``:`` does."""
    return (
        isinstance(input_sizes[dim], torch.SymInt)
        and isinstance(start, int)
        and start == 0
        and isinstance(end, int)
        and end >= _OPEN_END
        and step == 1
    )


def _has_example(xs: Any) -> bool:
    return any(isinstance(x, torch.Tensor) and hasattr(x, "_memprof_example") for x in xs or ())


def _example_call(func, args, kwargs) -> Any:
    """``func`` run on the example values, when every tensor argument has one (and there is one)."""
    leaves = torch.utils._pytree.tree_leaves((args, kwargs))
    tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
    if not tensors and not (func in FACTORIES and kwargs.get("device", None) in (None, "cpu", torch.device("cpu"))):
        return _NONE
    if not all(hasattr(t, "_memprof_example") for t in tensors):
        return _NONE
    if any(isinstance(x, torch.SymInt) and x.node.hint is None for x in leaves):
        return _NONE  # a size only a value decides (inside fake implementations): no example

    def example(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x._memprof_example
        if isinstance(x, torch.SymInt):
            return x.node.hint
        return x

    ex_args, ex_kwargs = torch.utils._pytree.tree_map(example, (args, kwargs))
    with outside_mode():
        return func(*ex_args, **ex_kwargs)


def _value_sized(out: Any) -> bool:
    return any(
        isinstance(t, torch.Tensor) and any(isinstance(n, torch.SymInt) and n.node.hint is None for n in t.shape)
        for t in torch.utils._pytree.tree_leaves(out)
    )


def _tree(x: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    return torch.utils._pytree.tree_map(lambda t: fn(t) if isinstance(t, torch.Tensor) else t, x)


def _attach(out: Any, example: Any) -> None:
    outs = torch.utils._pytree.tree_leaves(out)
    examples = torch.utils._pytree.tree_leaves(example)
    if len(outs) == len(examples):
        for o, e in zip(outs, examples):
            if isinstance(o, torch.Tensor) and isinstance(e, torch.Tensor):
                o._memprof_example = e


@contextlib.contextmanager
def outside_mode():
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes():
        yield
