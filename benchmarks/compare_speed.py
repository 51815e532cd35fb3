"""How long the default ``memprof compare`` takes: bart-large; ft, lora, meft; sequence lengths
128, 256, 512; batch sizes 8, 16, 32; the fake engine (27 configurations). The target is 60 s on 2 cores.

The command runs as a user runs it (a fresh process, imports included) pinned to the first
``--cores`` CPUs; then ``memprof report`` renders the same results again, which times the reporters
alone. Prints the numbers and a Markdown row for BENCHMARKS.md.

    python benchmarks/compare_speed.py                # default grid, 2 cores
    python benchmarks/compare_speed.py --repeat 3 -- --methods ft,lora
    python benchmarks/compare_speed.py --with-fast    # and the same grid with --fast, interleaved
    python benchmarks/compare_speed.py --only-fast -- --seq-lens 64,96,...  # a grid too large to profile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENTRY = "from memprof.cli import main; main()"


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and every process it started)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", ENTRY, *args], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"`memprof {' '.join(args)}` failed ({proc.returncode}):\n{proc.stderr.strip()}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2, help="CPUs to pin the command to (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="runs to take the median of (default 1)")
    parser.add_argument("--with-fast", action="store_true", help="also time `compare --fast`, run after each plain run")
    parser.add_argument("--only-fast", action="store_true", help="time only `compare --fast`")
    parser.add_argument("extra", nargs="*", help="options passed to memprof compare (after --)")
    opts = parser.parse_args()
    if opts.with_fast or opts.only_fast:
        return fast_main(opts)

    available = sorted(os.sched_getaffinity(0))
    cores = available[: opts.cores]
    os.sched_setaffinity(0, cores)  # the child inherits it
    env = {**os.environ, "OMP_NUM_THREADS": str(len(cores)), "MKL_NUM_THREADS": str(len(cores))}

    compare, report, cpu = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(opts.repeat):
            out = Path(tmp) / f"run{i}"
            wall, used = timed(["compare", "--quiet", "--out", str(out), *opts.extra], env)
            compare.append(wall)
            cpu.append(used)
            report.append(
                timed(["report", str(out / "results.json"), "--quiet", "--out", str(Path(tmp) / f"again{i}")], env)[0]
            )
        saved = json.loads((Path(tmp) / "run0" / "results.json").read_text())
    statuses = [r["status"] for r in saved["results"]]
    steps = [r["step_time_s"] for r in saved["results"] if r.get("step_time_s") is not None]
    total, render = statistics.median(compare), statistics.median(report)

    print(f"command:        {saved['command']}")
    print(f"configurations: {len(statuses)} ({statuses.count('ok')} ok, {len(statuses) - statuses.count('ok')} not)")
    print(f"cores:          {len(cores)} of {len(available)} ({platform.processor() or platform.machine()})")
    print(
        f"compare:        {total:.1f} s wall (median of {opts.repeat}; runs: {', '.join(f'{t:.1f}' for t in compare)})"
    )
    print(
        f"cpu time:       {statistics.median(cpu):.1f} s user+sys over all processes "
        f"(load average {os.getloadavg()[0]:.1f}: other work on the machine slows the wall time)"
    )
    print(f"report alone:   {render:.1f} s wall (re-rendering the same results)")
    if steps:
        print(f"engine steps:   {sum(steps):.1f} s in total as recorded in step_time_s")
    print(f"target:         60 s -> {'met' if total <= 60 else 'MISSED'}")
    print()
    print("| benchmark | configurations | cores | wall (s) | CPU (s) | report alone (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    name = " ".join(["memprof compare", *opts.extra])
    print(f"| `{name}` | {len(statuses)} | {len(cores)} | {total:.1f} | {statistics.median(cpu):.1f} | {render:.1f} |")


def fast_main(opts) -> None:
    """Plain and ``--fast`` compares of one grid, alternated in one run; their ratio."""
    cores = sorted(os.sched_getaffinity(0))[: opts.cores]
    os.sched_setaffinity(0, cores)
    env = {**os.environ, "OMP_NUM_THREADS": str(len(cores)), "MKL_NUM_THREADS": str(len(cores))}
    modes = ([] if opts.only_fast else [[]]) + [["--fast"]]
    times: dict[str, list[float]] = {" ".join(m) or "plain": [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(opts.repeat):
            for mode in modes:
                out = Path(tmp) / f"run{i}{'-'.join(mode)}"
                times[" ".join(mode) or "plain"].append(
                    timed(["compare", "--quiet", "--out", str(out), *opts.extra, *mode], env)[0]
                )
        saved = json.loads((Path(tmp) / f"run0{'-'.join(modes[-1])}" / "results.json").read_text())
    print(f"command:        {saved['command']} ({len(saved['results'])} configurations)")
    print(f"cores:          {len(cores)}; load average {os.getloadavg()[0]:.1f} at the end")
    for mode, ts in times.items():
        each = ", ".join(f"{t:.1f}" for t in ts)
        print(f"{mode:15} {statistics.median(ts):.1f} s wall (median of {opts.repeat}: {each})")
    if "plain" in times:
        ratio = statistics.median(times["plain"]) / statistics.median(times["--fast"])
        print(f"ratio:          plain / --fast = {ratio:.2f}")


if __name__ == "__main__":
    main()
