"""Tables: the flat ``results.csv`` and ``layers.csv``, and the summary table every view shares.

Each function turns a ResultSet into a plain DataFrame (tests assert it exactly); ``render`` writes
the CSV files; ``summary_cells`` formats the summary for the Markdown, HTML and terminal views.
Byte counts stay integers here; units are chosen only when formatting.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pandas as pd

from memprof.reporters.base import Extras
from memprof.reporters.exactness import exactness_data
from memprof.results.files import atomic_output
from memprof.results.module_names import layer_group
from memprof.results.result import CATEGORIES, CUDA_ONLY_METRICS, Result, ResultSet
from memprof.units import HEADLINE_METRICS, METRICS, format_bytes, unit_for

ID_COLUMNS = ("backbone", "method", "task", "engine", "target", "dtype", "attn_implementation", "seq_len", "batch_size")
#: The memory columns the summary shows; the reduction against ft is computed for each of these.
SUMMARY_MEMORY = HEADLINE_METRICS
REDUCED = ("peak_activations", "peak")
SUMMARY_COLUMNS = (
    "backbone",
    "engine",
    "target",
    "dtype",
    "method",
    "seq_len",
    "batch_size",
    "status",
    "trainable_params",
    *SUMMARY_MEMORY,
    *(f"{c}_reduction_pct" for c in REDUCED),
    "message",
)


def method_order(rs: ResultSet) -> list[str]:
    """Methods in the order the sweep listed them, then any others in order of appearance."""
    listed = rs.options.get("methods")  # options are free-form: only a list of names is an order
    order = [m for m in listed if isinstance(m, str)] if isinstance(listed, list) else []
    for r in rs.results:
        if r.method not in order:
            order.append(r.method)
    return order


def _sorted(rs: ResultSet) -> list[Result]:
    rank = {m: i for i, m in enumerate(method_order(rs))}
    return sorted(
        rs.results, key=lambda r: (r.backbone, r.dtype, r.engine, r.target, r.seq_len, r.batch_size, rank[r.method])
    )


def results_frame(rs: ResultSet) -> pd.DataFrame:
    """``results.csv``: one row per result, in file order, with flat memory columns (bytes)."""
    rows = []
    for r in rs.results:
        row = {c: getattr(r, c) for c in ID_COLUMNS}
        row.update(status=r.status, message=r.message, trainable_params=r.trainable_params, total_params=r.total_params)
        row.update({c: getattr(r.memory, c) for c in METRICS})
        row["step_time_s"] = r.step_time_s
        rows.append(row)
    columns = [*ID_COLUMNS, "status", "message", "trainable_params", "total_params", *METRICS, "step_time_s"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({c: "Int64" for c in CUDA_ONLY_METRICS}).astype({"step_time_s": "Float64"})


def layers_table(rs: ResultSet) -> pd.DataFrame:
    """``layers.csv``: per-module saved bytes (total and by category) of every configuration."""
    keys = ("backbone", "method", "engine", "target", "dtype", "seq_len", "batch_size")
    parts = []
    for r in rs.results:
        if r.layers.empty:
            continue
        part = r.layers.copy()
        for i, k in enumerate(keys):
            part.insert(i, k, getattr(r, k))
        parts.append(part)
    columns = [*keys, "module", "saved_bytes", *CATEGORIES]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    return pd.concat(parts, ignore_index=True)[columns]


def layers_by_group(layers: pd.DataFrame, depth: int | None = None) -> pd.DataFrame:
    """``Result.layers`` summed into ``module_names.layer_group`` rows, in order of first appearance."""
    if layers.empty:
        return layers.copy()
    keyed = layers.assign(module=[layer_group(m, depth) for m in layers["module"]])
    return (
        keyed.groupby("module", sort=False, as_index=False)
        .sum(numeric_only=True)
        .astype({c: "int64" for c in layers.columns if c != "module"})
    )


def reduction_pct(value: int, baseline: int) -> float:
    """How much smaller ``value`` is than ``baseline``, in percent (negative: larger)."""
    if not baseline:
        return math.nan
    return 100.0 * (baseline - value) / baseline


def summary_frame(rs: ResultSet) -> pd.DataFrame:
    """The summary table: one row per configuration, grouped by (sequence length, batch size), with
    each method's reduction against ``ft`` at the same configuration (NaN without an ok ft result).
    Memory of configurations that did not finish is NA."""

    def base_key(r: Result) -> tuple:
        return (r.backbone, r.seq_len, r.batch_size, r.dtype, r.engine, r.target)

    ft = {base_key(r): r for r in rs.results if r.method == "ft" and r.status == "ok"}
    rows = []
    for r in _sorted(rs):
        ok = r.status == "ok"
        row = {c: getattr(r, c) for c in SUMMARY_COLUMNS[:8]}  # backbone ... status
        row["trainable_params"] = r.trainable_params if ok else None
        row.update({c: getattr(r.memory, c) if ok else None for c in SUMMARY_MEMORY})
        base = ft.get(base_key(r))
        for c in REDUCED:
            row[f"{c}_reduction_pct"] = (
                reduction_pct(getattr(r.memory, c), getattr(base.memory, c)) if ok and base is not None else math.nan
            )
        row["message"] = r.message
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    return frame.astype({c: "Int64" for c in ("trainable_params", *SUMMARY_MEMORY)}).astype(
        {f"{c}_reduction_pct": "float64" for c in REDUCED}
    )


def largest_config(rs: ResultSet) -> tuple[int, int] | None:
    """(seq_len, batch_size) of the largest configuration with an ok result: most tokens, then
    the longest sequence; None if nothing finished."""
    ok = [(r.seq_len * r.batch_size, r.seq_len, r.batch_size) for r in rs.results if r.status == "ok"]
    if not ok:
        return None
    _, seq, batch = max(ok)
    return seq, batch


def headline_frame(rs: ResultSet) -> pd.DataFrame:
    """The summary's rows at the largest configuration: one per method."""
    frame = summary_frame(rs)
    largest = largest_config(rs)
    if largest is None:
        return frame.iloc[0:0]
    seq, batch = largest
    return frame[(frame.seq_len == seq) & (frame.batch_size == batch)].reset_index(drop=True)


def render(rs: ResultSet, out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.csv`` and ``layers.csv`` into ``out_dir``."""
    out = Path(out_dir)
    paths = {"results.csv": out / "results.csv", "layers.csv": out / "layers.csv"}
    # every text cell quoted: QUOTE_MINIMAL leaves a carriage return in a message unquoted, which ends the row
    for name, frame in (("results.csv", results_frame(rs)), ("layers.csv", layers_table(rs))):
        with atomic_output(paths[name]) as tmp:
            csv_safe(frame).to_csv(tmp, index=False, quoting=csv.QUOTE_NONNUMERIC)
    return paths


# NOTE [ CSV formula injection ]
# A spreadsheet runs a cell that starts with =, +, - or @ (and, in some, a tab or carriage return)
# as a formula, and backbone names, messages and labels are user text: a backbone called
# '=HYPERLINK("http://x", "ok")' would run when results.csv is opened. OWASP's remedy: a single
# quote before such a text cell, which spreadsheets show as text. Only text cells: numbers
# (negative ones included) stay numbers, so the CSV still reads back with its dtypes.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell a spreadsheet would run as a formula quoted (NOTE [ CSV
    formula injection ]); numbers and other cells as they are."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column].dtype):
            quoted = [f"'{v}" if isinstance(v, str) and v.startswith(_FORMULA_START) else v for v in out[column]]
            out[column] = pd.Series(quoted, index=out.index, dtype=out[column].dtype)
    return out


# ---------------------------------------------------------------------------------------------
# Formatting, shared by the Markdown, HTML and terminal views


def fmt_pct(value) -> str:
    if value is None or value is pd.NA or math.isnan(value):
        return "—"
    return f"{value:.1f}"


def fmt_params(value) -> str:
    if value is None or value is pd.NA:
        return "—"
    return f"{value / 1e6:,.2f} M"


def summary_cells(frame: pd.DataFrame, *, per_config: bool = True) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells of a summary (or headline) frame; each memory column in its own
    unit (MiB or GiB, by that column's largest value), named in its header.

    ``per_config`` adds the sequence length and batch size columns (the full table).
    """
    units = {c: unit_for(max(frame[c].dropna().tolist(), default=0)) for c in SUMMARY_MEMORY}
    headers = ["method"]
    if per_config:
        headers += ["seq len", "batch"]
    headers += ["status", "trainable params"]
    headers += [f"{c.replace('_', ' ')} ({units[c][0]})" for c in SUMMARY_MEMORY]
    headers += [f"{c.replace('_', ' ')} reduction vs ft (%)" for c in REDUCED]
    rows = []
    for rec in frame.to_dict("records"):
        row = [rec["method"]]
        if per_config:
            row += [str(rec["seq_len"]), str(rec["batch_size"])]
        row.append(rec["status"] if rec["status"] == "ok" else f"{rec['status']}: {rec['message']}".rstrip(": "))
        row += [fmt_params(rec["trainable_params"]), *(format_bytes(rec[c], units[c]) for c in SUMMARY_MEMORY)]
        row += [fmt_pct(rec[f"{c}_reduction_pct"]) for c in REDUCED]
        rows.append(row)
    return headers, rows


#: Columns of ``summary_cells`` and ``exactness.exactness_cells`` holding text (left-aligned); the others are numbers.
TEXT_HEADERS = ("method", "status", "float twin")


def describe(rs: ResultSet) -> dict[str, str]:
    """What the results were measured with: backbone, engine, target, dtype, attention (each value
    listed once; several only when the file mixes sweeps)."""

    def values(attr: str) -> str:
        seen: list[str] = []
        for r in rs.results:
            v = str(getattr(r, attr))
            if v not in seen:
                seen.append(v)
        return ", ".join(seen) if seen else str(rs.options.get(attr, "") or "")

    return {
        "backbone": values("backbone"),
        "engine": values("engine"),
        "target": values("target"),
        "dtype": values("dtype"),
        "attention": values("attn_implementation"),
        "task": values("task"),
    }


def summary_data(rs: ResultSet) -> dict[str, Any]:
    """Everything ``summary.md`` shows, as plain data (formatted cells)."""
    frame = summary_frame(rs)
    statuses = frame["status"].value_counts().to_dict()
    largest = largest_config(rs)
    return {
        "about": describe(rs),
        "counts": {"total": len(frame), **{s: int(n) for s, n in statuses.items()}},
        "largest": largest,
        "headline": summary_cells(headline_frame(rs), per_config=False),
        "table": summary_cells(frame),
        "exactness": exactness_data(rs, method_order(rs)),
        "command": rs.command,
    }


def summary_sentence(data: dict[str, Any]) -> str:
    """The line every view opens with: what measured, how many configurations, how many did not finish."""
    about, counts = data["about"], data["counts"]
    failed = ", ".join(f"{n} {s}" for s, n in counts.items() if s not in ("total", "ok"))
    return (
        f"Engine {about['engine']}, target {about['target']}, dtype {about['dtype']}, attention "
        f"{about['attention']}; {counts['total']} configurations, {counts.get('ok', 0)} ok"
        + (f", {failed}" if failed else "")
        + "."
    )


def write(rs: ResultSet, out: Path, extras: Extras) -> dict[str, Path]:
    """The reporter interface (NOTE [ One reporter interface ]): ``render``."""
    return render(rs, out)
