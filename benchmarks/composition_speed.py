"""What composing a formula from shallow copies costs against one symbolic trace of the whole model
(memprof.engines.composition), per backbone and method, in one process after a warm-up trace, and
that the two formulas give the same numbers (Memory and the per-module table at several sizes).

    python benchmarks/composition_speed.py                                  # the default set
    python benchmarks/composition_speed.py --backbones llama-3.1-8b --methods lora,meft1
"""

from __future__ import annotations

import argparse
import time

from memprof.engines import symbolic
from memprof.engines.composition import compose, depth_of, shallow_copy
from memprof.engines.config import ProfileConfig

SIZES = ((2, 64), (8, 128), (4, 512), (16, 256))


def _same(a, b) -> bool:
    for bs, s in SIZES:
        if not (a.covers(bs, s) and b.covers(bs, s)):
            continue
        if a.memory_at(bs, s) != b.memory_at(bs, s) or not a.layers_at(bs, s).equals(b.layers_at(bs, s)):
            return False
    return (a.trainable_params, a.total_params) == (b.trainable_params, b.total_params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="bert-base,bart-large,llama-3.2-1b,llama-3.1-8b")
    parser.add_argument("--methods", default="lora,meft1")
    parser.add_argument("--dtype", default="bf16")
    opts = parser.parse_args()
    warm = ProfileConfig("bert-base", method="ft", engine="fake", dtype=opts.dtype)
    symbolic.trace(shallow_copy(warm, 3))  # the symbolic machinery's first calls, paid once
    print("| backbone | layers | method | one trace (s) | composed (s) | composed / trace | same numbers |")
    print("|---|---|---|---|---|---|---|")
    for backbone in opts.backbones.split(","):
        for method in opts.methods.split(","):
            config = ProfileConfig(backbone, method=method, engine="fake", dtype=opts.dtype)
            start = time.perf_counter()
            composed = compose(config, symbolic._trace)
            t_composed = time.perf_counter() - start
            start = time.perf_counter()
            whole = symbolic.trace(config)
            t_whole = time.perf_counter() - start
            layers = depth_of(config.resolved)
            same = "yes" if _same(composed, whole) else "**no**"
            print(
                f"| {backbone} | {layers} | {method} | {t_whole:.1f} | {t_composed:.1f} | "
                f"{t_composed / t_whole:.2f} | {same} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
