"""Training-step time of MEFT against its float twin, its ordinary-backprop twin and LoRA, on real compute.

all-MiniLM-L6-v2 (pretrained, through memprof's cpu engine's model builder), seq 128 x batch 8, one
process, the methods' steps interleaved round by round (the order rotates every round) so that load
from other processes hits them alike. A step is zero_grad, forward, backward and an AdamW step.
Ratios are of medians measured in this one run.

    python benchmarks/meft_speed.py [--rounds 9] [--threads 1]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time

#: label -> (memprof method, MEFTConfig overrides applied after the method's conversion)
STEPS = {
    "meft1 (exact)": ("meft1", {}),
    "meft1-float": ("meft1-float", {}),
    "meft1 twin (exact, num_rev_layers=0)": ("meft1", {"num_rev_layers": 0}),
    "meft1-float twin (num_rev_layers=0)": ("meft1-float", {"num_rev_layers": 0}),
    "lora": ("lora", {}),
    "lora+ckpt": ("lora+ckpt", {}),
}
RATIOS = [  # (numerator, denominator, goal)
    ("meft1 (exact)", "meft1-float", 1.10),
    ("meft1 (exact)", "lora", 1.5),
    ("meft1 (exact)", "lora+ckpt", 1.0),
    ("meft1 (exact)", "meft1 twin (exact, num_rev_layers=0)", 1.45),
    ("meft1-float", "meft1-float twin (num_rev_layers=0)", None),
]


def build(method: str, overrides: dict, seq_len: int, batch_size: int, backbone: str = "all-minilm-l6-v2"):
    from meft.convert import stacks
    from memprof.engines import cpu
    from memprof.engines.config import ProfileConfig
    from memprof.models import tasks

    config = ProfileConfig(backbone, method, seq_len, batch_size, engine="cpu")
    model = cpu.build(config).model
    for _, stack in stacks(model) if overrides else ():
        stack.num_rev_layers = overrides["num_rev_layers"]
    return model, tasks.make_batch(config.resolved, config.task, batch_size, seq_len)


def timed_step(model, batch, optimizer) -> tuple[float, float, float, float]:
    """(step, forward, backward) wall seconds, then the step's CPU seconds (this process's: with one
    thread, what the step computed, whatever the machine's load)."""
    start, cpu = time.perf_counter(), time.process_time()
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    forward = time.perf_counter()
    loss.backward()
    backward = time.perf_counter()
    optimizer.step()
    return time.perf_counter() - start, forward - start, backward - forward, time.process_time() - cpu


def interleave(runs: dict, rounds: int, first_round: int = 0) -> None:
    """Time every run's step ``rounds`` times, round-robin, the order rotating every round, so that
    load from other processes hits them alike. ``runs``: label -> (model, batch, optimizer, times);
    each step's ``timed_step`` seconds are appended to its ``times``. ``first_round``
    continues the rotation of earlier calls (one call per round, to record as it goes)."""
    labels = list(runs)
    for r in range(first_round, first_round + rounds):
        order = labels[r % len(labels) :] + labels[: r % len(labels)]
        for label in order:
            gc.collect()
            model, batch, opt, times = runs[label]
            times.append(timed_step(model, batch, opt))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadiest on a shared machine)")
    args = ap.parse_args()

    import torch

    from memprof.engines.common import adamw

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    )
    runs = {}
    for label, (method, overrides) in STEPS.items():
        model, batch = build(method, overrides, args.seq_len, args.batch_size)
        runs[label] = (model, batch, adamw(model, foreach=False), [])
        timed_step(*runs[label][:3])  # warm-up
    interleave(runs, args.rounds)
    labels = list(runs)
    med = {label: statistics.median(t[0] for t in runs[label][3]) for label in labels}
    print(f"\nall-minilm-l6-v2, seq {args.seq_len} x batch {args.batch_size}, {args.rounds} interleaved rounds")
    print("| step | median s | fastest s | median forward s | median backward s |\n|---|---:|---:|---:|---:|")
    for label in labels:
        times = runs[label][3]
        print(
            f"| {label} | {med[label]:.3f} | {min(t[0] for t in times):.3f} | "
            f"{statistics.median(t[1] for t in times):.3f} | {statistics.median(t[2] for t in times):.3f} |"
        )
    print("\n| ratio | median | goal |\n|---|---:|---|")
    for a, b, goal in RATIOS:
        ratio = med[a] / med[b]
        verdict = "" if goal is None else f"at most {goal}: {'met' if ratio <= goal else 'not met'}"
        print(f"| {a} / {b} | {ratio:.3f} | {verdict} |")


if __name__ == "__main__":
    main()
