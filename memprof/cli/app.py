"""The typer app, the one place where errors become exit codes, and the one way to print user text.

Bad input (MemprofError, MEFTError, and typer/click usage errors: a value of the wrong type, an
unknown option or command, a missing option) prints one line and exits 2; set MEMPROF_DEBUG=1 for
the traceback. Each command lives in its own module and registers itself on ``app``.

NOTE [No markup]: rich reads ``[...]`` in a printed string as markup, so a method named ``ft[/i]``
raised MarkupError, a message holding ``[/]`` stopped a sweep and ``runs/[exp1]/`` printed as
``runs//``. Every command prints user-facing text through ``say`` (a line) and ``cell`` (a table
cell or title), which take plain strings literally; styles are given as (text, style) pairs, never
as markup inside a string that may hold user text.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

app = typer.Typer(
    name="memprof",
    help="Per-layer activation-memory profiling of transformer fine-tuning, and MEFT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _console(**kwargs) -> Console:
    """A rich Console that reads COLUMNS and LINES when it prints, not once when it is made: this
    module is imported once per process, and a process that runs many commands (the tests, pytest-xdist
    workers whose environment holds COLUMNS=80, an embedding application) must see the width of each."""
    made = Console(**kwargs)
    made._width = made._height = None  # rich keeps what COLUMNS/LINES said at construction there
    return made


console = _console()
err_console = _console(stderr=True)

#: a part of a printed line: literal text, a Text, or (literal text, style)
Part = str | Text | tuple[str, str]


def say(*parts: Part, style: str = "", err: bool = False) -> None:
    """Print one line of user-facing text (stdout, or stderr with ``err``), never as markup
    (NOTE [No markup]): ``say(("error:", "bold red"), " ", message)``."""
    (err_console if err else console).print(Text.assemble(*parts, style=style), highlight=False, soft_wrap=True)


def cell(value: Any, style: str = "") -> Text:
    """A table cell or title holding user text, taken literally (NOTE [No markup])."""
    return Text(str(value), style=style)


def _user_errors() -> tuple[type[BaseException], ...]:
    from memprof.errors import MemprofError

    errors: list[type[BaseException]] = [MemprofError]
    # Evaluated while an exception is being matched: a MEFTError can only have been raised if
    # meft.errors was imported, so importing the (heavy) meft package here is never needed.
    meft_errors = sys.modules.get("meft.errors")
    if meft_errors is not None:
        errors.append(meft_errors.MEFTError)
    return tuple(errors)


def _click():
    """The exceptions module of the click that typer runs on (newer typers carry their own copy)."""
    return importlib.import_module(typer.BadParameter.__module__)


# NOTE [Interrupts]: SIGTERM (a cancelled CI job, `timeout`) is handled like Ctrl-C: ``run``
# installs a handler raising memprof.errors.Interrupted, a KeyboardInterrupt, so every path that
# keeps partial work on Ctrl-C (a sweep's results on disk, its workers terminated) does so on
# SIGTERM too. typer turns a KeyboardInterrupt escaping a command into a silent exit 130, so the
# handler notes the signal, and ``run`` prints one line and exits 128 + its number (130 Ctrl-C,
# 143 SIGTERM). A command that says itself what the interrupt left (compare: where its results
# are, how to resume) does so through ``interrupted``, and ``run`` adds nothing.
_interrupt: dict[str, Any] = {"signum": None, "said": False}


def interrupted(message: str, code: int) -> typer.Exit:
    """Say ``message`` (what an interrupt left, and where) as the command's one line about it, and
    the exit with ``code`` (``memprof.errors.interrupt_exit_code``) for the command to raise."""
    say(message, err=True)
    _interrupt["said"] = True
    return typer.Exit(code)


def _on_sigterm(signum: int, frame: Any) -> None:
    from memprof.errors import Interrupted

    _interrupt["signum"] = signum
    raise Interrupted(signum)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raising Interrupted while the app runs (NOTE [Interrupts]); an ignored SIGTERM or
    an embedding program's own handler is left alone, as is a thread that cannot take signals."""
    _interrupt.update(signum=None, said=False)
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run() -> None:
    """Entry point: run the app; user errors become one line and exit code 2 (click's own code
    for its other errors), an interrupt one line and 130 (Ctrl-C) or 143 (SIGTERM), anything else
    keeps its traceback."""
    with _sigterm_as_interrupt():
        _run(sys.argv[1:])


def _run(args: list[str]) -> None:
    click = _click()
    try:
        code = app(args=args, prog_name="memprof", standalone_mode=False)
    except KeyboardInterrupt:  # one that typer did not see (raised outside any command)
        code = 130
    except _user_errors() as exc:
        _fail(str(exc), 2)
    except click.ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `memprof` alone: the help, as before
            if exc.format_message().strip():
                exc.show()
            sys.exit(exc.exit_code)
        _fail(usage_line(exc, args), exc.exit_code)
    except typer.Abort:
        _fail("aborted", 1)
    if code == 130 and not _interrupt["said"]:  # typer's exit for an interrupt (NOTE [Interrupts])
        signum = _interrupt["signum"] or signal.SIGINT
        say(f"interrupted by {signal.Signals(signum).name} before `{_command_path(args)}` finished", err=True)
        sys.exit(128 + signum)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    """Print ``message`` as the one error line and exit with ``code``; with MEMPROF_DEBUG set,
    re-raise the exception being handled instead (called only from ``run``'s except clauses)."""
    if os.environ.get("MEMPROF_DEBUG"):
        raise  # noqa: PLE0704 - the exception ``run`` is handling
    # one line whatever a user string inside the message holds (a key or value with a newline)
    say(("error:", "bold red"), " ", message.replace("\r", "\\r").replace("\n", "\\n"), err=True)
    sys.exit(code)


def usage_line(exc: Any, args: list[str]) -> str:
    """A click usage error as one line naming the value, the constraint and the fix."""
    click = _click()
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else _command_path(args)
    see = f"see `{path} --help`"
    if isinstance(exc, click.NoSuchOption):
        guess = f"did you mean {' or '.join(exc.possibilities)}? " if exc.possibilities else ""
        return f"unknown option {exc.option_name!r} for {path}; {guess}{see} for its options"
    param = getattr(exc, "param", None)
    if isinstance(exc, click.BadParameter) and not isinstance(exc, click.MissingParameter) and param is not None:
        flag, example = _flag(param), _example(param)
        value = _given(args, param.opts)
        what = f"invalid value {value!r} for {flag}" if value is not None else f"invalid value for {flag}"
        fix = f"pass e.g. {flag} {example}" if example is not None else see
        return f"{what}: {_sentence(exc.message)}; {fix}"
    message = _sentence(exc.format_message())
    command = getattr(ctx, "command", None)
    if hasattr(command, "list_commands") and "command" in message:
        return f"{message}; use one of {', '.join(command.list_commands(ctx))} ({see})"
    if "requires an argument" in message and (example := _option_example(args, getattr(exc, "option_name", None))):
        return f"{message}; pass e.g. {example}"
    if isinstance(exc, click.MissingParameter):
        return f"{message} for {path}; pass it ({see})"
    return f"{message}; {see}"


def _sentence(text: str) -> str:
    """Click's message as part of our line: one line, lower-case start, no final full stop."""
    text = " ".join(str(text).split()).rstrip(".")
    return text[:1].lower() + text[1:]


def _flag(param: Any) -> str:
    opts = [o for o in getattr(param, "opts", []) if o.startswith("-")]
    return max(opts, key=len) if opts else str(param.name).upper()


def _example(param: Any) -> str | None:
    """The parameter's default as an example value, when it has a plain one."""
    default = getattr(param, "default", None)
    if isinstance(default, bool) or not isinstance(default, (int, float, str)) or default == "":
        return None
    return str(default)


def _given(args: list[str], opts: list[str]) -> str | None:
    """The value the command line gave an option (the last one, as click takes it)."""
    value = None
    for i, arg in enumerate(args):
        for opt in opts:
            if arg == opt and i + 1 < len(args):
                value = args[i + 1]
            elif opt.startswith("--") and arg.startswith(opt + "="):
                value = arg[len(opt) + 1 :]
    return value


def _command(args: list[str]) -> Any:
    """The click command the arguments name (the first registered command name among them)."""
    group = typer.main.get_command(app)
    name = next((a for a in args if not a.startswith("-")), None)
    return group.commands.get(name) if name is not None and hasattr(group, "commands") else None


def _command_path(args: list[str]) -> str:
    command = _command(args)
    return f"memprof {command.name}" if command is not None else "memprof"


def _option_example(args: list[str], option: str | None) -> str | None:
    command = _command(args)
    for param in getattr(command, "params", []):
        if option in getattr(param, "opts", []) and (example := _example(param)) is not None:
            return f"{_flag(param)} {example}"
    return None


def _print_version(value: bool) -> None:
    if value:
        from memprof.version import __version__

        say(f"memprof {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the installed version and exit."),
    ] = False,
) -> None:
    """Per-layer activation-memory profiling of transformer fine-tuning, and MEFT."""
