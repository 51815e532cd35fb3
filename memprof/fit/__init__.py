"""``memprof fit``: the largest batch size or sequence length per method that fits a GPU budget
(``search``), found by a bounded bisection (``bisection``) over fake-engine profiles; GPU presets and
NVML's free memory (``gpus``); what one rank holds under DDP and ZeRO/FSDP sharding (``sharding``)."""

from memprof.units import parse_bytes

# fit's two allowances live here, not in search.py, so that the CLI shows them as its defaults
# without importing the engines at start-up

#: Default context allowance: 1 GiB. Creating the CUDA context and loading PyTorch's kernels takes
#: ~0.8 GB before any tensor exists (781 MB in pytorch/pytorch#34323, "~1 GB, can be much higher"
#: per process in pytorch/pytorch#12873), and cuBLAS keeps workspaces on top.
CONTEXT_ALLOWANCE_TEXT = "1GiB"
CONTEXT_ALLOWANCE = parse_bytes(CONTEXT_ALLOWANCE_TEXT)
#: Default fragmentation margin: 10% of the step's bytes. A margin, not a measurement: ZeRO
#: (Rajbhandari et al. 2020, "memory fragmentation" among the residual memory) reports
#: out-of-memory errors with over 30% of memory still free in extreme cases; measure yours with
#: ``memprof profile --engine cuda`` (``cuda_max_reserved`` over ``cuda_max_allocated``) and pass it
#: with ``--fragmentation``.
FRAGMENTATION = 0.10
