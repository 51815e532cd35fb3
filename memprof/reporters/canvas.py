"""What every figure shares: a matplotlib Agg figure (no pyplot, no global backend state), saving,
the figure for "nothing finished", and the colours (``plots``, ``timeline`` and ``fit_plot`` draw
with these)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memprof.results.files import atomic_output

DPI = 110


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, outfile: str | Path) -> None:
    # laid out once here, then saved as it is: savefig would draw the whole figure once more to lay it out
    engine = fig.get_layout_engine()
    if engine is not None and fig.axes:
        engine.execute(fig)
        fig.set_layout_engine("none")
    with atomic_output(outfile) as tmp:  # a failed save keeps the old PNG (NOTE [ A report that cannot be written ])
        fig.savefig(tmp, format="png", facecolor="white")


def _empty(outfile: str | Path, title: str, text: str = "no configuration finished") -> None:
    fig = _figure(6, 2.5)
    fig.suptitle(title)
    fig.text(0.5, 0.45, text, ha="center", va="center", fontsize=12)
    _save(fig, outfile)


def _colors(keys: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    # tab10 is the most distinct; beyond ten keys (every registered method) tab20 keeps them apart
    cmap = colormaps["tab10" if len(keys) <= 10 else "tab20"]
    return {k: cmap(i % cmap.N) for i, k in enumerate(keys)}
