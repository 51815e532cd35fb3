"""``memprof fit``: the largest batch size or sequence length per method that fits a GPU budget
(``search``), found by a bounded bisection (``bisection``) over fake-engine profiles; GPU presets and
NVML's free memory (``gpus``); what one rank holds under DDP and ZeRO/FSDP sharding (``sharding``)."""
