"""``memprof methods``: the fine-tuning methods, built-in and from installed packages (entry-point
group ``memprof.methods``), with what each trains."""

from __future__ import annotations

from typing import Annotated

import typer

from memprof.cli.app import app
from memprof.cli.views import print_json, print_listing


@app.command("methods")
def methods_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print the methods as JSON.")] = False,
) -> None:
    """List the fine-tuning methods `--method` and `--methods` take: name, what it does, which
    parameters it trains."""
    from memprof import methods

    entries = [{"name": m.name, "description": m.description, "trains": m.trains, "alias_of": m.alias_of}
               for m in map(methods.get, methods.names())]
    if as_json:
        print_json(entries)
        return
    rows = [(e["name"], e["description"], e["trains"]) for e in entries]
    print_listing("methods", ("name", "description", "trains"), rows)
