"""Long context on the fake engine: the 7-8B decoders at 2048 and 8192 tokens.

llama-3.1-8b and qwen2.5-7b, batch 1, bf16 weights, target cuda (sdpa), for ft, lora, lora+ckpt and
meft1: saved and peak activations, the peak, each against ft, and the fake engine's wall time: the
model's build (once per method, reused for both lengths, as a sweep does) and the profiled step of
each configuration.

    python benchmarks/long_context.py
"""

from __future__ import annotations

import time

from memprof.engines import ModelCache, fake, run
from memprof.engines.config import ProfileConfig

BACKBONES = ("llama-3.1-8b", "qwen2.5-7b")
SEQS = (2048, 8192)
METHODS = ("ft", "lora", "lora+ckpt", "meft1")
GIB = 2**30


def main() -> None:
    print(
        "| backbone | seq | method | saved act. (GiB) | peak act. (GiB) | peak (GiB) | peak act. reduction vs ft | "
        "peak reduction vs ft | build (s) | step (s) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for backbone in BACKBONES:
        ft: dict[int, object] = {}
        for method in METHODS:
            cache = ModelCache()
            for seq in SEQS:
                config = ProfileConfig(backbone, method, seq_len=seq, batch_size=1, dtype="bf16")
                start = time.perf_counter()
                cache.get(config, fake.build)
                build = time.perf_counter() - start
                start = time.perf_counter()
                r = run(config, cache)
                seconds = time.perf_counter() - start
                assert r.status == "ok", r.message
                m = r.memory
                base = ft.setdefault(seq, m) if method == "ft" else ft[seq]
                print(
                    f"| {backbone} | {seq} | {method} | {m.saved_activations / GIB:.2f} | "
                    f"{m.peak_activations / GIB:.2f} | {m.peak / GIB:.2f} | "
                    f"{1 - m.peak_activations / base.peak_activations:.1%} | {1 - m.peak / base.peak:.1%} | "
                    f"{f'{build:.2f}' if build > 0.01 else ''} | {seconds:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
