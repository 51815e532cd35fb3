"""The per-layer closed form of BERT, BART and OPT beside Korthikanti et al.'s Megatron formula.

Korthikanti et al. (2022), "Reducing Activation Recomputation in Large Transformer Models", count
``s·b·h·(34 + 5·a·s/h)`` bytes of activations per 16-bit GPT layer: ``34·s·b·h + 5·a·s²·b``. This
script derives ``memprof formula`` for one transformer layer of each family in bf16 on the cuda
target (full fine-tuning), writes it in the same shape (``X·s·b·h + Y·a·s²·b``, plus any other
term) and splits it by category, for eager attention (scores materialised, as the paper assumes)
and SDPA (what transformers runs by default).

    python benchmarks/formula_layers.py [--backbones bert-base,bart-base,opt-125m] [--out formula_layers.md]
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction

from memprof.engines.config import ProfileConfig
from memprof.engines.symbolic import derive
from memprof.results.polynomial import Poly

B, S = Poly.var("b"), Poly.var("s")


def layer_rows(formula, hidden: int, heads: int) -> list[dict]:
    """One row per distinct layer polynomial: its name, the polynomial, X and Y of Korthikanti's shape,
    what is left over, and the split by category."""
    rows = []
    for name, poly in formula.saved_by_layer():
        if not any(ch.isdigit() for ch in name):
            continue  # embeddings, head: not a transformer layer
        bs, bss = poly.terms.get((("b", 1), ("s", 1)), 0), poly.terms.get((("b", 1), ("s", 2)), 0)
        rest = poly - B * S * bs - B * S * S * bss
        rows.append(
            {
                "layer": name,
                "poly": poly,
                "X": Fraction(bs, hidden),
                "Y": Fraction(bss, heads),
                "rest": rest,
                "categories": _categories(formula, name),
            }
        )
    return rows


def _categories(formula, layer_name: str) -> dict[str, Poly]:
    """The layer's saved bytes by category (the first layer of a joined run stands for each)."""
    from memprof.results.module_names import layer_group

    first = layer_name.split(" ")[0]
    first = first.split("-")[0] if "-" in first else first
    out: dict[str, Poly] = {}
    for module, cats in formula.layers:
        if layer_group(module) == first:
            for c, p in cats.items():
                out[c] = out.get(c, Poly()) + p
    return out


def fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):.3f}"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="bert-base,bart-base,opt-125m")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    lines = [
        "| backbone | attention | layer | bytes per layer | X (×s·b·h) | Y (×a·s²·b) | other terms |",
        "|---|---|---|---|---:|---:|---|",
    ]
    splits = []
    for name in args.backbones.split(","):
        for attn in ("eager", "sdpa"):
            config = ProfileConfig(backbone=name, method="ft", engine="fake", dtype="bf16", attn=attn)
            spec = config.resolved
            fields = spec.spec.fields
            hidden, heads = int(spec.get(fields.hidden)), int(spec.get(fields.heads))
            start = time.perf_counter()
            formula = derive(config)
            took = time.perf_counter() - start
            for row in layer_rows(formula, hidden, heads):
                lines.append(
                    f"| {name} | {formula.attn_implementation} | {row['layer']} | `{row['poly']}` | "
                    f"{fmt(row['X'])} | {fmt(row['Y'])} | `{row['rest']}` |"
                )
                split = ", ".join(f"{c} `{p}`" for c, p in row["categories"].items())
                splits.append(f"- {name} {formula.attn_implementation} {row['layer']}: {split}")
            print(f"{name} {attn}: {formula.how} in {took:.1f} s (h={hidden}, a={heads})", flush=True)
    text = "\n".join(lines + ["", "Split by category:", *splits]) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return text


if __name__ == "__main__":
    main()
