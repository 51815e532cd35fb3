"""memprof's command line: ``memprof COMMAND --help``."""

import atexit
import gc
import importlib

from memprof.cli.app import app, run

# One module per command; each registers itself on ``app`` when imported.
COMMANDS = ("profile", "backbones", "compare", "report", "check", "baseline", "diagnose", "methods", "fit", "formula")
for _name in COMMANDS:
    importlib.import_module(f"memprof.cli.{_name}")


def main() -> None:
    # The interpreter's last collection would walk every object torch, pandas and matplotlib made
    # (about half a second on 2 cores) only to free memory the process gives back as it ends. Frozen
    # by an exit handler, they are left out of it, and only when the process ends: a program (or a
    # test) that calls main() and goes on keeps its collector as it was.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    run()


__all__ = ["app", "main"]
