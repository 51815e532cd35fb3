"""The PEFT field side by side: every registered method on bert-base, seq 512, batch 8, with the
fake engine and its defaults (target cuda, fp32, SDPA attention): trainable parameters, saved and
peak activation memory, and the reduction of each against full fine-tuning.

``meft`` is ``meft1`` and is left out. Saved activations: what the forward keeps for backward
(hooks); peak activations: most activation bytes live at once in the step (the forward's saved
tensors and backward's own); "vs ft" is method / ft - 1 of each (-90% saves nine tenths).

    python benchmarks/peft_field.py              # docs/methods-and-gate.md's and BENCHMARKS.md's table
    python benchmarks/peft_field.py --methods ft,lst
"""

from __future__ import annotations

import argparse

from memprof import methods
from memprof.engines import ModelCache, run
from memprof.engines.config import ProfileConfig
from memprof.results.result import Result

BACKBONE, SEQ, BATCH = "bert-base", 512, 8
MIB = 2**20


def measure(names: list[str]) -> dict[str, Result]:
    cache = ModelCache()
    results = {}
    for name in names:
        r = run(ProfileConfig(BACKBONE, method=name, seq_len=SEQ, batch_size=BATCH), cache)
        if r.status != "ok":
            raise RuntimeError(f"{name} ended with status {r.status}: {r.message}")
        results[name] = r
    return results


def table(results: dict[str, Result]) -> str:
    ft = results["ft"].memory
    lines = [
        "| method | trains | trainable params | saved act. MiB | saved vs ft | peak act. MiB | peak act. vs ft |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        m = r.memory
        lines.append(
            f"| {name} | {methods.get(name).trains} | {r.trainable_params:,} | {m.saved_activations / MIB:,.0f} "
            f"| {m.saved_activations / ft.saved_activations - 1:+.1%} | {m.peak_activations / MIB:,.0f} "
            f"| {m.peak_activations / ft.peak_activations - 1:+.1%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(m for m in methods.names() if m != "meft"))
    names = parser.parse_args().methods.split(",")
    names = names if "ft" in names else ["ft", *names]
    results = measure(names)
    r = results["ft"]
    print(
        f"{BACKBONE}, seq {SEQ} x batch {BATCH}, engine fake (target {r.target}), {r.dtype}, "
        f"attention {r.attn_implementation}\n"
    )
    print(table(results), flush=True)


if __name__ == "__main__":
    main()
