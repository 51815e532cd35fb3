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
from collections.abc import Iterable, Mapping
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


# NOTE [Outputs never alias inputs]: ``check --markdown B`` with ``--baseline B`` used to replace the
# baseline with Markdown, ``fit --json P --png P`` kept only the PNG. Every command that writes
# passes what it reads and what it writes to ``check_distinct`` before any work. Two paths are the
# same file when their real paths agree (symlinks resolved, also below a path that does not exist
# yet) or, both existing, ``os.path.samefile`` says so (a hard link, a case-insensitive disk). A
# folder output is given as the files it writes there, so a report into the folder of its own
# results.json stays allowed: it never rewrites that file (``reporters.render_saved``).

PathArg = str | os.PathLike | None
Paths = PathArg | Iterable[PathArg]


def results_file(source: str | os.PathLike) -> Path:
    """The file a results source is read from: a folder's results.json, else the path itself."""
    path = Path(source)
    return path / "results.json" if path.is_dir() else path


def backbone_inputs(backbone: str) -> list[Path]:
    """The file a ``--backbone`` path is read from (a folder's config.json); none for a name.

    A registry name wins over a same-named file, so counting such a file is at worst a refusal of
    an output path that shadows a registry name."""
    path = Path(backbone)
    return [path / "config.json" if path.is_dir() else path] if path.exists() else []


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): then only the real paths can tell
        return False


def _listed(paths: Mapping[str, Paths]) -> list[tuple[str, Path]]:
    out = []
    for flag, value in paths.items():
        values = [value] if value is None or isinstance(value, (str, os.PathLike)) else value
        out.extend((flag, Path(v)) for v in values if v is not None)
    return out


def _both(a: Path, b: Path) -> str:
    """Why two differently written paths are one file: where both lead."""
    if str(a) == str(b):
        return ""
    real = os.path.realpath(a)
    return f" (both are {real!r})" if real == os.path.realpath(b) else " (one file under two names)"


def check_distinct(inputs: Mapping[str, Paths], outputs: Mapping[str, Paths]) -> None:
    """Refuse, in one MemprofError line naming both options and the path, an output that is the same
    file as an input or as another output (NOTE [Outputs never alias inputs]).

    ``inputs`` and ``outputs`` map an option (``"--baseline"``, ``"CURRENT"``) to a path, a list of
    paths or None (not given); a folder output is passed as the files the command writes into it."""
    ins, outs = _listed(inputs), _listed(outputs)
    for i, (flag, path) in enumerate(outs):
        for in_flag, source in ins:
            if _same(path, source):
                raise MemprofError(
                    f"{flag} {str(path)!r} is the same file as {in_flag} {str(source)!r}{_both(path, source)}, "
                    f"which it would overwrite; pass another {flag}"
                )
        for other_flag, other in outs[:i]:
            if _same(path, other):
                raise MemprofError(
                    f"{flag} {str(path)!r} is the same file as {other_flag} {str(other)!r}{_both(path, other)}, "
                    f"so one would overwrite the other; pass {other_flag} and {flag} different paths"
                )


def check_single_result(path: str | Path, flag: str) -> None:
    """Refuse to replace an existing, non-empty file that is not one profile's result JSON (a
    sweep's results.json, a baseline, anything else): ``profile --json`` writes one result, and an
    earlier one it replaces is all such a file held. An empty file (``mktemp``) is replaced."""
    from memprof.results.files import read_json

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        data = read_json(path)
    except MemprofError:
        data = {}
    if "results" not in data and ("backbone" in data or "memory" in data):
        return
    results = data.get("results")
    held = f"a results file of {len(results)} result(s)" if isinstance(results, list) else "no memprof result"
    raise MemprofError(
        f"{flag} {str(path)!r} holds {held}, not one profile's result, and would be replaced by one; pass another "
        f"{flag}, or delete the file first"
    )
