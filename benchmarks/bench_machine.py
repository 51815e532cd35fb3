"""The machine and software a benchmark ran on, recorded with its measurements."""

from __future__ import annotations

import datetime
import os
import platform


def describe() -> dict:
    """{date (UTC), machine (in words), load average when asked}."""
    import peft
    import torch
    import transformers

    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, {pages / 2**30:.0f} GiB, no GPU used, "
        f"Python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, peft {peft.__version__}"
    )
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
