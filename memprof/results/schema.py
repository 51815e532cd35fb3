"""Checking the values of a results document: one refusal line per bad value, naming it.

``memprof.results.result`` reads a results file through a ``Reader`` (NOTE [ Reading results ] there says
what the schema requires); the gate describes the values it refuses with ``describe_value``. This
module knows JSON values and their limits, not Results, so it sits below ``memprof.results.result``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from memprof.errors import MemprofError

#: The largest count a results file may hold: byte counts are int64 in ``layers`` and the tables.
MAX_COUNT = 2**63 - 1

MISSING: Any = object()  # a field the document lacks


def describe_value(value: Any) -> str:
    """A value as a message shows it, short and on one line: ``-5``, ``NaN``, ``null``, ``'128' (a string)``."""
    if value is MISSING:
        return "missing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, numbers.Integral):
        value = int(value)
        if value.bit_length() > 80:  # str() of a huge int is slow, or refused past 4300 digits
            return f"a {'negative ' if value < 0 else ''}number of about {int(value.bit_length() * 0.30103) + 1} digits"
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return ("Infinity" if value > 0 else "-Infinity") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        text = repr(value)
        return f"{text if len(text) <= 60 else text[:56] + '...' + text[0]} (a string)"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return f"a Python {type(value).__name__}"


def is_whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class Reader:
    """Checks the values of one document; a failure is one MemprofError line,
    ``<where>: <field> is <value>, must be <constraint>; <fix>``."""

    def __init__(self, where: str, fix: str) -> None:
        self.where, self.fix = where, fix

    def fail(self, name: str, problem: str) -> None:
        raise MemprofError(f"{self.where}: {name} {problem}; {self.fix}")

    def bad(self, name: str, value: Any, must: str) -> None:
        self.fail(name, f"is {describe_value(value)}, must be {must}")

    def fields(self, data: Any, name: str, allowed: tuple[str, ...]) -> dict:
        """``data`` as an object holding no field outside ``allowed`` (whether each is present is
        checked with its value)."""
        if not isinstance(data, dict):
            self.bad(name or "the document", data, "an object")
        for key in data:
            if key not in allowed:
                shown = key if isinstance(key, str) and len(key) <= 60 and key.isprintable() else describe_value(key)
                self.fail(
                    f"{name}.{shown}" if name else shown,
                    f"is not a field memprof writes (the fields are {', '.join(allowed)})",
                )
        return data

    def text(self, value: Any, name: str) -> str:
        if not isinstance(value, str):
            self.bad(name, value, "a string")
        return value

    def whole(self, value: Any, name: str, *, lowest: int = 0, unit: str = "", nullable: bool = False) -> int | None:
        if nullable and (value is None or value is MISSING):
            return None
        must = f"a whole number{unit} >= {lowest}" + (", or null" if nullable else "")
        if not is_whole(value) or value < lowest:
            self.bad(name, value, must)
        if value > MAX_COUNT:
            self.bad(name, value, f"{must} and below 2**63")
        return int(value)

    def nbytes(self, value: Any, name: str, *, nullable: bool = False) -> int | None:
        return self.whole(value, name, unit=" of bytes", nullable=nullable)

    def seconds(self, value: Any, name: str) -> float | None:
        if value is None:
            return None
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        try:
            ok = ok and math.isfinite(float(value)) and value >= 0
        except OverflowError:
            ok = False
        if not ok:
            self.bad(name, value, "a finite number of seconds >= 0, or null")
        return value if type(value) in (int, float) else float(value)

    def strings(self, value: Any, name: str) -> dict[str, str]:
        """An object whose values are strings (``environment``: library versions and the like)."""
        if not isinstance(value, dict):
            self.bad(name, value, "an object of strings")
        for key, item in value.items():
            self.text(item, f"{name}.{str(key)[:60]}")
        return value

    def tree(self, value: Any, name: str) -> dict:
        """A free-form object (``environment``, ``options``) holding no NaN or Infinity anywhere."""
        if not isinstance(value, dict):
            self.bad(name, value, "an object")
        stack: list[tuple[str, Any]] = [(name, value)]
        while stack:  # not recursive: any depth the json module reads is walked
            path, item = stack.pop()
            if isinstance(item, float) and not math.isfinite(item):
                self.bad(path, item, "a finite number (JSON has no NaN or Infinity)")
            elif isinstance(item, dict):
                stack.extend(reversed([(f"{path}.{str(k)[:60]}", v) for k, v in item.items()]))
            elif isinstance(item, (list, tuple)):
                stack.extend(reversed([(f"{path}[{i}]", v) for i, v in enumerate(item)]))
        return value
