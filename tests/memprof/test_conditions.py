"""A formula's conditions read and evaluated without eval (memprof/results/conditions.py)."""

import pytest

from memprof.results.conditions import holds


@pytest.mark.parametrize(
    ("condition", "b", "s", "expected"),
    [
        ("Mod(s*(s + 20), 8) == 0", 2, 300, True),
        ("Mod(s + 20, 8) != 0", 2, 300, False),
        ("Mod(s + 20, 8) != 0", 2, 128, True),
        ("s <= 512", 1, 512, True),
        ("s <= 512", 1, 513, False),
        ("FloorDiv(s, 3) == 2", 1, 7, True),
        ("Max(b, s) > 5", 6, 1, True),
        ("(s + 20)/8 >= 3", 1, 3, False),  # 23/8 exactly, not rounded
        ("3_968·b·s + 8·b >= 2·b·s^2", 2, 10, True),  # a Poly's own spelling (an assumed Max)
        ("3_968·b·s + 8·b >= 2·b·s^2", 2, 5_000, False),
        ("⌊(s + 20)/8⌋ >= 3", 1, 3, False),
        ("⌊(s + 20)/8⌋ >= 3", 1, 4, True),
    ],
)
def test_conditions_are_evaluated_exactly(condition, b, s, expected):
    assert holds(condition, b, s) is expected


@pytest.mark.parametrize(
    "condition",
    [
        "__import__('os').system('true')",
        "open('x')",
        "s.bit_length() > 0",
        "2**100000 > s",
        "s if b else b",
        "lambda: 1",
        "Eq(",
        "",
    ],
)
def test_a_condition_it_cannot_read_holds_nowhere(condition):
    # never evaluated as Python: the configuration is profiled instead of taken from the formula
    assert holds(condition, 8, 128) is False
