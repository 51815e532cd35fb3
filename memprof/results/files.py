"""Results files on disk: written atomically, read as strict JSON.

``memprof.results.result`` turns Results into JSON text and JSON objects into Results (``write_json``,
``load_results``); this module only moves the text: a write leaves either the old file or the new
one (NOTE [Robust sweeps] in ``memprof.sweep.run`` relies on it), a read refuses what is not one JSON
object. Every failure is one MemprofError line naming the path.
"""

from __future__ import annotations

import json
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
        data = json.loads(raw, object_pairs_hook=_unique_keys)
    except _DuplicateKey as dup:
        raise MemprofError(
            f"results file {name!r} holds the key {dup.key[:60]!r} twice in one object, so it cannot "
            "be read unambiguously; regenerate the file with memprof"
        ) from None
    except RecursionError:
        raise MemprofError(
            f"results file {name!r} nests JSON too deeply to be a memprof result; pass a results.json "
            "written by memprof"
        ) from None
    except ValueError as exc:  # bad JSON, bad UTF-8, an integer of more than 4300 digits
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc).split(":")[0]
        raise MemprofError(
            f"results file {name!r} is not valid JSON ({why}); pass a results.json written by memprof"
        ) from None
    if not isinstance(data, dict):
        raise MemprofError(
            f"results file {name!r} holds JSON but not a memprof result; pass a results.json written by memprof"
        )
    return data


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' object hook: an object, refusing a key given twice (json keeps the last)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out
