"""What fits on a 24 GiB card: the largest batch size per method for opt-1.3b at sequence length
512, bf16, steady-state step, with the fake engine (target cuda), and the first-step peak at the
same batch size beside the steady one.

The same search as

    memprof fit --backbone opt-1.3b --methods ft,lora,meft,ft+ckpt,lora+ckpt --budget 24GiB --seq-len 512 --dtype bf16

with the defaults (context allowance 1 GiB, fragmentation margin 10%); prints the Markdown table
of docs/usage.md's and BENCHMARKS.md's "What fits" section.

    python benchmarks/fit_opt.py [methods]
"""

from __future__ import annotations

import platform
import sys
import time
from datetime import date

import torch

from memprof.fit import search as fit
from memprof.units import GIB, format_bytes

METHODS = ("ft", "lora", "meft", "ft+ckpt", "lora+ckpt")


def main(methods: tuple[str, ...]) -> None:
    config = fit.FitConfig("opt-1.3b", list(methods), 24 * GIB, seq_len=512, dtype="bf16")
    start = time.perf_counter()
    answers = fit.fit(config, lambda m, n, step: print(f"  {m}: batch {n} ({step})", file=sys.stderr, flush=True))
    seconds = time.perf_counter() - start
    print(
        f"opt-1.3b, seq 512, bf16, budget 24 GiB (context 1 GiB, fragmentation 10%), fake engine -> cuda; "
        f"{date.today()}, {platform.machine()} {torch.__version__}, {seconds:.0f} s\n"
    )
    print(
        "| method | max batch | steady-state peak | first-step peak | AdamW state | needed (with margins) "
        "| batch + 1 needs | profiles |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for a in answers:
        at, over = a.at, a.over
        print(
            f"| {a.method} | {a.value} | {format_bytes(at.step)} | {format_bytes(a.first_step.step)} "
            f"| {format_bytes(at.state.optimizer_state)} | {format_bytes(at.required)} "
            f"| {format_bytes(over.required) if over else '-'} | {len(a.points)} |"
        )


if __name__ == "__main__":
    main(tuple(sys.argv[1].split(",")) if len(sys.argv) > 1 else METHODS)
