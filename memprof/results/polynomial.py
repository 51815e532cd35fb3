"""Exact polynomials in batch size ``b`` and sequence length ``s``: what a closed-form memory
formula is made of.

A ``Poly`` maps monomials to coefficients (ints, or Fractions when fitted). Its variables are
``b``, ``s`` and, where a kernel rounds a length up (CUDA's memory-efficient attention keeps its
log-sum-exp in rows rounded up to 32), floor quotients such as ``⌊(s + 31)/32⌋``: a variable defined
by a polynomial numerator and an integer divisor. The numerators a trace gives never decrease as
``b`` and ``s`` grow, so every variable is at least its value at ``b = s = 1``, and a polynomial
written in ``v - lo`` whose coefficients are all at least 0 is at least 0 there: that is how
``dominates`` decides between two of them without choosing a point (a few sizes, ``PROBES``, rule
out most pairs first).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from memprof.errors import MemprofError

Number = int | Fraction
#: a monomial: sorted (variable name, exponent) pairs; () is the constant term
Monomial = tuple[tuple[str, int], ...]

VARIABLES = ("b", "s")
#: sizes where ``dominates`` first compares two polynomials: small, typical and large
PROBES = ((1, 1), (8, 128), (1, 8192), (64, 512))


@dataclass(frozen=True)
class Floor:
    """The variable ``⌊numerator / divisor⌋``, numerator a Poly in ``b`` and ``s``."""

    numerator: Poly
    divisor: int

    @property
    def name(self) -> str:
        return f"⌊({self.numerator})/{self.divisor}⌋"


#: floor variables by name (a Poly names its variables; this says how to evaluate them)
_FLOORS: dict[str, Floor] = {}


def floor_variable(numerator: Poly, divisor: int) -> Poly:
    """The Poly holding one variable, ``⌊numerator / divisor⌋``."""
    floor = Floor(numerator, int(divisor))
    _FLOORS.setdefault(floor.name, floor)
    return Poly({((floor.name, 1),): 1})


class Poly:
    """An exact polynomial; immutable; ``+``, ``-``, ``*`` by a number or a Poly; ``(b=8, s=128)`` evaluates."""

    __slots__ = ("terms", "_shifted", "_probed")

    def __init__(self, terms: dict[Monomial, Number] | None = None) -> None:
        self.terms = {m: c for m, c in (terms or {}).items() if c != 0}
        self._shifted: dict[Monomial, Number] | None = None
        self._probed: tuple[Number, ...] | None = None

    @classmethod
    def const(cls, value: Number) -> Poly:
        return cls({(): value})

    @classmethod
    def var(cls, name: str) -> Poly:
        if name not in VARIABLES:
            raise MemprofError(f"unknown variable {name!r}; a formula's variables are {', '.join(VARIABLES)}")
        return cls({((name, 1),): 1})

    def __add__(self, other: Poly | Number) -> Poly:
        other = _poly(other)
        terms = dict(self.terms)
        for m, c in other.terms.items():
            terms[m] = terms.get(m, 0) + c
        return Poly(terms)

    __radd__ = __add__

    def __neg__(self) -> Poly:
        return Poly({m: -c for m, c in self.terms.items()})

    def __sub__(self, other: Poly | Number) -> Poly:
        return self + (-_poly(other))

    def __mul__(self, other: Poly | Number) -> Poly:
        other = _poly(other)
        terms: dict[Monomial, Number] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in other.terms.items():
                m = _times(m1, m2)
                terms[m] = terms.get(m, 0) + c1 * c2
        return Poly(terms)

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (Poly, int, Fraction)) and self.terms == _poly(other).terms

    def __hash__(self) -> int:
        return hash(frozenset(self.terms.items()))

    def __call__(self, b: int, s: int) -> Number:
        values = {"b": b, "s": s}
        total: Number = 0
        for m, c in self.terms.items():
            term = c
            for name, exp in m:
                term *= _value(name, values) ** exp
            total += term
        return int(total) if isinstance(total, Fraction) and total.denominator == 1 else total

    def dominates(self, other: Poly) -> bool:
        """At least ``other`` wherever ``b, s >= 1``: a sufficient test, exact for what a trace gives.
        Every variable ``v`` is at least its value ``lo`` at ``b = s = 1`` (floor variables of
        numerators with coefficients >= 0 grow with b and s), so the difference written in
        ``v - lo`` (each >= 0) is >= 0 when all its coefficients are."""
        # Smaller at one of a few sizes is no domination: most pairs a replay compares end there,
        # without the coefficient-by-coefficient test (which alone decides the rest).
        if any(m < o for m, o in zip(self.probed(), other.probed())):
            return False
        mine, theirs = self.shifted(), other.shifted()
        return all(mine.get(m, 0) >= c for m, c in theirs.items()) and all(
            c >= 0 for m, c in mine.items() if m not in theirs
        )

    def probed(self) -> tuple[Number, ...]:
        """The values at ``PROBES`` (computed once)."""
        if self._probed is None:
            self._probed = tuple(self(b, s) for b, s in PROBES)
        return self._probed

    def shifted(self) -> dict[Monomial, Number]:
        """The terms of this polynomial with every variable ``v`` replaced by ``v + lo`` (``lo``: its
        value at b = s = 1); computed once (a Poly never changes)."""
        if self._shifted is None:
            out = Poly()
            for m, c in self.terms.items():
                term = Poly.const(c)
                for name, exp in m:
                    lo = _value(name, {"b": 1, "s": 1})
                    for _ in range(exp):
                        term = term * Poly({((name, 1),): 1, (): lo})
                out = out + term
            self._shifted = out.terms
        return self._shifted

    def is_max_of(self, others: Iterable[Poly]) -> bool:
        return all(self.dominates(o) for o in others)

    @property
    def is_exact_integer(self) -> bool:
        return all(isinstance(c, int) or c.denominator == 1 for c in self.terms.values())

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        parts = []
        for m in sorted(self.terms, key=_order, reverse=True):
            c = self.terms[m]
            sign = "-" if c < 0 else "+"
            mag = abs(c)
            factors = [name if exp == 1 else f"{name}^{exp}" for name, exp in m]
            text = "·".join(([] if mag == 1 and factors else [_number(mag)]) + factors)
            parts.append((sign, text))
        first_sign, first = parts[0]
        return ("-" if first_sign == "-" else "") + first + "".join(f" {sg} {t}" for sg, t in parts[1:])

    __repr__ = __str__

    # -- JSON: {"b·s^2": 3072, "": 12} style, exact; floors carried alongside ---------------------

    def to_json(self) -> list[list]:
        """``[[[[name, exp], ...], coefficient], ...]``; a Fraction as ``"p/q"``."""
        return [[[list(f) for f in m], c if isinstance(c, int) else str(c)] for m, c in sorted(self.terms.items())]

    @classmethod
    def from_json(cls, data: Iterable, floors: dict[str, dict] | None = None) -> Poly:
        for spec in (floors or {}).values():
            floor_variable(cls.from_json(spec["numerator"]), spec["divisor"])
        terms: dict[Monomial, Number] = {}
        for mono, coef in data:
            m = tuple((str(name), int(exp)) for name, exp in mono)
            terms[m] = Fraction(coef) if isinstance(coef, str) else int(coef)
        return cls(terms)

    def floors(self) -> dict[str, dict]:
        """The floor variables this Poly uses, as JSON (``from_json`` re-creates them)."""
        names = {name for m in self.terms for name, _ in m if name not in VARIABLES}
        return {n: {"numerator": _FLOORS[n].numerator.to_json(), "divisor": _FLOORS[n].divisor} for n in sorted(names)}


def _poly(x: Poly | Number) -> Poly:
    return x if isinstance(x, Poly) else Poly.const(x)


def _times(m1: Monomial, m2: Monomial) -> Monomial:
    exps = dict(m1)
    for name, exp in m2:
        exps[name] = exps.get(name, 0) + exp
    return tuple(sorted(exps.items()))


def _value(name: str, values: dict[str, int]) -> int:
    if name in values:
        return values[name]
    floor = _FLOORS.get(name)
    if floor is None:
        raise MemprofError(f"formula variable {name!r} is not defined; regenerate the formula with memprof")
    return int(floor.numerator(values["b"], values["s"])) // floor.divisor


def _order(m: Monomial) -> tuple:
    return (sum(e for _, e in m), m)


def _number(c: Number) -> str:
    return f"{c:,}".replace(",", "_") if isinstance(c, int) else str(c)


def max_at(candidates: list[Poly], b: int, s: int) -> tuple[int, Number]:
    """(index, value) of the largest candidate at ``(b, s)``; the first one on a tie."""
    best, best_value = -1, None
    for i, p in enumerate(candidates):
        v = p(b, s)
        if best_value is None or v > best_value:
            best, best_value = i, v
    return best, best_value if best_value is not None else 0


def add_candidate(candidates: list[tuple[Poly, object]], poly: Poly, payload: object) -> None:
    """Keep ``candidates`` the polynomials that may be the maximum somewhere: ``poly`` joins unless an
    earlier one dominates it (an earlier event wins a tie, as a replay with ``>`` keeps it), and
    removes those it exceeds everywhere."""
    for earlier, _ in candidates:
        if earlier.dominates(poly):
            return
    candidates[:] = [(p, x) for p, x in candidates if not poly.dominates(p)]
    candidates.append((poly, payload))


def solve(points: list[tuple[int, int]], values: list[Number], basis: list[Poly]) -> Poly:
    """The combination of ``basis`` through ``(point, value)`` pairs, exactly (Gaussian elimination
    over the rationals); MemprofError if the points do not determine it."""
    n = len(basis)
    rows = [[Fraction(p(b, s)) for p in basis] + [Fraction(v)] for (b, s), v in zip(points, values)]
    pivots: list[int] = []
    r = 0
    for col in range(n):
        pivot = next((i for i in range(r, len(rows)) if rows[i][col] != 0), None)
        if pivot is None:
            continue
        rows[r], rows[pivot] = rows[pivot], rows[r]
        lead = rows[r][col]
        rows[r] = [x / lead for x in rows[r]]
        for i in range(len(rows)):
            if i != r and rows[i][col] != 0:
                f = rows[i][col]
                rows[i] = [a - f * c for a, c in zip(rows[i], rows[r])]
        pivots.append(col)
        r += 1
    if len(pivots) < n:
        raise MemprofError(
            f"{len(points)} profiles do not determine a formula of {n} terms; profile more (b, s) points"
        )
    if any(row[-1] != 0 for row in rows[r:]):
        raise MemprofError("the profiles are not a polynomial of the expected form; the trace needs more terms")
    result = Poly()
    for i, col in enumerate(pivots):
        coef = rows[i][-1]
        result = result + basis[col] * (int(coef) if coef.denominator == 1 else coef)
    return result
