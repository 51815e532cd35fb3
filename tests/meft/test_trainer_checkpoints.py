"""MEFT through transformers.Trainer's checkpoints: resume, the best model at the end, what a
checkpoint holds (NOTE [ Checkpoints the Trainer loads ], meft/peft_api.py). A tiny random BERT
(hidden 32, 2 layers, dropout 0.1) on 24 rows, 4 a batch: 6 steps an epoch, 8 steps in all."""

from __future__ import annotations

import logging

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file

import meft

SEQ = 8
IDS = torch.randint(4, 64, (24, SEQ), generator=torch.Generator().manual_seed(0))
LABELS = torch.randint(0, 2, (24,), generator=torch.Generator().manual_seed(1))
STOP = 3  # the interrupted run stops after this step, where it saved its checkpoint


class Rows(torch.utils.data.Dataset):
    def __init__(self, n: int = 24) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return {"input_ids": IDS[i], "labels": LABELS[i]}


def tiny_bert() -> tf.BertForSequenceClassification:
    config = tf.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=SEQ,
        num_labels=2,
    )
    torch.manual_seed(0)
    return tf.BertForSequenceClassification(config)


def make_model(method: str) -> torch.nn.Module:
    """The same model every call: a seeded tiny BERT, converted (or wrapped by peft for lora)."""
    model = tiny_bert()
    if method == "lora":
        import peft

        config = peft.LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"])
        return peft.get_peft_model(model, config)
    return meft.get_meft_model(model, meft.MEFTConfig(variant=method, adapter_dim=4))


def trainer(out, model, callbacks=(), eval_dataset=None, compute_metrics=None, **overrides) -> tf.Trainer:
    args = dict(
        output_dir=str(out),
        max_steps=8,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        optim="adamw_torch",
        report_to=[],
        use_cpu=True,
        save_strategy="steps",
        save_steps=STOP,
        logging_steps=1,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=0,
    )
    return tf.Trainer(
        model=model,
        args=tf.TrainingArguments(**{**args, **overrides}),
        train_dataset=Rows(),
        eval_dataset=eval_dataset,
        compute_metrics=compute_metrics,
        callbacks=list(callbacks),
    )


class StopAt(tf.TrainerCallback):
    """Ends training after ``step`` (the process that stops there could as well have been killed:
    nothing after the checkpoint of that step is read back)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def trained(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def optimizer_state(t: tf.Trainer) -> list[tuple[int, str, torch.Tensor]]:
    state = t.optimizer.state_dict()["state"]
    return [(i, k, v) for i in sorted(state) for k, v in sorted(state[i].items())]


def losses(t: tf.Trainer) -> list[tuple[int, float]]:
    return [(e["step"], e["loss"]) for e in t.state.log_history if "loss" in e]


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.parametrize("method", ["meft1", "meft2", "meft3", "lora"])
def test_a_run_resumed_from_its_checkpoint_ends_bit_identical_to_an_uninterrupted_one(method, tmp_path):
    whole = trainer(tmp_path / "whole", make_model(method))
    whole.train()

    cut = trainer(tmp_path / "cut", make_model(method), callbacks=[StopAt(STOP)])
    cut.train()
    assert cut.state.global_step == STOP
    checkpoint = tmp_path / "cut" / f"checkpoint-{STOP}"
    resumed = trainer(tmp_path / "cut", make_model(method))  # a new process: a fresh model, a new Trainer
    resumed.train(resume_from_checkpoint=str(checkpoint))

    assert resumed.state.global_step == whole.state.global_step == 8
    assert_same_tensors(trained(resumed.model), trained(whole.model))
    assert not torch.equal(*(next(iter(trained(m).values())) for m in (resumed.model, make_model(method))))
    ours, theirs = optimizer_state(resumed), optimizer_state(whole)
    assert [(i, k) for i, k, _ in ours] == [(i, k) for i, k, _ in theirs] and ours
    assert all(torch.equal(a[2], b[2]) for a, b in zip(ours, theirs))
    assert losses(resumed) == losses(whole) and [s for s, _ in losses(whole)] == list(range(1, 9))


@pytest.mark.parametrize("variant", ["meft1", "meft2", "meft3"])
def test_a_checkpoint_holds_the_trained_tensors_and_what_a_resume_needs_and_no_frozen_weight(variant, tmp_path):
    model = make_model(variant)
    trainer(tmp_path, model, max_steps=STOP).train()
    checkpoint = tmp_path / f"checkpoint-{STOP}"
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "adapter_model.safetensors",
        "meft_config.json",
        "model.safetensors",  # the Trainer's copy of the same tensors
        "optimizer.pt",
        "rng_state.pth",
        "scheduler.pt",
        "trainer_state.json",
        "training_args.bin",
    ]
    expected = trained(model)
    assert set(expected) == set(meft.trained_parameters(model))
    for name in ("adapter_model.safetensors", "model.safetensors"):
        assert_same_tensors(load_file(str(checkpoint / name)), expected)
    # the optimizer holds AdamW's two moments and step count for each trained tensor, nothing else
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)["state"]
    moments = sum(s["exp_avg"].numel() + s["exp_avg_sq"].numel() for s in saved.values())
    assert len(saved) == len(expected) and moments == 2 * sum(p.numel() for p in expected.values())


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("frozen_named", [True, False])
def test_resuming_loads_the_checkpoint_without_a_missing_keys_warning(frozen_named, tmp_path, monkeypatch):
    trainer(tmp_path, make_model("meft1"), max_steps=STOP).train()
    model = make_model("meft1")
    if not frozen_named:  # the control: without the frozen keys named, the Trainer lists them all
        monkeypatch.setattr(type(model), "_keys_to_ignore_on_save", None)
    resumed = trainer(tmp_path, model, max_steps=STOP + 1)
    records = Records()  # transformers' loggers do not propagate to pytest's caplog
    logging.getLogger("transformers.trainer").addHandler(records)
    try:
        resumed.train(resume_from_checkpoint=str(tmp_path / f"checkpoint-{STOP}"))
    finally:
        logging.getLogger("transformers.trainer").removeHandler(records)
    missing = [m for m in records.messages if "missing keys" in m]
    assert (missing == []) if frozen_named else (len(missing) == 1 and "embeddings.word_embeddings" in missing[0])


class Order:
    """compute_metrics that scores the n-th evaluation n: with greater_is_better=False the first
    checkpoint is the best, never the last one, so loading it is visible in the weights."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, prediction) -> dict[str, float]:
        self.calls += 1
        return {"order": float(self.calls)}


@pytest.mark.parametrize("variant", ["meft1", "meft2", "meft3"])
def test_load_best_model_at_end_loads_the_best_checkpoint(variant, tmp_path):
    model = make_model(variant)
    t = trainer(
        tmp_path,
        model,
        max_steps=6,
        save_steps=2,
        eval_strategy="steps",
        eval_steps=2,
        load_best_model_at_end=True,
        metric_for_best_model="order",
        greater_is_better=False,
        eval_dataset=Rows(8),
        compute_metrics=Order(),
    )
    t.train()
    assert t.state.best_model_checkpoint == str(tmp_path / "checkpoint-2")
    best = load_file(str(tmp_path / "checkpoint-2" / "adapter_model.safetensors"))
    last = load_file(str(tmp_path / "checkpoint-6" / "adapter_model.safetensors"))
    assert_same_tensors(trained(t.model), best)
    assert [k for k in best if torch.equal(best[k], last[k])] == []  # training moved every trained tensor
