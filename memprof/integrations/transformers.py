"""``MemprofCallback``: memprof's measurement of chosen steps of a real ``transformers.Trainer`` run.

    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[MemprofCallback()])
    # or: trainer.add_callback(MemprofCallback(trainer)), which also reaches report_to's reporters
    trainer.train()
    # trainer.state.log_history holds memprof/saved_activations, memprof/peak_activations and
    # memprof/peak (bytes) at steps 1 and 2; args.output_dir holds memprof_results.json.

A profiled step is measured as ``memprof.track`` measures one (memprof/instrument/session.py): the
block opens in ``on_step_begin`` and closes in ``on_step_end``, so it holds the Trainer's forward,
backward, gradient clipping and ``optimizer.step()`` (bracketed by the torch optimizer's step hooks),
the scheduler step and ``zero_grad``. With ``gradient_accumulation_steps`` = n the Trainer calls
``on_step_begin`` before the first of the n micro-batches and ``on_step_end`` after the optimizer
step, so the measurement holds the whole optimizer step, every micro-batch (NOTE [ Accumulated steps ]).
"""

from __future__ import annotations

import functools
import sys
import threading
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from memprof.errors import MemprofError
from memprof.instrument.session import TrackedStep
from memprof.results.result import Result, ResultSet, write_json
from memprof.units import HEADLINE_METRICS

RESULTS_FILE = "memprof_results.json"
#: Prefix of the logged metric names, e.g. ``memprof/peak``.
PREFIX = "memprof/"

# NOTE [ Logging through the Trainer ]
# A callback's on_log sees the logs after the Trainer has copied them into log_history and after the
# reporting callbacks (report_to) have sent them: what it adds there reaches neither. So a callback
# given the Trainer logs its figures, when a profiled step ends, with ``trainer.log``, the call the
# Trainer makes for its own loss: one more entry in log_history at that step, seen by every
# reporter. ``trainer.log`` clears ``control.should_log``; the callback sets it back, so the
# Trainer's own log of that step (its loss) still follows.
# A callback made without the Trainer (``Trainer(callbacks=[MemprofCallback()])``) is handed the
# args, state, control, model and optimizer, never the Trainer: it appends the same entry to
# ``state.log_history`` itself (what ``trainer.log`` appends: the figures, the epoch and the step).
# The reporters it cannot reach: the Trainer places the callbacks given to its constructor after the
# reporting ones, so each on_log reaches the reporters first. Such a callback therefore refuses, when
# training starts, a run whose ``report_to`` names a reporter, in one line naming the form that
# reaches them, rather than leave the reporters silently without the figures.

# NOTE [ Accumulated steps ]
# With gradient accumulation one measurement holds the optimizer step's n forwards and backwards:
# ``peak`` and ``peak_activations`` are the highest over all of them (the gradients accumulated so
# far are resident from the second micro-batch on), ``saved_activations`` is the first forward's
# (``memprof.track``: one micro-batch's, the same shape for each), and ``batch_size`` is one
# micro-batch's. The result says so in its ``message``, and the results file's options record
# ``gradient_accumulation_steps``; one result per optimizer step, as ``steps`` counts them.

# NOTE [ A step that raises ]
# The measurement is open from on_step_begin to on_step_end, but no callback runs when the Trainer's
# step raises. So the callback hangs a forward hook with ``always_call=True`` on the model, which
# torch runs also when the forward raises: there (an exception being handled) it ends the
# measurement, recording nothing, and the exception goes on. An exception elsewhere in the step
# (backward, the optimizer) is not seen by any hook. For those, while a profiled step runs, the
# callback wraps the optimizer's ``step`` and, given the trainer, ``trainer.training_step`` (each
# micro-batch's forward and backward) so that an exception there ends the measurement too; the
# wrappers are removed when the step ends.
# A callback made without the trainer is handed no Trainer, but its events are called by one: the
# Trainer's loop calls ``callback_handler.on_step_begin``, which calls each callback, so the frame a
# few levels up whose ``self`` is a ``transformers.Trainer`` is the Trainer running this step, and its
# ``training_step`` is wrapped the same way (only that; its figures still go to log_history as NOTE
# [ Logging through the Trainer ] says). Where no such frame is found (a loop of one's own calling the
# callback's events), a backward that raises is seen by nothing: that measurement ends at the next
# event of any MemprofCallback in the thread that comes between steps (a Trainer runs one step at a
# time, so a measurement still open when a callback begins a step or a ``train()``, or sees an
# evaluation or prediction step, was abandoned), or with ``close()``; a ``memprof.track`` opened
# meanwhile refuses in one line that names the open step and ``close()``.


class MemprofCallback(TrainerCallback):
    """Profile ``steps`` (1-based optimizer steps, as ``state.global_step`` counts them after the step;
    default the first, where AdamW creates its state, and the second, a steady-state one) of a
    ``transformers.Trainer`` run.

    Both forms of a Trainer callback work: ``Trainer(..., callbacks=[MemprofCallback()])`` and
    ``trainer.add_callback(MemprofCallback(trainer))``. Each profiled step adds
    ``memprof/saved_activations``, ``memprof/peak_activations`` and ``memprof/peak`` (bytes) to
    ``state.log_history`` at that step; given the trainer, it logs them with ``trainer.log``, which
    also sends them to ``report_to``'s reporters (NOTE [ Logging through the Trainer ]). Each rewrites
    ``<output_dir>/memprof_results.json``, a results file ``memprof report`` reads, with every step
    profiled so far in this ``train()`` call (backbone ``name``, default the model's ``name_or_path`` or
    class; method ``step <n>``). ``results`` holds the same Results; a new ``train()`` starts them anew.
    With ``gradient_accumulation_steps`` > 1 each result is a whole optimizer step, all its
    micro-batches, and its ``message`` says so (NOTE [ Accumulated steps ]).

    Raises MemprofError for steps that are not whole numbers >= 1, for a ``trainer`` without ``log``,
    and, when training starts, for a callback made without the trainer in a run with reporters.
    """

    def __init__(
        self, trainer: Any = None, steps: tuple[int, ...] | list[int] = (1, 2), *, name: str | None = None
    ) -> None:
        if trainer is not None and not callable(getattr(trainer, "log", None)):
            raise MemprofError(
                f"MemprofCallback(trainer) needs the transformers.Trainer it reports to, got "
                f"{type(trainer).__name__}; pass the trainer, trainer.add_callback(MemprofCallback(trainer)), "
                "or nothing, Trainer(callbacks=[MemprofCallback()])"
            )
        bad = [s for s in steps if type(s) is not int or s < 1] if isinstance(steps, (tuple, list)) else [steps]
        if bad or not steps:
            raise MemprofError(
                f"MemprofCallback steps={steps!r} must be a non-empty list of whole numbers >= 1 "
                "(1-based optimizer steps); pass e.g. steps=(1, 2)"
            )
        self.trainer = trainer
        self.steps = tuple(sorted(set(steps)))
        self.name = name
        #: The Results of the steps profiled in this train() call, in step order, and those steps.
        self.results: list[Result] = []
        self.profiled: list[int] = []
        self._step: TrackedStep | None = None
        self._hook: Any = None
        self._guarded: list[tuple[Any, str, Any]] = []  # (object, method name, its own attribute or _NONE)

    def on_train_begin(self, args, state, control, **kwargs):
        _close_abandoned()  # a measurement an exception left open (a failed earlier train() call)
        self.results, self.profiled = [], []
        reporters = [r for r in (args.report_to or []) if r != "none"]
        if self.trainer is None and reporters:
            raise MemprofError(
                f"MemprofCallback() made without the trainer cannot send its figures to report_to={reporters} "
                "(the Trainer calls its reporters before the callbacks passed to it); use "
                "trainer.add_callback(MemprofCallback(trainer)), or report_to='none' for log_history only"
            )

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        _close_abandoned()  # never two measurements: one left open by an exception no hook saw
        if state.global_step + 1 not in self.steps:
            return
        # The Trainer's optimizer is accelerate's wrapper; the step hooks belong on the torch optimizer.
        inner = getattr(optimizer, "optimizer", optimizer)
        step = state.global_step + 1
        label = f"MemprofCallback's measurement of step {step} (left open if that step raised: call its close())"
        self._step = TrackedStep(model, inner, self.name or _model_name(model), label=label)
        self._step.__enter__()
        _open.callback = self
        # Exceptions no hook sees (NOTE [ A step that raises ]): the optimizer's step, and, given the
        # trainer, its training_step (forward and backward of a micro-batch) end the measurement.
        self._guard(optimizer, "step")
        running = self.trainer if self.trainer is not None else _calling_trainer()
        if running is not None:
            self._guard(running, "training_step")
        self._hook = model.register_forward_hook(self._on_forward, always_call=True)

    def _guard(self, owner: Any, name: str) -> None:
        original = getattr(owner, name, None)
        if owner is None or not callable(original) or not hasattr(owner, "__dict__"):
            return  # nothing to wrap, or nowhere to put the wrapper (slots): the next callback event ends it

        @functools.wraps(original)  # keeps the marks others left on it (an LR scheduler's on optimizer.step)
        def guarded(*args, **kwargs):
            try:
                return original(*args, **kwargs)
            except BaseException:
                self.close()
                raise

        self._guarded.append((owner, name, vars(owner).get(name, _NONE)))
        setattr(owner, name, guarded)

    def _unguard(self) -> None:
        while self._guarded:
            owner, name, own = self._guarded.pop()
            if own is _NONE:
                delattr(owner, name)  # the class's method shows through again
            else:
                setattr(owner, name, own)

    def _on_forward(self, module, args, output) -> None:
        # the forward raised (NOTE [ A step that raises ]): torch calls an always_call hook with no output
        # then; a train() run inside the user's own ``except`` block has an exception in flight too
        if output is None and sys.exc_info()[0] is not None:
            self.close()

    def on_step_end(self, args, state, control, **kwargs):
        if self._step is None:
            return
        self._remove_hook()
        self._unguard()
        step, self._step = self._step, None
        _open.callback = None
        step.__exit__(None, None, None)
        result = step.result
        result.method = f"step {state.global_step}"
        accumulated = args.gradient_accumulation_steps
        if accumulated > 1:
            whole = (
                f"one optimizer step of {accumulated} micro-batches (gradient_accumulation_steps={accumulated}): "
                "peaks over all of them, saved activations and batch size of one"
            )
            result.message = "; ".join(m for m in (whole, result.message) if m)
        self.results.append(result)
        self.profiled.append(state.global_step)
        figures = {PREFIX + m: getattr(result.memory, m) for m in HEADLINE_METRICS}
        if self.trainer is not None:
            should_log = control.should_log  # the Trainer's own log of this step, which trainer.log would cancel
            self.trainer.log(figures)
            control.should_log = should_log
        else:  # NOTE [ Logging through the Trainer ]: the entry trainer.log would append
            epoch = {"epoch": state.epoch} if state.epoch is not None else {}
            state.log_history.append({**figures, **epoch, "step": state.global_step})
        if args.should_save:
            self._write(Path(args.output_dir), accumulated)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    # Evaluation and prediction run between steps, never inside one: a measurement open then was
    # abandoned (NOTE [ A step that raises ]), e.g. trainer.evaluate() after a train() that raised.
    def on_prediction_step(self, args, state, control, **kwargs):
        _close_abandoned()

    def on_evaluate(self, args, state, control, **kwargs):
        _close_abandoned()

    def on_predict(self, args, state, control, **kwargs):
        _close_abandoned()

    def close(self) -> None:
        """End a measurement whose step never reached on_step_end, recording nothing (one measurement
        runs at a time in a thread: an open one would refuse every later ``memprof.track``)."""
        self._remove_hook()
        self._unguard()
        if getattr(_open, "callback", None) is self:
            _open.callback = None
        if self._step is not None:
            step, self._step = self._step, None
            step.__exit__(RuntimeError, RuntimeError("step abandoned"), None)

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _write(self, folder: Path, accumulated: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        options = {"steps": list(self.steps), "profiled": list(self.profiled)}
        if accumulated > 1:
            options["gradient_accumulation_steps"] = accumulated
        results = ResultSet(
            results=list(self.results), command="transformers.Trainer with MemprofCallback", options=options
        )
        write_json(results, folder / RESULTS_FILE)


_NONE = object()  # a guarded method that was the class's, not an attribute of the object

#: the callback whose measurement is open in this thread, if any (NOTE [ A step that raises ])
_open = threading.local()


def _close_abandoned() -> None:
    callback = getattr(_open, "callback", None)
    if callback is not None:
        callback.close()


#: how many frames above a callback event to look for the Trainer that called it: the handler's
#: on_<event> and call_event stand between them (NOTE [ A step that raises ])
_TRAINER_FRAMES = 6


def _calling_trainer() -> Any:
    """The ``transformers.Trainer`` whose loop called the current callback event, or None."""
    from transformers import Trainer

    frame = sys._getframe(1)
    for _ in range(_TRAINER_FRAMES):
        frame = frame.f_back
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, Trainer):
            return owner
    return None


def _model_name(model: Any) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "name_or_path", "") or type(model).__name__
