"""One strict JSON reader for every JSON file a user hands meft or memprof: meft_config.json
(``meft.convert``, ``MEFTConfig.from_json``), a backbone's config.json and results files
(``memprof.results.files.parse_json`` calls this one).

NOTE [ One strict JSON reader ]
json.loads alone keeps the last of two equal keys, lets a file nested 100,000 deep end in a
RecursionError, an integer of 5,000 digits in a bare ValueError, and reads NaN, Infinity and 1e999,
none of which is JSON. ``parse_json`` refuses the first three always (BadJSON, a reason that
completes "<the file> ..."); ``bounded_ints`` also refuses an integer no tensor dimension can have
(beyond 64 bits), ``finite`` the non-finite numbers, for files with no schema of their own to name
the field.
"""

from __future__ import annotations

import json
import math
from typing import Any

#: Deepest nesting accepted: results and HF configs nest a few levels, and code that walks a file
#: recursively (copy.deepcopy, transformers' to_dict) must not end in a RecursionError.
MAX_DEPTH = 100
#: Largest integer magnitude ``bounded_numbers`` accepts: what an int64 (torch, numpy) holds.
MAX_INT = 2**63 - 1


class BadJSON(ValueError):
    """Why a text is not strict JSON: ``why`` completes "<the file> ...", e.g. "holds the key 'a'
    twice in one object, ..."; ``key`` is the repeated key, if that was the problem."""

    def __init__(self, why: str, key: str | None = None) -> None:
        super().__init__(why)
        self.why, self.key = why, key


def parse_json(raw: bytes | str, *, bounded_ints: bool = False, finite: bool = False) -> Any:
    """The value the JSON text ``raw`` holds (bytes in UTF-8, -16 or -32, as json detects); BadJSON
    for bad JSON or text, a key twice in one object, nesting deeper than MAX_DEPTH, an integer of
    more than 4300 digits; with ``bounded_ints`` an integer beyond 64 bits, with ``finite`` NaN,
    Infinity or a number beyond a float's range (NOTE [ One strict JSON reader ])."""
    hooks: dict[str, Any] = {"parse_int": _bounded_int} if bounded_ints else {}
    if finite:
        hooks.update(parse_float=_finite_float, parse_constant=_no_constant)
    try:
        data = json.loads(raw, object_pairs_hook=_unique_keys, **hooks)
    except RecursionError:
        raise BadJSON(f"nests JSON deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise BadJSON(f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise BadJSON(f"is not valid JSON (not {exc.encoding.upper()} text at byte {exc.start})") from None
    except BadJSON:
        raise
    except ValueError as exc:  # an integer of more than 4300 digits (int's max_str_digits)
        raise BadJSON(f"is not valid JSON ({str(exc).split(':')[0]})") from None
    if _deeper_than(data, MAX_DEPTH):
        raise BadJSON(f"nests JSON deeper than {MAX_DEPTH} levels")
    return data


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels (iteratively: no recursion limit)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return False


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > 19 or abs(int(text)) > MAX_INT:
        shown = f"the integer {text}" if digits <= 30 else f"an integer of {digits} digits"
        raise BadJSON(f"holds {shown}, beyond 64 bits (at most 2**63 - 1)")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise BadJSON(f"holds the number {text[:30]}, beyond a float's range (infinite)")
    return value


def _no_constant(name: str) -> float:
    raise BadJSON(f"holds {name}, which is not JSON (JSON has no NaN or Infinity)")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' object hook: an object, refusing a key given twice (json keeps the last)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise BadJSON(f"holds the key {key[:60]!r} twice in one object, so it cannot be read unambiguously", key)
    return out
