"""A closed-form memory formula: one training step's byte counts as exact polynomials in batch size
``b`` and sequence length ``s`` (``memprof formula``; ``memprof compare`` evaluates it).

``memprof.engines.symbolic`` derives it, from one fake-tensor trace with symbolic ``b`` and ``s``
(``how == "symbolic"``; for a deep model traces of shallow copies, composed: ``note`` says so) or,
where the trace cannot stay symbolic, by solving for the coefficients
from a few exact profiles (``how == "fitted"``, ``note`` says why). Like a Result, it only holds
numbers: evaluating it at ``(b, s)`` gives the Memory and the per-module table a profile of that
configuration gives.

Sums are polynomials; a peak is the largest of a few polynomials (``peaks``: every event of the
step that can be the peak for some ``b, s``; the first of them wins a tie, as in the replay of a
measured step), each with the split of live memory at that moment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from memprof.errors import MemprofError
from memprof.results.conditions import holds
from memprof.results.module_names import layer_group
from memprof.results.polynomial import Poly, max_at
from memprof.results.result import CATEGORIES, LAYER_COLUMNS, Memory, empty_layers

FORMULA_VERSION = 1
#: keys of ``Result.environment``: the formula a result was evaluated from ("symbolic" or "fitted");
#: why a result was profiled although its sweep answered from closed forms
EVALUATED_KEY, FALLBACK_KEY = "closed_form", "closed_form_fallback"
HOWS = ("symbolic", "fitted")
#: Memory fields that are sums (one polynomial each)
SUM_FIELDS = ("parameters", "saved_activations", "unattributed")
#: Memory fields read at the peak (one polynomial per peak candidate)
AT_PEAK_FIELDS = ("peak", "gradients", "optimizer_state", "temporaries", "activations_at_peak")


@dataclass
class Formula:
    backbone: str
    method: str
    task: str
    dtype: str
    target: str
    attn_implementation: str
    how: str
    trainable_params: int
    total_params: int
    #: parameters, saved_activations, unattributed
    sums: dict[str, Poly]
    #: candidates for the peak: each a dict of AT_PEAK_FIELDS -> Poly
    peaks: list[dict[str, Poly]]
    #: candidates for peak_activations
    peak_activations: list[Poly]
    #: (module, {category: Poly}) in the order a profile lists them
    layers: list[tuple[str, dict[str, Poly]]]
    #: conditions the trace assumed (``s <= 512``: the position table), as text
    valid: list[str] = field(default_factory=list)
    #: why the formula was fitted rather than traced, or how a symbolic one was composed from
    #: shallow copies of the model (``memprof.engines.composition``); "" for one whole trace
    note: str = ""
    #: the (b, s) points profiled to fit it, or the trace's example sizes
    points: list[tuple[int, int]] = field(default_factory=list)
    #: where it holds: ``b >= b_min``, ``s_min <= s <= s_max`` (``s_max`` 0: no bound known)
    bounds: dict[str, int] = field(default_factory=lambda: {"b_min": 1, "s_min": 1, "s_max": 0})

    def __post_init__(self) -> None:
        if self.how not in HOWS:
            raise MemprofError(f"formula how={self.how!r} is not one of {', '.join(HOWS)}")
        if not self.peaks or not self.peak_activations:
            raise MemprofError("a formula needs at least one peak candidate; regenerate it with memprof formula")

    # -- evaluation ------------------------------------------------------------------------

    def covers(self, b: int, s: int) -> bool:
        """Whether ``(b, s)`` lies where the formula holds: within ``bounds``, and every condition of
        ``valid`` true there (NOTE [ Conditions a formula holds under ], memprof/results/conditions.py)."""
        return self.within_bounds(b, s) and not self.failing(b, s)

    def within_bounds(self, b: int, s: int) -> bool:
        lo_b, lo_s, hi_s = self.bounds["b_min"], self.bounds["s_min"], self.bounds["s_max"]
        return b >= lo_b and s >= lo_s and (hi_s == 0 or s <= hi_s)

    def failing(self, b: int, s: int) -> list[str]:
        """The conditions of ``valid`` that are not true at ``(b, s)`` (or cannot be read)."""
        return [c for c in self.valid if not holds(c, b, s)]

    @property
    def bounds_text(self) -> str:
        hi = self.bounds["s_max"]
        return f"b >= {self.bounds['b_min']}, s >= {self.bounds['s_min']}" + (f", s <= {hi}" if hi else "")

    def memory_at(self, b: int, s: int) -> Memory:
        """The Memory a profile at batch size ``b`` and sequence length ``s`` measures."""
        i, _ = max_at([c["peak"] for c in self.peaks], b, s)
        _, peak_act = max_at(self.peak_activations, b, s)
        at_peak = {name: _int(poly(b, s), name) for name, poly in self.peaks[i].items()}
        sums = {name: _int(poly(b, s), name) for name, poly in self.sums.items()}
        return Memory(**sums, **at_peak, peak_activations=_int(peak_act, "peak_activations"))

    def layers_at(self, b: int, s: int) -> pd.DataFrame:
        """``Result.layers`` at ``(b, s)``: modules whose saved bytes are 0 there are left out."""
        rows = []
        for module, cats in self.layers:
            row = {c: _int(cats[c](b, s), c) if c in cats else 0 for c in CATEGORIES}
            total = sum(row.values())
            if total:
                rows.append({"module": module, "saved_bytes": total, **row})
        if not rows:
            return empty_layers()
        return pd.DataFrame(rows, columns=list(LAYER_COLUMNS)).astype({c: "int64" for c in LAYER_COLUMNS[1:]})

    def saved_by_module(self) -> list[tuple[str, Poly]]:
        """Each module's saved bytes as one polynomial."""
        return [(module, sum(cats.values(), Poly())) for module, cats in self.layers]

    def saved_by_layer(self) -> list[tuple[str, Poly]]:
        """Saved bytes per layer row (``module_names.layer_group``), runs of layers with the same
        polynomial joined (``encoder.layer.0-11``, each)."""
        groups: dict[str, Poly] = {}
        for module, poly in self.saved_by_module():
            group = layer_group(module)
            groups[group] = groups.get(group, Poly()) + poly
        rows: list[tuple[str, Poly]] = []
        run: list[tuple[str, str, Poly]] = []  # (prefix, number, poly) of the current run
        for group, poly in [*groups.items(), ("", Poly())]:
            m = re.fullmatch(r"(.*\.)(\d+)", group)
            if run and m and m.group(1) == run[0][0] and poly == run[0][2]:
                run.append((m.group(1), m.group(2), poly))
                continue
            if run:
                prefix, first, p = run[0]
                name = f"{prefix}{first}" if len(run) == 1 else f"{prefix}{first}-{run[-1][1]} (each)"
                rows.append((name, p))
                run = []
            if m:
                run = [(m.group(1), m.group(2), poly)]
            elif group:
                rows.append((group, poly))
        return rows

    def peak_regimes(self, points: list[tuple[int, int]]) -> list[tuple[int, tuple[int, int]]]:
        """Which peak candidates are the peak at ``points``: (candidate index, first point where it is)."""
        seen: dict[int, tuple[int, int]] = {}
        for b, s in points:
            i, _ = max_at([c["peak"] for c in self.peaks], b, s)
            seen.setdefault(i, (b, s))
        return sorted(seen.items(), key=lambda kv: kv[0])

    @property
    def peak_expression(self) -> str:
        """The peak as text: one polynomial, or ``max(p1, p2, ...)``."""
        return _max_text([c["peak"] for c in self.peaks])

    @property
    def peak_activations_expression(self) -> str:
        return _max_text(self.peak_activations)

    # -- JSON ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        polys = [
            *self.sums.values(),
            *self.peak_activations,
            *(p for c in self.peaks for p in c.values()),
            *(p for _, cats in self.layers for p in cats.values()),
        ]
        floors: dict[str, dict] = {}
        for p in polys:
            floors.update(p.floors())
        return {
            "formula_version": FORMULA_VERSION,
            "backbone": self.backbone,
            "method": self.method,
            "task": self.task,
            "dtype": self.dtype,
            "target": self.target,
            "attn_implementation": self.attn_implementation,
            "how": self.how,
            "note": self.note,
            "valid": list(self.valid),
            "points": [list(p) for p in self.points],
            "bounds": dict(self.bounds),
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "floors": floors,
            "sums": {k: p.to_json() for k, p in self.sums.items()},
            "peaks": [{k: p.to_json() for k, p in c.items()} for c in self.peaks],
            "peak_activations": [p.to_json() for p in self.peak_activations],
            "layers": [
                {"module": m, "categories": {c: p.to_json() for c, p in cats.items()}} for m, cats in self.layers
            ],
            "text": {
                "saved_activations": str(self.sums["saved_activations"]),
                "peak": self.peak_expression,
                "peak_activations": self.peak_activations_expression,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Formula:
        version = data.get("formula_version")
        if version != FORMULA_VERSION:
            raise MemprofError(
                f"formula_version {version!r} is not {FORMULA_VERSION}; regenerate it with memprof formula"
            )
        floors = data.get("floors", {})

        def poly(x: Any) -> Poly:
            return Poly.from_json(x, floors)

        return cls(
            backbone=data["backbone"],
            method=data["method"],
            task=data["task"],
            dtype=data["dtype"],
            target=data["target"],
            attn_implementation=data["attn_implementation"],
            how=data["how"],
            trainable_params=int(data["trainable_params"]),
            total_params=int(data["total_params"]),
            sums={k: poly(v) for k, v in data["sums"].items()},
            peaks=[{k: poly(v) for k, v in c.items()} for c in data["peaks"]],
            peak_activations=[poly(p) for p in data["peak_activations"]],
            layers=[(rec["module"], {c: poly(p) for c, p in rec["categories"].items()}) for rec in data["layers"]],
            valid=list(data.get("valid", [])),
            note=data.get("note", ""),
            points=[tuple(p) for p in data.get("points", [])],
            bounds={k: int(v) for k, v in data.get("bounds", {"b_min": 1, "s_min": 1, "s_max": 0}).items()},
        )


def _int(value: Any, name: str) -> int:
    if int(value) != value:
        raise MemprofError(
            f"the formula gives a fraction of a byte for {name} ({value}); it was fitted from too few "
            "profiles: regenerate it with memprof formula"
        )
    return int(value)


def _max_text(polys: list[Poly]) -> str:
    return str(polys[0]) if len(polys) == 1 else "max(" + ", ".join(map(str, polys)) + ")"
