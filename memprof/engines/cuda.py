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

from memprof.models import tasks
from memprof.engines import common
from memprof.engines.config import ProfileConfig
from memprof.engines.common import Built, adamw, instrumented_step, make_result
from memprof.engines.cpu import forward_context
from memprof.instrument.attention import attention_name
from memprof.results.result import Result


def build(config: ProfileConfig) -> Built:
    return common.build(config, torch.device("cuda", torch.cuda.current_device()))


def nvml_used(device: torch.device) -> int | None:
    """Used memory of ``device`` as NVML reports it (None when NVML is unavailable)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            index = torch.cuda._get_nvml_device_index(device)
        except Exception:  # private helper changed or CUDA_VISIBLE_DEVICES unusual: plain index
            index = device.index or 0
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:  # NVML missing or failing must not lose the measurement
        return None


def run(built: Built, config: ProfileConfig) -> Result:
    device = built.device
    torch.manual_seed(config.seed)
    batch = tasks.make_batch(config.resolved, config.task, config.batch_size, config.seq_len, device=device, seed=config.seed)
    optimizer = adamw(built.model, foreach=True)
    common.prepare(built.model, optimizer, config.step)  # before the peak statistics are reset
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    used = [None]

    def synchronize() -> None:
        torch.cuda.synchronize(device)

    def after_step() -> None:
        torch.cuda.synchronize(device)
        used[0] = nvml_used(device)

    measurement, seconds = instrumented_step(built.model, batch, optimizer, forward_context(config, "cuda"),
                                             synchronize=synchronize, after_step=after_step, loss=config.loss)
    memory = measurement.memory
    memory.cuda_max_allocated = int(torch.cuda.max_memory_allocated(device))
    memory.cuda_max_reserved = int(torch.cuda.max_memory_reserved(device))
    memory.nvml_used = used[0]
    del optimizer, batch
    attn = attention_name(measurement.attention_kernels, config.attn, observed=True)
    return make_result(config, built, measurement, attn, step_time=seconds, device_name=torch.cuda.get_device_name(device))


def cleanup() -> None:
    """After an out-of-memory error: hand the cached blocks back so the next run starts clean."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
