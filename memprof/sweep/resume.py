"""What a resumed sweep must find unchanged, and the refusal that says what changed.

``memprof.sweep.run`` records the grid's options and their provenance (``provenance``: the backbone
config's fingerprint and the library versions) in results.json; ``check_resumable`` compares them
with what a resumed sweep would record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memprof.errors import MemprofError
from memprof.results.result import LATER_KEY_FIELDS, ResultSet
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
