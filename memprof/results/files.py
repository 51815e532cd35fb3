"""Results files on disk: written atomically, read as strict JSON.

``memprof.results.result`` turns Results into JSON text and JSON objects into Results (``write_json``,
``load_results``); this module only moves the text: a write leaves either the old file or the new
one (NOTE [Robust sweeps] in ``memprof.sweep.run`` relies on it), a read refuses what is not one JSON
object. Every failure is one MemprofError line naming the path.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from meft import strict_json
from meft.strict_json import BadJSON
from memprof.errors import MemprofError


class WriteFailed(MemprofError):
    """A file could not be written (a full disk, a read-only folder): ``path`` and the system's
    ``reason``; callers that know what was kept say so in their own words (a sweep, a report)."""

    def __init__(self, path: Path, exc: OSError) -> None:
        self.path, self.reason = Path(path), exc.strerror or str(exc)
        super().__init__(f"cannot write {str(path)!r} ({self.reason}); pass a path in a folder you can write to")


def write_atomically(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, which then replaces
    ``path`` (``os.replace``), so a crash or Ctrl-C at any moment leaves either the old file or the
    new one, and never a stray temporary file. MemprofError naming ``path`` when it is a folder or
    its folder does not exist; WriteFailed when it cannot be written: nothing is written then."""
    if path.is_dir():
        raise MemprofError(
            f"cannot write {str(path)!r}: it is a folder; pass the path of a file, e.g. {str(path / 'results.json')!r}"
        )
    if not path.parent.is_dir():
        raise MemprofError(
            f"cannot write {str(path)!r}: the folder {str(path.parent)!r} does not exist; create it "
            "or pass a path in an existing folder"
        )
    with atomic_output(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for a plain open
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return path


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that takes a path (pandas' ``to_csv``,
    matplotlib's ``savefig``): renamed over ``path`` when the block ends, removed when it raises, so
    ``path`` is the old file or the whole new one, never a truncated one. An OSError (a full disk)
    becomes WriteFailed naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise WriteFailed(path, exc) from None
        raise


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


# NOTE [ One strict JSON reader ] is in meft.strict_json: meft reads meft_config.json with it, and
# memprof reads through it here. Results files keep the non-finite numbers and long integers for
# their schema, which names the field (``memprof.results.schema``); a config has no schema of its
# own, so ``bounded_numbers`` refuses them while reading.


def parse_json(raw: bytes | str, *, bounded_numbers: bool = False) -> Any:
    """``meft.strict_json.parse_json``: BadJSON for what is not strict JSON; ``bounded_numbers``
    also refuses integers beyond 64 bits, NaN, Infinity and numbers beyond a float's range."""
    return strict_json.parse_json(raw, bounded_ints=bounded_numbers, finite=bounded_numbers)
