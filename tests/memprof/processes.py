"""``memprof compare`` in a real process whose engine a shim replaces (signals, workers, locks).

The shim is a ``sitecustomize.py`` that Python runs at start-up in the command and in each of its
spawned workers. Every shim here also turns compare's closed form off: the shim's runner stands in
for ``memprof.engines.run``, and a closed-form sweep would trace and profile around it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

#: what every shim starts with: the tests' helpers importable, every configuration through the runner
PREAMBLE = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import memprof.cli.compare
memprof.cli.compare._closed_form = lambda *args: None
"""


def compare_process(
    folder: Path, shim: str, args: list[str], preexec_fn: Callable[[], object] | None = None
) -> subprocess.Popen:
    """``memprof compare *args`` started in ``folder`` with ``shim`` (after ``PREAMBLE``) run first."""
    shims = folder / "shim"
    shims.mkdir()
    (shims / "sitecustomize.py").write_text(PREAMBLE + shim)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shims), os.environ.get("PYTHONPATH", "")])}
    env.pop("MEMPROF_DEBUG", None)
    return subprocess.Popen(
        [sys.executable, "-c", "from memprof.cli import main; main()", "compare", *args],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )
