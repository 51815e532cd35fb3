"""The peft-style API: get_meft_model, save_pretrained / from_pretrained (also from a Trainer
checkpoint), print_trainable_parameters, unload."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as tf
from meft_testing import batch_for, raises_one_line, tiny_model
from safetensors.torch import load_file

import meft

CONFIG = meft.MEFTConfig(variant="meft1", adapter_dim=4)


class Rows(torch.utils.data.Dataset):
    """16 rows of the tiny BERT's classification batch."""

    def __init__(self) -> None:
        self.data = batch_for("bert-cls", seed=3, batch=16)

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.data.items()}


def base_model():
    """The same random tiny BERT every call (seed 0): the 'pre-trained' model a save is loaded into."""
    return tiny_model("bert-cls", dtype=torch.float32)


def logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def test_trainer_checkpoint_reloads_into_a_fresh_base_model_with_identical_logits(tmp_path):
    model = meft.get_meft_model(base_model(), CONFIG)
    args = tf.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        save_steps=3,
        save_strategy="steps",
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        logging_steps=1,
    )
    tf.Trainer(model=model, args=args, train_dataset=Rows()).train()
    checkpoint = tmp_path / "checkpoint-3"
    # Trainer saved through MEFTModel.save_pretrained: the MEFT files and the Trainer's copy of the
    # same tensors (NOTE [ Checkpoints the Trainer loads ]), no full state dict.
    names = {"adapter_model.safetensors", "model.safetensors", "meft_config.json"}
    assert names <= {p.name for p in checkpoint.iterdir()}
    assert not list(checkpoint.glob("model*.safetensors.index.json"))
    saved = load_file(str(checkpoint / "adapter_model.safetensors"))
    assert set(saved) == set(meft.trained_parameters(model))
    copy_ = load_file(str(checkpoint / "model.safetensors"))
    assert saved.keys() == copy_.keys() and all(torch.equal(saved[k], copy_[k]) for k in saved)

    batch = batch_for("bert-cls", seed=7, batch=4)
    fresh = meft.get_meft_model(base_model(), CONFIG)
    assert not torch.equal(logits(fresh, batch), logits(model, batch))  # training moved the logits
    fresh.unload()
    reloaded = meft.MEFTModel.from_pretrained(fresh, checkpoint)
    assert isinstance(reloaded, meft.MEFTModel) and isinstance(reloaded, tf.BertForSequenceClassification)
    assert torch.equal(logits(reloaded, batch), logits(model, batch))
    assert not any(p.requires_grad for p in reloaded.parameters())  # as peft: for inference by default


def test_save_pretrained_writes_what_load_adapters_reads(tmp_path):
    model = meft.get_meft_model(base_model(), CONFIG)
    with torch.no_grad():  # stand-in for training: move every trained parameter
        for p in meft.trained_parameters(model).values():
            p.add_(torch.randn_like(p))
    model.save_pretrained(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "adapter_model.safetensors",
        "meft_config.json",
        "model.safetensors",
    ]
    other = meft.load_adapters(meft.convert(base_model(), CONFIG), tmp_path / "out")
    batch = batch_for("bert-cls")
    assert torch.equal(logits(other, batch), logits(model, batch))
    model.save_pretrained(tmp_path / "not-main", is_main_process=False)
    assert not (tmp_path / "not-main").exists()


def test_from_pretrained_is_trainable_keeps_the_adapters_and_head_trainable(tmp_path):
    model = meft.get_meft_model(base_model(), CONFIG)
    model.save_pretrained(tmp_path)
    again = meft.MEFTModel.from_pretrained(base_model(), tmp_path, is_trainable=True)
    assert {n for n, p in again.named_parameters() if p.requires_grad} == set(meft.trained_parameters(model))


def test_print_trainable_parameters_counts_the_trained_parameters(capsys):
    model = meft.get_meft_model(base_model(), CONFIG)
    trainable = sum(p.numel() for p in meft.trained_parameters(model).values())
    # hidden 16, dim 4, 2 layers, meft1 with merge=plm: each layer's F adapter (16*4+4 + 4*16+16 = 148),
    # the bottom layer's G adapter too (the top one's is never built), and the head (16*2+2 = 34);
    # BERT's pooler is frozen.
    assert trainable == 3 * 148 + 34
    total = sum(p.numel() for p in model.parameters())
    model.print_trainable_parameters()
    assert capsys.readouterr().out == (
        f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}\n"
    )
    assert model.get_nb_trainable_parameters() == (trainable, total)


def test_unload_gives_back_the_original_class_and_outputs():
    original = base_model()
    batch = batch_for("bert-cls")
    before = logits(original, batch)
    model = meft.get_meft_model(copy.deepcopy(original), CONFIG)
    assert type(model).__name__ == "MEFTBertForSequenceClassification"
    back = model.unload()
    assert type(back) is tf.BertForSequenceClassification and not meft.is_converted(back)
    assert torch.equal(logits(back, batch), before)
    assert {n for n, p in back.named_parameters() if p.requires_grad} == {n for n, _ in original.named_parameters()}


def test_a_refused_from_pretrained_leaves_the_model_unconverted(tmp_path):
    meft.get_meft_model(base_model(), CONFIG).save_pretrained(tmp_path)
    three_labels = tiny_model("bert-cls", dtype=torch.float32, num_labels=3)
    raises_one_line(lambda: meft.MEFTModel.from_pretrained(three_labels, tmp_path), ["shape", "num_labels"])
    assert type(three_labels) is tf.BertForSequenceClassification and not meft.is_converted(three_labels)
    raises_one_line(
        lambda: meft.MEFTModel.from_pretrained(base_model(), tmp_path / "absent"), ["absent", "does not exist"]
    )


def test_get_meft_model_refuses_a_converted_model():
    model = meft.get_meft_model(base_model(), CONFIG)
    raises_one_line(lambda: meft.get_meft_model(model, CONFIG), ["converted to MEFT already"])


@pytest.mark.parametrize("name", ["get_meft_model", "MEFTModel"])
def test_exported_from_the_package(name):
    assert name in meft.__all__ and getattr(meft, name) is getattr(meft.peft_api, name)
