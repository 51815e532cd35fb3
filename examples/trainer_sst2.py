"""Fine-tune all-MiniLM-L6-v2 on SST-2 with MEFT through transformers.Trainer, measure steps 1 and 2
with MemprofCallback, stop halfway, and resume from the checkpoint as an interrupted run would.

    python examples/trainer_sst2.py                              # 250 steps, 2,000 sentences
    python examples/trainer_sst2.py --max-steps 4 --train-size 64 --eval-size 16   # a smoke run

The checkpoints hold the adapters and the head (model.safetensors, adapter_model.safetensors) and
the Trainer's optimizer, scheduler, RNG and trainer state, no frozen weight. Resuming restores all
of it: the resumed run ends where an uninterrupted one would (tests/meft/test_trainer_checkpoints.py).
"""

from __future__ import annotations

import numpy as np
import transformers as tf
from sst2_common import arguments, data, meft_model

from memprof.integrations.transformers import RESULTS_FILE, MemprofCallback


class StopHalfway(tf.TrainerCallback):
    """Stands for the interruption (a preempted job): training stops after the halfway checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:  # never clear a stop another callback asked for
            control.should_training_stop = True


def accuracy(prediction: tf.EvalPrediction) -> dict[str, float]:
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


def trainer(args, train, dev, callbacks) -> tf.Trainer:
    half = max(args.max_steps // 2, 1)
    training = tf.TrainingArguments(
        output_dir=str(args.out),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=args.lr,
        optim="adamw_torch",
        save_strategy="steps",
        save_steps=half,
        eval_strategy="steps",
        eval_steps=half,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        logging_steps=max(args.max_steps // 10, 1),
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    return tf.Trainer(
        model=meft_model(args),
        args=training,
        train_dataset=train,
        eval_dataset=dev,
        compute_metrics=accuracy,
        callbacks=callbacks,
    )


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    train, dev = data(args)
    half = max(args.max_steps // 2, 1)

    first = trainer(args, train, dev, [MemprofCallback(steps=(1, 2)), StopHalfway(half)])
    first.model.print_trainable_parameters()
    first.train()
    for entry in first.state.log_history:
        if "memprof/peak" in entry:
            print(
                f"step {entry['step']}: saved activations {entry['memprof/saved_activations']:,d} B, "
                f"peak {entry['memprof/peak']:,d} B"
            )
    print(f"memory results: {args.out / RESULTS_FILE} (memprof report {args.out / RESULTS_FILE})")

    # A new process would do exactly this: a fresh model, a new Trainer, and the checkpoint.
    resumed = trainer(args, train, dev, [])
    resumed.train(resume_from_checkpoint=str(args.out / f"checkpoint-{half}"))
    print(
        f"resumed at step {half}, ended at step {resumed.state.global_step}; best checkpoint "
        f"{resumed.state.best_model_checkpoint} (accuracy {resumed.state.best_metric:.3f}) is loaded"
    )
    print(f"dev accuracy: {resumed.evaluate()['eval_accuracy']:.3f}")


if __name__ == "__main__":
    main()
