"""How fast the engines are: the fake engine on bart-large, and the cpu engine's instrumentation cost.

    python benchmarks/engine_speed.py                      # both parts, defaults below
    python benchmarks/engine_speed.py --fake-runs 7 --cpu-pairs 9
    python benchmarks/engine_speed.py --skip-cpu

1. fake engine, bart-large ``ft`` at seq 512 x batch 16 (target cuda): the model build (meta
   device, method, fake parameters) timed apart from the profiled step; the first step on a fresh
   model (FakeTensorMode's operator cache cold) apart from the median of the following ones.
2. cpu engine overhead: the same training step (zero_grad, forward, backward, AdamW step) with and
   without memprof's instruments, alternated on one model, over ``--cpu-pairs`` pairs; the ratio
   instrumented / plain of the medians (and of the fastest runs, which noise from other processes
   touches least). The configuration is chosen for a step of about a second here, one thread.

Wall-clock and process CPU time are both printed: on a shared machine the CPU time is the steadier
of the two. Numbers vary with the machine; the script records nothing but prints a Markdown block
for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def clocks():
    return time.perf_counter(), time.process_time()


def since(start):
    wall, cpu = clocks()
    return wall - start[0], cpu - start[1]


def fake_speed(backbone: str, method: str, seq_len: int, batch_size: int, runs: int) -> dict:
    from memprof.engines import fake
    from memprof.engines.config import ProfileConfig

    config = ProfileConfig(backbone, method, seq_len, batch_size, engine="fake", target="cuda")
    t = clocks()
    built = fake.build(config)
    build_first = since(t)
    t = clocks()
    built = fake.build(config)  # again: imports and first-use initialisation are paid now
    build_warm = since(t)
    t = clocks()
    result = fake.ENGINE.run(built, config)
    first = since(t)
    steps = []
    for _ in range(runs):
        gc.collect()
        t = clocks()
        fake.ENGINE.run(built, config)
        steps.append(since(t))
    return {
        "config": f"{backbone} {method} seq {seq_len} x batch {batch_size} (fake, target cuda)",
        "build_first": build_first,
        "build_warm": build_warm,
        "step_first": first,
        "step_median": (statistics.median(s[0] for s in steps), statistics.median(s[1] for s in steps)),
        "peak": result.memory.peak,
        "saved": result.memory.saved_activations,
        "attn": result.attn_implementation,
    }


def cpu_overhead(backbone: str, method: str, seq_len: int, batch_size: int, pairs: int) -> dict:
    import torch

    from memprof.engines import cpu
    from memprof.engines.common import adamw, instrumented_step
    from memprof.engines.config import ProfileConfig
    from memprof.models import tasks

    config = ProfileConfig(backbone, method, seq_len, batch_size, engine="cpu")
    built = cpu.build(config)
    model = built.model
    batch = tasks.make_batch(config.resolved, config.task, batch_size, seq_len)

    def plain():
        opt = adamw(model, foreach=False)
        t = clocks()
        model.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        elapsed = since(t)
        model.zero_grad(set_to_none=True)
        return elapsed

    def instrumented():
        opt = adamw(model, foreach=False)
        t = clocks()
        instrumented_step(model, batch, opt)
        return since(t)

    torch.manual_seed(0)
    plain(), instrumented()  # warm-up
    a, b = [], []
    for i in range(pairs):
        gc.collect()
        # Alternate which goes first, so neither always follows the other.
        if i % 2:
            a.append(plain())
            b.append(instrumented())
        else:
            b.append(instrumented())
            a.append(plain())
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    low = lambda xs, k: min(x[k] for x in xs)  # noqa: E731
    return {
        "config": f"{backbone} {method} seq {seq_len} x batch {batch_size} (cpu)",
        "plain": (med(a, 0), med(a, 1), low(a, 0)),
        "instrumented": (med(b, 0), med(b, 1), low(b, 0)),
        "ratio": (med(b, 0) / med(a, 0), med(b, 1) / med(a, 1), low(b, 0) / low(a, 0)),
        "pairs": pairs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fake-runs", type=int, default=5, help="warm fake steps to take the median of")
    ap.add_argument("--cpu-pairs", type=int, default=11, help="instrumented/plain pairs for the overhead ratio")
    ap.add_argument(
        "--cpu-config",
        default="all-minilm-l6-v2,ft,128,8",
        help="backbone,method,seq_len,batch_size for the overhead ratio",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a small shared machine OpenMP's threads contend "
        "with other processes and a step can take ten times as long)",
    )
    ap.add_argument("--skip-fake", action="store_true")
    ap.add_argument("--skip-cpu", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    )
    if not args.skip_fake:
        f = fake_speed("bart-large", "ft", 512, 16, args.fake_runs)
        print(f"\n### fake engine: {f['config']}")
        print(
            f"attention {f['attn']}, saved activations {f['saved'] / 2**30:.2f} GiB, peak {f['peak'] / 2**30:.2f} GiB"
        )
        print("| what | wall s | cpu s |\n|---|---:|---:|")
        for label, key in (
            ("model build, first in process", "build_first"),
            ("model build, again", "build_warm"),
            ("profiled step, first on the model", "step_first"),
            (f"profiled step, median of {args.fake_runs}", "step_median"),
        ):
            print(f"| {label} | {f[key][0]:.2f} | {f[key][1]:.2f} |")
    if not args.skip_cpu:
        backbone, method, seq, batch = args.cpu_config.split(",")
        c = cpu_overhead(backbone, method, int(seq), int(batch), args.cpu_pairs)
        print(f"\n### cpu engine instrumentation overhead: {c['config']}, {c['pairs']} alternated pairs")
        print("| step | median wall s | median cpu s | fastest wall s |\n|---|---:|---:|---:|")
        for label in ("plain", "instrumented"):
            print(f"| {label} | {c[label][0]:.3f} | {c[label][1]:.3f} | {c[label][2]:.3f} |")
        print(f"| ratio | {c['ratio'][0]:.3f} | {c['ratio'][1]:.3f} | {c['ratio'][2]:.3f} |")


if __name__ == "__main__":
    main()
