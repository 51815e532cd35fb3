"""What a resumed sweep must find unchanged, and the refusal that says what changed.

``memprof.sweep.run`` records the grid's options and their provenance (``provenance``: the backbone
config's fingerprint and the library versions) in results.json; ``check_resumable`` compares them
with what a resumed sweep would record. ``Journal`` and ``recorded``: the results a sweep has
finished but not yet rewritten into results.json (NOTE [Linear sweeps] in ``memprof.sweep.run``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memprof.errors import MemprofError
from memprof.outputs import results_file
from memprof.results.files import BadJSON, WriteFailed, parse_json
from memprof.results.result import LATER_KEY_FIELDS, Result, ResultSet, load_results
from memprof.sweep.grid import Grid

# NOTE [What a resumed sweep must find unchanged]: the grid's options (backbone, methods, sizes,
# engine, target, dtype, attention, task, step, loss; a file written before ``step`` or ``loss``
# existed swept the first step with the model's own loss, ``LATER_KEY_FIELDS``, and resumes as
# such) and what no option names but moves the numbers: the resolved backbone config (a
# config.json edited between the runs would put two architectures in one table; its sha256 over
# canonical JSON) and the versions of torch, transformers, peft and memprof. ``run_sweep`` records
# them in the options of results.json; a file written before they were recorded resumes without
# that check (there is nothing to compare).

#: the libraries whose versions a sweep records and a resumed sweep must run with
VERSIONED = ("torch", "transformers", "peft", "memprof")


def config_fingerprint(config: dict[str, Any]) -> str:
    """sha256 of ``config`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_resumable(saved: ResultSet, grid: Grid, path: Path, provenance: Callable[[Grid], dict[str, Any]]) -> None:
    """A resumed sweep must be the same grid on the same backbone config and library versions;
    say what differs otherwise (NOTE [What a resumed sweep must find unchanged]). ``provenance``
    is ``memprof.sweep.run.provenance`` (what a sweep records besides its options), asked only once
    the options match."""
    if not saved.options:
        return
    mine = grid.options()
    older = {name: default for name, (_version, default) in LATER_KEY_FIELDS.items()}
    for key, value in {**older, **saved.options}.items():
        if key in mine and mine[key] != value:
            raise MemprofError(
                f"{str(path)!r} was swept with {key}={value!r}, not {mine[key]!r}; "
                "drop that option to resume, or pass a new --out to start another sweep"
            )
    now = provenance(grid)
    before = saved.options.get("backbone_config_sha256")
    if before is not None and before != now["backbone_config_sha256"]:
        raise MemprofError(
            f"backbone config of {_config_source(grid.backbone)!r} changed since the sweep started (fingerprint "
            f"{str(before)[:12]} -> {now['backbone_config_sha256'][:12]}); start a new sweep with another --out"
        )
    versions = saved.options.get("versions")
    for lib, old in versions.items() if isinstance(versions, dict) else ():
        new = now["versions"].get(lib)
        if new is not None and str(old) != new:
            raise MemprofError(
                f"{lib} version changed since the sweep started ({old} -> {new}); resume it with {lib} {old}, "
                "or start a new sweep with another --out"
            )


def _config_source(backbone: str) -> str:
    """Where a backbone's config comes from: a config file, a folder's config.json, or a name."""
    path = Path(backbone)
    return str(path / "config.json") if path.is_dir() else backbone


#: results finished since results.json was last written, one JSON object a line (hidden: a
#: finished sweep's folder holds none)
JOURNAL_FILE = ".results.journal"


class Journal:
    """The append-only journal of one output folder: ``append`` one result's JSON line, fsync'd,
    O(1) per result; ``remove`` once results.json holds everything it held."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / JOURNAL_FILE
        self.fd: int | None = None

    def append(self, line: str) -> None:
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            os.write(self.fd, (line + "\n").encode())
            os.fsync(self.fd)
        except OSError as exc:  # run_sweep says what is kept and how to resume
            raise WriteFailed(self.path, exc) from None

    def remove(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.path.unlink(missing_ok=True)


def read_journal(path: str | Path) -> list[Result]:
    """The results a journal holds, in the order written. A last line cut short by a crash (no
    newline, or not JSON) is ignored: its result was never recorded. MemprofError naming the line
    for any other line that is not a result."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    torn = lines.pop()  # b"" after a final newline; otherwise a line the crash cut short
    results = []
    for number, line in enumerate(lines, 1):
        try:
            data = parse_json(line)
        except BadJSON:
            if number == len(lines) and not torn:  # the last line, cut inside its JSON
                break
            raise MemprofError(
                f"journal {str(path)!r} line {number} is not JSON; delete the journal and resume, which reruns "
                "what only it held"
            ) from None
        results.append(Result.from_dict(data, source=f"{path}:{number}"))
    return results


def recorded(folder: str | Path) -> ResultSet:
    """What a sweep in ``folder`` has recorded: its results.json with the journal's results over
    it (a journal result replaces the same configuration's), in results.json's order, then the
    journal's. O(results): each file is read once."""
    folder = Path(folder)
    saved = load_results(results_file(folder))
    merged = {r.key: r for r in saved.results}
    for result in read_journal(folder / JOURNAL_FILE):
        merged[result.key] = result
    return ResultSet(results=list(merged.values()), command=saved.command, options=saved.options, source=saved.source)
