"""SST-2 (GLUE) sentences and labels for the benchmarks, examples and tests.

Two sources, the same data:
- local TSV files (``train.tsv``, ``dev.tsv``; header ``text<TAB>label``, label 1 = positive) in the
  folder given by ``--data-dir``, or else by the environment variable ``MEMPROF_SST2_DIR``; this
  project's checkout keeps a copy beside the repository (``../shared/data/sst2``), used when neither
  is set. Its ``dev.tsv`` is every other sentence of GLUE's validation set (436 of 872).
- the ``datasets`` library (``pip install datasets``): GLUE's ``sst2`` config from the Hugging Face
  Hub (or its cache), used when no folder is given and it is installed; ``dev`` is then the same
  every other sentence of the validation split, so both sources score on the same 436 sentences.

``load("train", limit=2000)`` returns ``(texts, labels)``. ``source="local"`` never touches the
network (the tests pass it); ``"datasets"`` insists on the library; ``"auto"`` (default) prefers a
folder named explicitly, then ``datasets``, then the checkout's copy.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "MEMPROF_SST2_DIR"
#: The copy beside this project's repository (a source checkout's, not an installed package's).
CHECKOUT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
HUB_NAME, HUB_CONFIG = "nyu-mll/glue", "sst2"
SPLITS = {"train": "train", "dev": "validation"}
SOURCES = ("auto", "local", "datasets")


class DataNotFound(RuntimeError):
    """No source could provide SST-2; the message says where it looked and what to set."""


def local_dir(data_dir: str | Path | None = None) -> Path:
    """The folder of the TSV files: ``data_dir``, else ``$MEMPROF_SST2_DIR``, else the checkout's copy."""
    chosen = data_dir or os.environ.get(ENV)
    return Path(chosen) if chosen else CHECKOUT_DIR


def read_tsv(path: Path, limit: int | None = None) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        next(f)  # header: text<TAB>label
        for line in f:
            text, label = line.rstrip("\n").rsplit("\t", 1)
            texts.append(text.strip())
            labels.append(int(label))
            if limit and len(texts) == limit:
                break
    return texts, labels


def _from_datasets(split: str, limit: int | None) -> tuple[list[str], list[int]]:
    from datasets import load_dataset  # optional: only this source needs it

    rows = load_dataset(HUB_NAME, HUB_CONFIG, split=SPLITS[split])
    if split == "dev":
        rows = rows.select(range(0, len(rows), 2))  # the 436 of the local dev.tsv
    if limit:
        rows = rows.select(range(min(limit, len(rows))))
    return [t.strip() for t in rows["sentence"]], [int(y) for y in rows["label"]]


def _has_datasets() -> bool:
    import importlib.util

    return importlib.util.find_spec("datasets") is not None


def load(
    split: str, *, data_dir: str | Path | None = None, limit: int | None = None, source: str = "auto"
) -> tuple[list[str], list[int]]:
    """``(texts, labels)`` of ``split`` ("train" or "dev"), the first ``limit`` rows if given."""
    if split not in SPLITS or source not in SOURCES:
        raise ValueError(
            f"split={split!r} source={source!r}: split is one of {', '.join(SPLITS)}, source one of "
            f"{', '.join(SOURCES)}"
        )
    explicit = data_dir or os.environ.get(ENV)
    if source == "datasets" or (source == "auto" and not explicit and _has_datasets()):
        return _from_datasets(split, limit)
    folder = local_dir(data_dir)
    path = folder / f"{split}.tsv"
    if not path.is_file():
        raise DataNotFound(
            f"SST-2 {split} not found: no {path}; pass --data-dir (or set {ENV}) to a folder holding "
            "train.tsv and dev.tsv, or pip install datasets to load GLUE SST-2 from the Hub"
        )
    return read_tsv(path, limit)


def available(data_dir: str | Path | None = None) -> bool:
    """Whether the local files are there (what the tests need: they never download)."""
    folder = local_dir(data_dir)
    return (folder / "train.tsv").is_file() and (folder / "dev.tsv").is_file()
