"""``memprof baseline``: write or refresh the baseline that ``memprof check`` compares against."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memprof.cli.app import app, say


@app.command("baseline")
def baseline_cmd(
    sources: Annotated[
        list[Path], typer.Argument(help="results.json files, folders holding one, or single result JSONs.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The baseline JSON to write (replaced if it exists).")],
    keep_layers: Annotated[
        bool,
        typer.Option("--keep-layers", help="Keep the per-layer tables and timelines (the gate compares totals only)."),
    ] = False,
) -> None:
    """Write the SOURCES' results as the baseline (replacing it), per-layer data stripped unless --keep-layers.

    A configuration found twice keeps its last result. The gate compares totals only.
    """
    from memprof.checks.gate import write_baseline
    from memprof.outputs import check_distinct, check_file, results_file

    check_file(out, "the baseline", "--out", parents=True)  # before reading the sources
    check_distinct({"SOURCES": map(results_file, sources)}, {"--out": out})
    new, summary = write_baseline(sources, out, keep_layers=keep_layers)
    say(summary)
    for r in new.results:
        if r.status == "error":
            say(
                ("warning:", "yellow"),
                f" {r.backbone} {r.method} seq={r.seq_len} batch={r.batch_size} has status "
                f"error in the baseline ({r.message}); the gate will not fail it until it is ok once",
            )
