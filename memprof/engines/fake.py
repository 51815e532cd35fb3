"""The fake engine: one training step on fake tensors (``FakeTensorMode``): shapes, dtypes and
storage sizes without weights or arithmetic, so any registry backbone profiles in seconds.

The model is built on the meta device (``tasks.build_model(device="meta")``), the method applied
there (peft cannot build under FakeTensorMode), then every parameter and buffer is turned into a
fake CPU tensor. The target device's kernels are modelled by ``kernels.KernelModel``.

NOTE [ Values derived from the batch ]
Fake tensors have no values, so an operator whose output shape depends on values (``nonzero``,
``unique_consecutive``, boolean-mask indexing) or a Python branch on a value (``mask.all()``)
cannot run. BART's classification head does both: it checks that every row has as many ``</s>``
as the others (``torch.unique_consecutive``) and picks the last ``</s>`` per row with a boolean
mask; transformers' mask code asks whether the padding mask is all ones. FakeTensorMode already
computes, for real, any operator whose inputs are all "constants" (fake tensors that carry a real
value), but keeps only one-element results constant. Here any result up to ``FOLD_LIMIT``
elements stays constant, the batch (token ids, masks, labels) enters as constants, and the
factories ``arange``/``ones``/``zeros``/``full`` make constants. Weights are never constants, so
everything downstream of a weight stays fake (no arithmetic), while the bookkeeping derived from
the batch alone -- ``input_ids.eq(eos)``, its row sums, ``unique_consecutive``, the ``nonzero``
inside the mask indexing, position ids, padding masks and their checks -- is computed on real
values exactly as the cpu engine computes it. The head keeps its real memory: the index tensor
the boolean indexing saves, the dense/tanh/out_proj activations; the fake engine equals the cpu
engine on it byte for byte (tested).

transformers, for its part, skips value checks on any fake tensor (``is_tracing``), and would
then build a full (B, 1, S, S) attention mask where real tensors give none (an all-ones padding
mask is dropped so that SDPA can use its fused kernels). While a fake step runs, a fake tensor
that carries its real value is not "tracing" to transformers (``known_values_for_transformers``),
so it takes the branch real tensors take.

NOTE [ The batch is real ]
Because the batch enters as constants, it is built for real, on this machine: token ids, mask and
labels, int64, ``batch_size x seq_len`` each, plus the bookkeeping computed on their values.
Fake tensors allocate nothing, so running out of memory here is never the modelled device's out
of memory: it is this host's limit. ``FakeStep`` estimates the batch's host memory
(``host_batch_bytes``) and refuses, with a MemprofError naming batch size, sequence length and
the memory available, a batch this machine cannot hold (rather than let the allocation fail, or
the kernel's OOM killer end the process while the batch is filled); an allocation that fails all
the same is the same error (``host_memory_error``, also raised by ``memprof.engines.run``), never
a result with status ``oom``. The device memory the fake engine models has no such limit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._mode_utils import no_dispatch

from memprof.engines import common
from memprof.engines.base import Engine, Step
from memprof.engines.common import Built
from memprof.engines.config import ProfileConfig
from memprof.engines.kernels import KernelModel
from memprof.errors import MemprofError
from memprof.instrument.attention import attention_name
from memprof.instrument.session import Measurement
from memprof.models import tasks
from memprof.units import format_bytes

#: Largest tensor kept as a real constant under the fake mode (elements): index and mask
#: bookkeeping is (B, S) or (B, 1, S, S); nothing the size of the activations is ever computed.
FOLD_LIMIT = 1 << 22
_CPU = torch.device("cpu")


aten = torch.ops.aten
#: Factories whose results are real constants (position ids, cache positions, default masks).
FACTORIES = frozenset(
    {
        aten.arange.default,
        aten.arange.start,
        aten.arange.start_step,
        aten.full.default,
        aten.ones.default,
        aten.zeros.default,
        aten.scalar_tensor.default,
    }
)


class ConstantFoldingFakeMode(FakeTensorMode):
    """FakeTensorMode that keeps values derived from the batch real (NOTE [ Values derived from the batch ])."""

    def __init__(self) -> None:
        super().__init__(allow_non_fake_inputs=False, static_shapes=True)

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # nothing is compiled here; skips a per-operator wrapper

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return self.dispatch(func, types, args, kwargs)

    def dispatch(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if asks_all_finite(func, args):
            return True
        if func in FACTORIES and kwargs.get("device", None) in (None, _CPU, "cpu"):
            with no_dispatch():
                out = func(*args, **kwargs)
            if self.may_turn_const(out):
                return self.fake_tensor_converter.from_real_tensor(self, out, make_constant=True)
        return super().dispatch(func, types, args, kwargs)

    def may_turn_const(self, t: torch.Tensor) -> bool:
        return (
            t.numel() <= FOLD_LIMIT
            and t.layout == torch.strided
            and not self.is_our_fake(t)
            and t.device.type != "meta"
        )


def asks_all_finite(func, args) -> bool:
    """NOTE [ Branches on activation values ]: a model asks whether its activations are all finite
    (BART's fp16 encoder layers: `not torch.isfinite(h).all()`, then clamp). Fake tensors have no
    values; the engine answers yes, as a healthy step would, which is the step it models. Only that
    question is answered, recognised where it is asked (``KernelModel`` marks the result of
    ``isfinite(x).all()``); any other data-dependent value still fails loudly."""
    return func is aten._local_scalar_dense.default and getattr(args[0], "_memprof_all_finite", False)


def fakeify(model: nn.Module, mode: FakeTensorMode) -> nn.Module:
    """Replace every meta parameter and buffer of ``model`` by a fake CPU tensor (ties kept)."""
    convert = mode.fake_tensor_converter
    cpu = torch.device("cpu")
    memo: dict[int, torch.Tensor] = {}

    def fake(t: torch.Tensor) -> torch.Tensor:
        if t.device.type == "meta":
            return convert.from_meta_and_device(mode, t, cpu)
        # A real tensor a method made: an integer one keeps its values (see the NOTE above).
        t = t.detach().cpu()
        return convert.from_real_tensor(mode, t, make_constant=not t.is_floating_point() and mode.may_turn_const(t))

    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            if id(p) not in memo:
                memo[id(p)] = nn.Parameter(fake(p.data), requires_grad=p.requires_grad)
            module._parameters[name] = memo[id(p)]
        for name, b in list(module._buffers.items()):
            if b is None:
                continue
            if id(b) not in memo:
                memo[id(b)] = fake(b)
            module._buffers[name] = memo[id(b)]
    return model


@contextlib.contextmanager
def known_values_for_transformers(has_value: Callable[[Any], bool] | None = None) -> Iterator[None]:
    """transformers' ``is_fake_tensor`` says False for fake tensors that carry a real value (a
    constant; ``has_value`` says which otherwise)."""
    from transformers.utils import import_utils

    original = import_utils.is_fake_tensor
    if has_value is None:

        def has_value(x) -> bool:
            return getattr(x, "constant", None) is not None

    def is_fake_tensor(x) -> bool:
        return original(x) and not has_value(x)

    import_utils.is_fake_tensor = is_fake_tensor
    try:
        yield
    finally:
        import_utils.is_fake_tensor = original


def build(config: ProfileConfig) -> Built:
    """Built on the meta device (no memory, no initialisation), then every weight a fake tensor."""

    def to_fake(model: nn.Module) -> dict:
        mode = ConstantFoldingFakeMode()
        fakeify(model, mode)
        return {"mode": mode}

    return common.build(config, "meta", to_fake)


#: Host bytes per token of the batch (NOTE [ The batch is real ]): int64 ids, mask and labels,
#: and as much again for the bookkeeping computed on their values (shifted labels, masks).
HOST_BYTES_PER_TOKEN = 6 * 8


def host_batch_bytes(config: ProfileConfig) -> int:
    """About how much of this machine's memory the fake engine's batch of ``config`` takes."""
    return config.batch_size * config.seq_len * HOST_BYTES_PER_TOKEN


def available_host_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux's MemAvailable); None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def host_memory_error(
    config: ProfileConfig, exc: BaseException | None = None, available: int | None = None
) -> MemprofError:
    """The error for a batch this machine cannot hold (NOTE [ The batch is real ])."""
    if exc is not None:
        limit = f"allocating it failed ({type(exc).__name__}: this machine's memory is the limit)"
    else:
        limit = f"this machine has {format_bytes(available)} available"
    return MemprofError(
        f"the fake engine builds the token batch on this machine: batch size {config.batch_size} x sequence "
        f"length {config.seq_len} needs about {format_bytes(host_batch_bytes(config))} of host memory and {limit}; "
        "pass a smaller batch_size / --batch-size or seq_len / --seq-len (the device it models is not the limit)"
    )


def _make_batch(config: ProfileConfig) -> dict[str, torch.Tensor]:
    available = available_host_memory()
    if available is not None and host_batch_bytes(config) > available:
        raise host_memory_error(config, available=available)
    try:
        return tasks.make_batch(config.resolved, config.task, config.batch_size, config.seq_len, seed=config.seed)
    except (MemoryError, RuntimeError) as exc:
        if not common.is_oom(exc):
            raise
        raise host_memory_error(config, exc) from exc


def forward_context(config: ProfileConfig, kernels: KernelModel) -> Callable[[], Any]:
    """What the forward runs under: CPU autocast for a mixed dtype on the cpu target, else the
    kernel model's own autocast (which models CUDA's)."""
    if config.target == "cpu" and config.autocast_dtype is not None:
        return lambda: torch.autocast("cpu", dtype=config.autocast_dtype)
    return kernels.autocast


class FakeStep(Step):
    """A step on fake tensors under the kernel model of ``config.target``: the batch made for real on
    this machine first (NOTE [ The batch is real ]), then everything inside the fake mode."""

    def __init__(self, built: Built, config: ProfileConfig) -> None:
        super().__init__(built, config)
        self.mode: ConstantFoldingFakeMode = built.state["mode"]
        self.kernels = KernelModel(config.target, config.autocast_dtype)
        self.foreach = config.target == "cuda"
        self._real_batch: dict[str, torch.Tensor] = {}
        self._contexts = contextlib.ExitStack()

    def __enter__(self) -> FakeStep:
        self._real_batch = _make_batch(self.config)  # before the mode: real tensors, checked against this host
        with contextlib.ExitStack() as entered:  # one that fails to enter leaves the others exited
            for context in (self.mode, self.kernels, known_values_for_transformers()):
                entered.enter_context(context)
            self._contexts = entered.pop_all()
        return self

    def __exit__(self, *exc_info) -> None:
        self._real_batch = {}
        self._contexts.__exit__(*exc_info)

    def prepare(self, optimizer: torch.optim.Optimizer) -> None:
        """The steady step's optimizer state, made by AdamW's own code once per model and given to
        every later steady step of it: fake tensors cost no memory to keep, and making the state is
        a whole optimizer step (0.1-0.4 s of a 0.9-1.4 s profile of opt-1.3b). The measured step
        updates the state in place, so each run finds the tensors it would have made, of the same
        sizes and dtypes; only AdamW's step count differs, which enters nothing but the Python-float
        bias corrections (a test compares every byte with fresh builds)."""
        if self.config.step != "steady":
            return super().prepare(optimizer)
        made = self.built.state.get("adamw_state")  # one per model: its target fixes foreach
        if made is None:
            super().prepare(optimizer)
            self.built.state["adamw_state"] = {p: dict(state) for p, state in optimizer.state.items()}
        else:
            for p, state in made.items():
                optimizer.state[p] = dict(state)

    def batch(self) -> dict[str, torch.Tensor]:
        convert = self.mode.fake_tensor_converter
        return {k: convert.from_real_tensor(self.mode, v, make_constant=True) for k, v in self._real_batch.items()}

    def forward_context(self) -> contextlib.AbstractContextManager:
        return forward_context(self.config, self.kernels)()

    def backward(self, loss: torch.Tensor) -> None:
        self.kernels.backward(loss)

    def attention(self, measurement: Measurement) -> str:
        return attention_name(self.kernels.choices, self.config.attn)


class FakeEngine(Engine):
    """Fake tensors modelling ``config.target``'s kernels: nothing allocated on the device modelled,
    nothing timed, and the one engine whose step can be traced symbolically (``symbolic.py``)."""

    name = "fake"
    targets = ("cuda", "cpu")
    allocates = False
    traceable = True
    timed = False

    def build(self, config: ProfileConfig) -> Built:
        return build(config)

    def step(self, built: Built, config: ProfileConfig) -> Step:
        return FakeStep(built, config)

    def host_memory_error(self, config: ProfileConfig, exc: BaseException) -> MemprofError:
        return host_memory_error(config, exc)


ENGINE = FakeEngine()
