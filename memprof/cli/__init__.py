"""memprof's command line: ``memprof COMMAND --help``."""

import importlib

from memprof.cli.app import app, run

# One module per command; each registers itself on ``app`` when imported.
COMMANDS = ("profile", "backbones", "compare", "report", "check", "baseline", "diagnose", "methods", "fit", "formula")
for _name in COMMANDS:
    importlib.import_module(f"memprof.cli.{_name}")


def main() -> None:
    run()


__all__ = ["app", "main"]
