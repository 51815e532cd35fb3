"""A formula fitted from profiles, where a trace cannot stay symbolic; and the check that a formula
gives a profile's numbers byte for byte."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from memprof.engines.config import ProfileConfig
from memprof.errors import MemprofError
from memprof.results.formula import AT_PEAK_FIELDS, SUM_FIELDS, Formula
from memprof.results.polynomial import Poly, solve
from memprof.results.result import CATEGORIES, Result

#: the profiles a fitted formula is solved from, and the one that checks it
FIT_POINTS = ((1, 64), (1, 128), (1, 192), (2, 64), (2, 128), (2, 192))
CHECK_POINT = (3, 96)
_B, _S = Poly.var("b"), Poly.var("s")
BASIS = [Poly.const(1), _B, _S, _B * _S, _S * _S, _B * _S * _S]


def fit(config: ProfileConfig, note: str, profile: Callable[[ProfileConfig], Result] | None = None) -> Formula:
    """The formula solved exactly from profiles at ``FIT_POINTS`` and checked at ``CHECK_POINT``."""
    longest = max(s for _, s in (*FIT_POINTS, CHECK_POINT))
    if config.resolved.max_seq_len < longest:
        raise MemprofError(
            f"no formula for {config.backbone} {config.method}: {note.removeprefix('fitted: ')}, and a fit "
            f"profiles sequence lengths up to {longest}, beyond its {config.resolved.max_seq_len} positions; "
            "profile its sizes instead (memprof profile, or memprof compare --profile-all)"
        )
    if profile is None:
        from memprof.engines import ModelCache, run

        cache = ModelCache()

        def profile(c: ProfileConfig) -> Result:
            return run(c, cache)

    measured = {}
    for b, s in (*FIT_POINTS, CHECK_POINT):
        result = profile(replace(config, batch_size=b, seq_len=s))
        if result.status != "ok":
            raise MemprofError(
                f"cannot fit a formula for {config.backbone} {config.method}: the profile at batch size "
                f"{b}, sequence length {s} ended {result.status}: {result.message}"
            )
        measured[(b, s)] = result
    points = list(FIT_POINTS)
    first = measured[points[0]]

    def solved(read: Callable[[Result], int]) -> Poly:
        return solve(points, [read(measured[p]) for p in points], BASIS)

    memory_fields = lambda name: solved(lambda r: getattr(r.memory, name))  # noqa: E731
    modules = list(dict.fromkeys(m for p in points for m in measured[p].layers["module"]))
    layers = [(m, {c: poly for c in CATEGORIES if (poly := solved(_cell(m, c))) != Poly()}) for m in modules]
    formula = Formula(
        backbone=config.backbone,
        method=config.method,
        task=config.task,
        dtype=config.dtype,
        target=config.target,
        attn_implementation=first.attn_implementation,
        how="fitted",
        trainable_params=first.trainable_params,
        total_params=first.total_params,
        sums={name: memory_fields(name) for name in SUM_FIELDS},
        peaks=[{name: memory_fields(name) for name in AT_PEAK_FIELDS}],
        peak_activations=[memory_fields("peak_activations")],
        layers=layers,
        note=note,
        points=points,
        valid=[f"fitted at (b, s) in {', '.join(map(str, points))}; checked at {CHECK_POINT}"],
    )
    disagreement = disagreement_with(formula, measured[CHECK_POINT])
    if disagreement:
        raise MemprofError(
            f"cannot derive a formula for {config.backbone} {config.method} {config.dtype}: fitted from "
            f"{len(points)} profiles, it disagrees with the profile at {CHECK_POINT}: {disagreement}"
        )
    return formula


def _cell(module: str, category: str) -> Callable[[Result], int]:
    def read(r: Result) -> int:
        rows = r.layers[r.layers["module"] == module]
        return int(rows[category].iloc[0]) if len(rows) else 0

    return read


def disagreement_with(formula: Formula, result: Result) -> str:
    """ "" when the formula gives ``result``'s memory and per-module table exactly, else the first
    difference, named."""
    b, s = result.batch_size, result.seq_len
    predicted = formula.memory_at(b, s)
    for name in (*SUM_FIELDS, *AT_PEAK_FIELDS, "peak_activations"):
        want, got = getattr(result.memory, name), getattr(predicted, name)
        if want != got:
            return f"{name}: formula {got:,} bytes, profile {want:,} bytes (batch size {b}, sequence length {s})"
    table = formula.layers_at(b, s)
    measured = result.layers[result.layers["saved_bytes"] != 0].reset_index(drop=True)
    if len(table) != len(measured) or not (table.values == measured.values).all():
        return f"the per-module table differs (batch size {b}, sequence length {s})"
    return ""
