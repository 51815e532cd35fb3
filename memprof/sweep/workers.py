"""Running a sweep's configurations: one at a time in this process, or in worker processes.

``run_one`` profiles one configuration and records a failure as a Result (NOTE [Robust sweeps]
in ``memprof.sweep.run``); ``run_parallel`` shares whole methods among spawned worker processes
(NOTE [Parallel sweeps]). ``memprof.sweep.run.run_sweep`` decides which, and writes results.json.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from memprof.engines.common import failed_result
from memprof.engines.config import ProfileConfig
from memprof.results.result import Result

#: run(config, cache) -> Result; memprof.engines.run has this shape.
RunFn = Callable[[ProfileConfig, Any], Result]


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
            conn.send(("end", (i, run_one(run, config, cache))))
    conn.close()


def run_parallel(
    todo: list[ProfileConfig],
    run: RunFn | None,
    jobs: int,
    record: Callable[[ProfileConfig, Result], None],
    progress: Progress,
) -> list[int]:
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
