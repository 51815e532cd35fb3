"""The step's timeline on the default ``memprof compare`` (bart-large; ft, lora, meft; sequence
lengths 128, 256, 512; batch sizes 8, 16, 32; fake engine): for each method, whether every stored
timeline's peak is the result's ``Memory.peak`` to the byte and in which phase the peak falls; then
what keeping the timelines costs: results.json with and without them, and the CPU time of drawing
timeline.png and of writing and reading results.json. Prints a Markdown section for BENCHMARKS.md.

    python benchmarks/timeline_check.py                      # runs the default compare first
    python benchmarks/timeline_check.py reports/latest/results.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from memprof.reporters.timeline import plot_timeline
from memprof.results.result import ResultSet, load_results, write_json


def cpu(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", help="a results.json (default: run the default memprof compare)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.results) if args.results else Path(tmp) / "out" / "results.json"
        if not args.results:
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "from memprof.cli import main; main()",
                    "compare",
                    "--out",
                    str(path.parent),
                    "--quiet",
                ],
                check=True,
            )
        rs = load_results(path)
        ok = [r for r in rs.results if r.status == "ok" and r.timeline is not None]
        print("| method | results | timeline peak = Memory.peak | phase of the peak (results) | points (max) |")
        print("|---|---:|---:|---|---:|")
        for method in dict.fromkeys(r.method for r in ok):
            mine = [r for r in ok if r.method == method]
            same = sum(r.timeline.peak == r.memory.peak for r in mine)
            phases = ", ".join(f"{p} {n}" for p, n in Counter(r.timeline.peak_phase for r in mine).most_common())
            print(
                f"| {method} | {len(mine)} | {same} of {len(mine)} | {phases} | "
                f"{max(len(r.timeline.event) for r in mine)} |"
            )
        bare = ResultSet([dataclasses.replace(r, timeline=None) for r in rs.results], rs.command, rs.options)
        sizes = [len(json.dumps(s.to_dict(), indent=1)) + 1 for s in (rs, bare)]
        out = Path(tmp)
        plot = min(cpu(lambda: plot_timeline(rs, out / "timeline.png")) for _ in range(3))
        write = min(cpu(lambda: write_json(rs, out / "r.json")) for _ in range(3))
        read = min(cpu(lambda: load_results(out / "r.json")) for _ in range(3))
        print(
            f"\nresults.json: {sizes[0]:,} bytes with the timelines, {sizes[1]:,} without; CPU seconds (best of 3): "
            f"timeline.png {plot:.2f}, writing results.json {write:.2f}, reading it {read:.2f}"
        )


if __name__ == "__main__":
    main()
