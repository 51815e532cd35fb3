"""Results files on disk: written atomically, read as strict JSON.

``memprof.results.result`` turns Results into JSON text and JSON objects into Results (``write_json``,
``load_results``); this module only moves the text: a write leaves either the old file or the new
one (NOTE [Robust sweeps] in ``memprof.sweep.run`` relies on it), a read refuses what is not one JSON
object. Every failure is one MemprofError line naming the path.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

from memprof.errors import MemprofError


def write_atomically(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, which then replaces
    ``path`` (``os.replace``), so a crash or Ctrl-C at any moment leaves either the old file or the
    new one, and never a stray temporary file. MemprofError naming ``path`` when it is a folder,
    its folder does not exist or cannot be written: nothing is written then."""
    if path.is_dir():
        raise MemprofError(
            f"cannot write {str(path)!r}: it is a folder; pass the path of a file, e.g. {str(path / 'results.json')!r}"
        )
    if not path.parent.is_dir():
        raise MemprofError(
            f"cannot write {str(path)!r}: the folder {str(path.parent)!r} does not exist; create it "
            "or pass a path in an existing folder"
        )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for a plain open
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise MemprofError(
                f"cannot write {str(path)!r} ({exc.strerror or exc}); pass a path in a folder you can write to"
            ) from None
        raise
    return path


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object the results file ``path`` holds; MemprofError, and nothing else, naming the
    path for a missing or unreadable file, bad JSON, a key twice in one object, or JSON that is not
    an object."""
    name = str(path)
    if not path.is_file():
        raise MemprofError(f"results file {name!r} does not exist or is not a file; pass the path of a results.json")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MemprofError(
            f"results file {name!r} cannot be read ({exc.strerror or exc}); pass a readable results.json"
        ) from None
    try:
        data = parse_json(raw)
    except BadJSON as exc:
        fix = "regenerate the file with memprof" if exc.key is not None else "pass a results.json written by memprof"
        raise MemprofError(f"results file {name!r} {exc.why}; {fix}") from None
    if not isinstance(data, dict):
        raise MemprofError(
            f"results file {name!r} holds JSON but not a memprof result; pass a results.json written by memprof"
        )
    return data


# NOTE [ One strict JSON reader ]
# Every JSON file a user hands memprof (a results file, a backbone's config.json) is read by
# ``parse_json``; meft reads its meft_config.json with its own copy (``meft.convert``), as meft
# imports nothing of memprof. json.loads alone keeps the last of two equal keys, lets a file nested
# 100,000 deep end in a RecursionError, an integer of 5,000 digits in a bare ValueError, and reads
# NaN, Infinity and 1e999, none of which is JSON. Results files keep the non-finite numbers and
# long integers for their schema, which names the field (``memprof.results.schema``); a config has
# no schema of its own, so ``bounded_numbers`` refuses them while reading.

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


def parse_json(raw: bytes | str, *, bounded_numbers: bool = False) -> Any:
    """The value the JSON text ``raw`` holds (bytes in UTF-8, -16 or -32, as json detects); BadJSON
    for bad JSON or text, a key twice in one object, nesting deeper than MAX_DEPTH, an integer of
    more than 4300 digits, and, with ``bounded_numbers``, an integer beyond 64 bits or NaN,
    Infinity or a number beyond a float's range (NOTE [ One strict JSON reader ])."""
    hooks = {"parse_int": _bounded_int, "parse_float": _finite_float, "parse_constant": _no_constant}
    try:
        data = json.loads(raw, object_pairs_hook=_unique_keys, **(hooks if bounded_numbers else {}))
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
