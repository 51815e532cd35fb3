"""What keeping the top layer's graph (``MEFTConfig.cache_top_layer=True``) costs and buys.

Memory: ``memprof.profile`` (fake engine, target cuda, SDPA, seq 512, batch 8) of the classification
models of bert-base, roberta-large, bart-base and bart-large in bf16 and fp32, first and steady
step, each MEFT variant with the default (every layer reversible) and with the top layer's graph
kept; lora+ckpt beside them. Gradients: ``meft.gradient_fidelity`` on a randomly initialised BART
classifier (hidden 64, 24 encoder and 24 decoder layers, seq 16, batch 2) in fp32, bf16 and fp16,
both settings: the largest relative gradient error against ordinary backprop and the lowest cosine.

Prints Markdown for BENCHMARKS.md ("The top layer's graph").

    python benchmarks/top_layer_graph.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_machine import describe  # noqa: E402

import meft  # noqa: E402
import memprof  # noqa: E402
from memprof.methods.meft import register_meft  # noqa: E402
from memprof.units import MIB  # noqa: E402

BACKBONES = ("bert-base", "roberta-large", "bart-base", "bart-large")
VARIANTS = ("meft1", "meft2", "meft3")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def memory_table() -> tuple[list[str], list[float]]:
    for variant in VARIANTS:
        register_meft(f"{variant}-top-kept", meft.MEFTConfig(variant=variant, cache_top_layer=True))
    lines = [
        "| backbone, dtype, step | lora+ckpt | " + " | ".join(f"{v} / kept" for v in VARIANTS) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in VARIANTS) + " |",
    ]
    ratios = []
    for backbone in BACKBONES:
        for dtype in ("bf16", "fp32"):
            for step in ("first", "steady"):

                def peak(method: str, backbone=backbone, dtype=dtype, step=step) -> int:
                    r = memprof.profile(backbone, method, seq_len=512, batch_size=8, dtype=dtype, step=step)
                    return r.memory.peak

                cells = []
                for variant in VARIANTS:
                    default, kept = peak(variant), peak(f"{variant}-top-kept")
                    ratios.append(default / kept)
                    cells.append(f"{default / MIB:,.1f} / {kept / MIB:,.1f} MiB")
                lines.append(
                    f"| {backbone}, {dtype}, {step} | {peak('lora+ckpt') / MIB:,.1f} | " + " | ".join(cells) + " |"
                )
                print(lines[-1], file=sys.stderr, flush=True)
    return lines, ratios


def tiny_bart(dtype: torch.dtype):
    from transformers import BartConfig, BartForSequenceClassification

    config = BartConfig(
        vocab_size=64, max_position_embeddings=40, d_model=64, encoder_layers=24, decoder_layers=24,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None,
        num_labels=2,
    )  # fmt: skip
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return BartForSequenceClassification(config).to(dtype).train()


def fidelity_table() -> list[str]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 64, (2, 16), generator=gen)
    ids[:, -1] = 2  # one </s> per row, for BART's classification head
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.ones(2, dtype=torch.long)}
    lines = [
        "| dtype, variant | default: relative error, cosine | top layer kept: relative error, cosine |",
        "| --- | --- | --- |",
    ]
    for name, dtype in DTYPES.items():
        for variant in VARIANTS:
            cells = []
            for kept in (False, True):
                torch.manual_seed(1)
                model = meft.convert(tiny_bart(dtype), meft.MEFTConfig(variant=variant, cache_top_layer=kept))
                report = meft.gradient_fidelity(model, batch)
                cells.append(f"{report.worst_relative_error:.2e}, {report.lowest_cosine:.6f}")
            lines.append(f"| {name}, {variant} | " + " | ".join(cells) + " |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def main() -> None:
    run = describe()
    memory, ratios = memory_table()
    fidelity = fidelity_table()
    print(f"{run['date']}, {run['machine']}.")
    print()
    print("\n".join(memory))
    print()
    print(f"default / kept, every cell: {min(ratios):.3f} to {max(ratios):.3f}")
    print()
    print("\n".join(fidelity))


if __name__ == "__main__":
    main()
