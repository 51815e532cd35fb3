"""Run by ``accelerate launch --multi_gpu --num_processes 2`` with ``ACCELERATE_USE_CPU=1`` on 2 CPU
processes (tests/meft/test_accelerate_trainer.py):
a tiny MEFT BERT trained through transformers.Trainer on 2 processes (gloo), interrupted after its
step-2 checkpoint, resumed from it, and trained uninterrupted for comparison. Rank 0 writes what
the test checks to ``<out>/outcome.json``: every trained tensor equal or not, the world size, the losses.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import torch
import transformers as tf
from test_trainer_checkpoints import Rows, StopAt, make_model, trained


def run(out: Path, callbacks=(), resume: str | None = None) -> tf.Trainer:
    args = tf.TrainingArguments(
        output_dir=str(out),
        max_steps=4,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        optim="adamw_torch",
        report_to=[],
        use_cpu=True,
        save_strategy="steps",
        save_steps=2,
        logging_steps=1,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=0,
    )
    t = tf.Trainer(model=make_model("meft1"), args=args, train_dataset=Rows(), callbacks=list(callbacks))
    t.train(resume_from_checkpoint=resume)
    return t


def main(out: Path) -> None:
    whole = run(out / "whole")
    run(out / "cut", callbacks=[StopAt(2)])
    resumed = run(out / "cut", resume=str(out / "cut" / "checkpoint-2"))
    if whole.args.process_index == 0:
        a, b = trained(resumed.model), trained(whole.model)
        outcome = {
            "world_size": [whole.args.world_size, resumed.args.world_size],
            "backend": torch.distributed.get_backend(),
            "equal": sorted(k for k in a if torch.equal(a[k], b[k])),
            "trained": sorted(a),
            "losses": [[e["loss"] for e in t.state.log_history if "loss" in e] for t in (resumed, whole)],
            "steps": [resumed.state.global_step, whole.state.global_step],
        }
        (out / "outcome.json").write_text(json.dumps(outcome))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # The process group is destroyed last, once the trainers and their DDP models (which hold it) are
    # gone (main's frame freed them; collect what cycles kept): left to the interpreter's teardown,
    # gloo's threads can abort the process ("terminate called without an active exception");
    # destroyed while a DDP model is still alive, freeing that model afterwards can hang (3 of 16
    # launches, two at a time, on 2 cores).
    gc.collect()
    torch.distributed.destroy_process_group()
