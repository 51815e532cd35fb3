"""Output paths checked before any work starts: a command that will write a file or a folder
refuses, at once and in one line, a path it could not write after minutes of profiling.

NOTE [Fail before the work]: ``memprof profile --json missing/r.json`` used to profile first and then
fail with a traceback on the write. Every command that writes calls ``check_file`` or ``check_dir``
on its output paths before it builds a model or reads a large input. The checks are what the
filesystem says now (``os.access``); a write can still fail later (a full disk), and then the
writer's own error applies. They never create anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from memprof.errors import MemprofError


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (``.`` for a relative path with none)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def check_file(path: str | Path, what: str, flag: str, *, parents: bool = False) -> Path:
    """Refuse an output *file* that cannot be written: a folder, in a folder that does not exist
    (unless ``parents``: the writer creates missing folders) or is not writable, or a read-only file.

    ``what`` names the output (``"the result"``), ``flag`` the option that chose it (``"--json"``);
    both go into the one-line MemprofError. Returns ``path`` as a Path.
    """
    path = Path(path)
    head = f"cannot write {what} to {str(path)!r}"
    if path.is_dir():
        raise MemprofError(f"{head}: it is a folder; pass {flag} with a file path, e.g. {flag} {path / 'out.json'}")
    folder = path.parent
    if parents:
        folder = _nearest_existing(folder)
    elif not folder.exists():
        raise MemprofError(
            f"{head}: folder {str(folder)!r} does not exist; create it first, or pass {flag} with a path in an "
            "existing folder"
        )
    if not folder.is_dir():
        raise MemprofError(f"{head}: {str(folder)!r} is a file, not a folder; pass {flag} with another path")
    if not _writable(folder):
        raise MemprofError(
            f"{head}: folder {str(folder)!r} is not writable; pass {flag} with a path in a folder you can write to"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise MemprofError(f"{head}: the file is read-only; make it writable, or pass {flag} with another path")
    return path


def check_dir(path: str | Path, flag: str) -> Path:
    """Refuse an output *folder* that cannot be written: a file, a folder that cannot be created
    (part of its path is a file) or a folder (or, for a new one, its closest existing ancestor)
    that is not writable. Returns ``path`` as a Path; creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MemprofError(
            f"output directory {str(path)!r} is a file; pass {flag} with a folder path (new or existing)"
        )
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise MemprofError(
            f"output directory {str(path)!r} cannot be created because {str(existing)!r} is a file; pass another {flag}"
        )
    if not _writable(existing):
        where = "it" if existing == path else f"{str(existing)!r}, where it would be created,"
        raise MemprofError(
            f"output directory {str(path)!r} is not writable ({where} is read-only for you); pass {flag} with a folder "
            "you can write to"
        )
    return path
