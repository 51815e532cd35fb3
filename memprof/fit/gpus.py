"""GPU memory budgets: presets for common cards, a size given by hand, or the local GPU's free
memory through NVML (``pynvml``, from nvidia-ml-py).

A preset is the card's total memory as ``nvidia-smi`` reports it (``memory.total``, MiB), which is
what the driver exposes to CUDA; the marketing figure ("80 GB") is a rounder number. Part of that
total is never available to tensors (the CUDA context, library workspaces): ``memprof fit``'s
context allowance (``fit.CONTEXT_ALLOWANCE``) accounts for it, not the preset.
"""

from __future__ import annotations

from dataclasses import dataclass

from memprof.errors import MemprofError
from memprof.units import MIB, format_bytes, parse_bytes


@dataclass(frozen=True)
class GPU:
    name: str
    #: total memory as nvidia-smi reports it, bytes
    total: int
    #: the card as it is sold, for the listing
    label: str


#: nvidia-smi's memory.total for each card (MiB), as printed by the driver on SXM / PCIe boards of
#: that name; the 141 GB H200 and 80 GB H100 report a little less than their marketing size.
GPUS: dict[str, GPU] = {
    g.name: g
    for g in (
        GPU("a100-40gb", 40960 * MIB, "NVIDIA A100 40 GB"),
        GPU("a100-80gb", 81920 * MIB, "NVIDIA A100 80 GB"),
        GPU("h100-80gb", 81559 * MIB, "NVIDIA H100 80 GB"),
        GPU("h200", 143771 * MIB, "NVIDIA H200 141 GB"),
        GPU("a6000", 49140 * MIB, "NVIDIA RTX A6000 48 GB"),
        GPU("rtx4090", 24564 * MIB, "NVIDIA GeForce RTX 4090 24 GB"),
        GPU("l4", 23034 * MIB, "NVIDIA L4 24 GB"),
        GPU("t4", 15360 * MIB, "NVIDIA T4 16 GB"),
    )
}


def gpu(name: str) -> GPU:
    """The preset called ``name`` (case and ``-``/``_``/space insensitive); MemprofError otherwise."""
    key = str(name).strip().lower().replace("_", "-").replace(" ", "-")
    found = GPUS.get(key) or GPUS.get(key.replace("-", ""))
    if found is None:
        raise MemprofError(
            f"unknown GPU {name!r}; use one of {', '.join(GPUS)}, or pass --budget with a size such as --budget 24GiB"
        )
    return found


def local_free_memory(index: int = 0) -> int:
    """Free memory of local GPU ``index`` as NVML reports it (other processes' use excluded); a
    MemprofError naming why when there is no NVML, no driver or no such GPU."""
    try:
        import pynvml
    except ImportError:
        raise MemprofError(
            "--budget auto reads the local GPU's free memory through NVML, and pynvml is not "
            "installed; pip install nvidia-ml-py, or pass --gpu NAME or --budget SIZE"
        ) from None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, _DriverNotLoaded, ...
        raise MemprofError(
            f"--budget auto needs a local NVIDIA GPU and NVML found none ({_first_line(exc)}); "
            "pass --gpu NAME or --budget SIZE instead"
        ) from None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).free)
    except Exception as exc:  # noqa: BLE001
        raise MemprofError(
            f"--budget auto could not read GPU {index}'s memory through NVML ({_first_line(exc)}); "
            "pass --gpu NAME or --budget SIZE instead"
        ) from None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down what failed to start
            pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def resolve_budget(budget: str | None, gpu_name: str | None) -> tuple[int, str]:
    """(bytes, where they come from) of ``--budget`` (a size, or ``auto``) or ``--gpu`` (a preset);
    exactly one of the two is given."""
    if (budget is None) == (gpu_name is None):
        raise MemprofError(
            "pass one of --budget (a size such as 24GiB, or auto) and --gpu (a card such as h100-80gb)"
            + (", not both" if budget is not None else "")
        )
    if gpu_name is not None:
        card = gpu(gpu_name)
        return card.total, f"{card.label} ({format_bytes(card.total)})"
    if budget.strip().lower() == "auto":
        free = local_free_memory()
        return free, f"local GPU 0, free memory ({format_bytes(free)})"
    size = parse_bytes(budget, what="budget")
    if size == 0:
        raise MemprofError("budget 0 holds nothing; pass a size such as --budget 24GiB")
    return size, format_bytes(size)
