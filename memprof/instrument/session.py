"""One instrumented training step: saved-tensor hooks, the live-storage tracker and module hooks
together, with the phase marks that join them; and ``track``, the same around a user's own step.

The engines drive the phases themselves (``begin_forward`` ... ``end``). ``track`` finds them:
the forward starts on entering the block (the root module's forward pre-hook records the batch),
backward starts at the first operator run inside an autograd graph task, and the optimizer phase
is bracketed by ``Optimizer.register_step_pre_hook`` / ``register_step_post_hook``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from memprof.errors import MemprofError
from memprof.instrument.attention import attention_name
from memprof.instrument.live import LiveSummary, LiveTracker
from memprof.instrument.modules import ModuleStack
from memprof.instrument.params import count_params
from memprof.instrument.saved import SavedSummary, SavedTensorTracker
from memprof.results.result import TRACK_ENGINE, Memory, Result, empty_layers, environment
from memprof.results.timeline import Timeline
from memprof.units import short_repr


def tensors_in(obj: Any, _depth: int = 0) -> Iterator[torch.Tensor]:
    """Every tensor in a nested structure of tuples, lists, dicts and HF ModelOutputs."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif _depth > 6:
        return
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from tensors_in(v, _depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from tensors_in(v, _depth + 1)


@dataclass
class Measurement:
    """What one instrumented step measured."""

    memory: Memory
    layers: pd.DataFrame
    saved: SavedSummary
    live: LiveSummary
    #: fused SDPA kernels the forward ran (named by ``attention.FUSED_KERNELS``)
    attention_kernels: list[str]
    #: live bytes by kind through the step, downsampled (``memprof.results.timeline``)
    timeline: Timeline | None = None


# NOTE [ One measurement at a time ]
# The instruments do not nest. ``saved_tensors_hooks`` are a stack of which only the innermost pair
# runs, so an outer measurement would see no saved tensor while an inner one is active (and report
# 0 saved activations, silently); the live tracker's dispatch mode would see the inner one's
# bookkeeping as the step's. So an Instrument refuses to start while another one is measuring in
# the same thread (``memprof.track``, ``assert_memory`` and the ``memprof_budget`` fixture, and the
# engines' steps all run one): the outer result is never silently wrong. The hooks and the mode
# are per thread, and so is this check. An Instrument measures one step: it is entered once.
_active = threading.local()
#: The label of ``track``'s Instrument.
TRACK = "memprof.track"


def _running() -> Instrument | None:
    return getattr(_active, "instrument", None)


def refuse_nesting(label: str) -> None:
    """Raise the nesting MemprofError if a measurement is running in this thread (for callers that
    would do work, such as building a model, before their own Instrument starts)."""
    outer = _running()
    if outer is not None:
        raise _nested_error(outer, label)


def _nested_error(outer: Instrument, inner: Instrument | str) -> MemprofError:
    inner_label = inner if isinstance(inner, str) else inner.label
    also = (
        " (assert_memory and the memprof_budget fixture run memprof.track too)"
        if TRACK in (outer.label, inner_label)
        else ""
    )
    return MemprofError(
        f"{outer.label} is already measuring a step; nested tracking is not supported: {inner_label} cannot start "
        "inside it, as saved-tensor hooks nest and the outer measurement would miss what the inner one sees; end "
        f"the outer block first and measure the steps one after the other{also}"
    )


class Instrument:
    """Instrumentation of one training step of ``model`` (with ``optimizer``, optional).

    Use as a context manager around the whole step and call ``begin_forward``,
    ``begin_backward``, ``begin_optimizer`` and ``end`` at the phase boundaries (or let ``track``
    do it). ``measurement`` is filled on exit. One Instrument measures one step, and only one
    measures at a time in a thread (NOTE [ One measurement at a time ]); ``label`` names it in
    the error that says so.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        auto: bool = False,
        label: str = "memprof Instrument",
    ) -> None:
        _check_model(model, optimizer, label)
        self.label = label
        self.model = model
        self.optimizer = optimizer
        self.live = LiveTracker(on_backward=self._auto_backward if auto else None)
        self.stack = ModuleStack(model, on_outer=self.live.module_call)
        self.saved: SavedTensorTracker | None = None
        self.measurement: Measurement | None = None
        self._saved_summary: SavedSummary | None = None
        self._saved_keys: set[int] = set()
        self._grad_keys: set[int] = set()
        self._exit = contextlib.ExitStack()
        self._auto = auto
        #: "new", then "measuring" inside the with block, then "done"
        self.state = "new"
        #: (batch size, sequence length) of the first 2-D input the model saw; (0, 0) if none
        self.batch_shape: tuple[int, int] = (0, 0)  # (0, 0): no input of two or more dimensions seen
        self.ran_backward = False  # set when the step ends

    # -- entering and leaving --------------------------------------------------------------

    def __enter__(self) -> Instrument:
        outer = _running()
        if outer is not None:
            raise _nested_error(outer, self)
        if self.state != "new":
            raise MemprofError(
                f"this {self.label} was already used for a step and cannot be entered again; one tracker measures "
                "one step: create a new one for the next step"
            )
        _active.instrument = self
        self.state = "measuring"
        try:
            return self._start()
        except BaseException:
            self.state = "done"
            _active.instrument = None
            raise

    def _start(self) -> Instrument:
        stores = []
        for t in [*self.model.parameters(), *self.model.buffers()]:
            self.live.register(t, "parameters")
            stores.append(t.untyped_storage())
        if self.optimizer is not None:
            for t in _optimizer_tensors(self.optimizer):
                self.live.register(t, "optimizer_state")
        self.saved = SavedTensorTracker(self.stack, exclude=stores, random_mask=self.live.is_random)
        ex = self._exit
        try:
            ex.enter_context(self.stack)
            ex.callback(self._root_hooks())
            if self.optimizer is not None and self._auto:
                ex.callback(self._optimizer_hooks())
            ex.enter_context(self.saved.hooks())
            ex.enter_context(self.live)
        except BaseException:
            ex.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.state != "measuring":
            return  # never entered (or already left): nothing to undo
        try:
            try:
                if exc_type is None:
                    self.ran_backward = self.live.phase not in ("", "forward")
                    if not self.ran_backward:  # a forward-only block: what it saved is its measure
                        self.begin_backward()
                    if self.live.phase == "backward":
                        self._collect_gradients()
            finally:
                self._exit.close()
                self.state = "done"
                _active.instrument = None
            if exc_type is None:
                self.measurement = self._measure()
        finally:
            self.saved.clear()

    # -- phases ----------------------------------------------------------------------------

    def _check_measuring(self, what: str) -> None:
        if self.state != "measuring":
            where = "before its with block" if self.state == "new" else "after its with block ended"
            raise MemprofError(
                f"Instrument.{what}() was called {where}; the phases of a step are marked inside "
                "`with Instrument(model, optimizer) as inst:`"
            )

    def begin_forward(self, batch: Any = None) -> None:
        """The training forward starts; ``batch`` (any nesting of tensors) counts as activations."""
        self._check_measuring("begin_forward")
        self._register_batch(batch)
        self.live.begin("forward")
        self.saved.recording = True

    def _register_batch(self, batch: Any) -> None:
        for t in tensors_in(batch):
            self.live.register(t, "activations")
            if self.batch_shape == (0, 0) and t.dim() >= 2:
                self.batch_shape = (t.shape[0], t.shape[1])  # ints; symbolic in a formula trace

    def begin_backward(self, roots: Any = None) -> None:
        """The forward is over (``roots``: its outputs or loss, to name the graph's nodes)."""
        self._check_measuring("begin_backward")
        if self.live.phase == "":
            self.begin_forward()
        self.saved.recording = False
        if roots is not None:
            self.saved.name_nodes(tensors_in(roots))
        self._saved_summary = self._summarize_saved()
        self._saved_keys = self.live.keys_of_storages(self._saved_summary.storage_ids)
        self.live.begin("backward")

    def _summarize_saved(self) -> SavedSummary:
        """What the forward left saved (a formula trace summarises symbolic sizes its own way)."""
        return self.saved.summary()

    def begin_optimizer(self) -> None:
        self._check_measuring("begin_optimizer")
        if self.live.phase in ("", "forward"):
            self.begin_backward()
        self._collect_gradients()
        self.live.begin("optimizer")

    def end(self) -> None:
        self._check_measuring("end")
        self.live.begin("end")

    def _collect_gradients(self) -> None:
        for p in self.model.parameters():
            if p.grad is not None:
                key = self.live.key_of(p.grad)
                if key is not None:
                    self._grad_keys.add(key)

    def _auto_backward(self) -> None:
        node = torch._C._current_autograd_node()
        self.begin_backward([node] if node is not None else None)

    # -- hooks ---------------------------------------------------------------------------------

    def _root_hooks(self):
        def pre(module, args, kwargs):
            if self.live.phase == "forward":
                self._register_batch((args, kwargs))

        def post(module, args, kwargs, output):
            if self.live.phase == "forward":
                self.saved.name_nodes(tensors_in(output))

        h1 = self.model.register_forward_pre_hook(pre, with_kwargs=True, prepend=True)
        h2 = self.model.register_forward_hook(post, with_kwargs=True)

        def remove():
            h1.remove()
            h2.remove()

        return remove

    def _optimizer_hooks(self):
        h1 = self.optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.begin_optimizer())
        h2 = self.optimizer.register_step_post_hook(lambda opt, args, kwargs: self.end())

        def remove():
            h1.remove()
            h2.remove()

        return remove

    # -- the measurement -------------------------------------------------------------------

    def _classify(self) -> list[int]:
        """Close the timeline and give every storage its kind (``LiveTracker.classify``)."""
        live = self.live
        opt_keys: set[int] = set()
        if self.optimizer is not None:
            for t in _optimizer_tensors(self.optimizer):
                key = live.key_of(t)
                if key is not None:
                    opt_keys.add(key)
        live.close()
        return live.classify(self._grad_keys, opt_keys)

    def _measure(self) -> Measurement:
        live = self.live
        kinds = self._classify()
        summary = live.replay(kinds, self._saved_keys)
        saved = self._saved_summary or SavedSummary()
        memory = Memory(
            parameters=summary.parameters,
            gradients=summary.gradients,
            optimizer_state=summary.optimizer_state,
            saved_activations=saved.total,
            peak_activations=summary.peak_activations,
            temporaries=summary.temporaries,
            peak=summary.peak,
            unattributed=summary.unattributed,
            activations_at_peak=summary.activations_at_peak,
        )
        layers = saved.layers if len(saved.layers) else empty_layers()
        return Measurement(memory, layers, saved, summary, list(live.attention_kernels), live.timeline(kinds))


def _attn_config(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) if config is not None else None


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for state in optimizer.state.values():
        yield from tensors_in(state)


def _check_model(model: Any, optimizer: Any, label: str) -> None:
    """A model to measure is a torch Module; an optimizer, if any, a torch Optimizer."""
    if not isinstance(model, nn.Module):
        raise MemprofError(
            f"{label} needs a torch.nn.Module to measure, got model={short_repr(model)} ({type(model).__name__}); "
            "pass the model itself, e.g. memprof.track(model, optimizer)"
        )
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise MemprofError(
            f"{label}: optimizer={short_repr(optimizer)} ({type(optimizer).__name__}) is not a torch.optim.Optimizer; "
            "pass the optimizer whose step() the block runs, e.g. torch.optim.AdamW(model.parameters()), or None"
        )


class TrackedStep:
    """The step a ``memprof.track`` block runs, and what the block yields: ``result`` (a Result)
    and ``measurement`` are filled when the block ends. A context manager good for one step."""

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None, name: str, label: str = TRACK
    ) -> None:
        if not isinstance(name, str):
            raise MemprofError(
                f"memprof.track name={short_repr(name)} ({type(name).__name__}) is not a str; pass e.g. "
                "name='my-model' (it becomes the result's backbone)"
            )
        self.model = model
        self.optimizer = optimizer
        self.name = name
        self.result: Result | None = None
        self.measurement: Measurement | None = None
        self._inst = Instrument(model, optimizer, auto=True, label=label)  # label: who measures, in errors

    def __enter__(self) -> TrackedStep:
        if self._inst.state != "new":
            outer = _running()
            if outer is self._inst:
                raise _nested_error(outer, self._inst)
            raise MemprofError(
                "this memprof.track(...) was already used for a step and cannot be entered again; one tracker "
                "measures one step: call memprof.track(model, optimizer) anew for each step"
            )
        self._device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        # an optimizer that already holds state (AdamW's moments) runs a steady-state step, as
        # ``--step steady`` profiles it; an empty one creates its state in this step (the first)
        self._step = "steady" if self.optimizer is not None and len(self.optimizer.state) else "first"
        self._inst.__enter__()
        try:
            self._inst.begin_forward()
        except BaseException:
            self._inst.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        inst = self._inst
        inst.__exit__(exc_type, exc, tb)
        if exc_type is None:
            self._finish(inst)

    def _finish(self, inst: Instrument) -> None:
        model, device = self.model, self._device
        m = inst.measurement
        self.measurement = m
        trainable, total = count_params(model)
        dtype = next((p.dtype for p in model.parameters()), torch.float32)
        dtype_name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype)[6:])
        notes = []
        if not inst.ran_backward:
            notes.append("the block ran no backward: the figures are its forward's (saved activations: what it kept)")
        if inst.batch_shape == (0, 0):
            notes.append("no input of shape (batch, seq, ...) was seen: seq_len and batch_size are recorded as 0")
        self.result = Result(
            backbone=self.name,
            method="custom",
            engine=TRACK_ENGINE,
            target=device.type,
            dtype=dtype_name,
            attn_implementation=attention_name(m.attention_kernels, _attn_config(model), observed=True),
            seq_len=inst.batch_shape[1],
            batch_size=inst.batch_shape[0],
            trainable_params=trainable,
            total_params=total,
            memory=m.memory,
            layers=m.layers,
            timeline=m.timeline,
            step=self._step,
            message="; ".join(notes),
            environment=environment(str(device)),
        )


def track(model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *, name: str = "custom") -> TrackedStep:
    """Profile one training step of your own model, batch and loop.

    The block should run one forward, one backward and (optionally) one ``optimizer.step()``::

        with memprof.track(model, opt) as prof:
            loss = model(**batch).loss
            loss.backward()
            opt.step()
        prof.result.memory.saved_activations, prof.result.layers

    The phases are found without help: the forward starts with the block (the root module's
    inputs count as activations, as does anything made in the block and still alive when
    backward starts), backward starts with the first operator autograd runs, the optimizer phase
    is ``optimizer.step()``. ``prof.result`` is a ``memprof.Result`` (engine
    ``"track"``, status ``"ok"``); an exception in the block propagates and leaves it None.

    Warning: one measurement at a time (NOTE [ One measurement at a time ]): ``track``,
    ``assert_memory`` or the ``memprof_budget`` fixture inside a ``track`` block raises
    MemprofError on entry, as does entering the same ``track(...)`` twice; call ``track`` anew for
    each step. A model that is not an ``nn.Module``, or an optimizer that is not a torch
    Optimizer, raises MemprofError at once.

    Note: real tensors (cpu or cuda) are expected. The saved-tensor figure is the first
    forward's. What a non-reentrant checkpoint keeps inside its regions is recomputed in backward
    (it shows in ``peak_activations``); the regions' inputs are saved tensors like any other.
    ``dtype`` is the parameters' (``fp32``, ``bf16``, ``fp16``); autocast is not detected. For a
    causal LM, ``memprof.chunked_causal_lm_loss(model, batch)`` in place of ``model(**batch).loss``
    is the same loss without the full logits (``memprof.models.losses``).
    """
    return TrackedStep(model, optimizer, name)
