"""memprof's live-memory figures against PyTorch's own MemTracker, on the very same training step.

``torch.distributed._tools.mem_tracker.MemTracker`` is, like memprof's live tracker, a
``TorchDispatchMode`` that sees every storage an operator creates and a weak reference that sees it
freed; it works on CPU tensors as on CUDA ones (it rounds sizes up to the caching allocator's 512
bytes on CUDA only). Both run together here: MemTracker outside, the cpu engine's own step
(``memprof.engines.common.instrumented_step``, as ``Engine.run`` calls it for the cpu engine) inside, so
both see one step, operator by operator.

NOTE [ What MemTracker calls what ]
MemTracker labels a storage by when it was allocated, memprof by what it is at the end of the step:
* Parameter + Buffer = memprof's ``parameters`` (memprof counts buffers with the parameters).
* Gradient: a parameter's ``.grad`` (its grad hooks relabel it) = memprof's ``gradients``.
* Activation: everything allocated during the forward, alive or not when backward starts. memprof's
  ``activations`` are only those still alive then; the rest are its forward ``temporaries``.
* Temp: everything allocated in backward (outside recomputation) that is not a gradient yet: a
  parameter's gradient is Temp from its computation until it is accumulated into ``.grad``, while
  memprof counts it as a gradient from its allocation (at a peak inside backward, the gradients in
  flight differ). The seed of ``loss.backward()`` is made before autograd's engine starts: Activation
  to MemTracker, a backward temporary to memprof.
* Optstate: everything allocated inside ``optimizer.step()``: AdamW's state, and also the step's
  own temporaries, which memprof counts as ``temporaries``.
* Other: what ``track_external`` was given and is none of the above: here the batch, which memprof
  counts as ``activations`` (the forward's inputs, kept alive by the step).
So at the peak the two splits map onto each other by the phase the peak falls in (``mapped``): exactly
for a peak in the forward or in the optimizer step, up to the two labels above inside backward.

NOTE [ MemTracker and frozen parameters ]
MemTracker registers a gradient hook on every parameter of every module it sees run
(``Tensor.register_hook``), which raises ``RuntimeError: cannot register a hook on a tensor that
doesn't require gradient`` at the first module with a frozen parameter: it cannot measure LoRA,
adapters or MEFT (torch 2.13). ``FrozenAwareMemTracker`` gives each frozen parameter a do-nothing
handle before that loop, so no hook is registered on it; nothing else changes (a frozen parameter
never has a gradient for the hook to see).

    python benchmarks/memtracker_check.py [--backbone all-minilm-l6-v2] [--seq-len 128] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass

import torch
from torch.distributed._tools.mem_tracker import MemTracker

from memprof.engines import cpu
from memprof.engines.common import adamw, instrumented_step
from memprof.engines.config import ProfileConfig
from memprof.instrument.session import Measurement
from memprof.models import tasks

CPU = torch.device("cpu")
#: MemTracker's categories (str-valued enums: these strings index its snapshots)
PARAM, BUFFER, GRAD, ACT, TEMP, OPT, OTHER, TOTAL = (
    "Parameter",
    "Buffer",
    "Gradient",
    "Activation",
    "Temp",
    "Optstate",
    "Other",
    "Total",
)


class _NoHook:
    """The handle of a hook never registered (NOTE [ MemTracker and frozen parameters ])."""

    def remove(self) -> None:
        pass


class FrozenAwareMemTracker(MemTracker):
    """MemTracker that registers no gradient hook on a frozen parameter (NOTE [ MemTracker and frozen parameters ])."""

    def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
        for p in module.parameters():
            if not p.requires_grad:
                self._param_to_grad_hook_handles.setdefault(p, (_NoHook(), _NoHook()))
        return super()._track_module_params_and_buffers(module, install_grad_hooks)


@dataclass
class Check:
    """One step measured by both: memprof's measurement and MemTracker's snapshots (bytes per category)."""

    measurement: Measurement
    peak: dict[str, int]  # MemTracker's snapshot at its peak
    backward_start: dict[str, int]  # MemTracker's current snapshot when backward starts
    post_forward: dict[str, int]  # MemTracker's snapshot as the model's forward returns (its output alive)
    peak_phase: str  # "forward", "backward" or "optimizer": where MemTracker's peak fell
    batch_bytes: int


def measure(config: ProfileConfig, tracker: type[MemTracker] = MemTracker) -> Check:
    """The cpu engine's step of ``config`` (``cpu.ENGINE.run`` without the Result) under ``tracker`` too."""
    model = cpu.build(config).model
    torch.manual_seed(config.seed)
    batch = tasks.make_batch(config.resolved, config.task, config.batch_size, config.seq_len, seed=config.seed)
    optimizer = adamw(model, foreach=False)
    mt = tracker()
    mt.track_external(model, optimizer, batch)  # made before the step: MemTracker only sees what it is shown
    at_backward: dict[str, int] = {}

    def backward(loss: torch.Tensor) -> None:
        at_backward.update(mt.get_tracker_snapshot()[CPU])
        loss.backward()

    with warnings.catch_warnings():
        # transformers builds its loss module (CrossEntropyLoss) inside forward; it is gone by backward, and
        # ModTracker warns that its backward hooks find no module to report (no memory is missed)
        warnings.filterwarnings("ignore", message="Module is None")
        with mt:
            measurement, _ = instrumented_step(model, batch, optimizer, backward=backward)
    snaps = mt.memory_tracking[model].snapshots
    peak = mt.get_tracker_snapshot("peak")[CPU]
    phase = next(
        (
            name
            for name, state in (("forward", "Peak-Forward"), ("backward", "Peak-Backward"))
            if snaps[state][0][CPU][TOTAL] == peak[TOTAL]
        ),
        "optimizer",
    )
    return Check(
        measurement,
        peak,
        at_backward,
        snaps["Post-Forward"][0][CPU],
        phase,
        sum(t.untyped_storage().nbytes() for t in batch.values()),
    )


def mapped(check: Check) -> list[tuple[str, int, int]]:
    """(figure, memprof's bytes, MemTracker's bytes) for the peak, its split and the live activations,
    each MemTracker figure the sum of its categories that means the same (NOTE [ What MemTracker calls what ])."""
    m, p, live = check.measurement.memory, check.peak, check.measurement.live
    rows = [
        ("peak", m.peak, p[TOTAL]),
        ("parameters and buffers", m.parameters, p[PARAM] + p[BUFFER]),
        ("gradients at the peak", m.gradients, p[GRAD]),
    ]
    if check.peak_phase == "forward":
        rows.append(("activations + temporaries at the peak", m.activations_at_peak + m.temporaries, p[ACT] + p[OTHER]))
    elif check.peak_phase == "backward":
        rows += [
            ("activations at the peak", m.activations_at_peak, p[ACT] + p[OTHER]),
            ("temporaries at the peak", m.temporaries, p[TEMP]),
        ]
    else:
        rows += [
            ("activations at the peak", m.activations_at_peak, p[ACT] + p[OTHER]),
            ("optimizer state + temporaries at the peak", m.optimizer_state + m.temporaries, p[OPT]),
        ]
    b = check.backward_start
    rows.append(("live activations when backward starts", live.forward_end_activations, b[ACT] + b[OTHER]))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="all-minilm-l6-v2")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| method | figure | memprof (bytes) | MemTracker (bytes) | difference |")
    print("|---|---|---:|---:|---:|")
    for method, tracker in (("ft", MemTracker), ("lora", FrozenAwareMemTracker)):
        check = measure(ProfileConfig(args.backbone, method, args.seq_len, args.batch_size, engine="cpu"), tracker)
        for figure, ours, theirs in mapped(check):
            share = f" ({(ours - theirs) / theirs:+.2%})" if theirs else ""
            print(f"| {method} | {figure} | {ours:,} | {theirs:,} | {ours - theirs:+,}{share} |", flush=True)
        m = check.measurement.memory
        print(f"| {method} | peak activations (memprof), peak in the {check.peak_phase} | {m.peak_activations:,} | | |")
        post = check.post_forward
        print(
            f"| {method} | MemTracker's Activation + Other after the model's forward (its output alive) | | "
            f"{post[ACT] + post[OTHER]:,} | |",
            flush=True,
        )


if __name__ == "__main__":
    main()
