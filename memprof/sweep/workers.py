"""Running a sweep's configurations: one at a time in this process, or in worker processes.

``run_one`` profiles one configuration and records a failure as a Result (NOTE [Robust sweeps]
in ``memprof.sweep.run``); ``run_parallel`` shares whole methods among spawned worker processes
(NOTE [Parallel sweeps]). ``memprof.sweep.run.run_sweep`` decides which, and writes results.json.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from memprof.engines.common import failed_result
from memprof.engines.config import ProfileConfig
from memprof.results.result import Result

#: run(config, cache) -> Result; memprof.engines.run has this shape.
RunFn = Callable[[ProfileConfig, Any], Result]

#: how the message of a configuration whose worker process died under it starts (NOTE [Parallel sweeps])
WORKER_DIED = "worker died"


class Progress(Protocol):
    """What the sweep reports as it goes (the CLI draws a rich progress bar from it)."""

    def start(self, total: int, done: int) -> None: ...
    def begin(self, config: ProfileConfig) -> None: ...
    def end(self, config: ProfileConfig, result: Result) -> None: ...


def default_runner() -> tuple[RunFn, Any]:
    """The real profiler and a fresh model cache: ``memprof.engines.run`` and ``engines.ModelCache()``
    (each model is built once per method and reused across sequence lengths and batch sizes)."""
    from memprof import engines

    return engines.run, engines.ModelCache()


def run_one(run: RunFn, config: ProfileConfig, cache: Any) -> Result:
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
# same as a serial sweep's. Ctrl-C and SIGTERM reach the parent, which terminates the workers. A
# worker that dies (SIGKILL from the OOM killer, a crash in native code) charges only the
# configuration it had begun: that one is recorded as an error whose message starts with
# WORKER_DIED, which --resume retries (``died_with_worker``: the death may say nothing about the
# configuration, and a retry costs one configuration); the rest of its method goes to a fresh
# worker, never charged for what it did not start. A worker that died between configurations
# charged nothing, so gets no fresh worker (no death can then repeat forever): the parent runs
# what it left. Parallelism is only a speed-up: when no worker can start (``run`` cannot be
# pickled, ``__main__`` cannot be re-imported) or every worker is gone, what no worker finished
# runs in the parent.


def died_with_worker(result: Result) -> bool:
    """Whether ``result`` records the death of the worker process profiling it (NOTE [Parallel sweeps])."""
    return result.status == "error" and result.message.startswith(WORKER_DIED)


def worker_died(config: ProfileConfig, exitcode: int | None) -> Result:
    """The error Result of ``config``, whose worker process ended with ``exitcode`` while profiling it."""
    how = f"exit code {exitcode}"
    if exitcode is not None and exitcode < 0:
        how = f"killed by {signal.Signals(-exitcode).name}" if -exitcode in signal.valid_signals() else how
    message = f"{WORKER_DIED} ({how}) while profiling this configuration; memprof compare --resume retries it"
    return dataclasses.replace(failed_result(config, RuntimeError(message)), message=message)


def _worker(run: RunFn | None, tasks: Any, conn: Any, first: list | None = None) -> None:
    cache = None
    if run is None:
        run, cache = default_runner()
    task = first if first is not None else tasks.get()
    while task is not None:
        conn.send(("take", [i for i, _ in task]))
        for i, config in task:
            conn.send(("begin", i))
            conn.send(("end", (i, run_one(run, config, cache))))
        task = tasks.get()
    conn.close()


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ctrl-C ignored while workers start: they inherit it, so only the parent sees Ctrl-C."""
    import threading

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def _start(ctx: Any, run: RunFn | None, tasks: Any, first: list | None = None) -> tuple[Any, Any] | None:
    """A started worker (the parent's end of its pipe, the process), or None when ``run`` cannot go to one."""
    import pickle

    reader, writer = ctx.Pipe(duplex=False)
    worker = ctx.Process(target=_worker, args=(run, tasks, writer, first), daemon=True)
    try:
        with _sigint_ignored():
            worker.start()
    except (pickle.PicklingError, AttributeError, TypeError):
        reader.close()
        return None
    finally:
        writer.close()
    return reader, worker


def run_parallel(
    todo: list[ProfileConfig],
    run: RunFn | None,
    jobs: int,
    record: Callable[[ProfileConfig, Result], None],
    progress: Progress,
) -> list[int]:
    """Profile ``todo`` in worker processes; returns the indices no worker finished, in order."""
    import multiprocessing
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
        tasks.put(None)  # one each; a worker that dies mid-method leaves its None to its fresh successor
    workers: dict[Any, Any] = {}  # the parent's end of each worker's pipe -> the worker
    for _ in range(n):
        if (started := _start(ctx, run, tasks)) is None:
            break
        workers[started[0]] = started[1]
    pending: set[int] = set(range(len(todo)))
    taken: dict[Any, list[int]] = {}  # pipe -> the indices its worker took
    running: dict[Any, int] = {}  # pipe -> the index its worker has begun and not ended

    def bury(conn: Any) -> None:
        """The worker behind ``conn`` exited: normally, or not (NOTE [Parallel sweeps])."""
        worker = workers.pop(conn)
        conn.close()
        worker.join()
        left, begun = taken.pop(conn, []), running.pop(conn, None)
        if begun is None:
            return  # charged nothing: the parent runs what it left
        pending.discard(begun)
        record(todo[begun], worker_died(todo[begun], worker.exitcode))
        rest = [(i, todo[i]) for i in left if i in pending]
        if rest and (started := _start(ctx, run, tasks, rest)) is not None:
            workers[started[0]] = started[1]

    try:
        while workers:
            for conn in wait(list(workers)):
                try:
                    kind, payload = conn.recv()
                except EOFError:
                    bury(conn)
                    continue
                if kind == "take":
                    taken[conn] = payload
                elif kind == "begin":
                    running[conn] = payload
                    progress.begin(todo[payload])
                else:
                    i, result = payload
                    running.pop(conn, None)
                    pending.discard(i)
                    record(todo[i], result)
        return sorted(pending)  # every worker is gone and none finished these
    finally:
        for worker in workers.values():
            if worker.is_alive():
                worker.terminate()
            worker.join()
        tasks.cancel_join_thread()  # tasks nobody took must not hold up the interpreter's exit
        tasks.close()
