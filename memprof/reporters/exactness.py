"""What exactness costs: each exact MEFT result beside its float twin at the same configuration.

MEFT's exact arithmetic (``meft1``, ``meft2``, ``meft3``; ``meft`` is ``meft1``) carries integer
fixed-point streams and keeps the low bits each scaling drops (saved-activation category
``reversible_bits``); its ``-float`` twin keeps nothing (``memprof/methods/meft.py``). Where a
ResultSet holds both at one configuration, ``summary.md`` and ``report.html`` show the exact peak
against the float one, their ratio, the kept bits and how the temporaries at the peak differ.

NOTE [Exact and float twins]: a method pairs with ``<the method it stands for>-float`` at the same
``KEY_FIELDS`` but the method: ``meft1`` with ``meft1-float``, and ``meft``, which stands for
``meft1``, with ``meft1-float`` too. Which name stands for which is the method registry's
(``alias_of``), but the registry sits above the reporters (``tests/test_layering.py``) and a
reporter reads only results, so ``ALIASES`` repeats the aliases that have a float twin;
``tests/memprof/test_exactness_cost.py`` checks it against the registry. A pair with a result that
did not finish is left out of the table and named below it.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from memprof.results.result import KEY_FIELDS, Result, ResultSet
from memprof.units import format_bytes, unit_for

TITLE = "What exactness costs"
INTRO = (
    "Each exact MEFT method beside its float twin at the same sequence length and batch size: the exact "
    "method keeps the bits each scaling drops (saved-activation category reversible_bits), the float one "
    "keeps none. Peak ratio is exact / float."
)
#: the aliases of methods with a float twin, as the method registry has them (NOTE [Exact and float twins])
ALIASES = {"meft": "meft1"}
#: what a pair shares: every ``KEY_FIELDS`` but the method
SAME_CONFIG = tuple(f for f in KEY_FIELDS if f != "method")
#: order of the rows: by configuration, as the summary table groups it, then the sweep's method order
_ROW_ORDER = ("backbone", "dtype", "engine", "target", "step", "seq_len", "batch_size")
COLUMNS = (
    *_ROW_ORDER,
    "method",
    "float_method",
    "peak",
    "float_peak",
    "peak_ratio",
    "reversible_bits",
    "temporaries_difference",
)


def float_twin(method: str) -> str:
    """The name of ``method``'s float twin: ``meft1`` and ``meft`` -> ``meft1-float`` (NOTE [Exact
    and float twins])."""
    return f"{ALIASES.get(method, method)}-float"


def exactness_pairs(rs: ResultSet, order: list[str] | None = None) -> list[tuple[Result, Result]]:
    """Every (exact result, its float twin's result) at one configuration, whatever their status;
    by configuration, then by ``order`` (method names; the order of appearance without it)."""

    def where(r: Result) -> tuple:
        return tuple(getattr(r, f) for f in SAME_CONFIG)

    by_key = {(r.method, where(r)): r for r in rs.results}
    pairs = [(r, t) for r in rs.results if (t := by_key.get((float_twin(r.method), where(r)))) is not None]
    rank: dict[str, int] = {}
    for m in [*(order or []), *(r.method for r in rs.results)]:
        rank.setdefault(m, len(rank))
    return sorted(pairs, key=lambda p: (*(getattr(p[0], f) for f in _ROW_ORDER), p[0].loss, rank[p[0].method]))


def exactness_frame(pairs: list[tuple[Result, Result]]) -> pd.DataFrame:
    """One row per pair whose results are both ok: the exact method's step peak and the float twin's
    (bytes), their ratio, the exact method's ``reversible_bits`` (summed over ``Result.layers``) and
    its temporaries at the peak less the float twin's."""
    rows = []
    for exact, float_ in pairs:
        if exact.status != "ok" or float_.status != "ok":
            continue
        row = {f: getattr(exact, f) for f in _ROW_ORDER}
        row.update(
            method=exact.method,
            float_method=float_.method,
            peak=exact.memory.peak,
            float_peak=float_.memory.peak,
            peak_ratio=exact.memory.peak / float_.memory.peak if float_.memory.peak else float("nan"),
            reversible_bits=int(exact.layers["reversible_bits"].sum()),
            temporaries_difference=exact.memory.temporaries - float_.memory.temporaries,
        )
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype({c: "int64" for c in ("peak", "float_peak", "reversible_bits", "temporaries_difference")})


def skipped_pairs(pairs: list[tuple[Result, Result]]) -> list[str]:
    """The pairs ``exactness_frame`` leaves out, in words: ``meft1 at sequence length 256, batch size 4
    (meft1-float: oom)``."""
    out = []
    for exact, float_ in pairs:
        failed = [f"{r.method}: {r.status}" for r in (exact, float_) if r.status != "ok"]
        if failed:
            out.append(
                f"{exact.method} at sequence length {exact.seq_len}, batch size {exact.batch_size} "
                f"({', '.join(failed)})"
            )
    return out


def _signed(n: int, unit: tuple[str, int]) -> str:
    return ("+" if n > 0 else "") + format_bytes(n, unit)


def _ratio(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.3f}"


def exactness_cells(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells of ``exactness_frame``; the two peaks share a unit, the other
    byte columns each have their own (MiB or GiB, ``unit_for``), named in the header."""
    peak = unit_for(max([*frame["peak"], *frame["float_peak"]], default=0))
    bits = unit_for(max(frame["reversible_bits"], default=0))
    temps = unit_for(max(frame["temporaries_difference"].abs(), default=0))
    headers = [
        "method",
        "float twin",
        "seq len",
        "batch",
        f"peak ({peak[0]})",
        f"float twin peak ({peak[0]})",
        "peak ratio (exact / float)",
        f"reversible bits ({bits[0]})",
        f"temporaries at peak, exact − float ({temps[0]})",
    ]
    rows = [
        [
            rec["method"],
            rec["float_method"],
            str(rec["seq_len"]),
            str(rec["batch_size"]),
            format_bytes(rec["peak"], peak),
            format_bytes(rec["float_peak"], peak),
            _ratio(rec["peak_ratio"]),
            format_bytes(rec["reversible_bits"], bits),
            _signed(rec["temporaries_difference"], temps),
        ]
        for rec in frame.to_dict("records")
    ]
    return headers, rows


def exactness_data(rs: ResultSet, order: list[str] | None = None) -> dict[str, Any] | None:
    """The section as plain data: ``{"table": (headers, rows), "skipped": [pairs in words]}``; None
    when ``rs`` holds no pair (the section is left out)."""
    pairs = exactness_pairs(rs, order)
    if not pairs:
        return None
    return {"table": exactness_cells(exactness_frame(pairs)), "skipped": skipped_pairs(pairs)}


def skipped_note(data: dict[str, Any]) -> str:
    """The footnote under the table, "" when nothing was skipped."""
    if not data["skipped"]:
        return ""
    return "Left out, a result not ok: " + "; ".join(data["skipped"]) + "."
