"""The engine interface: what an engine is (``Engine``: its properties as data, and its hooks), the
engine-specific parts of one profiled step (``Step``), and that step's shared sequence
(``Engine.run``), written once for every engine.

Each engine module (fake.py, cpu.py, cuda.py) defines one ``ENGINE``; the table in registry.py
names them. Nothing outside the engine modules asks which engine it has: it asks the engine
(``engine_named(name).allocates``, ``.traceable``, ...), as scalene's accelerator classes and
memray's ``Command`` protocol do.

NOTE [ One step, every engine ]
Every engine profiles the same step in the same order (``Engine.run``): seed torch's generator
from ``config.seed``; make the batch; a fresh AdamW (``foreach`` as the target's default); the
optimizer state ``config.step`` asks for (``Step.prepare``); then the instrumented step
(``common.instrumented_step``), the attention kernel it ran, and the Result. What differs is the
``Step`` an engine makes for each run: what the step runs under (the fake engine's FakeTensorMode
and kernel model), how the optimizer state is made (the fake engine makes it once per model),
where the batch lives, how the forward is autocast and the backward run, how the
device is waited for, the engine's own metrics (cuda: the allocator's peaks, NVML), the attention
name (the fake engine's modelled kernel choices, or the kernels a real step observably ran) and
the device the result names. The defaults are those of an engine computing for real on
``built.device``: the cpu engine changes none of them.
"""

from __future__ import annotations

import abc
import contextlib
from typing import ClassVar

import torch

from memprof.engines.common import Built, adamw, instrumented_step, make_result, prepare
from memprof.engines.config import ProfileConfig
from memprof.errors import MemprofError
from memprof.instrument.attention import attention_name
from memprof.instrument.session import Measurement
from memprof.models import tasks
from memprof.results.result import Result

__all__ = ["Engine", "Step"]


class Step:
    """The engine-specific parts of one profiled step of ``config`` on ``built`` (``Engine.step``
    makes one per run; ``Engine.run`` calls its hooks in order). A context manager: the whole step,
    from the batch to the engine's metrics, runs inside it. The defaults are those of a real step on
    ``built.device`` (NOTE [ One step, every engine ])."""

    #: AdamW's ``foreach``: the target's default (cuda: yes, cpu: no)
    foreach: bool = False

    def __init__(self, built: Built, config: ProfileConfig) -> None:
        self.built, self.config = built, config

    def __enter__(self) -> Step:
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def batch(self) -> dict[str, torch.Tensor]:
        """The step's batch, on the device the model is on."""
        c = self.config
        return tasks.make_batch(c.resolved, c.task, c.batch_size, c.seq_len, device=self.built.device, seed=c.seed)

    def forward_context(self) -> contextlib.AbstractContextManager:
        """What the forward runs under: autocast on the model's device for a mixed dtype."""
        if self.config.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.built.device.type, dtype=self.config.autocast_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def prepare(self, optimizer: torch.optim.Optimizer) -> None:
        """Give ``optimizer`` the state ``config.step`` asks for (``common.prepare``)."""
        prepare(self.built.model, optimizer, self.config.step)

    def before_measuring(self) -> None:
        """After the optimizer state exists, before the instruments start (cuda: reset the peaks)."""

    def synchronize(self) -> None:
        """Wait for the device: before the clock starts and before it stops."""

    def after_step(self) -> None:
        """Once the step is timed, before anything of it is freed (cuda: ask NVML)."""

    def finish(self, measurement: Measurement) -> None:
        """Record the engine's own metrics (``Engine.measures``) in ``measurement.memory``."""

    def attention(self, measurement: Measurement) -> str:
        """The attention kernels the step ran (``Result.attn_implementation``)."""
        return attention_name(measurement.attention_kernels, self.config.attn, observed=True)

    def device_name(self) -> str:
        """The device the result's environment names."""
        return "cpu"


class Engine(abc.ABC):
    """One way of running a profiled step: its properties, as data, and its hooks.

    An engine module defines a subclass with the class attributes below set, and one instance of
    it, ``ENGINE``; registry.py's ``ENGINE_MODULES`` names the module. ``run`` is the shared step
    (NOTE [ One step, every engine ]); an engine supplies ``build`` and, where its step differs
    from a real step on the model's device, ``step``."""

    #: the name configurations and results use (``ProfileConfig.engine``, ``Result.engine``)
    name: ClassVar[str]
    #: the devices whose step it can model (``ProfileConfig.target``), its default first; an engine
    #: that models only its own device lists just that one, and ``target`` must then be it
    targets: ClassVar[tuple[str, ...]]
    #: whether it allocates, on the device it models, the memory it measures: if so, an allocation
    #: failure is that device's out of memory (a Result with status "oom"); if not, it is this
    #: machine's limit (``host_memory_error``)
    allocates: ClassVar[bool]
    #: whether its step can be traced with symbolic sizes into a closed form (formulas, compare's closed form)
    traceable: ClassVar[bool] = False
    #: whether ``Result.step_time_s`` is the step's wall time (real compute), or None
    timed: ClassVar[bool] = True
    #: the CUDA-only Memory metrics (``results.result.CUDA_ONLY_METRICS``) it always fills; a reader of
    #: results finds the same in ``results.result.ALWAYS_MEASURED`` (a test holds the two equal)
    measures: ClassVar[tuple[str, ...]] = ()
    #: the CUDA-only metrics it fills where a library allows (cuda: NVML's, where pynvml is installed)
    may_measure: ClassVar[tuple[str, ...]] = ()

    @property
    def models_target(self) -> bool:
        """Whether ``target`` picks the device it models (more than one to choose from)."""
        return len(self.targets) > 1

    def unavailable(self) -> str | None:
        """Why this machine cannot run the engine, as the error's text (None: it can)."""
        return None

    @abc.abstractmethod
    def build(self, config: ProfileConfig) -> Built:
        """The model of ``config``, built and converted by its method (``common.build`` on a device)."""

    def step(self, built: Built, config: ProfileConfig) -> Step:
        """The engine-specific parts of one step of ``config`` (default: a real step on ``built.device``)."""
        return Step(built, config)

    def run(self, built: Built, config: ProfileConfig) -> Result:
        """One profiled step of ``config`` on ``built``, as a Result (NOTE [ One step, every engine ]).
        Not overridden: what an engine changes is in its ``step``."""
        torch.manual_seed(config.seed)
        with self.step(built, config) as step:
            batch = step.batch()
            optimizer = adamw(built.model, foreach=step.foreach)
            step.prepare(optimizer)
            step.before_measuring()
            measurement, seconds = instrumented_step(
                built.model,
                batch,
                optimizer,
                step.forward_context,
                synchronize=step.synchronize,
                after_step=step.after_step,
                backward=step.backward,
                loss=config.loss,
            )
            step.finish(measurement)
            del optimizer, batch
        return make_result(
            config,
            built,
            measurement,
            step.attention(measurement),
            step_time=seconds if self.timed else None,
            device_name=step.device_name(),
        )

    def cleanup(self) -> None:
        """After an out-of-memory result: give back what the failed step left cached (default: nothing)."""
        return None

    def host_memory_error(self, config: ProfileConfig, exc: BaseException) -> MemprofError:
        """For an engine that allocates nothing on the device it models (``allocates`` False): the
        error for an allocation that failed all the same, which is this machine's limit."""
        return MemprofError(
            f"engine {self.name!r} allocates nothing on the device it models, so running out of memory "
            f"({type(exc).__name__}) is this machine's limit; pass a smaller batch_size / --batch-size or "
            "seq_len / --seq-len"
        )
