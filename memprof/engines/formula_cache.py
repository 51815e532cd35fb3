"""Checked formulas kept on disk between runs, so a question asked twice is answered without a trace.

NOTE [ The formula cache ]
An entry is one JSON file, ``<folder>/<sha256 of its key>.json``, holding the key itself, the
``Formula`` and the configuration whose real profile checked it. The key is everything that changes
the bytes of a step (``cache_key``): the backbone's resolved config (hyper-parameters, not its name
alone), the method with its settings and description, task, dtype, target, attention, step, loss
and engine, the versions of memprof, torch, transformers and peft, and a digest of memprof's and
meft's own source (``source_digest``: a development checkout changes its code without changing its
version, and a formula of the old code must not answer for the new one, least of all in the
regression gate); a change to any of them misses the old entries rather than trusting them. A
formula is written only after it agreed with its check profile to the byte, so an entry is a checked
formula.

The folder is ``$MEMPROF_CACHE_DIR``, else ``$XDG_CACHE_HOME/memprof/formulas``, else
``~/.cache/memprof/formulas``; ``--no-cache`` (``FormulaCache(None)``) neither reads nor writes it.
Nothing here is fatal: an entry that cannot be read, is not strict JSON, is not a formula or was
written for another key is recomputed with a one-line warning (and replaced); a folder that cannot
be created or written gives one warning and the run goes on without storing. Entries are written
atomically (``write_atomically``: a temporary file renamed over the entry), so two processes filling
the same entry at once leave one whole file, either's, never a torn one.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path
from typing import Any

from memprof.engines.config import ProfileConfig
from memprof.errors import MemprofError, one_line
from memprof.results.files import BadJSON, parse_json, write_atomically
from memprof.results.formula import FORMULA_VERSION, Formula

ENV_VAR = "MEMPROF_CACHE_DIR"
#: the distributions whose versions are part of every key
VERSIONED = ("memprof-meft", "torch", "transformers", "peft")


def default_folder() -> Path:
    """``$MEMPROF_CACHE_DIR``, else ``$XDG_CACHE_HOME/memprof/formulas`` (an absolute one, as the
    XDG spec asks), else ``~/.cache/memprof/formulas``."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "memprof" / "formulas"


def user_cache(enabled: bool = True) -> FormulaCache:
    """The cache the command line uses: ``default_folder()``, or one that holds nothing (``--no-cache``)."""
    return FormulaCache(default_folder() if enabled else None)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@functools.cache
def source_digest() -> str:
    """sha256 over the path and bytes of every ``.py`` file of the memprof and meft packages."""
    import meft

    h = hashlib.sha256()
    for root in (Path(__file__).resolve().parents[1], Path(meft.__file__).resolve().parent):  # memprof/, meft/
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root.parent)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def cache_key(config: ProfileConfig) -> dict[str, Any]:
    """Everything that changes the bytes of ``config``'s step, except its batch size and sequence
    length (the formula's variables) and the seed (the fake engine's bytes never depend on it)."""
    from memprof import methods

    method = methods.get(config.method)
    return {
        "formula_version": FORMULA_VERSION,
        "backbone": config.resolved.name,
        "backbone_config": config.resolved.config,
        "method": config.method,
        "method_apply": f"{method.apply.__module__}.{getattr(method.apply, '__qualname__', '')}",
        "method_description": method.description,
        "method_settings": repr(method.settings),
        "task": config.task,
        "dtype": config.dtype,
        "target": config.target,
        "attn": config.attn,
        "step": config.step,
        "loss": config.loss,
        "engine": config.engine,
        "versions": {dist: _version(dist) for dist in VERSIONED},
        "source_sha256": source_digest(),
    }


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=repr).encode()).hexdigest()


def warn(text: str) -> None:
    """One line on stderr, as the CLI writes its warnings: the cache never stops a run."""
    print(f"warning: {text}", file=sys.stderr, flush=True)


class FormulaCache:
    """``lookup(config)`` -> (the cached checked Formula, the (b, s) its check profiled) or None;
    ``put(config, formula, checked)``; ``discard(config)``. ``folder=None``: a cache that holds
    nothing (``--no-cache``)."""

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = None if folder is None else Path(folder)
        self._unwritable = False
        self._ignored: set[Path] = set()  # entries already warned about: one warning each

    def path(self, config: ProfileConfig) -> Path | None:
        return self._path(cache_key(config))

    def _path(self, key: dict[str, Any]) -> Path | None:
        return None if self.folder is None else self.folder / f"{_digest(key)}.json"

    def get(self, config: ProfileConfig) -> Formula | None:
        entry = self.lookup(config)
        return None if entry is None else entry[0]

    def lookup(self, config: ProfileConfig) -> tuple[Formula, tuple[int, int]] | None:
        key = cache_key(config)
        path = self._path(key)
        if path is None or path in self._ignored or not path.exists():
            return None
        try:
            entry = parse_json(path.read_bytes())
            if not isinstance(entry, dict) or entry.get("key") != json.loads(json.dumps(key, default=repr)):
                raise MemprofError("it was written for another configuration")
            at = entry["checked_at"]
            return Formula.from_dict(entry["formula"]), (int(at["batch_size"]), int(at["seq_len"]))
        except (OSError, BadJSON, MemprofError, KeyError, TypeError, ValueError, AttributeError) as exc:
            self._ignored.add(path)
            warn(f"ignoring the formula cache entry {str(path)!r} ({one_line(exc)}); recomputing it")
            return None

    def probe(self) -> None:
        """Find out now whether the folder can be written (one warning if not), so that copies of
        this cache in worker processes do not each find out and warn again."""
        if self.folder is None or self._unwritable:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / f".probe-{os.getpid()}"  # one per process: compares run side by side
            write_atomically(probe, "")
            probe.unlink()
        except (OSError, MemprofError) as exc:
            self._cannot_write(exc)

    def put(self, config: ProfileConfig, formula: Formula, checked: ProfileConfig) -> None:
        key = cache_key(config)
        path = self._path(key)
        if path is None or self._unwritable:
            return
        entry = {
            "key": key,
            "checked_at": {"batch_size": checked.batch_size, "seq_len": checked.seq_len},
            "formula": formula.to_dict(),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, json.dumps(entry, default=repr, ensure_ascii=False))
            self._ignored.discard(path)
        except (OSError, MemprofError) as exc:
            self._cannot_write(exc)

    def discard(self, config: ProfileConfig) -> None:
        """Remove the entry (a profile contradicted it); nothing happens where it cannot be removed."""
        path = self.path(config)
        if path is not None:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass

    def _cannot_write(self, exc: BaseException) -> None:
        self._unwritable = True
        warn(
            f"cannot write the formula cache in {str(self.folder)!r} ({one_line(exc)}); going on without "
            f"storing formulas: set {ENV_VAR} to a folder you can write, or pass --no-cache"
        )
