"""memprof's command line: ``memprof COMMAND --help``."""

import gc
import importlib

from memprof.cli.app import app, run

# One module per command; each registers itself on ``app`` when imported.
COMMANDS = ("profile", "backbones", "compare", "report", "check", "baseline", "diagnose", "methods", "fit", "formula")
for _name in COMMANDS:
    importlib.import_module(f"memprof.cli.{_name}")


def main() -> None:
    try:
        run()
    finally:
        # The interpreter's last collection would walk every object torch, pandas and matplotlib
        # made (about half a second on 2 cores) only to free memory the process gives back as it
        # ends; frozen, they are left out of it. Files are closed and exit handlers still run.
        gc.freeze()


__all__ = ["app", "main"]
