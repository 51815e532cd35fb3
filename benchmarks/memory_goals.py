"""Activation memory of every registered method on three large backbones, against MEFT's goals.

The fake engine (target cuda, bf16), seq 512 x batch 16, bart-large, roberta-large and opt-1.3b
with their default heads; every method of the registry (aliases left out). Goals, on peak
activations (the most activation bytes live at once in the step): every MEFT variant at least 84%
below ft on 12-layer stacks and 90% on 24-layer ones, and at most 0.6x lora+ckpt's on 24-layer
stacks. A backbone's stack depth is read from meft1's profile: the layers of its deepest
reversible stack (MEFT converts each stack of a model on its own: bart-large's 12-layer encoder and
12-layer decoder are two stacks of 12, so it is held to the 12-layer goal). Where a goal is missed,
the per-module split of what meft1 and lora+ckpt keep (``Result.layers``) shows why.

    python benchmarks/memory_goals.py [--save data.json | --load data.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_machine import describe  # noqa: E402

BACKBONES = ("bart-large", "roberta-large", "opt-1.3b")
SEQ, BATCH, DTYPE = 512, 16, "bf16"
#: layers per stack -> least reduction of MEFT's peak activations against ft's
REDUCTION_GOALS = {12: 0.84, 24: 0.90}
#: on 24-layer stacks: MEFT's peak activations at most this times lora+ckpt's
CKPT_GOAL, CKPT = 0.6, "lora+ckpt"
BREAKDOWN = ("meft1", CKPT)
GIB, MIB = 2**30, 2**20
_STACK = re.compile(r"\(reversible stack, (?:(\d+) of )?(\d+) layers")


def methods() -> list[str]:
    from memprof import methods as registry

    return [m for m in registry.names() if registry.get(m).alias_of is None]


def is_meft(method: str) -> bool:
    return method.startswith("meft")


def measure(backbones=BACKBONES) -> dict:
    """The JSON-able measurements ``render`` reads: the run, the settings and every Result's dict."""
    from memprof.engines import ModelCache, run
    from memprof.engines.config import ProfileConfig

    data = {"run": describe(), "seq_len": SEQ, "batch_size": BATCH, "dtype": DTYPE, "results": []}
    cache = ModelCache()
    for backbone in backbones:
        for method in methods():
            config = ProfileConfig(backbone, method=method, seq_len=SEQ, batch_size=BATCH, dtype=DTYPE, target="cuda")
            data["results"].append(run(config, cache).to_dict())
        cache = ModelCache()  # one backbone's models at a time
    return data


def stack_depths(result) -> list[int]:
    """Layers of each reversible stack in ``result``'s profile (``11 of 12 layers reversible`` is 12)."""
    return sorted({int(m.group(2)) for m in map(_STACK.search, result.layers["module"]) if m})


def breakdown(result, rows: int = 5) -> list[tuple[str, int, str]]:
    """(module row, saved bytes, top categories) for the ``rows`` largest rows of ``result``'s saved
    activations (of 0.1 MiB or more), grouped as ``memprof profile`` groups them, the rows of one
    layer list together; the rest as one row."""
    from memprof.results.module_names import layer_group
    from memprof.results.result import CATEGORIES

    saved: dict[str, int] = defaultdict(int)
    cats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for rec in result.layers.to_dict("records"):
        group = layer_group(rec["module"])
        saved[group] += int(rec["saved_bytes"])
        for c in CATEGORIES:
            cats[group][c] += int(rec[c])
    saved, cats = _layers_together(saved, cats)
    order = sorted(saved, key=saved.get, reverse=True)
    shown = [g for g in order[:rows] if saved[g] >= MIB // 10]  # rows under 0.1 MiB join the rest
    out = []
    for group in shown:
        top = sorted(((b, c) for c, b in cats[group].items() if b), reverse=True)[:2]
        out.append((group, saved[group], ", ".join(f"{c} {100 * b / saved[group]:.0f}%" for b, c in top)))
    if len(order) > len(shown):
        out.append((f"{len(order) - len(shown)} other rows", sum(saved[g] for g in order[len(shown) :]), ""))
    return out


def _layers_together(saved: dict, cats: dict) -> tuple[dict, dict]:
    """Rows ``x.0``, ``x.1``, ... of one layer list as one row ``x.0-N (n layers)``, when there are several."""
    lists: dict[str, list[str]] = defaultdict(list)
    for group in saved:
        head, _, tail = group.rpartition(".")
        if tail.isdigit():
            lists[head].append(group)
    merged_saved, merged_cats = dict(saved), dict(cats)
    for head, groups in lists.items():
        if len(groups) < 2:
            continue
        numbers = sorted(int(g.rpartition(".")[2]) for g in groups)
        name = f"{head}.{numbers[0]}-{numbers[-1]} ({len(groups)} layers)"
        merged_saved[name] = sum(merged_saved.pop(g) for g in groups)
        merged_cats[name] = defaultdict(int)
        for g in groups:
            for c, b in merged_cats.pop(g).items():
                merged_cats[name][c] += b
    return merged_saved, merged_cats


def _results(data: dict) -> dict[str, dict]:
    from memprof.results.result import Result

    by_backbone: dict[str, dict] = defaultdict(dict)
    for d in data["results"]:
        r = Result.from_dict(d)
        by_backbone[r.backbone][r.method] = r
    return by_backbone


def memory_table(backbone: str, res: dict) -> list[str]:
    ft, ckpt = res["ft"].memory, res[CKPT].memory
    rows = [
        f"**{backbone}** ({res['ft'].task}):",
        "",
        "| method | saved act. GiB | peak act. GiB | peak GiB | saved act. reduction vs ft | "
        f"peak act. reduction vs ft | peak act. / {CKPT}'s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method, r in res.items():
        if r.status != "ok":
            rows.append(f"| {method} | {r.status}: {r.message} |  |  |  |  |  |")
            continue
        m = r.memory
        rows.append(
            f"| {method} | {m.saved_activations / GIB:.2f} | {m.peak_activations / GIB:.2f} | {m.peak / GIB:.2f} "
            f"| {100 * (1 - m.saved_activations / ft.saved_activations):.1f}% "
            f"| {100 * (1 - m.peak_activations / ft.peak_activations):.1f}% "
            f"| {m.peak_activations / ckpt.peak_activations:.2f} |"
        )
    return rows + [""]


def goal_checks(backbone: str, res: dict) -> list[tuple]:
    """(backbone, depth, method, goal, measured, met, miss) for every MEFT variant and goal."""
    depth = max(stack_depths(res["meft1"]))
    ft, ckpt = res["ft"].memory.peak_activations, res[CKPT].memory.peak_activations
    checks = []
    for method, r in res.items():
        if not is_meft(method) or r.status != "ok":
            continue
        reduction = 1 - r.memory.peak_activations / ft
        least = REDUCTION_GOALS[depth]
        checks.append(
            (
                backbone,
                depth,
                method,
                f"at least {100 * least:.0f}% below ft",
                f"{100 * reduction:.1f}%",
                reduction >= least,
                f"{100 * (least - reduction):.1f} points short",
            )
        )
        if depth == 24:
            ratio = r.memory.peak_activations / ckpt
            checks.append(
                (
                    backbone,
                    depth,
                    method,
                    f"at most {CKPT_GOAL}x {CKPT}'s peak act.",
                    f"{ratio:.2f}x",
                    ratio <= CKPT_GOAL,
                    f"{ratio / CKPT_GOAL:.2f}x the goal ({ratio - CKPT_GOAL:.2f}x over)",
                )
            )
    return checks


def breakdown_rows(backbone: str, res: dict) -> list[str]:
    rows = []
    for method in BREAKDOWN:
        r = res[method]
        m = r.memory
        rows += [
            f"{backbone} {method}: saved {m.saved_activations / MIB:,.0f} MiB, peak activations "
            f"{m.peak_activations / MIB:,.0f} MiB ({(m.peak_activations - m.saved_activations) / MIB:+,.0f} MiB "
            "beyond the saved bytes, live in backward):",
            "",
            "| module | saved MiB | share | top categories |",
            "|---|---:|---:|---|",
        ]
        rows += [f"| {g} | {b / MIB:,.1f} | {100 * b / m.saved_activations:.1f}% | {c} |" for g, b, c in breakdown(r)]
        rows.append("")
    return rows


def render(data: dict) -> str:
    """Markdown: one memory table per backbone, the goals, and the split of what meft1 and lora+ckpt keep."""
    by_backbone = _results(data)
    lines = [
        f"seq {data['seq_len']} x batch {data['batch_size']}, {data['dtype']}, fake engine target cuda, every "
        "method of the registry; reductions and ratios of peak activations (the most activation bytes live "
        "at once in the step). Stack depth: layers in the deepest reversible stack of meft1's profile.",
        "",
    ]
    checks = []
    for backbone, res in by_backbone.items():
        lines += memory_table(backbone, res)
        checks += goal_checks(backbone, res)
    lines += ["| backbone | layers per stack | method | goal | measured | verdict |", "|---|---:|---|---|---:|---|"]
    lines += [
        f"| {b} | {d} | {m} | {g} | {v} | {'met' if ok else f'**not met**, {miss}'} |"
        for b, d, m, g, v, ok, miss in checks
    ]
    missed = sorted({c[0] for c in checks if not c[5]})
    if missed:
        lines += [
            "",
            "What meft1 and lora+ckpt keep where a goal is missed (saved activations by module row, largest first):",
            "",
        ]
        for backbone in missed:
            lines += breakdown_rows(backbone, by_backbone[backbone])
    return "\n".join(lines).rstrip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--save", type=Path, help="write the measurements here (JSON)")
    ap.add_argument("--load", type=Path, help="render these measurements instead of measuring")
    args = ap.parse_args()
    data = json.loads(args.load.read_text()) if args.load else measure()
    if args.save:
        args.save.write_text(json.dumps(data))
    print(render(data))


if __name__ == "__main__":
    main()
