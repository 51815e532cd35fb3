"""How long ``memprof compare`` takes on its default grid (bart-large; ft, lora, meft; sequence
lengths 128, 256, 512; batch sizes 8, 16, 32; the fake engine: 27 configurations), answered from
closed forms with a cold and a warm formula cache, against profiling every configuration, and a
10 x 10 grid against the 3 x 3 one. Every command runs as a user runs it (a fresh process, imports
included) pinned to the first ``--cores`` CPUs, one after another in one run. The script asserts
that every closed-form result equals the profiled one to the byte (Memory, per-module table,
parameter counts, attention), and prints the numbers, the ratios and a Markdown table.

    python benchmarks/compare_speed.py              # default grid, 2 cores
    python benchmarks/compare_speed.py --no-grid    # leave out the 10 x 10 grid
    python benchmarks/compare_speed.py -- --backbone bert-base   # options for every compare
    python benchmarks/compare_speed.py --llama      # only the llama-3.1-8b compare, cold cache
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENTRY = "from memprof.cli import main; main()"
GRID_10 = ("--seq-lens", "64,96,128,160,192,256,320,384,448,512", "--batch-sizes", "2,4,6,8,10,12,16,20,24,32")
LLAMA = (
    "--backbone", "llama-3.1-8b", "--methods", "ft,lora,meft1", "--seq-lens", "1024,2048,4096,8192",
    "--batch-sizes", "1,2,4", "--dtype", "bf16",
)  # fmt: skip
SAME = ("memory", "layers", "trainable_params", "total_params", "attn_implementation", "status")


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", ENTRY, *args], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"`memprof {' '.join(args)}` failed ({proc.returncode}):\n{proc.stderr.strip()}")
    return elapsed


def results(folder: Path) -> dict[tuple, dict]:
    data = json.loads((folder / "results.json").read_text())
    return {(r["method"], r["seq_len"], r["batch_size"]): r for r in data["results"]}


def assert_same(evaluated: dict[tuple, dict], profiled: dict[tuple, dict], what: str) -> int:
    """Every result of ``evaluated`` equals ``profiled``'s to the byte; how many came from formulas."""
    assert evaluated.keys() == profiled.keys(), what
    for key, r in evaluated.items():
        for field in SAME:
            assert r[field] == profiled[key][field], f"{what}: {key} {field} differs from the profile"
    return sum("closed_form" in r["environment"] for r in evaluated.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2, help="CPUs to pin the commands to (default 2)")
    parser.add_argument("--no-grid", action="store_true", help="leave out the 10 x 10 grid")
    parser.add_argument("--llama", action="store_true", help="only time the llama-3.1-8b compare, cold cache")
    parser.add_argument("extra", nargs="*", help="options passed to every memprof compare (after --)")
    opts = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))[: opts.cores]
    os.sched_setaffinity(0, cores)  # the children inherit it
    base = {**os.environ, "OMP_NUM_THREADS": str(len(cores)), "MKL_NUM_THREADS": str(len(cores))}
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def compare(name: str, cache: str, *args: str) -> dict[tuple, dict]:
            env = {**base, "MEMPROF_CACHE_DIR": str(root / cache)}
            times[name] = timed(["compare", "--quiet", "--out", str(root / name), *opts.extra, *args], env)
            print(f"{name:12} {times[name]:6.1f} s", flush=True)
            return results(root / name)

        if opts.llama:
            got = compare("llama cold", "cache-llama", *LLAMA)
            n = sum("closed_form" in r["environment"] for r in got.values())
            print(f"llama-3.1-8b: {times['llama cold']:.1f} s cold (goal 60 s); {n} of {len(got)} evaluated")
            return
        profiled = compare("profile-all", "unused", "--profile-all")
        cold = compare("cold", "cache")
        warm = compare("warm", "cache")
        n_cold = assert_same(cold, profiled, "cold cache")
        n_warm = assert_same(warm, profiled, "warm cache")
        if not opts.no_grid:
            compare("3x3", "cache-3", "--seq-lens", "128,256,512", "--batch-sizes", "8,16,32")
            big = compare("10x10", "cache-10", *GRID_10)
            n_big = sum("closed_form" in r["environment"] for r in big.values())
    print()
    print(f"load average at the end: {os.getloadavg()[0]:.1f}; cores: {len(cores)}")
    print(f"results identical to profiling every configuration: cold ({n_cold} of {len(cold)} evaluated), ", end="")
    print(f"warm ({n_warm} of {len(warm)} evaluated)")
    cold_ratio = times["profile-all"] / times["cold"]
    print(f"cold: {times['cold']:.1f} s (goal 15 s), {cold_ratio:.2f}x faster than profiling everything (goal 3x)")
    print(f"warm: {times['warm']:.1f} s (goal 5 s)")
    if not opts.no_grid:
        ratio = times["10x10"] / times["3x3"]
        print(f"10 x 10 ({n_big} of {len(big)} evaluated) / 3 x 3, cold caches: {ratio:.2f} (goal at most 1.3)")
    print()
    print("| run | wall (s) | ratio |")
    print("|---|---:|---:|")
    print(f"| `compare --profile-all` | {times['profile-all']:.1f} | 1 |")
    print(f"| `compare`, cold cache | {times['cold']:.1f} | {times['cold'] / times['profile-all']:.2f} |")
    print(f"| `compare`, warm cache | {times['warm']:.1f} | {times['warm'] / times['profile-all']:.2f} |")
    if not opts.no_grid:
        print(f"| `compare` 3 x 3, cold cache | {times['3x3']:.1f} | |")
        print(f"| `compare` 10 x 10, cold cache | {times['10x10']:.1f} | {ratio:.2f} of 3 x 3 |")


if __name__ == "__main__":
    main()
