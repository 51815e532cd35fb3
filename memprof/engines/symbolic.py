"""The closed form: a ``Formula`` for a configuration, from one fake-tensor step whose batch size
and sequence length are symbols, or fitted from a few exact profiles where that cannot be done.

NOTE [ A symbolic step ]
The fake engine's step runs under a ``FakeTensorMode`` with a ``ShapeEnv``: the batch's two sizes
are symbols ``b`` and ``s`` (with example values ``HINT``), so every storage the step allocates
has a size that is an expression in them, and the same instruments that measure a profile
(``Instrument``: saved-tensor hooks, the live-storage timeline) record those expressions instead
of numbers. Sums (saved bytes per module and category) become polynomials; the peak becomes the
largest of the polynomials of the events that can be the peak (``polynomial.add_candidate``).
Nothing is fitted: the formula holds for every ``b`` and ``s`` the trace's conditions allow
(``ShapeEnv`` guards, e.g. ``s <= 512`` from the position table).

NOTE [ Example values ]
The fake engine's batch is real (NOTE [ The batch is real ]) and the bookkeeping derived from it is
computed on real values: transformers drops an all-ones padding mask after reading it, BART's head
picks each row's last ``</s>`` with boolean indexing. Here the batch's tensors are symbolic fake
tensors that also carry the real batch at the example sizes (``_memprof_example``), and so does
every tensor computed from the batch alone (and the factories ``ones``, ``arange``...): an operator
whose inputs all carry examples runs on them too. A question about a value (``mask.all()``) is
answered from the example -- checks on the batch, whose answer is the same at every size of this
synthetic batch -- and an output whose size only values decide (``unique_consecutive``,
``nonzero``) gets the example's size written back in symbols (8 -> ``b``, 128 -> ``s``, 1024 ->
``b·s``); a boolean index into an activation becomes the integer positions it selects. So the trace
takes the branches the fake engine's step takes, byte for byte (tested on every method at sizes
the trace never saw).

What still cannot stay symbolic (a value read from an activation, a size fixed by ``int(s)``)
raises ``NotSymbolic`` naming it, and ``derive`` fits the formula instead (``fit``): the
coefficients of ``1, b, s, b·s, s², b·s²`` solved exactly from ``FIT_POINTS``, then checked at
``CHECK_POINT`` by one more profile; any disagreement is an error. The chunked loss
(``memprof.models.losses``) is refused: its number of chunks, ``⌈b·s / CHUNK_SIZE⌉``, is neither a
symbol a trace keeps nor a polynomial a fit finds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch._dynamo.source import ConstantSource
from torch.fx.experimental.symbolic_shapes import ShapeEnv

from memprof.engines import common
from memprof.engines.config import ProfileConfig
from memprof.engines.fake import fakeify, forward_context, known_values_for_transformers
from memprof.engines.formula_fit import disagreement_with, fit
from memprof.engines.kernels import KernelModel
from memprof.engines.registry import traceable
from memprof.engines.symbolic_mode import DATA_DEPENDENT, SymbolicFakeMode, outside_mode
from memprof.errors import MemprofError
from memprof.instrument.attention import attention_name
from memprof.instrument.live import KINDS
from memprof.instrument.saved import SavedSummary
from memprof.instrument.session import Instrument
from memprof.models import tasks
from memprof.models.losses import CHUNK_SIZE, training_loss
from memprof.results.depth import Token, replay
from memprof.results.formula import Formula
from memprof.results.polynomial import Poly, floor_variable
from memprof.results.result import Result

__all__ = ["HINT", "NotSymbolic", "derive", "disagreement_with", "fit", "trace"]

_MEMPROF = Path(__file__).resolve().parents[1]  # the memprof package: errors raised there are not the model's

#: example sizes of the symbolic trace (distinct, so each batch dimension names one symbol)
HINT = (8, 128)
_B, _S = Poly.var("b"), Poly.var("s")
_ACT = KINDS.index("activations")


class NotSymbolic(Exception):
    """The step cannot be traced with symbolic sizes; the message says where."""


def derive(config: ProfileConfig, profile: Callable[[ProfileConfig], Result] | None = None) -> Formula:
    """The formula of ``config``'s step (its batch size and sequence length are ignored): traced
    symbolically where possible, else fitted (``profile`` runs each fitting profile; default the
    fake engine)."""
    _check(config)
    try:
        return _composed(config) or trace(config)
    except NotSymbolic as why:
        return fit(config, note=f"fitted: the trace cannot stay symbolic ({why})", profile=profile)


def _composed(config: ProfileConfig) -> Formula | None:
    """The formula composed from shallow copies (``engines.composition``) where the model is deep
    enough for that to pay; None where it is not, or where the copies' steps do not compose."""
    from memprof.engines.composition import MIN_DEPTH, NotComposable, compose, depth_of

    if (depth_of(config.resolved) or 0) < MIN_DEPTH:
        return None
    try:
        return compose(config, _trace)
    except NotComposable:
        return None  # traced whole: the same formula, at the cost of every layer


def _check(config: ProfileConfig) -> None:
    if not traceable(config.engine):
        raise MemprofError(
            f"a formula models the fake engine's step, not engine {config.engine!r}; use engine 'fake' (its target "
            "picks the device modelled)"
        )
    if config.loss != "full":
        raise MemprofError(
            f"loss {config.loss!r} has no closed form: its step runs one chunk per {CHUNK_SIZE} tokens, a count of "
            "b·s that a trace fixes (and a fit from small sizes never sees); profile it (memprof profile; memprof "
            "compare profiles it), or pass --loss full"
        )


# -- the symbolic trace -------------------------------------------------------------------------


def trace(config: ProfileConfig) -> Formula:
    """The formula from one symbolic step (NOTE [ A symbolic step ]); NotSymbolic if it cannot be."""
    return _trace(config)[0]


def _trace(config: ProfileConfig) -> tuple[Formula, list[Token]]:
    """``trace``'s formula and the step's storage timeline it was replayed from."""
    mode = SymbolicFakeMode()
    built = common.build(config, "meta", lambda model: (fakeify(model, mode), {})[1])
    env = mode.shape_env
    b, s = (env.create_symintnode(env.create_symbol(h, ConstantSource(n)), hint=h) for n, h in zip("bs", HINT))
    symbols = {b.node.expr: _B, s.node.expr: _S}
    kernels = KernelModel(config.target, config.autocast_dtype)
    forward = forward_context(config, kernels)
    try:
        with mode, kernels, known_values_for_transformers(lambda x: hasattr(x, "_memprof_example")):
            mode.sizes = {HINT[0]: b, HINT[1]: s, HINT[0] * HINT[1]: b * s}
            batch = _symbolic_batch(config, mode.sizes)
            optimizer = common.adamw(built.model, foreach=config.target == "cuda")
            common.prepare(built.model, optimizer, config.step)
            inst = _SymbolicInstrument(built.model, optimizer, symbols)
            with inst:
                inst.begin_forward(batch)
                with forward():
                    loss = training_loss(built.model, batch, config.loss)
                inst.begin_backward(loss)
                kernels.backward(loss)
                inst.begin_optimizer()
                optimizer.step()
                inst.end()
                del loss
            optimizer.state.clear()
    except DATA_DEPENDENT as exc:
        raise NotSymbolic(f"{type(exc).__name__}: {_first_line(exc)}") from None
    except RuntimeError as exc:
        if isinstance(exc, NotImplementedError) or _raised_by_memprof(exc):
            raise  # a gap or a bug of the trace itself, not a model refusing symbolic sizes
        # the model refused the symbolic sizes, e.g. a position table shorter than them
        raise NotSymbolic(f"the step failed on symbolic sizes ({_first_line(exc)})") from None
    finally:
        built.model.zero_grad(set_to_none=True)
    fixed = [
        str(sym)
        for sym in symbols
        if sym in env.replacements or sym in getattr(env, "var_to_range", {}) and _is_point(env.var_to_range[sym])
    ]
    if fixed:
        raise NotSymbolic(f"the step fixed {', '.join(fixed)} to its example value")
    parts = inst.measurement
    bounds, other = _bounds(env, symbols, config.resolved.max_seq_len)
    formula = Formula(
        backbone=config.backbone,
        method=config.method,
        task=config.task,
        dtype=config.dtype,
        target=config.target,
        attn_implementation=attention_name(kernels.choices, config.attn),
        how="symbolic",
        trainable_params=built.trainable,
        total_params=built.total,
        sums=parts["sums"],
        peaks=parts["peaks"],
        peak_activations=parts["peak_activations"],
        layers=parts["layers"],
        valid=[*other, *parts["assumed"]],
        points=[HINT],
        bounds=bounds,
    )
    return formula, parts["tokens"]


def _raised_by_memprof(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is memprof's own code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_MEMPROF)


def _symbolic_batch(config: ProfileConfig, size_of: dict[int, torch.SymInt]) -> dict[str, torch.Tensor]:
    """The batch ``tasks.make_batch`` makes, as fake tensors whose sizes are ``b`` and ``s``."""
    with outside_mode():
        example = tasks.make_batch(config.resolved, config.task, *HINT, seed=config.seed)
    batch = {k: torch.empty([size_of.get(n, n) for n in v.shape], dtype=v.dtype) for k, v in example.items()}
    for k, t in batch.items():
        t._memprof_example = example[k]
    return batch


class _SymbolicInstrument(Instrument):
    """The Instrument with symbolic byte counts: its measurement is the formula's parts."""

    def __init__(self, model, optimizer, symbols: dict) -> None:
        super().__init__(model, optimizer, label="memprof formula")
        self._to_poly = _Converter(symbols)
        self._rows: dict[str, dict[str, Any]] = {}

    def _summarize_saved(self) -> SavedSummary:
        rows, alive = self.saved.grouped()
        self._rows = rows
        return SavedSummary(storage_ids=frozenset(alive))

    def _measure(self) -> dict[str, Any]:  # type: ignore[override]
        live = self.live
        poly = self._to_poly
        tokens = _tokens(live, self._classify(), self._saved_keys, [poly(n) for n in live.nbytes])
        parts = replay(tokens)
        parts["tokens"] = tokens
        parts["layers"] = [(m, {c: poly(n) for c, n in cats.items() if n != 0}) for m, cats in self._rows.items()]
        parts["assumed"] = poly.assumed
        parts["sums"]["saved_activations"] = sum(
            (poly(n) for cats in self._rows.values() for n in cats.values()), Poly()
        )
        return parts


def _tokens(live, kinds: list[int], saved_keys: set[int], nbytes: list[Poly]) -> list[Token]:
    """The step's storage timeline as tokens (``memprof.results.depth``): each event's storage kind
    and bytes, and whether it is an activation alive when backward starts that no saved tensor keeps."""
    bwd = live.marks.get("backward", live.marks.get("end", len(live.events)))
    tokens = []
    for ev in live.events:
        key = ev if ev >= 0 else ~ev
        unattributed = (
            ev >= 0
            and kinds[key] == _ACT
            and live.born[key] < bwd
            and (live.died[key] < 0 or live.died[key] >= bwd)
            and key not in saved_keys
        )
        tokens.append(Token(ev >= 0, kinds[key], nbytes[key], unattributed))
    return tokens


class _Converter:
    """A storage size (an int, or a SymInt of the trace) as a Poly in ``b`` and ``s``."""

    def __init__(self, symbols: dict) -> None:
        self.symbols = symbols
        self.cache: dict[Any, Poly] = {}
        #: conditions chosen where a size is the larger of two polynomials (``s - 1 >= 1``)
        self.assumed: list[str] = []

    def __call__(self, n: Any) -> Poly:
        if isinstance(n, int):
            return Poly.const(n)
        expr = n.node.expr
        if expr not in self.cache:
            self.cache[expr] = self.expr(expr)
        return self.cache[expr]

    def expr(self, e) -> Poly:
        import sympy
        from torch.utils._sympy.functions import CeilToInt, FloorDiv, IntTrueDiv, Max, Mod, PythonMod

        if e in self.symbols:
            return self.symbols[e]
        if isinstance(e, sympy.Integer):
            return Poly.const(int(e))
        if isinstance(e, sympy.Add):
            return sum((self.expr(a) for a in e.args), Poly())
        if isinstance(e, sympy.Mul):
            out = Poly.const(1)
            for a in e.args:
                out = out * self.expr(a)
            return out
        if isinstance(e, sympy.Pow) and isinstance(e.exp, sympy.Integer) and int(e.exp) > 0:
            out = Poly.const(1)
            for _ in range(int(e.exp)):
                out = out * self.expr(e.base)
            return out
        if isinstance(e, FloorDiv) and isinstance(e.args[1], sympy.Integer):
            return floor_variable(self.expr(e.args[0]), int(e.args[1]))
        if isinstance(e, (sympy.Mod, Mod, PythonMod)) and isinstance(e.args[1], sympy.Integer):
            k = int(e.args[1])  # x mod k = x - k·⌊x/k⌋ (padding to a multiple of k)
            x = self.expr(e.args[0])
            return x - floor_variable(x, k) * k
        if isinstance(e, (sympy.Max, Max)):
            args = [self.expr(a) for a in e.args]
            top = next((a for a in args if a.is_max_of(args)), None)
            if top is None:  # the largest at the example sizes, assumed (and said) to stay so
                top = max(args, key=lambda a: a(*HINT))
                self.assumed.extend(
                    f"{top} >= {a}" for a in args if a is not top and f"{top} >= {a}" not in self.assumed
                )
            return top
        if (
            isinstance(e, CeilToInt)
            and isinstance(e.args[0], IntTrueDiv)
            and isinstance(e.args[0].args[1], sympy.Integer)
        ):
            k = int(e.args[0].args[1])  # ⌈x/k⌉ = ⌊(x + k - 1)/k⌋ for integer x
            return floor_variable(self.expr(e.args[0].args[0]) + (k - 1), k)
        raise NotSymbolic(f"a storage size {e} is not a polynomial in b and s")


def _bounds(env: ShapeEnv, symbols: dict, max_positions: int) -> tuple[dict[str, int], list[str]]:
    """Where the trace's guards hold, as bounds (``b >= 2``: a batch of one takes other branches, a
    view instead of a copy; ``s <= 512``), and the guards those bounds do not imply, as text."""
    import sympy

    b, s = list(symbols)
    guards = [g.expr for g in env.guards if g.expr.free_symbols & set(symbols)]

    def holds(bv: int, sv: int, exprs=guards) -> bool:
        return all(bool(e.xreplace({b: sympy.Integer(bv), s: sympy.Integer(sv)})) for e in exprs)

    b_min = next((v for v in range(1, HINT[0] + 1) if holds(v, HINT[1])), HINT[0])
    s_min = next((v for v in range(1, HINT[1] + 1) if holds(HINT[0], v)), HINT[1])
    s_max = next((v for v in (max_positions, *range(max_positions - 1, HINT[1], -1)) if holds(HINT[0], v)), HINT[1])
    bounds = {"b_min": b_min, "s_min": s_min, "s_max": s_max}
    grid = [
        (bv, sv)
        for bv in sorted({b_min, b_min + 1, 3, 8, 64})
        if bv >= b_min
        for sv in sorted({s_min, s_min + 1, 7, 37, 100, 128, 200, s_max})
        if s_min <= sv <= s_max
    ]
    names = {sym: sympy.Symbol(name, positive=True) for sym, name in zip(symbols, "bs")}
    other = [_text(e.xreplace(names)) for e in guards if not all(holds(bv, sv, [e]) for bv, sv in grid)]
    return bounds, list(dict.fromkeys(other))


def _text(expr) -> str:
    import sympy

    if isinstance(expr, (sympy.Ne, sympy.Eq)):
        return f"{expr.lhs} {'!=' if isinstance(expr, sympy.Ne) else '=='} {expr.rhs}"
    return str(expr)


def _is_point(value_range) -> bool:
    return getattr(value_range, "lower", None) == getattr(value_range, "upper", 0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
