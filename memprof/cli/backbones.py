"""``memprof backbones``: the registry with parameter counts (names never cut short: NOTE [Listings
keep names whole] in memprof.cli.views)."""

from __future__ import annotations

from typing import Annotated

import typer

from memprof.cli.app import app
from memprof.cli.views import print_json, print_listing

HEADERS = ("name", "family", "default task", "layers", "max seq", "parameters", "weights")


def _entries() -> list[dict]:
    """One plain record per built-in backbone; ``parameters`` None where its package is not installed."""
    from memprof.errors import MemprofError
    from memprof.instrument.params import count_params
    from memprof.models import backbones
    from memprof.models.tasks import build_model

    entries = []
    for name in backbones.known_names():
        try:
            bb = backbones.resolve(name)
        except MemprofError:
            entries.append(
                {
                    "name": name,
                    "family": None,
                    "default_task": None,
                    "layers": None,
                    "max_seq_len": None,
                    "parameters": None,
                    "weights": "package not installed",
                }
            )
            continue
        _, total = count_params(build_model(bb, device="meta"))
        entries.append(
            {
                "name": name,
                "family": bb.family,
                "default_task": bb.default_task,
                "layers": bb.num_layers,
                "max_seq_len": bb.max_seq_len,
                "parameters": total,
                "weights": "pretrained" if bb.weights else "random",
            }
        )
    return entries


def _row(e: dict) -> list[str]:
    if e["parameters"] is None:
        return [e["name"], "", "", "", "", "", e["weights"]]
    return [
        e["name"],
        e["family"],
        e["default_task"],
        str(e["layers"]),
        str(e["max_seq_len"]),
        f"{e['parameters'] / 1e6:,.1f} M",
        e["weights"],
    ]


@app.command("backbones")
def backbones_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON (exact parameter counts).")] = False,
) -> None:
    """List the built-in backbones with family, default task, depth and parameter count."""
    entries = _entries()
    if as_json:
        print_json(entries)
        return
    print_listing("backbones", HEADERS, [_row(e) for e in entries], right=("layers", "max seq", "parameters"))
