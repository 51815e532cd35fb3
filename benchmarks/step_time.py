"""Training-step time of every registered method on real compute, as ratios to lora.

The cpu engine's model builder, all-MiniLM-L6-v2 (pretrained) and bert-base (12 layers, hidden 768,
random weights), seq 128 x batch 8, one thread. Per backbone every method of the registry
(``memprof.methods.names()``, aliases left out; ``--methods`` picks some, lora always among them) is
built once, warmed up by one step, then timed round-robin in one process (``meft_speed.interleave``:
the order rotates every round, so load from other processes hits every method alike). A step is
zero_grad, forward, backward and an AdamW step; each is timed in wall seconds and in the process's
CPU seconds. With one thread the CPU time is what the step computes, which the load of other
processes on a shared machine moves far less than the wall time: the goals are judged on it.
Ratios are of medians measured in one process; the load is recorded before and after.

    python benchmarks/step_time.py [--backbones a,b] [--methods m,n] [--rounds N] [--save data.json]
    python benchmarks/step_time.py --load a.json [--load b.json ...] [--save merged.json]   # render only
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_machine import describe  # noqa: E402
from meft_speed import build, interleave, timed_step  # noqa: E402

#: backbone -> rounds (a bert-base step computes about 8x an all-MiniLM-L6-v2 step)
BACKBONES = {"all-minilm-l6-v2": 3, "bert-base": 2}
SEQ, BATCH = 128, 8
#: (numerator, denominator, at most): the issue's goals
GOALS = (("meft1", "lora", 1.5), ("meft1", "lora+ckpt", 1.0))
BASE = "lora"


def methods() -> list[str]:
    """Every method of the registry, aliases (``meft`` = ``meft1``) left out."""
    from memprof import methods as registry

    return [m for m in registry.names() if registry.get(m).alias_of is None]


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure_backbone(backbone: str, names: list[str], rounds: int, threads: int, record=lambda entry: None) -> dict:
    """{backbone, rounds, load_before, load_after, times: {method: [timed_step's seconds, one list a round]}};
    ``record(entry)`` is called after every round with the entry so far."""
    import torch

    from memprof.engines.common import adamw

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    runs = {}
    for name in names:
        model, batch = build(name, {}, SEQ, BATCH, backbone=backbone)
        runs[name] = (model, batch, adamw(model, foreach=False), [])
        timed_step(*runs[name][:3])  # warm-up: AdamW creates its state in the first step
    entry = {
        "backbone": backbone,
        "rounds": 0,
        "load_before": load_average(),
        "load_after": None,
        "times": {name: run[3] for name, run in runs.items()},
    }
    for r in range(rounds):
        interleave(runs, 1, first_round=r)
        entry.update(rounds=r + 1, load_after=load_average())
        record(entry)
    del runs
    gc.collect()
    return entry


def measure(
    backbones: dict[str, int] = BACKBONES, threads: int = 1, save: Path | None = None, names: list[str] | None = None
) -> dict:
    """The JSON-able measurements ``render`` reads: the run (machine, date), seq, batch, threads, one
    entry per backbone; written to ``save`` after every round when given (a run stopped early keeps
    its finished rounds)."""
    names = names or methods()
    data = {"run": describe(), "seq_len": SEQ, "batch_size": BATCH, "threads": threads, "backbones": []}

    def record(entry: dict) -> None:
        if save is not None:
            save.write_text(json.dumps({**data, "backbones": [*data["backbones"], entry]}, indent=1))

    for backbone, rounds in backbones.items():
        data["backbones"].append(measure_backbone(backbone, names, rounds, threads, record))
    return data


#: columns of a step's timings (``meft_speed.timed_step``)
WALL, CPU = 0, 3


def medians(times: dict[str, list[list[float]]], column: int = CPU) -> dict[str, float]:
    return {m: statistics.median(t[column] for t in ts) for m, ts in times.items()}


def round_ratios(times: dict[str, list[list[float]]], method: str, base: str, column: int = CPU) -> list[float]:
    """``method``'s step over ``base``'s, round by round (both timed in the same round)."""
    return [a[column] / b[column] for a, b in zip(times[method], times[base])]


def backbone_table(entry: dict) -> list[str]:
    times = entry["times"]
    cpu, wall = medians(times, CPU), medians(times, WALL)
    rows = [
        f"**{entry['backbone']}**, {len(times)} methods in one process, {entry['rounds']} round(s), load average "
        f"{entry['load_before'][0]:.1f} before the timed rounds and {entry['load_after'][0]:.1f} after:",
        "",
        f"| method | median CPU s | CPU ratio to {BASE} | per-round CPU ratio, min to max | median wall s | "
        f"wall ratio to {BASE} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in times:
        per_round = round_ratios(times, m, BASE)
        rows.append(
            f"| {m} | {cpu[m]:.3f} | **{cpu[m] / cpu[BASE]:.3f}** | {min(per_round):.3f} to {max(per_round):.3f} "
            f"| {wall[m]:.3f} | {wall[m] / wall[BASE]:.3f} |"
        )
    return rows + [""]


def goal_rows(data: dict) -> list[str]:
    """One row per goal and backbone process holding both of its methods."""
    rows = ["| backbone | ratio | CPU time | wall time | goal | verdict |", "|---|---|---:|---:|---|---|"]
    for entry in data["backbones"]:
        cpu, wall = medians(entry["times"], CPU), medians(entry["times"], WALL)
        for a, b, most in GOALS:
            if a not in cpu or b not in cpu:
                continue
            ratio = cpu[a] / cpu[b]
            verdict = (
                "met" if ratio <= most else f"**not met**, {ratio - most:.3f} over ({100 * (ratio / most - 1):.1f}%)"
            )
            rows.append(
                f"| {entry['backbone']} | {a} / {b} | {ratio:.3f} | {wall[a] / wall[b]:.3f} | at most {most} "
                f"| {verdict} (CPU time) |"
            )
    return rows


def render(data: dict) -> str:
    """Markdown: one table per backbone process, then the goals."""
    lines = [
        f"seq {data['seq_len']} x batch {data['batch_size']}, {data['threads']} thread(s), the cpu engine's models "
        "(all-minilm-l6-v2 pretrained; bert-base random weights). A step is zero_grad, forward, backward and "
        "AdamW's step, after one warm-up step per method; the methods of a process are timed round-robin. "
        "Ratios are of medians; the goals are judged on CPU time (the process's, one thread: what the step "
        "computes), which the load of other processes moves far less than wall time.",
        "",
    ]
    for entry in data["backbones"]:
        lines += backbone_table(entry)
    return "\n".join(lines + goal_rows(data))


def merge(runs: list[dict]) -> dict:
    """The first run's settings and stamp, every run's backbone processes (same seq, batch and threads)."""
    first = runs[0]
    for other in runs[1:]:
        if any(other[k] != first[k] for k in ("seq_len", "batch_size", "threads")):
            sys.exit("the runs to merge differ in seq_len, batch_size or threads; merge runs of the same settings")
    return {**first, "backbones": [entry for data in runs for entry in data["backbones"]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rounds",
        type=int,
        help="rounds for every backbone (default: " + ", ".join(f"{b} {r}" for b, r in BACKBONES.items()) + ")",
    )
    ap.add_argument("--backbones", default=",".join(BACKBONES), help="comma-separated, of " + ", ".join(BACKBONES))
    ap.add_argument("--methods", help=f"comma-separated (default: every method of the registry; {BASE} always)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save", type=Path, help="write the measurements here (JSON)")
    ap.add_argument(
        "--load",
        type=Path,
        action="append",
        help="render these measurements instead of measuring (again: several runs' backbones together)",
    )
    args = ap.parse_args()
    if args.load:
        data = merge([json.loads(path.read_text()) for path in args.load])
        if args.save:
            args.save.write_text(json.dumps(data, indent=1))
    else:
        chosen = args.backbones.split(",")
        names = [BASE, *(m for m in args.methods.split(",") if m != BASE)] if args.methods else None
        data = measure({b: args.rounds or BACKBONES[b] for b in chosen}, args.threads, args.save, names)
    print(render(data))


if __name__ == "__main__":
    main()
