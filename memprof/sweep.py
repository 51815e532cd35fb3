"""The ``compare`` grid: every (method, sequence length, batch size) of one backbone, profiled in turn.

The sweep only runs configurations and records Results; the reporters turn the saved
``results.json`` into tables and plots afterwards. NOTE [Robust sweeps]: the ResultSet is written
atomically (``result.write_json``) after every configuration, so a crash or Ctrl-C at any moment
leaves a valid, partial ``results.json``; a configuration that fails or runs out of memory is
recorded as a Result with status ``"error"`` / ``"oom"`` and the sweep goes on; ``resume`` skips
every configuration whose key is already in the file. Results are kept in grid order, so an
interrupted-then-resumed sweep writes the same file as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Protocol

from memprof import methods as method_registry
from memprof.config import ProfileConfig
from memprof.engines.common import failed_result
from memprof.errors import MemprofError
from memprof.outputs import check_dir
from memprof.reporters import RESULTS_FILE, prepare_out_dir
from memprof.result import Result, ResultSet, config_key, environment, load_results, write_json

#: run(config, cache) -> Result; memprof.engines.run has this shape.
RunFn = Callable[[ProfileConfig, Any], Result]

DEFAULTS: dict[str, Any] = {
    "backbone": "bart-large",
    "methods": ["ft", "lora", "meft"],
    "seq_lens": [128, 256, 512],
    "batch_sizes": [8, 16, 32],
    "engine": "fake",
    "target": None,
    "dtype": "fp32",
    "attn": "sdpa",
    "task": None,
}


# ---------------------------------------------------------------------------------------------
# Parsing the comma-separated lists the CLI takes


def parse_methods(text: str) -> list[str]:
    """``"ft,lora,meft"`` -> ``["ft", "lora", "meft"]``: non-empty, no duplicates, all registered."""
    names = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise MemprofError(
            f"method list {text!r} is empty or has an empty entry; pass comma-separated names, e.g. --methods ft,lora"
        )
    _check_methods(names)
    return names


def parse_ints(text: str, what: str, flag: str) -> list[int]:
    """``"128,256"`` -> ``[128, 256]``: whole numbers of at least 1, no duplicates."""
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise MemprofError(f"{what} list {text!r} is empty or has an empty entry; pass e.g. {flag} 128,256")
    values = []
    for part in parts:
        try:
            value = int(part)
        except ValueError:
            raise MemprofError(
                f"{what} {part!r} in {flag} {text!r} is not a whole number; pass e.g. {flag} 128,256"
            ) from None
        values.append(value)
    _check_ints(values, what, flag)
    return values


def alias_of(name: str) -> str:
    """The registered method ``name`` stands for (``meft`` -> ``meft1``), else ``name`` itself.
    MemprofError for an unknown method."""
    return method_registry.get(name).alias_of or name


def _check_methods(names: list[str]) -> None:
    """Registered, and each profiled once: no name twice, nor a method and its alias."""
    if not names:
        raise MemprofError("method list is empty; pass at least one, e.g. --methods ft,lora")
    listed: dict[str, str] = {}  # the method profiled -> the name it was listed as
    for name in names:
        if name in listed.values():
            raise MemprofError(f"method {name!r} is listed twice in --methods; list each method once")
        same = alias_of(name)
        if same in listed:
            other = listed[same]
            alias, target = (name, same) if same != name else (other, name)
            keep = ",".join(n for n in names if n != name)
            raise MemprofError(
                f"method {alias!r} is an alias of {target!r} and both are in --methods, so it would be profiled "
                f"twice; list it once, e.g. --methods {keep}"
            )
        listed[same] = name


def _check_ints(values: list[int], what: str, flag: str) -> None:
    if not values:
        raise MemprofError(f"{what} list is empty; pass at least one, e.g. {flag} 128")
    seen: set[int] = set()
    for value in values:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise MemprofError(f"{what} {value!r} in {flag} must be a whole number of at least 1; pass e.g. {flag} 128")
        if value in seen:
            raise MemprofError(f"{what} {value} is listed twice in {flag}; list each value once")
        seen.add(value)


# ---------------------------------------------------------------------------------------------
# The grid


@dataclass
class Grid:
    """What ``memprof compare`` sweeps: the product methods x sequence lengths x batch sizes.

    Validated on construction; ``configs()`` builds (and so validates) every ProfileConfig before
    anything runs, so bad input fails at once instead of after an hour of profiling.
    """

    backbone: str = DEFAULTS["backbone"]
    methods: list[str] = field(default_factory=lambda: list(DEFAULTS["methods"]))
    seq_lens: list[int] = field(default_factory=lambda: list(DEFAULTS["seq_lens"]))
    batch_sizes: list[int] = field(default_factory=lambda: list(DEFAULTS["batch_sizes"]))
    engine: str = DEFAULTS["engine"]
    target: str | None = DEFAULTS["target"]
    dtype: str = DEFAULTS["dtype"]
    attn: str = DEFAULTS["attn"]
    task: str | None = DEFAULTS["task"]

    def __post_init__(self) -> None:
        self.methods = list(self.methods)
        self.seq_lens = list(self.seq_lens)
        self.batch_sizes = list(self.batch_sizes)
        _check_methods(self.methods)
        _check_ints(self.seq_lens, "sequence length", "--seq-lens")
        _check_ints(self.batch_sizes, "batch size", "--batch-sizes")
        # Resolve target and task once, the way ProfileConfig does; ``backbone`` stays as given (a
        # config path must stay a path), ``name`` is what results call it.
        first = self._config(self.methods[0], max(self.seq_lens), self.batch_sizes[0])
        self.name, self.target, self.task = first.backbone, first.target, first.task
        self.backbone_config: dict[str, Any] = dict(first.resolved.config)

    def _config(self, method: str, seq_len: int, batch_size: int) -> ProfileConfig:
        return ProfileConfig(
            backbone=self.backbone, method=method, seq_len=seq_len, batch_size=batch_size, engine=self.engine,
            target=self.target, dtype=self.dtype, attn=self.attn, task=self.task,
        )

    def configs(self) -> list[ProfileConfig]:
        """Every configuration, method-major (so a model cache holds one method's model at a time)."""
        return [self._config(m, s, b) for m in self.methods for b in self.batch_sizes for s in self.seq_lens]

    def options(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone, "methods": list(self.methods), "seq_lens": list(self.seq_lens),
            "batch_sizes": list(self.batch_sizes), "engine": self.engine, "target": self.target,
            "dtype": self.dtype, "attn": self.attn, "task": self.task,
        }

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "Grid":
        known = {k: options[k] for k in DEFAULTS if k in options}
        return cls(**known)

    def command(self) -> str:
        """The exact command line that reproduces this grid."""
        parts = [
            "memprof compare", f"--backbone {shlex.quote(self.backbone)}", f"--methods {','.join(self.methods)}",
            f"--seq-lens {','.join(map(str, self.seq_lens))}", f"--batch-sizes {','.join(map(str, self.batch_sizes))}",
            f"--engine {self.engine}", f"--target {self.target}", f"--dtype {self.dtype}", f"--attn {self.attn}",
        ]
        if self.task:
            parts.append(f"--task {self.task}")
        return " ".join(parts)


def parse_options(**given: Any) -> dict[str, Any]:
    """The options a user gave on the command line (None: not given), the lists parsed and checked."""
    out = {k: v for k, v in given.items() if v is not None}
    if "methods" in out:
        out["methods"] = parse_methods(out["methods"])
    if "seq_lens" in out:
        out["seq_lens"] = parse_ints(out["seq_lens"], "sequence length", "--seq-lens")
    if "batch_sizes" in out:
        out["batch_sizes"] = parse_ints(out["batch_sizes"], "batch size", "--batch-sizes")
    return out


def plan(options: dict[str, Any], *, out: str | Path | None = None, resume: str | Path | None = None,
         jobs: int | None = None) -> tuple[Grid, Path, int]:
    """What ``memprof compare`` will run: (grid, output folder, worker processes), validated before
    anything runs, the output folder created.

    A new sweep takes ``options`` over ``DEFAULTS`` and writes into ``out`` (default
    ``default_out_dir``, then ``reports/latest`` points at it), which must not hold a results.json
    yet. A resumed sweep (``resume``: its folder) takes the options saved in its results.json, with
    ``options`` given again over them (``run_sweep`` refuses any that differ). ``jobs`` None is
    ``auto_jobs``.
    """
    if jobs is not None and jobs < 1:
        raise MemprofError(f"--jobs {jobs} must be at least 1; pass e.g. --jobs 2, or leave it out for one per method")
    if resume is not None:
        if out is not None and Path(out).resolve() != Path(resume).resolve():
            raise MemprofError(f"--out {str(out)!r} differs from --resume {str(resume)!r}; a resumed sweep writes "
                               "into its own folder, drop --out")
        saved = load_results(Path(resume) / RESULTS_FILE)
        if not saved.options:
            raise MemprofError(f"{str(Path(resume) / RESULTS_FILE)!r} holds no compare options; only a "
                               "`memprof compare` folder can be resumed")
        grid, out_dir = Grid.from_options({**DEFAULTS, **saved.options, **options}), Path(resume)
        check_dir(out_dir, "--resume")
    else:
        grid = Grid.from_options({**DEFAULTS, **options})
        out_dir = Path(out) if out is not None else default_out_dir(grid.name)
        if (out_dir / RESULTS_FILE).is_file():
            raise MemprofError(
                f"{str(out_dir)!r} already holds a results.json; pass --resume {shlex.quote(str(out_dir))} to "
                "continue it, or another --out"
            )
        check_dir(out_dir, "--out")  # before the sweep, not after its first result (NOTE [Fail before the work])
    prepare_out_dir(out_dir)
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
# Running


class Progress(Protocol):
    """What the sweep reports as it goes (the CLI draws a rich progress bar from it)."""

    def start(self, total: int, done: int) -> None: ...
    def begin(self, config: ProfileConfig) -> None: ...
    def end(self, config: ProfileConfig, result: Result) -> None: ...


class _NoProgress:
    def start(self, total: int, done: int) -> None:
        pass

    def begin(self, config: ProfileConfig) -> None:
        pass

    def end(self, config: ProfileConfig, result: Result) -> None:
        pass


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep; ``results.json`` in ``out_dir`` holds the ``done`` finished results."""

    def __init__(self, out_dir: Path, done: int, total: int) -> None:
        super().__init__(f"interrupted after {done} of {total} configurations")
        self.out_dir, self.done, self.total = out_dir, done, total


def default_runner() -> tuple[RunFn, Any]:
    """The real profiler and a fresh model cache: ``memprof.engines.run`` and ``engines.ModelCache()``
    (each model is built once per method and reused across sequence lengths and batch sizes)."""
    from memprof import engines

    return engines.run, engines.ModelCache()


def auto_jobs(grid: Grid) -> int:
    """Worker processes for ``grid`` when none are asked for: one per method up to the CPUs this
    process may use, for the fake engine (models on fake tensors cost no memory); 1 for the cpu
    and cuda engines, whose real models and measurements should not share the machine."""
    if grid.engine != "fake":
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

    With ``resume``, configurations already in ``out_dir/results.json`` are skipped (the file must
    exist and hold a sweep of the same grid). ``run`` defaults to ``memprof.engines.run`` with a
    fresh ``engines.ModelCache`` (``default_runner``: each model built once per method); tests
    inject a function. With ``jobs`` > 1 the methods are shared among that many worker processes
    (NOTE [Parallel sweeps]); ``run`` must then be picklable and ``cache`` is not used. Ctrl-C
    raises SweepInterrupted after the finished results are safely on disk.
    """
    configs = grid.configs()
    out = prepare_out_dir(out_dir)
    path = out / RESULTS_FILE
    done: dict[tuple, Result] = {}
    if resume:
        saved = load_results(path)
        check_resumable(saved, grid, path)
        wanted = {config_key(c) for c in configs}
        done = {r.key: r for r in saved.results if r.key in wanted}
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

    def save() -> None:
        keys = [k for k in map(config_key, configs) if k in done]
        for k in keys:
            if k not in as_dict:
                as_dict[k] = done[k].to_dict()
        write_json(_Serialised(ResultSet(command=command, options=options), [as_dict[k] for k in keys]), path)

    def record(config: ProfileConfig, result: Result) -> None:
        done[config_key(config)] = result
        save()
        progress.end(config, result)

    save()
    progress.start(len(configs), len(configs) - len(todo))
    try:
        if parallel:
            todo = [todo[i] for i in _run_parallel(todo, run, jobs, record, progress)]
            if run is None:
                run, cache = default_run, fresh_cache
        for config in todo:  # everything, or what no worker process took (NOTE [Parallel sweeps])
            progress.begin(config)
            record(config, _run_one(run, config, cache))
    except KeyboardInterrupt:
        save()  # an interrupt may have landed between a result and its write; the write is atomic
        raise SweepInterrupted(out, len(done), len(configs)) from None
    return load_results(path)


def _run_one(run: RunFn, config: ProfileConfig, cache: Any) -> Result:
    try:
        return run(config, cache)
    except Exception as exc:  # noqa: BLE001 - NOTE [Robust sweeps]: record and go on
        return failed_result(config, exc)


# NOTE [Parallel sweeps]: the fake engine is single-threaded Python, so a sweep on n cores runs n
# worker processes. Each worker takes a whole method at a time (all of its configurations), so
# every model is still built once per method, by the worker's own ModelCache. Workers are spawned
# (not forked: the parent has imported torch) with SIGINT ignored, and report ("take" | "begin" |
# "end", payload) events over their own pipe, written synchronously so that nothing finished is
# lost if a worker dies. Only the parent writes results.json, in grid order, so the file is the
# same as a serial sweep's. Ctrl-C reaches the parent, which terminates the workers. A worker that
# dies has its unfinished configurations recorded as errors. Parallelism is only a speed-up: when
# no worker can start (``run`` cannot be pickled, ``__main__`` cannot be re-imported) or every
# worker is gone, what no worker took runs in the parent.


def _worker(run: RunFn | None, tasks: Any, conn: Any) -> None:
    cache = None
    if run is None:
        run, cache = default_runner()
    while (task := tasks.get()) is not None:
        conn.send(("take", [i for i, _ in task]))
        for i, config in task:
            conn.send(("begin", i))
            conn.send(("end", (i, _run_one(run, config, cache))))
    conn.close()


def _run_parallel(todo: list[ProfileConfig], run: RunFn | None, jobs: int,
                  record: Callable[[ProfileConfig, Result], None], progress: Progress) -> list[int]:
    """Profile ``todo`` in worker processes; returns the indices no worker took, in order."""
    import multiprocessing
    import pickle
    import signal
    import threading
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")
    tasks = ctx.Queue()
    by_method: dict[str, list[tuple[int, ProfileConfig]]] = {}
    for i, config in enumerate(todo):
        by_method.setdefault(config.method, []).append((i, config))
    for task in by_method.values():
        tasks.put(task)
    n = min(jobs, len(by_method))
    for _ in range(n):
        tasks.put(None)
    workers: dict[Any, Any] = {}  # the parent's end of each worker's pipe -> the worker
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # inherited: workers ignore Ctrl-C
    try:
        for _ in range(n):
            reader, writer = ctx.Pipe(duplex=False)
            worker = ctx.Process(target=_worker, args=(run, tasks, writer), daemon=True)
            try:
                worker.start()
            except (pickle.PicklingError, AttributeError, TypeError):  # run cannot go to a worker
                reader.close()
                break
            finally:
                writer.close()
            workers[reader] = worker
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    pending, taken = set(range(len(todo))), {}
    try:
        while workers:
            for conn in wait(list(workers)):
                try:
                    kind, payload = conn.recv()
                except EOFError:  # the worker exited: normally, or not
                    worker = workers.pop(conn)
                    conn.close()
                    worker.join()
                    lost = sorted(set(taken.pop(conn, [])) & pending)
                    for i in lost:
                        pending.discard(i)
                        why = f"the worker process profiling it died (exit code {worker.exitcode})"
                        record(todo[i], failed_result(todo[i], RuntimeError(why)))
                    continue
                if kind == "take":
                    taken[conn] = payload
                elif kind == "begin":
                    progress.begin(todo[payload])
                else:
                    i, result = payload
                    pending.discard(i)
                    record(todo[i], result)
        return sorted(pending)  # every worker is gone and nobody took these
    finally:
        for worker in workers.values():
            if worker.is_alive():
                worker.terminate()
            worker.join()
        tasks.cancel_join_thread()  # tasks nobody took must not hold up the interpreter's exit
        tasks.close()


class _Serialised:
    """A ResultSet whose results are already dicts, for ``write_json`` (same output as the ResultSet)."""

    def __init__(self, header: ResultSet, results: list[dict]) -> None:
        self.header, self.results = header, results

    def to_dict(self) -> dict[str, Any]:
        return {**self.header.to_dict(), "results": self.results}


# NOTE [What a resumed sweep must find unchanged]: the grid's options (backbone, methods, sizes,
# engine, target, dtype, attention, task) and what no option names but moves the numbers: the
# resolved backbone config (a config.json edited between the runs would put two architectures in
# one table; its sha256 over canonical JSON) and the versions of torch, transformers, peft and
# memprof. ``run_sweep`` records them in the options of results.json; a file written before they
# were recorded resumes without that check (there is nothing to compare).

#: the libraries whose versions a sweep records and a resumed sweep must run with
VERSIONED = ("torch", "transformers", "peft", "memprof")


def config_fingerprint(config: dict[str, Any]) -> str:
    """sha256 of ``config`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def provenance(grid: Grid) -> dict[str, Any]:
    """What a sweep records besides its options (NOTE [What a resumed sweep must find unchanged])."""
    env = environment()
    return {"backbone_config_sha256": config_fingerprint(grid.backbone_config),
            "versions": {lib: str(env.get(lib)) for lib in VERSIONED}}


def check_resumable(saved: ResultSet, grid: Grid, path: Path) -> None:
    """A resumed sweep must be the same grid on the same backbone config and library versions;
    say what differs otherwise (NOTE [What a resumed sweep must find unchanged])."""
    if not saved.options:
        return
    mine = grid.options()
    for key, value in saved.options.items():
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
    for lib, old in (versions.items() if isinstance(versions, dict) else ()):
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
