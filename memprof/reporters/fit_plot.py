"""The PNG of ``memprof fit``: memory one rank needs against the searched size, one line per
method through the sizes the search profiled, with the budget as a horizontal line.

It draws plain data (``memprof.fit.search.curve_data``: ``{method: [(size, required bytes), ...]}``),
so it sits with the other reporters, below the search that produces it.
"""

from __future__ import annotations

from pathlib import Path

from memprof.reporters.canvas import _colors, _figure, _save
from memprof.units import unit_for


def plot_fit(
    data: dict[str, list[tuple[int, int]]], budget: int, outfile: str | Path, *, xlabel: str, title: str
) -> dict[str, list[tuple[int, int]]]:
    """Draw ``data`` (sizes ascending per method) and the ``budget`` line; returns ``data``."""
    top = max([budget, *(b for pts in data.values() for _, b in pts)])
    unit, div = unit_for(top)
    colors = _colors(list(data))
    fig = _figure(6.4, 4.0)
    ax = fig.subplots()
    for method, pts in data.items():
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, [y / div for y in ys], marker="o", label=method, color=colors[method])
    ax.axhline(budget / div, color="black", linestyle="--", linewidth=1.2, label="budget")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"memory needed per GPU ({unit})")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(title="method")
    fig.suptitle(title)
    _save(fig, outfile)
    return data
