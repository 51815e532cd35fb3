"""How long ``memprof fit`` takes on opt-1.3b (ft, lora, meft; 24 GiB; sequence length 512): the
closed-form search with a cold and a warm formula cache, against the profile search
(``--profile-all``), one after another in one run, each a fresh process pinned to ``--cores`` CPUs.
The script asserts the three give the same answers and breakdowns.

    python benchmarks/fit_speed.py
    python benchmarks/fit_speed.py -- --dtype bf16     # options for every fit
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
FIT = ("fit", "--backbone", "opt-1.3b", "--methods", "ft,lora,meft", "--budget", "24GiB", "--seq-len", "512")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="options passed to every memprof fit (after --)")
    opts = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))[: opts.cores]
    os.sched_setaffinity(0, cores)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MEMPROF_CACHE_DIR": str(Path(tmp) / "cache"), "OMP_NUM_THREADS": str(len(cores))}
        times, answers = {}, {}
        for name, args in (("profile-all", ["--profile-all"]), ("cold", []), ("warm", [])):
            out = Path(tmp) / f"{name}.json"
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", ENTRY, *FIT, *opts.extra, *args, "--json", str(out)],
                env=env,
                capture_output=True,
                text=True,
            )
            times[name] = time.perf_counter() - start
            if proc.returncode != 0:
                sys.exit(f"fit {name} failed ({proc.returncode}):\n{proc.stderr.strip()}")
            answers[name] = json.loads(out.read_text())["methods"]
            print(f"{name:12} {times[name]:6.1f} s", flush=True)

    def same(methods: list[dict]) -> list[dict]:
        return [{k: v for k, v in m.items() if k not in ("profiles", "evaluated")} for m in methods]

    assert same(answers["cold"]) == same(answers["profile-all"]) == same(answers["warm"]), "the answers differ"
    print(f"load average at the end: {os.getloadavg()[0]:.1f}; cores: {len(cores)}")
    print("answers identical:", ", ".join(f"{m['method']} {m.get('max_batch_size')}" for m in answers["cold"]))
    for name in ("profile-all", "cold", "warm"):
        profiles = ", ".join(f"{m['method']} {m['profiles']}+{m['evaluated']}" for m in answers[name])
        print(f"{name}: steady-step profiles + evaluated sizes per method: {profiles}")
    print()
    print("| run | wall (s) | ratio |")
    print("|---|---:|---:|")
    for name in ("profile-all", "cold", "warm"):
        print(f"| `memprof fit` {name} | {times[name]:.1f} | {times[name] / times['profile-all']:.2f} |")


if __name__ == "__main__":
    main()
