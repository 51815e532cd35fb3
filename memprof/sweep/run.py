"""The ``compare`` grid: every (method, sequence length, batch size) of one backbone, profiled in turn.

The sweep only runs configurations and records Results; the reporters turn the saved
``results.json`` into tables and plots afterwards. NOTE [Robust sweeps]: every finished
configuration is on disk before the next one starts (NOTE [Linear sweeps]: a line in the journal,
results.json rewritten atomically now and then and at the end), so a crash or Ctrl-C at any moment
leaves a valid, partial ``results.json`` plus the journal; a configuration that fails or runs out
of memory is recorded as a Result with status ``"error"`` / ``"oom"`` and the sweep goes on;
``resume`` skips every configuration whose key is already in the file or the journal (but retries
one whose worker process died: NOTE [Parallel sweeps]). Results are
kept in grid order, so an interrupted-then-resumed sweep writes the same file as an uninterrupted
one. One sweep at a time writes a folder (NOTE [One writer per output folder] in
``memprof.sweep.lock``).

Here: ``plan`` (what ``memprof compare`` will run, and where), the output folders and
``run_sweep``. The grid and the parsing of the CLI's lists are ``memprof.sweep.grid``, the
worker processes ``memprof.sweep.workers``, the resume checks ``memprof.sweep.resume``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from datetime import datetime
from pathlib import Path
from typing import Any

from memprof.engines.config import ProfileConfig
from memprof.engines.registry import engine_named
from memprof.errors import MemprofError, interrupt_exit_code
from memprof.outputs import check_dir
from memprof.reporters import RESULTS_FILE, prepare_out_dir
from memprof.results.files import WriteFailed
from memprof.results.result import Result, ResultSet, config_key, environment, load_results, write_json
from memprof.sweep.grid import DEFAULTS, Grid
from memprof.sweep.lock import OutLock
from memprof.sweep.resume import VERSIONED, Journal, check_resumable, config_fingerprint, recorded
from memprof.sweep.workers import Progress, RunFn, default_runner, died_with_worker, run_one, run_parallel

# ``default_runner``, ``auto_jobs`` and ``environment`` are looked up here (by run_sweep, plan and
# provenance): patching ``memprof.sweep.run.<name>`` replaces them for a CLI run in this process.
__all__ = [
    "SweepInterrupted",
    "auto_jobs",
    "default_out_dir",
    "plan",
    "point_latest",
    "provenance",
    "release_out",
    "run_sweep",
]


def plan(
    options: dict[str, Any], *, out: str | Path | None = None, resume: str | Path | None = None, jobs: int | None = None
) -> tuple[Grid, Path, int]:
    """What ``memprof compare`` will run: (grid, output folder, worker processes), validated before
    anything runs, the output folder created.

    A new sweep takes ``options`` over ``DEFAULTS`` and writes into ``out`` (default
    ``default_out_dir``, then ``reports/latest`` points at it), which must not hold a results.json
    yet. A resumed sweep (``resume``: its folder) takes the options saved in its results.json, with
    ``options`` given again over them (``run_sweep`` refuses any that differ). ``jobs`` None is
    ``auto_jobs``. The folder is locked from here (NOTE [One writer per output folder]): the caller
    lets it go with ``release_out`` once the sweep's last file is written.
    """
    if jobs is not None and jobs < 1:
        raise MemprofError(f"--jobs {jobs} must be at least 1; pass e.g. --jobs 2, or leave it out for one per method")
    if resume is not None:
        if out is not None and Path(out).resolve() != Path(resume).resolve():
            raise MemprofError(
                f"--out {str(out)!r} differs from --resume {str(resume)!r}; a resumed sweep writes "
                "into its own folder, drop --out"
            )
        saved = load_results(Path(resume) / RESULTS_FILE)
        if not saved.options:
            raise MemprofError(
                f"{str(Path(resume) / RESULTS_FILE)!r} holds no compare options; only a "
                "`memprof compare` folder can be resumed"
            )
        grid, out_dir = Grid.from_options({**DEFAULTS, **saved.options, **options}), Path(resume)
        check_dir(out_dir, "--resume")
        _hold(prepare_out_dir(out_dir))
    else:
        grid = Grid.from_options({**DEFAULTS, **options})
        out_dir = Path(out) if out is not None else default_out_dir(grid.name)
        check_dir(out_dir, "--out")  # before the sweep, not after its first result (NOTE [Fail before the work])
        _hold(prepare_out_dir(out_dir))  # before the check below, or two new sweeps could both pass it
        if (out_dir / RESULTS_FILE).is_file():
            release_out(out_dir)
            raise MemprofError(
                f"{str(out_dir)!r} already holds a results.json; pass --resume {shlex.quote(str(out_dir))} to "
                "continue it, or another --out"
            )
    if resume is None and out is None:
        point_latest(out_dir)
    return grid, out_dir, auto_jobs(grid) if jobs is None else jobs


# ---------------------------------------------------------------------------------------------
# Output folders


def default_out_dir(backbone: str, root: str | Path = "reports", now: datetime | None = None) -> Path:
    """``reports/<backbone>-<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``... if that folder exists."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", backbone).strip("-.") or "backbone"
    base = Path(root) / f"{safe}-{stamp}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def point_latest(out_dir: Path) -> Path:
    """Make ``<parent>/latest`` point at ``out_dir``: a relative symlink, or, where symlinks fail,
    a small file holding the folder's name. A real folder named ``latest`` is left alone."""
    latest = out_dir.parent / "latest"
    if latest.is_dir() and not latest.is_symlink():
        return latest
    tmp = latest.with_name(f".latest.{os.getpid()}.tmp")
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(out_dir.name, tmp, target_is_directory=True)
        os.replace(tmp, latest)
    except OSError:
        if tmp.is_symlink():
            tmp.unlink()
        tmp.write_text(out_dir.name + "\n")
        os.replace(tmp, latest)
    return latest


# ---------------------------------------------------------------------------------------------
# The folder lock (NOTE [One writer per output folder])

#: the output folders this process holds, by resolved path
_held: dict[Path, OutLock] = {}


def _hold(out_dir: Path) -> bool:
    """Lock ``out_dir`` for this process; False when it held it already (plan, then run_sweep)."""
    key = out_dir.resolve()
    if key in _held:
        return False
    _held[key] = OutLock(out_dir).acquire()
    return True


def release_out(out_dir: str | Path) -> None:
    """Let go of ``out_dir`` (``plan`` locked it); nothing when this process does not hold it."""
    lock = _held.pop(Path(out_dir).resolve(), None)
    if lock is not None:
        lock.release()


# ---------------------------------------------------------------------------------------------
# Running


class _NoProgress:
    def start(self, total: int, done: int) -> None:
        pass

    def begin(self, config: ProfileConfig) -> None:
        pass

    def end(self, config: ProfileConfig, result: Result) -> None:
        pass


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a sweep; ``results.json`` in ``out_dir`` holds the ``done`` finished
    results; ``exit_code`` is the signal's (``memprof.errors.interrupt_exit_code``)."""

    def __init__(self, out_dir: Path, done: int, total: int, exit_code: int = 130) -> None:
        super().__init__(f"interrupted after {done} of {total} configurations")
        self.out_dir, self.done, self.total, self.exit_code = out_dir, done, total, exit_code


def auto_jobs(grid: Grid) -> int:
    """Worker processes for ``grid`` when none are asked for: one per method up to the CPUs this
    process may use, for an engine that allocates nothing on the device it models (the fake engine:
    models on fake tensors cost no memory); 1 for one that allocates (cpu, cuda: ``Engine.allocates``),
    whose real models and measurements should not share the machine."""
    if engine_named(grid.engine).allocates:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, len(grid.methods)))


def run_sweep(
    grid: Grid,
    out_dir: str | Path,
    *,
    resume: bool = False,
    run: RunFn | None = None,
    cache: Any = None,
    progress: Progress | None = None,
    jobs: int = 1,
) -> ResultSet:
    """Profile every configuration of ``grid`` and keep ``out_dir/results.json`` up to date.

    With ``resume``, configurations already in ``out_dir/results.json`` or its journal are skipped
    (the file must exist and hold a sweep of the same grid; NOTE [Linear sweeps]). The folder is
    locked for the call unless ``plan`` locked it already. ``run`` defaults to ``memprof.engines.run`` with a
    fresh ``engines.ModelCache`` (``default_runner``: each model built once per method); tests
    inject a function. With ``jobs`` > 1 the methods are shared among that many worker processes
    (NOTE [Parallel sweeps]); ``run`` must then be picklable and ``cache`` is not used. Ctrl-C
    raises SweepInterrupted after the finished results are safely on disk.
    """
    out = prepare_out_dir(out_dir)
    if out.resolve() not in _held:  # a caller that did not plan: hold the folder for this call
        _hold(out)
        try:
            return run_sweep(grid, out, resume=resume, run=run, cache=cache, progress=progress, jobs=jobs)
        finally:
            release_out(out)
    configs = grid.configs()
    path = out / RESULTS_FILE
    done: dict[tuple, Result] = {}
    if resume:
        saved = recorded(out)
        check_resumable(saved, grid, path, provenance)
        wanted = {config_key(c) for c in configs}
        # retried: a dead worker says nothing about its configuration (NOTE [Parallel sweeps])
        done = {r.key: r for r in saved.results if r.key in wanted and not died_with_worker(r)}
    todo = [c for c in configs if config_key(c) not in done]
    parallel = jobs > 1 and len({c.method for c in todo}) > 1
    if run is None:
        default_run, fresh_cache = default_runner()  # fails here, not in a worker, without engines
        fresh_cache = fresh_cache if cache is None else cache
        if not parallel:
            run, cache = default_run, fresh_cache
    progress = progress or _NoProgress()
    command, options = grid.command(), {**grid.options(), **provenance(grid)}
    as_dict: dict[tuple, dict] = {}  # each result serialised once, not once per save
    journal, written = Journal(out), -1  # written: how many results results.json holds

    def save() -> None:
        """results.json holding everything done, then no journal (NOTE [Linear sweeps])."""
        nonlocal written
        keys = [k for k in map(config_key, configs) if k in done]
        for k in keys:
            if k not in as_dict:
                as_dict[k] = done[k].to_dict()
        write_json(_Serialised(ResultSet(command=command, options=options), [as_dict[k] for k in keys]), path)
        journal.remove()  # only now: until results.json is replaced, the journal holds what it lacks
        written = len(done)

    def record(config: ProfileConfig, result: Result) -> None:
        key = config_key(config)
        done[key], as_dict[key] = result, result.to_dict()
        journaled = False
        try:
            journaled = _journal(journal, as_dict[key])
            if not journaled or _is_power_of_two(len(done)):
                save()
        except WriteFailed as exc:  # a full disk: what is on disk is valid (NOTE [Linear sweeps])
            kept = len(done) - (0 if journaled else 1)
            raise MemprofError(
                f"cannot write {str(exc.path)!r} ({exc.reason}); the {kept} of {len(configs)} results written "
                f"before it are valid in {str(out)!r}; free some space, then finish the sweep with: memprof compare "
                f"--resume {shlex.quote(str(out))}"
            ) from None
        progress.end(config, result)

    save()
    progress.start(len(configs), len(configs) - len(todo))
    try:
        if parallel:
            todo = [todo[i] for i in run_parallel(todo, run, jobs, record, progress)]
            if run is None:
                run, cache = default_run, fresh_cache
        for config in todo:  # everything, or what no worker process took (NOTE [Parallel sweeps])
            progress.begin(config)
            record(config, run_one(run, config, cache))
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM as memprof.errors.Interrupted
        save()  # an interrupt may have landed between a result and its write; the write is atomic
        raise SweepInterrupted(out, len(done), len(configs), interrupt_exit_code(stop)) from None
    if written != len(done):
        save()
    return load_results(path)


# NOTE [Linear sweeps]: rewriting results.json after every configuration costs O(n) bytes each,
# O(n^2) for the sweep (a 10x10 closed-form grid spent most of its time writing). So a finished result
# goes to the journal (``memprof.sweep.resume.Journal``: one JSON line, appended and fsync'd, O(1)),
# and results.json is rewritten, atomically and in grid order as before, only when the count of
# results reaches a power of two, on Ctrl-C and at the end: the rewrites sum to under 2n results,
# so a sweep writes O(n) bytes. Each rewrite removes the journal after replacing results.json, so
# at any moment results.json plus the journal hold every finished result (both at once, briefly,
# is harmless: a journal result replaces the same configuration's). ``resume`` reads both
# (``recorded``; a last journal line cut short by a crash is ignored) and its first write folds the
# journal in. A finished or interrupted sweep leaves no journal, and its results.json is the one an
# every-configuration rewrite gave, byte for byte. Only after a crash (a kill, a power cut) does
# results.json lag the journal, by at most half its results: ``memprof report`` and the gate read
# results.json alone and show those; ``memprof compare --resume`` folds the journal in.


def _journal(journal: Journal, result: dict[str, Any]) -> bool:
    """Append ``result`` to ``journal``; False for one JSON cannot hold (``write_json`` then says why)."""
    try:
        line = json.dumps(result, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, OverflowError, RecursionError):
        return False
    journal.append(line)
    return True


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class _Serialised:
    """A ResultSet whose results are already dicts, for ``write_json`` (same output as the ResultSet)."""

    def __init__(self, header: ResultSet, results: list[dict]) -> None:
        self.header, self.results = header, results

    def to_dict(self) -> dict[str, Any]:
        return {**self.header.to_dict(), "results": self.results}


def provenance(grid: Grid) -> dict[str, Any]:
    """What a sweep records besides its options (NOTE [What a resumed sweep must find unchanged])."""
    env = environment()
    return {
        "backbone_config_sha256": config_fingerprint(grid.backbone_config),
        "versions": {lib: str(env.get(lib)) for lib in VERSIONED},
    }
