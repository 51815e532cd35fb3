"""``memprof methods``: the fine-tuning methods, built-in and from installed packages (entry-point
group ``memprof.methods``), with what each trains and, for a backbone, how many parameters that is."""

from __future__ import annotations

from typing import Annotated

import typer

from memprof.cli.app import app
from memprof.cli.views import print_json, print_listing

CountBackbone = Annotated[
    str | None,
    typer.Option(
        help="Also count each method's trainable parameters on this backbone (built on the meta device, no weights)."
    ),
]
CountTask = Annotated[str | None, typer.Option(help="The head counted with --backbone (default: the family's).")]


def _trainable(names: list[str], backbone: str, task: str | None) -> dict[str, int | str]:
    """Each method's trainable parameter count on ``backbone``, or the one line of its refusal (a
    method that does not support the family). The backbone and task are checked once, first, so a
    bad one is the command's error and not every method's."""
    from memprof.engines.common import build
    from memprof.engines.config import ProfileConfig
    from memprof.errors import MemprofError

    checked = ProfileConfig(backbone, method="ft", seq_len=1, batch_size=1, task=task)
    counts: dict[str, int | str] = {}
    for name in names:
        try:
            config = ProfileConfig(backbone, method=name, seq_len=1, batch_size=1, task=checked.task)
            counts[name] = build(config, "meta").trainable
        except MemprofError as err:
            counts[name] = str(err)
    return counts


@app.command("methods")
def methods_cmd(
    backbone: CountBackbone = None,
    task: CountTask = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the methods as JSON.")] = False,
) -> None:
    """List the fine-tuning methods `--method` and `--methods` take: name, what it does, which
    parameters it trains (with --backbone: how many, or why the method does not support it)."""
    from memprof import methods
    from memprof.errors import MemprofError

    if task is not None and backbone is None:
        raise MemprofError("--task counts parameters on a backbone; pass --backbone too (memprof backbones lists them)")
    names = methods.names()
    entries = [
        {"name": m.name, "description": m.description, "trains": m.trains, "alias_of": m.alias_of}
        for m in map(methods.get, names)
    ]
    headers = ["name", "description", "trains"]
    if backbone is not None:
        counts = _trainable(names, backbone, task)
        for e in entries:
            count = counts[e["name"]]
            e["trainable_params"], e["unsupported"] = (count, None) if isinstance(count, int) else (None, count)
        headers.append("trainable params")
    if as_json:
        print_json(entries)
        return
    rows = [[e["name"], e["description"], e["trains"]] for e in entries]
    if backbone is not None:
        for row, e in zip(rows, entries):
            row.append(f"{e['trainable_params']:,}" if e["unsupported"] is None else "not supported")
    print_listing("methods", headers, rows, right=("trainable params",))
