"""The typer app and the one place where errors become exit codes.

Bad input (MemprofError, MEFTError) prints one line and exits 2; set MEMPROF_DEBUG=1 for the
traceback. Each command lives in its own module and registers itself on ``app``.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

app = typer.Typer(
    name="memprof",
    help="Per-layer activation-memory profiling of transformer fine-tuning, and MEFT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _user_errors() -> tuple[type[BaseException], ...]:
    from memprof.errors import MemprofError

    errors: list[type[BaseException]] = [MemprofError]
    # Evaluated while an exception is being matched: a MEFTError can only have been raised if
    # meft.errors was imported, so importing the (heavy) meft package here is never needed.
    meft_errors = sys.modules.get("meft.errors")
    if meft_errors is not None:
        errors.append(meft_errors.MEFTError)
    return tuple(errors)


def run() -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    try:
        app()
    except _user_errors() as exc:
        if os.environ.get("MEMPROF_DEBUG"):
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


@app.callback()
def _root() -> None:
    """Per-layer activation-memory profiling of transformer fine-tuning, and MEFT."""
