"""Exact polynomials in b and s: arithmetic, evaluation, floors, domination, solving, JSON."""

from fractions import Fraction

import pytest

from memprof.errors import MemprofError
from memprof.results.polynomial import Poly, add_candidate, floor_variable, max_at, solve

b, s = Poly.var("b"), Poly.var("s")


def test_arithmetic_and_evaluation_by_hand():
    p = 3072 * b * s + 8 * s + 196
    assert p(8, 128) == 3072 * 8 * 128 + 8 * 128 + 196
    assert (p - p) == Poly()
    assert (p * 2)(1, 1) == 2 * (3072 + 8 + 196)
    assert (b * s * s)(3, 5) == 75
    assert str(p) == "3_072·b·s + 8·s + 196"
    assert str(-b + 1) == "-b + 1"


def test_floor_variable_is_the_kernels_rounding():
    lse_rows = floor_variable(s + 31, 32) * 32  # CUDA's log-sum-exp rows: s rounded up to 32
    assert [lse_rows(1, n) for n in (1, 32, 33, 64, 65)] == [32, 32, 64, 64, 96]
    assert str(floor_variable(s + 31, 32)) == "⌊(s + 31)/32⌋"


def test_domination_holds_for_every_b_and_s_at_least_1():
    rounded = floor_variable(s + 31, 32) * 32
    assert rounded.dominates(Poly.const(1))  # ⌊(s+31)/32⌋ >= 1 once s >= 1
    assert not Poly.const(1).dominates(rounded)
    assert (s - 1).dominates(Poly()) and not (s - 2).dominates(Poly())  # s - 2 < 0 at s = 1
    assert (b * s).dominates(b) and not b.dominates(b * s)
    assert not (b * s).dominates(Poly.const(2)) and not Poly.const(2).dominates(b * s)  # they cross


def test_candidates_keep_every_possible_maximum_and_the_first_on_a_tie():
    candidates: list = []
    for i, p in enumerate([b * 10, b * s, b * 10, s * 0 + 5, b * s + 1]):
        add_candidate(candidates, p, i)
    assert [(str(p), i) for p, i in candidates] == [("10·b", 0), ("b·s + 1", 4)]
    assert max_at([p for p, _ in candidates], 2, 3) == (0, 20)
    assert max_at([p for p, _ in candidates], 2, 30) == (1, 61)


def test_solve_recovers_the_coefficients_exactly():
    basis = [Poly.const(1), b, s, b * s, s * s, b * s * s]
    truth = 24 * b * s * s + 615_376 * b * s + 8 * s + 196
    points = [(1, 64), (1, 128), (1, 192), (2, 64), (2, 128), (2, 192)]
    assert solve(points, [truth(*p) for p in points], basis) == truth
    half = solve([(1, 1), (1, 2)], [Fraction(1, 2), 1], [Poly.const(1), s])
    assert half == s * Fraction(1, 2) and not half.is_exact_integer


def test_solve_refuses_too_few_points_and_inconsistent_ones():
    with pytest.raises(MemprofError, match="do not determine"):
        solve([(1, 1)], [1], [Poly.const(1), s])
    with pytest.raises(MemprofError, match="not a polynomial of the expected form"):
        solve([(1, 1), (1, 2), (1, 3)], [1, 2, 4], [Poly.const(1), s])


def test_json_round_trip_with_floors_and_fractions():
    p = floor_variable(s + 31, 32) * b * 18_432 + b * s * Fraction(3, 2) + 7
    again = Poly.from_json(p.to_json(), p.floors())
    assert again == p and again(3, 200) == p(3, 200)


def test_unknown_variable_is_refused():
    with pytest.raises(MemprofError, match="unknown variable 'x'"):
        Poly.var("x")
