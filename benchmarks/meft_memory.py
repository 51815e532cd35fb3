"""MEFT's activation memory against ft, lora+ckpt and the floor, with the fake engine.

bert-base width (hidden 768, 12 heads) at 6, 12 and 24 layers, seq 512, batch 8, fp32, eager
attention, target cpu (the MEFT issue's setting). The floor of a fully reversible model is the two
top streams plus one layer's recomputation with frozen weights: ``2 * B*S*H*4`` bytes plus the
saved bytes of one lora layer (frozen linears save no input for a weight gradient; ft's layer saves
more, so it would overstate the floor).

    python benchmarks/meft_memory.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from memprof.backbones import BUILTIN
from memprof.config import ProfileConfig
from memprof.engines import ModelCache, run

SEQ, BATCH, HIDDEN = 512, 8, 768
METHODS = ("ft", "lora", "lora+ckpt", "meft1", "meft2", "meft3")


def bert_base_with(layers: int, folder: Path) -> str:
    path = folder / f"bert-base-{layers}l.json"
    path.write_text(json.dumps({**BUILTIN["bert-base"], "num_hidden_layers": layers}))
    return str(path)


def peak_activations(backbone: str, method: str, cache: ModelCache) -> tuple[int, int]:
    cfg = ProfileConfig(backbone, method=method, seq_len=SEQ, batch_size=BATCH, attn="eager", target="cpu")
    r = run(cfg, cache)
    return r.memory.peak_activations, r.memory.saved_activations


def measure(depths=(6, 12, 24), methods=METHODS) -> dict[tuple[int, str], tuple[int, int]]:
    cache = ModelCache()
    with tempfile.TemporaryDirectory() as tmp:
        return {(n, m): peak_activations(bert_base_with(n, Path(tmp)), m, cache) for n in depths for m in methods}


def main() -> None:
    depths = (6, 12, 24)
    numbers = measure(depths)
    mib = 2**20
    streams = 2 * BATCH * SEQ * HIDDEN * 4
    # Saved bytes grow by one layer's worth per layer: the difference of 12 and 24 layers / 12.
    per_layer = (numbers[(24, "lora")][1] - numbers[(12, "lora")][1]) // 12
    floor = streams + per_layer
    print(f"bert-base width, seq {SEQ}, batch {BATCH}, fp32, eager, fake engine target cpu. "
          f"Floor = two streams ({streams / mib:.0f} MiB) + one frozen layer ({per_layer / mib:.0f} MiB) = {floor / mib:.0f} MiB\n")
    print("| method | " + " | ".join(f"{n} layers: peak act. MiB (% of ft)" for n in depths) + " | 24 vs 6 layers | x floor (24 layers) |")
    print("| --- " * (len(depths) + 3) + "|")
    for m in METHODS:
        cells = [f"{numbers[(n, m)][0] / mib:,.0f} ({100 * numbers[(n, m)][0] / numbers[(n, 'ft')][0]:.1f}%)" for n in depths]
        growth = numbers[(24, m)][0] / numbers[(6, m)][0]
        print(f"| {m} | " + " | ".join(cells) + f" | {growth:.3f} | {numbers[(24, m)][0] / floor:.2f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
