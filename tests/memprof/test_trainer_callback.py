"""MemprofCallback in a real transformers.Trainer run: a tiny random BERT, 3 steps on the CPU, in both
forms (given the trainer, and made without it), with gradient accumulation, and after a step that raised."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
import transformers as tf
from test_cli_check import cli
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

import memprof
from memprof import MemprofError, load_results
from memprof.integrations.transformers import RESULTS_FILE, MemprofCallback

IDS = torch.randint(4, 64, (16, 8), generator=torch.Generator().manual_seed(0))
LABELS = torch.arange(16) % 2


class Rows(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i):
        return {"input_ids": IDS[i], "labels": LABELS[i]}


def tiny_bert() -> tf.BertForSequenceClassification:
    config = tf.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
        num_labels=2,
    )
    torch.manual_seed(0)
    return tf.BertForSequenceClassification(config)


def trainer(out, callbacks=None, **overrides) -> tf.Trainer:
    args = dict(
        output_dir=str(out),
        max_steps=3,
        per_device_train_batch_size=4,
        optim="adamw_torch",
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=0,
    )
    return tf.Trainer(
        model=tiny_bert(), args=tf.TrainingArguments(**{**args, **overrides}), train_dataset=Rows(), callbacks=callbacks
    )


def memprof_entries(t: tf.Trainer) -> dict[int, dict]:
    return {e["step"]: e for e in t.state.log_history if "memprof/peak" in e}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(trainer, callback) after 3 steps with steps 1 and 2 profiled, and the losses of a run without it."""
    out = tmp_path_factory.mktemp("run")
    plain = trainer(tmp_path_factory.mktemp("plain"))
    plain.train()
    profiled = trainer(out)
    callback = MemprofCallback(profiled)
    profiled.add_callback(callback)
    profiled.train()
    return profiled, callback, [e["loss"] for e in plain.state.log_history if "loss" in e]


def test_metrics_reach_the_log_history_at_the_profiled_steps(run):
    trainer, callback, _ = run
    logged = {e["step"]: e for e in trainer.state.log_history if "memprof/peak" in e}
    assert sorted(logged) == [1, 2]
    # step 1 creates AdamW's state, step 2 runs with it resident: recorded as --step first / steady
    assert [r.step for r in callback.results] == ["first", "steady"]
    for result, step in zip(callback.results, (1, 2)):
        memory = result.memory
        assert {k: logged[step][k] for k in logged[step] if k.startswith("memprof/")} == {
            "memprof/saved_activations": memory.saved_activations,
            "memprof/peak_activations": memory.peak_activations,
            "memprof/peak": memory.peak,
        }
        assert memory.saved_activations > 0 and memory.peak >= memory.peak_activations


def test_the_trainer_still_logs_every_loss_and_profiling_changes_no_loss(run):
    trainer, _, plain_losses = run
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [1, 2, 3]
    assert [e["loss"] for e in trainer.state.log_history if "loss" in e] == plain_losses


def test_the_steps_measure_parameters_gradients_and_adamw_state_by_hand(run):
    trainer, callback, _ = run
    model = trainer.model
    n = sum(p.numel() for p in model.parameters())
    tensors = len(list(model.parameters()))
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    first, second = (r.memory for r in callback.results)
    assert first.parameters == second.parameters == 4 * n + buffers  # fp32 weights, position and type ids
    # Step 1: AdamW creates its state inside optimizer.step(), when every fp32 gradient is live.
    assert first.gradients == 4 * n
    # Step 2 (steady state): exp_avg and exp_avg_sq in fp32 per parameter, and one fp32 step count per tensor.
    assert second.optimizer_state == 2 * 4 * n + 4 * tensors
    assert first.saved_activations == second.saved_activations  # the same shapes, the same forward
    assert [r.method for r in callback.results] == ["step 1", "step 2"]
    assert {(r.seq_len, r.batch_size, r.engine) for r in callback.results} == {(8, 4, "track")}


def test_the_result_file_in_the_output_folder_holds_the_profiled_steps(run):
    trainer, callback, _ = run
    saved = load_results(f"{trainer.args.output_dir}/{RESULTS_FILE}")
    assert [r.to_dict() for r in saved.results] == [r.to_dict() for r in callback.results]
    assert saved.options == {"steps": [1, 2], "profiled": [1, 2]}


def test_the_callback_made_without_the_trainer_logs_the_same_entries(run, tmp_path):
    trained, _, _ = run
    callback = MemprofCallback()
    t = trainer(tmp_path, callbacks=[callback])
    t.train()
    assert memprof_entries(t) == memprof_entries(trained)  # figures, epoch and step, as trainer.log writes them
    assert [e["step"] for e in t.state.log_history if "loss" in e] == [1, 2, 3]
    saved = load_results(tmp_path / RESULTS_FILE)
    assert [r.memory for r in saved.results] == [r.memory for r in callback.results] and len(saved.results) == 2


class Reporter(tf.TrainerCallback):
    """Stands for a report_to integration: the Trainer calls those before any callback added later."""

    def __init__(self) -> None:
        self.logged: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logged.append(dict(logs))


def test_given_the_trainer_the_figures_reach_the_reporters_too(tmp_path):
    reporter = Reporter()
    t = trainer(tmp_path, callbacks=[reporter])
    t.add_callback(MemprofCallback(t))
    t.train()
    seen = [{k: v for k, v in logs.items() if k.startswith("memprof/")} for logs in reporter.logged]
    assert [s for s in seen if s] == [
        {k: v for k, v in e.items() if k.startswith("memprof/")} for e in memprof_entries(t).values()
    ]
    assert len([s for s in seen if s]) == 2


def test_made_without_the_trainer_it_refuses_reporters_it_cannot_reach_in_one_line():
    state, control = tf.TrainerState(), tf.TrainerControl()
    with pytest.raises(
        MemprofError, match=r"report_to=\['wandb'\].*add_callback\(MemprofCallback\(trainer\)\)"
    ) as info:
        MemprofCallback().on_train_begin(SimpleNamespace(report_to=["wandb"]), state, control)
    assert "\n" not in str(info.value)
    MemprofCallback().on_train_begin(SimpleNamespace(report_to=["none"]), state, control)  # log_history only


def test_gradient_accumulation_gives_one_result_per_optimizer_step_holding_every_micro_batch(run, tmp_path):
    plain, single, _ = run
    callback = MemprofCallback(steps=(1, 2, 3))
    t = trainer(tmp_path, callbacks=[callback], gradient_accumulation_steps=4, per_device_train_batch_size=1)
    t.train()
    assert sorted(memprof_entries(t)) == [1, 2, 3] and callback.profiled == [1, 2, 3]
    assert [r.method for r in callback.results] == ["step 1", "step 2", "step 3"]
    assert {r.message for r in callback.results} == {
        "one optimizer step of 4 micro-batches (gradient_accumulation_steps=4): peaks over all of them, "
        "saved activations and batch size of one"
    }
    assert {r.batch_size for r in callback.results} == {1}
    saved = load_results(tmp_path / RESULTS_FILE)
    assert saved.options == {"steps": [1, 2, 3], "profiled": [1, 2, 3], "gradient_accumulation_steps": 4}
    # From the second micro-batch on, the first one's gradients are resident during the forward and
    # backward: a steady step of 4 micro-batches peaks above what one micro-batch's step alone
    # holds at its peak with no gradient resident before its backward.
    one = trainer(tmp_path / "one", callbacks=[MemprofCallback(steps=(2,))], per_device_train_batch_size=1)
    one.train()
    steady_one, steady_four = memprof_entries(one)[2], memprof_entries(t)[2]
    assert steady_four["memprof/peak"] > steady_one["memprof/peak"]
    # saved activations are one micro-batch's (the first forward's), as the message says
    assert steady_four["memprof/saved_activations"] == steady_one["memprof/saved_activations"]


def test_a_step_that_raises_leaves_no_measurement_open(tmp_path):
    t = trainer(tmp_path, max_steps=1)
    callback = MemprofCallback(t)
    t.add_callback(callback)

    def broken(module, args):
        raise RuntimeError("broken forward")

    hook = t.model.classifier.register_forward_pre_hook(broken)  # fails inside the profiled step
    with pytest.raises(RuntimeError, match="broken forward"):
        t.train()
    hook.remove()
    # nothing is left measuring in this thread: no dispatch mode, no saved-tensor hooks
    assert _get_current_dispatch_mode_stack() == []
    assert torch._C._autograd._top_saved_tensors_default_hooks(False) is None
    with memprof.track(t.model) as prof:
        t.model(input_ids=IDS[:2], labels=LABELS[:2]).loss.backward()
    assert prof.result.memory.saved_activations > 0
    t.train()
    assert [r.method for r in callback.results] == ["step 1"] and callback.results[0].memory.saved_activations > 0


def _nothing_measuring() -> bool:
    return (
        _get_current_dispatch_mode_stack() == [] and torch._C._autograd._top_saved_tensors_default_hooks(False) is None
    )


def _broken_backward(grad):
    raise RuntimeError("broken backward")


def test_given_the_trainer_a_step_whose_backward_raises_leaves_nothing_measuring(tmp_path):
    # the callback wraps trainer.training_step while a profiled step runs (NOTE [ A step that raises ])
    t = trainer(tmp_path, max_steps=1)
    callback = MemprofCallback(t)
    t.add_callback(callback)
    hook = t.model.classifier.weight.register_hook(_broken_backward)
    with pytest.raises(RuntimeError, match="broken backward"):
        t.train()
    hook.remove()
    assert _nothing_measuring() and callback.results == []
    assert "training_step" not in vars(t)  # the wrapper is gone: the class's method again


def test_an_optimizer_step_that_raises_leaves_nothing_measuring(tmp_path):
    callback = MemprofCallback()
    t = trainer(tmp_path, callbacks=[callback], max_steps=1)
    t.create_optimizer()

    def broken(optimizer, args, kwargs):
        raise RuntimeError("broken optimizer step")

    handle = t.optimizer.register_step_pre_hook(broken)
    with pytest.raises(RuntimeError, match="broken optimizer step"):
        t.train()
    handle.remove()
    assert _nothing_measuring() and callback.results == []


def test_made_without_the_trainer_a_step_whose_backward_raises_leaves_nothing_measuring(tmp_path):
    # the callback finds the Trainer whose loop calls it and wraps its training_step (NOTE [ A step that raises ])
    callback = MemprofCallback()
    t = trainer(tmp_path / "first", callbacks=[callback], max_steps=1)
    hook = t.model.classifier.weight.register_hook(_broken_backward)
    with pytest.raises(RuntimeError, match="broken backward"):
        t.train()
    hook.remove()
    assert _nothing_measuring() and callback.results == []
    assert "training_step" not in vars(t) and callback.trainer is None  # still logs to log_history only
    with memprof.track(t.model) as prof:
        t.model(input_ids=IDS[:2], labels=LABELS[:2]).loss.backward()
    assert prof.result.memory.saved_activations > 0
    t.train()  # a retry with the same Trainer and callback is measured
    assert [r.method for r in callback.results] == ["step 1"] and callback.results[0].memory.saved_activations > 0
    assert _nothing_measuring()


def _own_loop_step(callback, model, state, batch) -> None:
    """One step of a loop of one's own that calls the callback's events (no Trainer above them)."""
    args = tf.TrainingArguments(output_dir="unused", report_to=[], use_cpu=True)
    control = tf.TrainerControl()
    callback.on_step_begin(args, state, control, model=model, optimizer=None)
    model(**batch).loss.backward()


def test_in_a_loop_of_ones_own_a_backward_that_raises_ends_at_the_next_callback_event(tmp_path):
    # No Trainer calls the events, so nothing wraps the backward: the measurement stays open until a
    # MemprofCallback begins a step or a train() or sees an evaluation or prediction step.
    model = tiny_bert()
    batch = {"input_ids": IDS[:2], "labels": LABELS[:2]}
    hook = model.classifier.weight.register_hook(_broken_backward)
    state = tf.TrainerState()
    with pytest.raises(RuntimeError, match="broken backward"):
        _own_loop_step(MemprofCallback(), model, state, batch)
    hook.remove()
    with pytest.raises(MemprofError) as info:
        with memprof.track(model):
            pass
    assert str(info.value).startswith(
        "MemprofCallback's measurement of step 1 (left open if that step raised: call its close()) is already "
        "measuring a step"
    )
    t = trainer(tmp_path, callbacks=[MemprofCallback()], max_steps=1)
    t.evaluate(Rows())  # between steps: its prediction steps end the abandoned measurement
    assert _nothing_measuring()
    model.classifier.weight.register_hook(_broken_backward)
    with pytest.raises(RuntimeError, match="broken backward"):
        _own_loop_step(MemprofCallback(), model, state, batch)
    callback = MemprofCallback()
    retry = trainer(tmp_path / "retry", callbacks=[callback], max_steps=1)
    retry.train()  # a new callback beginning a step ends the abandoned one first
    assert [r.method for r in callback.results] == ["step 1"] and callback.results[0].memory.saved_activations > 0
    assert _nothing_measuring()


def test_a_run_inside_an_except_block_is_still_measured(tmp_path):
    # an exception in flight (the caller's, being handled) is not the step's: the forward returned
    t = trainer(tmp_path, max_steps=1)
    callback = MemprofCallback(t)
    t.add_callback(callback)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            raise KeyError("the caller's own error")
        except KeyError:
            t.train()
    assert [r.method for r in callback.results] == ["step 1"] and callback.results[0].memory.saved_activations > 0
    # the optimizer.step wrapper keeps the LR scheduler's mark, so the scheduler does not warn
    assert not [w for w in seen if "optimizer.step()" in str(w.message)]


def test_train_twice_with_one_callback_writes_a_file_memprof_reads_and_reports(tmp_path, monkeypatch, capsys):
    callback = MemprofCallback()
    t = trainer(tmp_path / "run", callbacks=[callback])
    t.train()
    first = list(callback.results)
    t.train()
    saved = load_results(tmp_path / "run" / RESULTS_FILE)
    assert [r.method for r in saved.results] == ["step 1", "step 2"]  # the second train() call's steps
    assert [r.to_dict() for r in saved.results] == [r.to_dict() for r in callback.results]
    assert len(first) == 2 and all(a is not b for a, b in zip(first, callback.results))
    code, _, err = cli(
        monkeypatch, capsys, "report", tmp_path / "run" / RESULTS_FILE, "--out", tmp_path / "report", "--quiet"
    )
    assert (code, err) == (0, "") and (tmp_path / "report" / "summary.md").is_file()


@pytest.mark.parametrize("steps", [(), (0,), (1.0,), "1", (True,)])
def test_bad_steps_are_refused_in_one_line(steps, run):
    with pytest.raises(MemprofError, match="whole numbers >= 1") as info:
        MemprofCallback(run[0], steps=steps)
    assert "\n" not in str(info.value)


def test_a_trainer_without_log_is_refused():
    with pytest.raises(MemprofError, match="pass the trainer"):
        MemprofCallback(object())
