"""What every engine shares: the built model and its cache, the instrumented training step, and
turning a measurement into a ``Result``.

The step is the one the paper measures: ``zero_grad(set_to_none=True)``, forward with labels
(the model computes its loss; with ``loss="chunked"``, ``memprof.models.losses`` computes a causal LM's
loss over chunks of tokens), ``loss.backward()``, ``AdamW.step()``; a fresh optimizer each run.

NOTE [ First and steady steps ]
A fresh AdamW creates its state (``exp_avg`` and ``exp_avg_sq`` shaped and typed as each trainable
parameter, plus a scalar ``step``) inside its first ``step()``, after backward has freed the
activations: the first step's peak does not hold it. Every later step starts with that state
resident, and that step's peak is the one that decides what fits. ``step="steady"`` profiles such a
step: before the measurement starts, AdamW's own code creates the state with one step on zero
gradients at learning rate 0 (so no weight moves: ``p * (1 - 0 * wd) - 0 * update`` is ``p``
exactly), the gradients are dropped, and the measured step then runs with the state live from its
first operator (the instruments register it as optimizer state). Nothing else differs: the same
dtypes (pure bf16/fp16 runs keep bf16/fp16 state and no fp32 master copy; the mixed dtypes' fp32
parameters are themselves the master weights), the same ``foreach`` choice. The fake engine makes
the state so on a model's first steady step and gives the same fake tensors to its later ones
(``FakeStep.prepare``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from memprof import methods
from memprof.engines.config import ProfileConfig
from memprof.instrument.params import count_params
from memprof.instrument.session import Instrument, Measurement
from memprof.models import tasks
from memprof.models.losses import training_loss
from memprof.results.configuration import MODEL_FIELDS, RECORDED_FIELDS, default
from memprof.results.result import Result, environment


@dataclass
class Built:
    """A model built and converted by its method, ready for any number of profiled steps."""

    model: nn.Module
    trainable: int
    total: int
    device: torch.device
    #: engine-specific (the fake engine keeps its FakeTensorMode here)
    state: dict[str, Any] = field(default_factory=dict)


def build(
    config: ProfileConfig,
    device: str | torch.device,
    finish: Callable[[nn.Module], dict[str, Any]] | None = None,
) -> Built:
    """The one model-building path of every engine: seeded, the backbone's task model built on
    ``device`` in the parameter dtype, converted by the method, in training mode. ``finish(model)``
    (the fake engine turns meta weights into fake tensors there) returns the engine's state."""
    torch.manual_seed(config.seed)
    backbone = config.resolved
    model = tasks.build_model(
        backbone, config.task, device=device, dtype=config.param_dtype, attn_implementation=config.attn
    )
    model = methods.get(config.method).apply(model, backbone, config.task)
    model.train()
    state = finish(model) if finish is not None else {}
    trainable, total = count_params(model)
    device = torch.device(device)
    return Built(model, trainable, total, torch.device("cpu") if device.type == "meta" else device, state)


class ModelCache:
    """Memoises built models per ``MODEL_FIELDS`` (backbone, method, engine, target, dtype, attn, task)
    and the backbone's resolved config.

    A sweep that runs method by method builds each model once. Only the ``max_models`` most
    recently used models are kept (one by default: a sweep is method-major, and a real model can
    be large). Each run leaves the model as it found it: gradients None, no optimizer, no hooks.
    """

    def __init__(self, max_models: int = 1) -> None:
        self.max_models = max_models
        self._models: OrderedDict[tuple, Built] = OrderedDict()
        #: how many times a model was built (tests and benchmarks read it)
        self.builds = 0

    @staticmethod
    def key(config: ProfileConfig) -> tuple:
        # the backbone's config too: a copy of a backbone with fewer layers keeps its name
        # (memprof.engines.composition), and must not be answered with the model of the original
        hyper = json.dumps(config.resolved.config, sort_keys=True, default=str)
        return (*(getattr(config, name) for name in MODEL_FIELDS), hyper)

    def get(self, config: ProfileConfig, build: Callable[[ProfileConfig], Built]) -> Built:
        key = self.key(config)
        built = self._models.get(key)
        if built is None:
            while len(self._models) >= self.max_models:
                self._models.popitem(last=False)
            built = build(config)
            self.builds += 1
            self._models[key] = built
        self._models.move_to_end(key)
        return built

    def clear(self) -> None:
        self._models.clear()

    def __len__(self) -> int:
        return len(self._models)

    def __bool__(self) -> bool:
        # a cache is something to share, empty or not: without this, ``cache or ModelCache()``
        # would throw away an empty one it was given (``__len__`` alone makes it falsy)
        return True


def adamw(model: nn.Module, *, foreach: bool) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; ``foreach`` as the target's default (cuda: yes, cpu: no)."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], foreach=foreach)


def prepare(model: nn.Module, optimizer: torch.optim.Optimizer, step: str) -> None:
    """Before the measured step: for ``step="steady"``, give ``optimizer`` the state its first step
    creates (``create_optimizer_state``); for ``"first"``, nothing."""
    if step == "steady":
        try:
            create_optimizer_state(model, optimizer)
        except BaseException:
            optimizer.state.clear()
            raise


def create_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Give ``optimizer`` the state its first step creates, by AdamW's own code, without moving a
    weight (NOTE [ First and steady steps ]): one step on zero gradients at learning rate 0."""
    lrs = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    try:
        optimizer.step()
    finally:
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr
        model.zero_grad(set_to_none=True)


def instrumented_step(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    forward_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    synchronize: Callable[[], None] | None = None,
    after_step: Callable[[], None] | None = None,
    backward: Callable[[torch.Tensor], None] | None = None,
    loss: str = default("loss"),
) -> tuple[Measurement, float]:
    """One training step of ``model`` on ``batch`` under ``Instrument``; (measurement, seconds).

    ``synchronize`` waits for the device (before the clock starts and before it stops);
    ``after_step`` runs once the step is timed, before anything of it is freed; ``backward(loss)``
    replaces ``loss.backward()``; ``loss`` is how the forward computes it (``memprof.models.losses.training_loss``).
    State ``optimizer`` already holds is resident throughout (``prepare``).
    The model is left with its gradients set to None and the optimizer without state whatever happens.
    """
    model.zero_grad(set_to_none=True)
    inst = Instrument(model, optimizer, label="memprof.profile")
    try:
        if synchronize:
            synchronize()
        start = time.perf_counter()
        with inst:
            inst.begin_forward(batch)
            with forward_context():
                value = training_loss(model, batch, loss)
            inst.begin_backward(value)
            if backward is None:
                value.backward()
            else:
                backward(value)
            inst.begin_optimizer()
            optimizer.step()
            if synchronize:
                synchronize()
            elapsed = time.perf_counter() - start
            inst.end()
            if after_step:
                after_step()
            del value
    finally:
        model.zero_grad(set_to_none=True)
        optimizer.state.clear()
    return inst.measurement, elapsed


def _configuration(config: ProfileConfig) -> dict:
    """The Result fields that name the configuration."""
    return {name: getattr(config, name) for name in RECORDED_FIELDS}


def make_result(
    config: ProfileConfig,
    built: Built,
    measurement: Measurement,
    attn: str,
    step_time: float | None,
    device_name: str = "cpu",
) -> Result:
    return Result(
        **_configuration(config),
        attn_implementation=attn,
        trainable_params=built.trainable,
        total_params=built.total,
        memory=measurement.memory,
        layers=measurement.layers,
        timeline=measurement.timeline,
        step_time_s=step_time,
        environment=environment(device_name),
    )


def is_oom(exc: BaseException) -> bool:
    """An allocation failure: CUDA's OutOfMemoryError, or the CPU allocator giving up."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    if isinstance(exc, (RuntimeError, MemoryError)):
        text = str(exc).lower()
        return isinstance(exc, MemoryError) or any(
            words in text for words in ("out of memory", "not enough memory", "can't allocate memory")
        )
    return False


def failed_result(config: ProfileConfig, exc: BaseException, device_name: str = "cpu") -> Result:
    """A Result recording that ``config`` failed: status ``"oom"`` when ``is_oom(exc)``, else
    ``"error"``; the message is the exception's type and first line."""
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    return Result(
        **_configuration(config),
        attn_implementation=config.attn,
        status="oom" if is_oom(exc) else "error",
        message=message[:500],
        environment=environment(device_name),
    )
