"""PNG plots of a sweep (matplotlib's Agg canvas, no pyplot and no global backend state).

Each plot has a ``*_data(rs)`` function returning exactly what it draws, in bytes, and a
``plot_*(rs, outfile)`` that draws it and returns the same data (tests assert on it). Only
configurations with status ``"ok"`` are plotted. The unit (MiB or GiB) is chosen per figure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from memprof.reporters.base import Extras
from memprof.reporters.canvas import _colors, _empty, _figure, _save
from memprof.reporters.table import largest_config, layers_by_group, method_order
from memprof.reporters.timeline import plot_timeline
from memprof.results.result import CATEGORIES, Result, ResultSet
from memprof.units import unit_for

BREAKDOWN = ("parameters", "gradients", "optimizer_state", "activations", "temporaries")


def _ok(rs: ResultSet) -> list[Result]:
    return [r for r in rs.results if r.status == "ok"]


def _pretty(name: str) -> str:
    return name.replace("_", " ")


# ---------------------------------------------------------------------------------------------
# Data


def _lines(rs: ResultSet, panel: str, x: str) -> dict[int, dict[str, list[tuple[int, int]]]]:
    order = method_order(rs)
    out: dict[int, dict[str, list[tuple[int, int]]]] = defaultdict(dict)
    for r in sorted(_ok(rs), key=lambda r: (getattr(r, panel), order.index(r.method), getattr(r, x))):
        out[getattr(r, panel)].setdefault(r.method, []).append((getattr(r, x), r.memory.peak_activations))
    return dict(out)


def activations_vs_seq_len_data(rs: ResultSet) -> dict[int, dict[str, list[tuple[int, int]]]]:
    """{batch size: {method: [(seq len, peak activation bytes), ...]}}, sorted by sequence length."""
    return _lines(rs, "batch_size", "seq_len")


def activations_vs_batch_size_data(rs: ResultSet) -> dict[int, dict[str, list[tuple[int, int]]]]:
    """{seq len: {method: [(batch size, peak activation bytes), ...]}}, sorted by batch size."""
    return _lines(rs, "seq_len", "batch_size")


def _at_largest(rs: ResultSet) -> tuple[tuple[int, int] | None, dict[str, Result]]:
    largest = largest_config(rs)
    if largest is None:
        return None, {}
    seq, batch = largest
    chosen = {r.method: r for r in _ok(rs) if (r.seq_len, r.batch_size) == (seq, batch)}
    return largest, {m: chosen[m] for m in method_order(rs) if m in chosen}


def layers_largest_data(rs: ResultSet) -> dict[str, Any]:
    """Saved bytes per layer group and category at the largest configuration:
    ``{"seq_len", "batch_size", "methods": {method: DataFrame(index=group, columns=CATEGORIES)}}``,
    groups in the order they first appear."""
    largest, chosen = _at_largest(rs)
    methods = {}
    for method, r in chosen.items():
        methods[method] = layers_by_group(r.layers).set_index("module")[list(CATEGORIES)].rename_axis("group")
    return {"seq_len": largest and largest[0], "batch_size": largest and largest[1], "methods": methods}


def peak_breakdown_data(rs: ResultSet) -> dict[str, Any]:
    """The peak split per method at the largest configuration: parameters, gradients, optimizer
    state, activations and temporaries at the moment of the peak (``activations_at_peak``; the
    parts add up to ``peak``):
    ``{"seq_len", "batch_size", "methods": {method: {part: bytes, ..., "peak": bytes}}}``."""
    largest, chosen = _at_largest(rs)
    methods = {}
    for method, r in chosen.items():
        m = r.memory
        methods[method] = {
            "parameters": m.parameters,
            "gradients": m.gradients,
            "optimizer_state": m.optimizer_state,
            "activations": m.activations_at_peak,
            "temporaries": m.temporaries,
            "peak": m.peak,
        }
    return {"seq_len": largest and largest[0], "batch_size": largest and largest[1], "methods": methods}


def saved_by_category_data(rs: ResultSet) -> dict[str, Any]:
    """Saved bytes by category per method at the largest configuration (sum over modules):
    ``{"seq_len", "batch_size", "methods": {method: {category: bytes}}}``."""
    largest, chosen = _at_largest(rs)
    methods = {m: {c: int(r.layers[c].sum()) for c in CATEGORIES} for m, r in chosen.items()}
    return {"seq_len": largest and largest[0], "batch_size": largest and largest[1], "methods": methods}


# ---------------------------------------------------------------------------------------------
# Drawing


def _plot_lines(data, outfile, *, title: str, xlabel: str, panel_label: str, methods: list[str]) -> None:
    if not data:
        _empty(outfile, title)
        return
    unit, div = unit_for(max(b for lines in data.values() for pts in lines.values() for _, b in pts))
    colors = _colors(methods)
    fig = _figure(4.0 * len(data) + 0.6, 3.8)
    axes = fig.subplots(1, len(data), squeeze=False)[0]
    for ax, (panel, lines) in zip(axes, data.items()):
        for method, pts in lines.items():
            xs, ys = zip(*pts)
            ax.plot(xs, [y / div for y in ys], marker="o", label=method, color=colors[method])
        ax.set_title(f"{panel_label} {panel}")
        ax.set_xlabel(xlabel)
        ax.set_xticks(sorted({x for pts in lines.values() for x, _ in pts}))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"peak activation memory ({unit})")
    axes[-1].legend(title="method")
    fig.suptitle(title)
    _save(fig, outfile)


def plot_activations_vs_seq_len(rs: ResultSet, outfile: str | Path):
    """Activation memory vs sequence length, one line per method, a panel per batch size."""
    data = activations_vs_seq_len_data(rs)
    _plot_lines(
        data,
        outfile,
        title="Activation memory vs sequence length",
        xlabel="sequence length",
        panel_label="batch size",
        methods=method_order(rs),
    )
    return data


def plot_activations_vs_batch_size(rs: ResultSet, outfile: str | Path):
    """Activation memory vs batch size, one line per method, a panel per sequence length."""
    data = activations_vs_batch_size_data(rs)
    _plot_lines(
        data,
        outfile,
        title="Activation memory vs batch size",
        xlabel="batch size",
        panel_label="sequence length",
        methods=method_order(rs),
    )
    return data


def _where(data: dict[str, Any]) -> str:
    return f"sequence length {data['seq_len']}, batch size {data['batch_size']}"


def plot_layers_largest(rs: ResultSet, outfile: str | Path):
    """Per-layer saved bytes, stacked by category, one panel per method, at the largest configuration."""
    data = layers_largest_data(rs)
    title = "Saved activations per layer"
    frames: dict[str, pd.DataFrame] = data["methods"]
    if not frames:
        _empty(outfile, title)
        return data
    groups: list[str] = []
    for frame in frames.values():
        groups += [g for g in frame.index if g not in groups]
    unit, div = unit_for(max(int(f.to_numpy().sum(axis=1).max(initial=0)) for f in frames.values()))
    colors = _colors(list(CATEGORIES))
    fig = _figure(3.6 * len(frames) + 2.4, 0.24 * len(groups) + 1.8)
    axes = fig.subplots(1, len(frames), squeeze=False, sharey=True, sharex=True)[0]
    ys = range(len(groups))
    widest = 0.0
    for ax, (method, frame) in zip(axes, frames.items()):
        frame = frame.reindex(groups, fill_value=0)
        left = [0.0] * len(groups)
        for c in CATEGORIES:
            widths = (frame[c] / div).tolist()
            if any(widths):
                _bars(ax, ys, widths, left, color=colors[c], label=_pretty(c))
                left = [a + b for a, b in zip(left, widths)]
        widest = max(widest, *left)
        ax.set_title(method)
        ax.set_xlabel(f"saved bytes ({unit})")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_xlim(0, widest * 1.05 or 1)
    axes[0].set_ylim(len(groups) - 0.5, -0.5)  # the first group on top
    axes[0].set_yticks(list(ys), groups, fontsize=8)
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(handles.values(), handles.keys(), loc="outside right upper", title="category")
    fig.suptitle(f"{title} ({_where(data)})")
    _save(fig, outfile)
    return data


def _bars(ax, ys, widths: list[float], left: list[float], *, color, label: str, height: float = 0.8) -> None:
    """Horizontal bars as one collection: a bar chart of every layer of a deep model is hundreds of
    rectangles, and one artist each (``barh``) makes drawing them most of a report's time."""
    from matplotlib.collections import PolyCollection

    h = height / 2
    boxes = [[(x0, y - h), (x0 + w, y - h), (x0 + w, y + h), (x0, y + h)] for y, w, x0 in zip(ys, widths, left) if w]
    ax.add_collection(PolyCollection(boxes, facecolors=[color], edgecolors="none", label=label), autolim=False)


def _stacked_methods(
    parts: dict[str, dict[str, int]], keys: tuple[str, ...], outfile, title: str, xlabel: str, marker: str | None = None
) -> None:
    methods = list(parts)
    totals = [max(sum(parts[m][k] for k in keys), parts[m].get(marker, 0) if marker else 0) for m in methods]
    unit, div = unit_for(max(totals, default=0))
    colors = _colors(list(keys))
    fig = _figure(8.5, 0.55 * len(methods) + 1.9)
    ax = fig.subplots()
    left = [0.0] * len(methods)
    for k in keys:
        widths = [parts[m][k] / div for m in methods]
        ax.barh(methods, widths, left=left, color=colors[k], label=_pretty(k), height=0.6)
        left = [a + b for a, b in zip(left, widths)]
    if marker:
        ax.scatter(
            [parts[m][marker] / div for m in methods],
            methods,
            marker="D",
            s=36,
            color="black",
            label=_pretty(marker),
            zorder=3,
        )
    ax.invert_yaxis()
    ax.set_xlim(left=0)
    ax.set_xlabel(f"{xlabel} ({unit})")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8)
    ax.set_title(title)
    _save(fig, outfile)


def plot_peak_breakdown(rs: ResultSet, outfile: str | Path):
    """The peak split into parameters, gradients, optimizer state, activations and temporaries,
    per method, at the largest configuration (a black diamond marks the measured peak)."""
    data = peak_breakdown_data(rs)
    title = "Peak memory by part"
    if not data["methods"]:
        _empty(outfile, title)
        return data
    _stacked_methods(data["methods"], BREAKDOWN, outfile, f"{title} ({_where(data)})", "memory", marker="peak")
    return data


def plot_saved_by_category(rs: ResultSet, outfile: str | Path):
    """Saved activation bytes by category, per method, at the largest configuration."""
    data = saved_by_category_data(rs)
    title = "Saved activations by category"
    if not data["methods"]:
        _empty(outfile, title)
        return data
    _stacked_methods(data["methods"], CATEGORIES, outfile, f"{title} ({_where(data)})", "saved bytes")
    return data


#: file name -> (caption, plot function), in the order the HTML report shows them.
PLOTS: dict[str, tuple[str, Callable[[ResultSet, str | Path], Any]]] = {
    "activations_vs_seq_len.png": ("Peak activation memory vs sequence length", plot_activations_vs_seq_len),
    "activations_vs_batch_size.png": ("Peak activation memory vs batch size", plot_activations_vs_batch_size),
    "layers_largest.png": ("Saved activations per layer at the largest configuration", plot_layers_largest),
    "peak_breakdown.png": ("Peak memory by part at the largest configuration", plot_peak_breakdown),
    "saved_by_category.png": ("Saved activations by category at the largest configuration", plot_saved_by_category),
    "timeline.png": ("Live memory through one step at the largest configuration", plot_timeline),
}


def render(rs: ResultSet, out_dir: str | Path) -> dict[str, Path]:
    """Write every plot into ``out_dir``; returns {file name: path}."""
    out = Path(out_dir)
    paths = {}
    for name, (_, plot) in PLOTS.items():
        plot(rs, out / name)
        paths[name] = out / name
    return paths


def write(rs: ResultSet, out: Path, extras: Extras) -> dict[str, Path]:
    """The reporter interface (NOTE [ One reporter interface ]): ``render``."""
    return render(rs, out)
