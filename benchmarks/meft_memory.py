"""MEFT's activation memory against ft, lora and lora+ckpt, in exact and in float arithmetic, with
the fake engine.

bert-base width (hidden 768, 12 heads) at 6, 12 and 24 layers, seq 512, batch 8, fp32, eager
attention, target cpu (the MEFT issue's setting). A fully reversible stack keeps its two top streams
(int64 fixed point in exact arithmetic for this fp32 model, fp32 in float arithmetic) and, in exact
arithmetic only, what each scaling by lam or beta = 13/128 dropped: 4 bits per element of each scaled
stream per layer, packed (meft1 scales x1, meft2 x2, meft3 both), i.e. B*T*H/2 bytes per layer for
meft1 and meft2 and twice that for meft3 (saved-activation category ``reversible_bits``). Its floor is those streams and
bits plus one layer's recomputation with frozen weights (the saved bytes of one lora layer: frozen
linears save no input for a weight gradient; ft's layer saves more, so it would overstate the floor).

    python benchmarks/meft_memory.py
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

from memprof.engines import ModelCache, run
from memprof.engines.config import ProfileConfig
from memprof.models.backbones import builtin
from memprof.results.result import Result

SEQ, BATCH, HIDDEN = 512, 8, 768
DEPTHS = (6, 12, 24)
METHODS = ("ft", "lora", "lora+ckpt", "meft1", "meft2", "meft3", "meft1-float", "meft2-float", "meft3-float")
#: bytes per element of one stream: int64 fixed point in exact arithmetic, the model's fp32 in float
STREAM_BYTES = {"exact": 8, "float": 4}
MIB = 2**20


def bert_base_with(layers: int, folder: Path) -> str:
    path = folder / f"bert-base-{layers}l.json"
    path.write_text(json.dumps({**builtin()["bert-base"], "num_hidden_layers": layers}))
    return str(path)


def profile(backbone: str, method: str, cache: ModelCache) -> Result:
    r = run(ProfileConfig(backbone, method=method, seq_len=SEQ, batch_size=BATCH, attn="eager", target="cpu"), cache)
    if r.status != "ok":
        raise RuntimeError(f"{method} on {backbone} ended with status {r.status}: {r.message}")
    return r


def measure(depths=DEPTHS, methods=METHODS) -> dict[tuple[int, str], Result]:
    cache = ModelCache()
    with tempfile.TemporaryDirectory() as tmp:
        return {(n, m): profile(bert_base_with(n, Path(tmp)), m, cache) for n in depths for m in methods}


def kept_bits(r: Result) -> int:
    """Bytes the reversible stack keeps of the bits its scalings dropped (all layers)."""
    return int(r.layers["reversible_bits"].sum())


def reversible_layers(r: Result) -> int:
    """How many layers ran through the reversible Function, from the stack's name (``12 layers``, or
    ``11 of 12 layers reversible`` when the top layer keeps its graph: ``cache_top_layer=True``)."""
    (name,) = [m for m in r.layers["module"] if "(reversible stack, " in m]
    match = re.search(r"\(reversible stack, (\d+) (?:of \d+ )?layers", name)
    return int(match.group(1))


def arithmetic(method: str) -> str:
    return "float" if method.endswith("-float") else "exact"


def main() -> None:
    results = measure()
    peak = {k: r.memory.peak_activations for k, r in results.items()}
    top, bottom = max(DEPTHS), min(DEPTHS)
    elements = BATCH * SEQ * HIDDEN  # of one stream
    # A frozen layer's saved bytes: lora's growth per layer, from the shallowest to the deepest.
    frozen_layer = (
        results[(top, "lora")].memory.saved_activations - results[(bottom, "lora")].memory.saved_activations
    ) // (top - bottom)
    print(
        f"bert-base width, seq {SEQ}, batch {BATCH}, fp32, eager, fake engine target cpu. One stream has "
        f"B*T*H = {elements:,} elements: half a byte each is {elements / 2 / MIB:.1f} MiB. Floor = two top streams "
        f"+ kept bits + one frozen layer ({frozen_layer / MIB:.0f} MiB); meft3 recomputes its attention and "
        "feed-forward blocks one at a time, so it stays below. Layers run through the reversible Function "
        f"at {top} layers: meft1 {reversible_layers(results[(top, 'meft1')])}, meft3 "
        f"{reversible_layers(results[(top, 'meft3')])} (a top layer kept with cache_top_layer=True would not).\n"
    )
    print(
        "| method | "
        + " | ".join(f"{n} layers: peak act. MiB (% of ft)" for n in DEPTHS)
        + f" | growth per layer, {bottom} to {top} (MiB) | kept bits per layer (MiB) | "
        "kept bytes per element per layer | x float (24 layers) | x floor (24 layers) |"
    )
    print("| --- " * (len(DEPTHS) + 6) + "|")
    for m in METHODS:
        cells = [f"{peak[(n, m)] / MIB:,.0f} ({100 * peak[(n, m)] / peak[(n, 'ft')]:.1f}%)" for n in DEPTHS]
        growth = (peak[(top, m)] - peak[(bottom, m)]) / (top - bottom)
        cells.append(f"{growth / MIB:,.2f}")
        if m.startswith("meft"):
            bits = kept_bits(results[(top, m)]) / reversible_layers(results[(top, m)])
            floor = 2 * elements * STREAM_BYTES[arithmetic(m)] + kept_bits(results[(top, m)]) + frozen_layer
            versus_float = "—" if arithmetic(m) == "float" else f"{peak[(top, m)] / peak[(top, m + '-float')]:.3f}"
            cells += [f"{bits / MIB:.2f}", f"{bits / elements:g}", versus_float, f"{peak[(top, m)] / floor:.2f}"]
        else:
            cells += ["—"] * 4
        print(f"| {m} | " + " | ".join(cells) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
