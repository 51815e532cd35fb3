"""The step over time, as PyTorch's memory snapshot viewer shows it: live memory through forward,
backward and the optimizer step, stacked by part (parameters, gradients, optimizer state,
activations, temporaries), one panel per method at the largest configuration, the peak marked.

It draws ``Result.timeline`` (NOTE [ A compact timeline ] in memprof.results.timeline): the points are
states of the step as measured, so the marked peak is ``Memory.peak`` to the byte.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from memprof.reporters.canvas import _colors, _empty, _figure, _save
from memprof.reporters.table import method_order
from memprof.results.formula import EVALUATED_KEY
from memprof.results.result import Result, ResultSet
from memprof.results.timeline import KINDS, PHASES
from memprof.units import format_bytes, unit_for

TITLE = "Live memory through one step"
#: panels per row
COLUMNS = 3


def _with_timeline(rs: ResultSet) -> list[Result]:
    return [r for r in rs.results if r.status == "ok" and r.timeline is not None]


def timeline_data(rs: ResultSet) -> dict[str, Any]:
    """What the plot draws, at the largest configuration whose results hold a timeline (most tokens,
    then the longest sequence): ``{"seq_len", "batch_size", "methods": {method: {"event": [...],
    "parts": {kind: [bytes, ...]}, "phases": {phase: event}, "events": n, "peak": {"event",
    "bytes", "phase"}}}}``, methods in the report's order."""
    found = _with_timeline(rs)
    if not found:
        return {"seq_len": None, "batch_size": None, "methods": {}}
    _, seq, batch = max((r.seq_len * r.batch_size, r.seq_len, r.batch_size) for r in found)
    chosen = {r.method: r.timeline for r in found if (r.seq_len, r.batch_size) == (seq, batch)}
    methods = {}
    for method in (m for m in method_order(rs) if m in chosen):
        tl = chosen[method]
        methods[method] = {
            "event": list(tl.event),
            "parts": {k: list(tl.live[k]) for k in KINDS},
            "phases": dict(tl.phases),
            "events": tl.events,
            "peak": {"event": tl.event[tl.peak_point], "bytes": tl.peak, "phase": tl.peak_phase},
        }
    return {"seq_len": seq, "batch_size": batch, "methods": methods}


def _phase_spans(phases: dict[str, int], events: int) -> list[tuple[str, int, int]]:
    """(phase, first event, last event) for each phase the step went through, in order."""
    starts = sorted((at, name) for name, at in phases.items() if name in PHASES)
    ends = [at for at, _ in starts[1:]] + [phases.get("end", events)]
    return [(name, at, end) for (at, name), end in zip(starts, ends) if end > at]


def _panel(ax, method: str, d: dict[str, Any], div: float, colors: dict[str, Any]) -> None:
    from matplotlib.transforms import blended_transform_factory

    x = d["event"]
    ax.stackplot(
        x,
        *[[b / div for b in d["parts"][k]] for k in KINDS],
        labels=[k.replace("_", " ") for k in KINDS],
        colors=[colors[k] for k in KINDS],
        linewidth=0,
    )
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for i, (name, start, end) in enumerate(_phase_spans(d["phases"], d["events"])):
        if i % 2:  # every other phase shaded, so that each boundary shows
            ax.axvspan(start, end, color="0.5", alpha=0.12, linewidth=0)
        ax.text((start + end) / 2, 0.98, name, transform=top, ha="center", va="top", fontsize=8, color="0.25")
    peak = d["peak"]
    ax.plot(
        [peak["event"]],
        [peak["bytes"] / div],
        marker="v",
        markersize=8,
        color="black",
        linestyle="none",
        gid="peak",
        zorder=4,
    )
    ax.annotate(
        f"peak {format_bytes(peak['bytes'])} ({peak['phase']})",
        (peak["event"], peak["bytes"] / div),
        textcoords="offset points",
        xytext=(0, 8),
        ha="center",
        fontsize=8,
    )
    ax.set_title(method)
    ax.set_xlim(0, max(d["events"], 1))
    ax.set_xlabel("allocation and free events")
    ax.grid(alpha=0.3)


def timeline_figure(data: dict[str, Any]):
    """The figure of ``timeline_data``: a panel per method, a shared y axis in one unit, the peak
    marked (a line with gid ``peak``: at the peak's event and bytes in that unit)."""
    methods = data["methods"]
    highest = max(d["peak"]["bytes"] for d in methods.values())
    unit, div = unit_for(highest)
    colors = _colors(list(KINDS))
    cols = min(COLUMNS, len(methods))
    rows = math.ceil(len(methods) / cols)
    fig = _figure(4.2 * cols + 1.6, 3.3 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    for ax, (method, d) in zip(axes, methods.items()):
        _panel(ax, method, d, div, colors)
    axes[0].set_ylim(0, 1.18 * highest / div)  # room above the peak for its label and the phase names
    for ax in axes[len(methods) :]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel(f"live memory ({unit})")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8, title="part")
    fig.suptitle(f"{TITLE} (sequence length {data['seq_len']}, batch size {data['batch_size']})")
    return fig


def plot_timeline(rs: ResultSet, outfile: str | Path):
    """Draw ``timeline_data(rs)`` into ``outfile`` (PNG); returns the data."""
    data = timeline_data(rs)
    if not data["methods"]:
        # results written before timelines were recorded (schema version 2) have none, nor does a
        # result evaluated from a closed form
        finished = any(r.status == "ok" for r in rs.results)
        text = "no finished configuration holds a timeline" if finished else "no configuration finished"
        if any(EVALUATED_KEY in r.environment for r in rs.results):
            text += (
                "\n(results evaluated from closed forms hold none:\nmemprof compare --profile-all, or memprof profile)"
            )
        _empty(outfile, TITLE, text)
        return data
    _save(timeline_figure(data), outfile)
    return data
