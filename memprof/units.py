"""Byte sizes as people write and read them, and the metric names a size can be given for.

``parse_bytes("1.2 GiB")`` reads a size (budgets, the gate's inputs); ``format_bytes`` writes one,
either in the unit that suits the value (``1.20 GiB``) or as a number in a unit chosen for a whole
column (``unit_for``), as the report tables do. ``METRICS`` are the byte counts of
``memprof.results.result.Memory``: what a budget, the gate or a table may name.
"""

from __future__ import annotations

import decimal
import math
import numbers
import re
from dataclasses import fields

from memprof.errors import MemprofError
from memprof.results.result import Memory

#: Units a size may carry: decimal (kB, MB, GB, TB: powers of 1000) and binary (KiB .. TiB: 1024).
UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
MIB = UNITS["mib"]
GIB = UNITS["gib"]
_SIZE = re.compile(r"^\s*([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")
_NOT_FINITE = re.compile(r"^\s*[+-]?(nan|inf|infinity)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)

#: Memory fields a budget, the gate or a table can name: the byte counts of ``memprof.results.result.Memory``.
METRICS = tuple(f.name for f in fields(Memory))
#: The metrics every summary leads with, and the gate compares by default.
HEADLINE_METRICS = ("saved_activations", "peak_activations", "peak")


#: Largest size ``parse_bytes`` accepts: what an int64 (a result's byte columns, JSON readers) holds.
MAX_BYTES = 2**63 - 1
_MAX_TEXT = "2**63 - 1 bytes (8 EiB)"
_EXAMPLE = "pass bytes or a string such as '1.2 GiB'"


def parse_bytes(value: str | int | float, *, what: str = "size") -> int:
    """A byte count from ``1.2 GiB``, ``800MB``, ``512 KiB``, ``4096`` or an int.

    Units are case-insensitive; KB/MB/GB/TB are powers of 1000 and KiB/MiB/GiB/TiB powers of 1024.
    A number without a unit is bytes. Numbers are read exactly (decimal, not float) and a size that
    is not a whole number of bytes is rounded to the nearest byte (``1.2 GiB`` -> 1288490189); one
    above 0 but below 1 byte (``1e-3 B``, ``0.4``) is refused, since rounding would turn it into a
    budget of nothing. Raises MemprofError, naming ``what``, for anything that is not a finite
    size from 0 to ``MAX_BYTES``: negative, NaN, infinite, ``1e400``, or not a size at all. Every
    spelling of zero is 0 (``-0``, ``+0``, ``0e50``, ``0e-40``, ``-0.0 KiB``); a sign is allowed.
    """
    shown = short_repr(value)
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Real)):
        raise MemprofError(f"{what} {shown} is not a size; {_EXAMPLE}")
    if isinstance(value, str):
        match = _SIZE.match(value)
        unit = match.group(2).lower() if match else ""
        if not match or unit not in UNITS and unit:
            if _NOT_FINITE.match(value):
                raise MemprofError(f"{what} {shown} is not a finite size; {_EXAMPLE}")
            # a minus and a number right after it ("- 0" and "--0" are no numbers), not zero ("-0 G" is as "0 G")
            rest = value.strip()[1:] if value.strip().startswith("-") else ""
            negative = _SIZE.match(rest) if rest[:1].isdigit() or rest[:1] == "." else None
            if negative and not _exact(negative.group(1)).is_zero():
                raise MemprofError(f"{what} {shown} is a negative size; a size is at least 0 bytes: {_EXAMPLE}")
            raise MemprofError(
                f"{what} {shown} is not a size; write a number and one of the units "
                "B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. '1.2 GiB'"
            )
        number, factor = _exact(match.group(1)), UNITS[unit or "b"]
    elif isinstance(value, numbers.Integral):
        number, factor = decimal.Decimal(int(value)), 1
    else:
        as_float = float(value)
        if math.isnan(as_float) or math.isinf(as_float):
            raise MemprofError(f"{what} {shown} is not a finite size; {_EXAMPLE}")
        number, factor = decimal.Decimal(as_float), 1
    if number.is_zero():
        return 0  # every spelling of zero alike: -0, 0e50 (no magnitude check), 0e-40 (no fraction of a byte)
    if number < 0:
        raise MemprofError(f"{what} {shown} is a negative size; a size is at least 0 bytes: {_EXAMPLE}")
    # Compare magnitudes before multiplying: ``1e999999999 TiB`` is a valid Decimal, not a product.
    if number.adjusted() > 30 or number * factor > MAX_BYTES:
        raise MemprofError(f"{what} {shown} is too large a size; a size is at most {_MAX_TEXT}: {_EXAMPLE}")
    if number.adjusted() < -30 or 0 < number * factor < 1:
        raise MemprofError(
            f"{what} {shown} is a fraction of one byte; a size is a whole number of bytes: pass 0 or at least 1 B"
        )
    return int((number * factor).to_integral_value(rounding=decimal.ROUND_HALF_EVEN))


def _exact(text: str) -> decimal.Decimal:
    """A number ``_SIZE`` matched, as a Decimal. Decimal raises for an exponent of 20 digits; one of
    more than 6 is clamped to 999999, which keeps zero zero and any other size too large or a
    fraction of a byte, as it was."""
    mantissa, e, exponent = text.lower().partition("e")
    if len(exponent.lstrip("+-")) > 6:
        exponent = ("-" if exponent.startswith("-") else "") + "999999"
    return decimal.Decimal(mantissa + e + exponent)


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` as an error message quotes it: on one line, cut to ``limit`` characters (a
    tensor or a state dict passed by mistake must not turn the message into a page)."""
    text = repr(value)
    if "\n" in text:
        text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unit_for(max_bytes: float) -> tuple[str, int]:
    """The unit of a column whose largest value is ``max_bytes``: GiB from 1 GiB on, MiB below."""
    return ("GiB", GIB) if max_bytes >= GIB else ("MiB", MIB)


def _missing(n) -> bool:
    return n is None or (isinstance(n, float) and math.isnan(n)) or type(n).__name__ == "NAType"


def format_bytes(n: int | float | None, unit: tuple[str, int] | None = None) -> str:
    """A byte count for people.

    Without ``unit``: the binary unit that suits the value, three significant digits
    (``1288490189`` -> ``1.20 GiB``); None -> ``-``. With a ``unit`` from ``unit_for`` (a table
    column that names its unit in the header): the number only, two decimals in GiB, one in MiB
    (``1,228.8``); a missing value -> ``—``.
    """
    if unit is not None:
        if _missing(n):
            return "—"
        name, divisor = unit
        return f"{n / divisor:,.2f}" if name == "GiB" else f"{n / divisor:,.1f}"
    if n is None:
        return "-"
    sign, n = ("-" if n < 0 else ""), abs(n)
    if n < 1024:
        return f"{sign}{int(n)} B"
    for name in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or name == "TiB":
            return (
                f"{sign}{n:.0f} {name}" if n >= 100 else f"{sign}{n:.1f} {name}" if n >= 10 else f"{sign}{n:.2f} {name}"
            )
    raise AssertionError("unreachable")
