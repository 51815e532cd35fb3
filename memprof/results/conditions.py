"""A formula's conditions (``Formula.valid``: ``Mod(s + 20, 8) != 0``, ``3·b·s >= 2·s``) evaluated at a
batch size and sequence length, so that ``Formula.covers`` holds a formula to them and not only to its
bounds.

NOTE [ Conditions a formula holds under ]
A trace takes one branch wherever the step's code asks a question about a size: the ShapeEnv records
the answer at the example sizes as a guard (``bias.stride(2) % 8 != 0``: memprof's model of CUDA's
attention pads an attention bias whose rows are not 8-aligned), and a ``Max`` of sizes assumes the
largest at the example sizes stays largest. ``Formula.bounds`` keeps what is a range of ``b`` or
``s``; the rest is written as text into ``valid``. A size where any of them fails takes another
branch, so the formula does not hold there: a prefix-tuned OPT's formula (20 virtual tokens, traced
at s = 128) counted the padded bias at s = 300, where s + 20 is a multiple of 8 and nothing is
padded. ``holds`` reads the text with a small parser of its own (Python's ``ast``, integers and
exact fractions; never ``eval``, as formulas are read from a cache folder): ``+ - * / ** %``,
comparisons, ``Mod``, ``FloorDiv``, ``floor``, ``ceiling``, ``Max``, ``Min``, ``Abs``, and the Poly
spellings ``·``, ``^``, ``⌊ ⌋``, ``1_024``. A condition it cannot read holds nowhere: the
configuration is profiled, never evaluated from a formula that may not apply.
"""

from __future__ import annotations

import ast
import math
import operator
from fractions import Fraction
from functools import lru_cache

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: lambda x, y: Fraction(x) / y,
    ast.FloorDiv: lambda x, y: x // y,
    ast.Mod: lambda x, y: x % y,
    ast.Pow: lambda x, y: x**y,
}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_FUNCTIONS = {
    "Mod": lambda x, y: x % y,
    "PythonMod": lambda x, y: x % y,
    "FloorDiv": lambda x, y: x // y,
    "floor": math.floor,
    "ceiling": math.ceil,
    "CeilToInt": math.ceil,
    "FloorToInt": math.floor,
    "IntTrueDiv": lambda x, y: Fraction(x) / y,
    "Max": max,
    "Min": min,
    "Abs": abs,
}


class Unreadable(ValueError):
    """A condition outside the grammar ``holds`` reads."""


def holds(condition: str, b: int, s: int) -> bool:
    """Whether ``condition`` (a text of ``Formula.valid``) is true at batch size ``b``, sequence
    length ``s``; False where it cannot be read (NOTE [ Conditions a formula holds under ])."""
    try:
        tree = _parse(condition)
        return bool(_value(tree, {"b": b, "s": s}))
    except (Unreadable, ArithmeticError):
        return False


@lru_cache(maxsize=1024)
def _parse(condition: str) -> ast.expr:
    text = condition.replace("·", "*").replace("^", "**").replace("⌊", "floor(").replace("⌋", ")")
    try:
        return ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError) as exc:
        raise Unreadable(condition) from exc


def _value(node: ast.expr, names: dict[str, int]):
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _value(node.operand, names)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left, names), _value(node.right, names)
        if isinstance(node.op, ast.Pow) and not (isinstance(right, int) and 0 <= right <= 64):
            raise Unreadable("a power that is not a small whole number")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = _value(node.left, names)
        for op, right_node in zip(node.ops, node.comparators):
            right = _value(right_node, names)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
        and node.args
    ):
        return _FUNCTIONS[node.func.id](*(_value(a, names) for a in node.args))
    raise Unreadable(ast.dump(node)[:80])
