"""The cuda engine: one real training step on the current CUDA device, under the same
instrumentation, plus what the device itself reports.

``memory.cuda_max_allocated`` / ``cuda_max_reserved``: ``torch.cuda.max_memory_allocated`` and
``max_memory_reserved`` over the step (peak statistics reset just before it, the model already
on the device). ``memory.nvml_used``: the device's used memory according to NVML (``pynvml``,
from nvidia-ml-py) right after the step, before anything is freed: it includes the CUDA context,
the caching allocator's reserve and any other process on the GPU. A ``torch.OutOfMemoryError``
becomes a result with status ``"oom"`` (``memprof.engines.run``).
"""

from __future__ import annotations

import torch

from memprof.engines import common
from memprof.engines.base import Engine, Step
from memprof.engines.common import Built
from memprof.engines.config import ProfileConfig
from memprof.instrument.session import Measurement


def build(config: ProfileConfig) -> Built:
    return common.build(config, torch.device("cuda", torch.cuda.current_device()))


def nvml_used(device: torch.device) -> int | None:
    """Used memory of ``device`` as NVML reports it (None when NVML is unavailable)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            index = torch.cuda._get_nvml_device_index(device)
        except Exception:  # noqa: BLE001 - private helper changed or CUDA_VISIBLE_DEVICES unusual: plain index
            index = device.index or 0
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:  # noqa: BLE001 - NVML missing or failing must not lose the measurement
        return None


class CudaStep(Step):
    """A real step on the CUDA device, waited for around the clock, with the device's own figures."""

    foreach = True

    def __init__(self, built: Built, config: ProfileConfig) -> None:
        super().__init__(built, config)
        self.nvml_used: int | None = None

    def before_measuring(self) -> None:
        # After the optimizer state exists (``prepare``): a steady step's peak holds it, as it should.
        torch.cuda.synchronize(self.built.device)
        torch.cuda.reset_peak_memory_stats(self.built.device)

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.built.device)

    def after_step(self) -> None:
        torch.cuda.synchronize(self.built.device)
        self.nvml_used = nvml_used(self.built.device)

    def finish(self, measurement: Measurement) -> None:
        memory, device = measurement.memory, self.built.device
        memory.cuda_max_allocated = int(torch.cuda.max_memory_allocated(device))
        memory.cuda_max_reserved = int(torch.cuda.max_memory_reserved(device))
        memory.nvml_used = self.nvml_used

    def device_name(self) -> str:
        return torch.cuda.get_device_name(self.built.device)


class CudaEngine(Engine):
    """A real step on the current CUDA device; an allocation failure there is that device's OOM."""

    name = "cuda"
    targets = ("cuda",)
    allocates = True
    measures = ("cuda_max_allocated", "cuda_max_reserved")
    may_measure = ("nvml_used",)

    def unavailable(self) -> str | None:
        if torch.cuda.is_available():
            return None
        return (
            "engine 'cuda' needs a CUDA GPU and none is visible; use engine='fake', target='cuda' "
            "(--engine fake --target cuda), or engine='cpu'"
        )

    def build(self, config: ProfileConfig) -> Built:
        return build(config)

    def step(self, built: Built, config: ProfileConfig) -> Step:
        return CudaStep(built, config)

    def cleanup(self) -> None:
        cleanup()


def cleanup() -> None:
    """After an out-of-memory error: hand the cached blocks back so the next run starts clean."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


ENGINE = CudaEngine()
