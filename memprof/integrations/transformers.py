"""``MemprofCallback``: memprof's measurement of chosen steps of a real ``transformers.Trainer`` run.

    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.add_callback(MemprofCallback(trainer))        # steps 1 and 2 by default
    trainer.train()
    # trainer.state.log_history holds memprof/saved_activations, memprof/peak_activations and
    # memprof/peak (bytes) at steps 1 and 2; args.output_dir holds memprof_results.json.

A profiled step is measured as ``memprof.track`` measures one (memprof/instrument/session.py): the
block opens in ``on_step_begin`` and closes in ``on_step_end``, so it holds the Trainer's forward,
backward, gradient clipping and ``optimizer.step()`` (bracketed by the torch optimizer's step hooks),
the scheduler step and ``zero_grad``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from memprof.errors import MemprofError
from memprof.instrument.session import TrackedStep, track
from memprof.results.result import Result, ResultSet, write_json
from memprof.units import HEADLINE_METRICS

RESULTS_FILE = "memprof_results.json"
#: Prefix of the logged metric names, e.g. ``memprof/peak``.
PREFIX = "memprof/"

# NOTE [ Logging through the Trainer ]
# A callback's on_log sees the logs after the Trainer has copied them into log_history and after the
# reporting callbacks (report_to) have sent them: what it adds there reaches neither. So the callback
# holds the Trainer and, when a profiled step ends, logs its figures with ``trainer.log``, the call
# the Trainer makes for its own loss: one more entry in log_history at that step, seen by every
# reporter. ``trainer.log`` clears ``control.should_log``; the callback sets it back, so the Trainer's
# own log of that step (its loss) still follows.


class MemprofCallback(TrainerCallback):
    """Profile ``steps`` (1-based optimizer steps, as ``state.global_step`` counts them after the step;
    default the first, where AdamW creates its state, and the second, a steady-state one) of the run
    of ``trainer``.

    Each profiled step logs ``memprof/saved_activations``, ``memprof/peak_activations`` and
    ``memprof/peak`` (bytes) through ``trainer.log`` (NOTE [ Logging through the Trainer ]) and
    rewrites ``<output_dir>/memprof_results.json``, a results file ``memprof report`` reads, with
    every step profiled so far (backbone ``name``, default the model's ``name_or_path`` or class;
    method ``step <n>``). ``results`` holds the same Results.

    Raises MemprofError for steps that are not whole numbers >= 1, for a ``trainer`` without ``log``,
    and, when training starts, for ``gradient_accumulation_steps`` > 1 (a step would hold several
    forwards, which one measurement does not split).
    """

    def __init__(self, trainer: Any, steps: tuple[int, ...] | list[int] = (1, 2), *, name: str | None = None) -> None:
        if not callable(getattr(trainer, "log", None)):
            raise MemprofError(
                f"MemprofCallback needs the transformers.Trainer it reports to, got "
                f"{type(trainer).__name__}; pass the trainer: "
                "trainer.add_callback(MemprofCallback(trainer))"
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
        #: The Results of the steps profiled so far, in step order, and those steps (global, 1-based).
        self.results: list[Result] = []
        self.profiled: list[int] = []
        self._step: TrackedStep | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._abandon()  # a measurement an exception left open (a failed earlier train() call)
        if args.gradient_accumulation_steps > 1:
            raise MemprofError(
                f"MemprofCallback measures one forward, backward and optimizer step, but "
                f"gradient_accumulation_steps={args.gradient_accumulation_steps} runs that many "
                "forwards per step; profile a run with gradient_accumulation_steps=1"
            )

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if state.global_step + 1 not in self.steps:
            return
        # The Trainer's optimizer is accelerate's wrapper; the step hooks belong on the torch optimizer.
        inner = getattr(optimizer, "optimizer", optimizer)
        self._step = track(model, inner, name=self.name or _model_name(model))
        self._step.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if self._step is None:
            return
        step, self._step = self._step, None
        step.__exit__(None, None, None)
        result = step.result
        result.method = f"step {state.global_step}"
        self.results.append(result)
        self.profiled.append(state.global_step)
        should_log = control.should_log  # the Trainer's own log of this step, which trainer.log would cancel
        self.trainer.log({PREFIX + m: getattr(result.memory, m) for m in HEADLINE_METRICS})
        control.should_log = should_log
        if args.should_save:
            folder = Path(args.output_dir)
            folder.mkdir(parents=True, exist_ok=True)
            options = {"steps": list(self.steps), "profiled": list(self.profiled)}
            write_json(
                ResultSet(
                    results=list(self.results), command="transformers.Trainer with MemprofCallback", options=options
                ),
                folder / RESULTS_FILE,
            )
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._abandon()

    def _abandon(self) -> None:
        """End a measurement whose step never reached on_step_end, recording nothing (one measurement
        runs at a time in a thread: an open one would refuse every later ``memprof.track``)."""
        if self._step is not None:
            step, self._step = self._step, None
            step.__exit__(RuntimeError, RuntimeError("step abandoned"), None)


def _model_name(model: Any) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "name_or_path", "") or type(model).__name__
