"""The regression gate: compare current results with a committed baseline.

``compare(current, baseline, tolerance=0.02, metrics=DEFAULT_METRICS)`` matches configurations by
``Result.key`` (backbone, method, sequence length, batch size, dtype, engine, target) and returns a
``GateReport``: plain data, one ``GateRow`` per (configuration x metric), plus the configurations
found on one side only and warnings (library versions or settings that differ between the two
sides). It never prints; ``memprof.cli.check`` renders it and turns it into an exit code, and
``memprof.checks.gate_markdown.gate_markdown(report)`` renders it for a pull-request comment or a CI
job summary.

NOTE [ Verdicts ]
    For a metric measured on both sides, with ``change = (current - baseline) / baseline``:
    ``regression`` when change > tolerance, ``improvement`` when change < -tolerance, ``ok``
    otherwise. A baseline of 0 bytes that grew is a regression whatever the tolerance (the relative
    change is infinite). When either side's status is not ``ok`` the configuration gets one row,
    metric ``status``: ``failed`` if the baseline was ok (this fails the gate), ``fixed`` if only the
    baseline was not ok, ``still <status>`` if neither was.

    ``unmeasured`` (passes) is for one case only: a CUDA-only metric (``CUDA_ONLY_METRICS``:
    cuda_max_allocated, cuda_max_reserved, nvml_used) that is None on a side because that side's
    engine does not measure it: the fake and cpu engines measure none of the three, the cuda engine
    always measures cuda_max_allocated and cuda_max_reserved and nvml_used only where pynvml is
    installed (the result's engine looked up in ``ALWAYS_MEASURED``, which the results layer keeps,
    so the gate loads no engine). Every other value of a compared metric of an ok result that is not
    a whole number of bytes from 0 to 2**63 - 1 is unusable input, and ``compare`` raises MemprofError
    naming the side (and its file), the configuration and the metric, rather than pass or fail on it: None (or no
    such attribute) for a metric the engine always measures, NaN, infinity, a negative number, a
    fraction, a string, a boolean. (A NaN compares false with everything: treated as a number it
    would pass the gate on the current side, and disable the check on the baseline side.) A status
    other than ``ok``, ``oom`` or ``error`` is unusable input too. ``load_results`` refuses all of
    these in a file already (NOTE [ Reading results ] in memprof.results.result); ``compare`` checks again
    because it also takes ResultSets built in Python.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd

from memprof.errors import MemprofError
from memprof.outputs import results_file
from memprof.results.files import read_json
from memprof.results.result import (
    ALWAYS_MEASURED,
    CUDA_ONLY_METRICS,
    KEY_FIELDS,
    STATUSES,
    Result,
    ResultSet,
    empty_layers,
    key_label,
    load_results,
    write_json,
)
from memprof.results.schema import MAX_COUNT, describe_value
from memprof.units import HEADLINE_METRICS, METRICS, format_bytes

DEFAULT_METRICS = HEADLINE_METRICS
DEFAULT_TOLERANCE = 0.02
#: The largest tolerance accepted: beyond it a memory gate no longer gates anything.
MAX_TOLERANCE = 0.5
#: Libraries whose version can move the numbers; a change between the two sides is a warning.
VERSIONED = ("torch", "transformers", "peft")
#: Result fields outside the key that change the numbers when they differ for the same key.
SETTINGS = ("task", "attn_implementation")

FAILING = ("regression", "failed")


def parse_tolerance(text: str | float) -> float:
    """``"2%"``, ``"2"`` (a string is always percent) or a fraction ``0.02`` -> a fraction in ``[0, MAX_TOLERANCE]``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*(-?[0-9]*\.?[0-9]+)\s*%?\s*", str(text))
        if not match:
            raise MemprofError(
                f"tolerance {text!r} is not a percentage from 0% to {MAX_TOLERANCE:.0%}; pass e.g. --tolerance 2%"
            )
        value = float(match.group(1)) / 100
    if not 0 <= value <= MAX_TOLERANCE or math.isnan(value):
        raise MemprofError(f"tolerance {text!r} is outside 0% to {MAX_TOLERANCE:.0%}; pass e.g. --tolerance 2%")
    return value


def parse_metrics(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"saved_activations,peak"`` -> a tuple of Memory field names, each checked."""
    names = [m.strip() for m in (text.split(",") if isinstance(text, str) else text)]
    names = [m for m in names if m]
    if not names:
        raise MemprofError(f"no metric given; pass e.g. --metrics {','.join(DEFAULT_METRICS)}")
    for m in names:
        if m not in METRICS:
            raise MemprofError(f"unknown metric {m!r}; use one or more of {', '.join(METRICS)}, separated by commas")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class GateRow:
    """One (configuration x metric) comparison; ``baseline``/``current`` are bytes or None."""

    key: tuple
    metric: str
    baseline: int | None
    current: int | None
    verdict: str
    baseline_status: str = "ok"
    current_status: str = "ok"

    @property
    def label(self) -> str:
        return key_label(self.key)

    @property
    def delta(self) -> int | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline

    @property
    def change(self) -> float | None:
        """Relative change; ``inf`` for growth from 0, None when not measured on both sides."""
        if self.delta is None:
            return None
        if self.baseline == 0:
            return 0.0 if self.current == 0 else math.inf
        return self.delta / self.baseline


@dataclass
class GateReport:
    rows: list[GateRow]
    only_baseline: list[tuple] = field(default_factory=list)
    only_current: list[tuple] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tolerance: float = DEFAULT_TOLERANCE
    metrics: tuple[str, ...] = DEFAULT_METRICS

    def with_verdict(self, *verdicts: str) -> list[GateRow]:
        return [r for r in self.rows if r.verdict in verdicts]

    @property
    def failures(self) -> list[GateRow]:
        return self.with_verdict(*FAILING)

    @property
    def improvements(self) -> list[GateRow]:
        return self.with_verdict("improvement", "fixed")

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def compared(self) -> int:
        return len({r.key for r in self.rows})

    def frame(self) -> pd.DataFrame:
        """One row per (configuration x metric): key columns, metric, bytes, change and verdict."""
        records = [
            {
                **dict(zip(KEY_FIELDS, r.key)),
                "metric": r.metric,
                "baseline": r.baseline,
                "current": r.current,
                "delta": r.delta,
                "change": r.change,
                "verdict": r.verdict,
                "baseline_status": r.baseline_status,
                "current_status": r.current_status,
            }
            for r in self.rows
        ]
        columns = [
            *KEY_FIELDS,
            "metric",
            "baseline",
            "current",
            "delta",
            "change",
            "verdict",
            "baseline_status",
            "current_status",
        ]
        return pd.DataFrame(records, columns=columns)

    def to_dict(self) -> dict:
        """Plain JSON-able data (``memprof check --json``): the verdict, the settings, one record per
        row as in ``frame`` (``change`` null where it is infinite: growth from 0 bytes, see
        ``delta``), the one-sided configurations as key records, the warnings and the summary line."""
        rows = [
            {
                **dict(zip(KEY_FIELDS, r.key)),
                "metric": r.metric,
                "baseline": r.baseline,
                "current": r.current,
                "delta": r.delta,
                "change": None if r.change == math.inf else r.change,
                "verdict": r.verdict,
                "baseline_status": r.baseline_status,
                "current_status": r.current_status,
            }
            for r in self.rows
        ]
        return {
            "passed": self.passed,
            "tolerance": self.tolerance,
            "metrics": list(self.metrics),
            "rows": rows,
            "only_baseline": [dict(zip(KEY_FIELDS, k)) for k in self.only_baseline],
            "only_current": [dict(zip(KEY_FIELDS, k)) for k in self.only_current],
            "warnings": list(self.warnings),
            "summary": summary(self),
        }


def _index(results: ResultSet, side: str) -> dict[tuple, Result]:
    out: dict[tuple, Result] = {}
    for r in results.results:
        try:
            hash(r.key)
        except TypeError:
            raise MemprofError(
                f"the {side} holds a configuration whose key is not text and numbers "
                f"({', '.join(f'{n}={v!r}' for n, v in zip(KEY_FIELDS, r.key))}); "
                "regenerate it with memprof"
            ) from None
        if r.key in out:
            fix = (
                "rewrite it with `memprof baseline`, which keeps the last"
                if side == "baseline"
                else "pass each configuration's result once"
            )
            raise MemprofError(f"the {side} holds configuration {key_label(r.key)!r} twice; {fix}")
        out[r.key] = r
    return out


_ABSENT = object()


def _sides(baseline: ResultSet, current: ResultSet) -> tuple[str, str]:
    """How messages name the two sides: ``the baseline ('b.json') has``, ``the current results have``."""

    def name(rs: ResultSet, side: str, verb: str) -> str:
        return f"{side} ({rs.source!r}) {verb}" if rs.source else f"{side} {verb}"

    return name(baseline, "the baseline", "has"), name(current, "the current results", "have")


def _metric_value(result: Result, metric: str) -> tuple[int | None, str | None]:
    """(bytes, None), (None, None) when unmeasured, or (None, what is wrong): NOTE [ Verdicts ]."""
    value = getattr(result.memory, metric, _ABSENT)
    if value is None and metric in CUDA_ONLY_METRICS and metric not in ALWAYS_MEASURED.get(result.engine, ()):
        return None, None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return int(value), None
    return None, "no such value" if value is _ABSENT else describe_value(value)


def _checked_metric(key: tuple, b: Result, c: Result, m: str, sides: tuple[str, str]) -> tuple[int | None, int | None]:
    """The two sides' values of metric ``m`` (None: unmeasured); MemprofError when either is unusable."""
    (bv, bad_b), (cv, bad_c) = _metric_value(b, m), _metric_value(c, m)
    problems = [f"{side} {what}" for side, what in zip(sides, (bad_b, bad_c)) if what is not None]
    if problems:
        raise MemprofError(
            f"cannot compare {m} of {key_label(key)}: {' and '.join(problems)}; an ok result's {m} must be a whole "
            "number of bytes >= 0 (only a CUDA-only metric its engine does not measure may be null); regenerate "
            f"{'it' if len(problems) == 1 else 'both'} with memprof"
        )
    return bv, cv


def _checked_status(key: tuple, result: Result, side: str) -> str:
    if result.status not in STATUSES:
        raise MemprofError(
            f"cannot compare {key_label(key)}: {side} status {describe_value(result.status)}, must be one of "
            f"{', '.join(STATUSES)}; regenerate it with memprof"
        )
    return result.status


def _metric_verdict(base: int | None, cur: int | None, tolerance: float) -> str:
    if base is None or cur is None:
        return "unmeasured"
    if base == 0:
        return "ok" if cur == 0 else "regression"
    change = (cur - base) / base
    if change > tolerance:
        return "regression"
    if change < -tolerance:
        return "improvement"
    return "ok"


def _status_verdict(base: str, cur: str) -> str:
    if base == "ok":
        return "failed"
    if cur == "ok":
        return "fixed"
    return f"still {cur}"


def _version_warnings(baseline: list[Result], current: list[Result]) -> list[str]:
    """Libraries whose recorded versions differ between the matched results of the two sides."""
    warnings = []
    for lib in VERSIONED:
        before = sorted({str(r.environment[lib]) for r in baseline if r.environment.get(lib)})
        after = sorted({str(r.environment[lib]) for r in current if r.environment.get(lib)})
        if before and after and before != after:
            warnings.append(
                f"{lib} {', '.join(before)} in the baseline, {', '.join(after)} now: a version change can move "
                "the numbers; refresh the baseline if the difference is expected"
            )
    return warnings


def _setting_warnings(pairs: list[tuple[Result, Result]]) -> list[str]:
    warnings = []
    for base, cur in pairs:
        for name in SETTINGS:
            a, b = getattr(base, name), getattr(cur, name)
            if a and b and a != b:
                warnings.append(f"{key_label(base.key)}: {name} is {a!r} in the baseline and {b!r} now")
    return warnings


def compare(
    current: ResultSet,
    baseline: ResultSet,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
) -> GateReport:
    """Compare ``current`` with ``baseline``; see NOTE [ Verdicts ] for what each row says.

    Raises MemprofError when either side is empty, a side holds a configuration twice, the two have
    no configuration in common, a metric or the tolerance is invalid, or a compared metric of an ok
    configuration is not a byte count (NOTE [ Verdicts ]).
    """
    metrics = parse_metrics(metrics)
    tolerance = parse_tolerance(tolerance)
    if not baseline.results:
        raise MemprofError(
            "the baseline holds no results; write one with `memprof baseline RESULTS --out BASELINE.json`"
        )
    if not current.results:
        raise MemprofError("the current results file holds no results; pass the results.json of a finished run")
    base, cur = _index(baseline, "baseline"), _index(current, "current results")
    common = [k for k in base if k in cur]
    if not common:
        raise MemprofError(
            f"no configuration in common between the current results ({len(cur)}) and the baseline ({len(base)}): "
            f"e.g. current {key_label(next(iter(cur)))!r}, baseline {key_label(next(iter(base)))!r}; "
            "profile the baseline's configurations (same backbone, method, sizes, dtype, engine and target)"
        )
    sides = _sides(baseline, current)
    rows = []
    for key in common:
        b, c = base[key], cur[key]
        bs, cs = _checked_status(key, b, sides[0]), _checked_status(key, c, sides[1])
        if bs != "ok" or cs != "ok":
            rows.append(GateRow(key, "status", None, None, _status_verdict(bs, cs), bs, cs))
            continue
        for m in metrics:  # NOTE [ Verdicts ]: an unusable value raises, it never passes nor fails
            bv, cv = _checked_metric(key, b, c, m, sides)
            rows.append(GateRow(key, m, bv, cv, _metric_verdict(bv, cv, tolerance)))
    pairs = [(base[k], cur[k]) for k in common]
    return GateReport(
        rows=rows,
        only_baseline=[k for k in base if k not in cur],
        only_current=[k for k in cur if k not in base],
        warnings=_version_warnings([b for b, _ in pairs], [c for _, c in pairs]) + _setting_warnings(pairs),
        tolerance=tolerance,
        metrics=metrics,
    )


def format_change(row: GateRow) -> str:
    """``+12.0 MiB (+5.0%)``, ``0 B``, ``+1.00 KiB (from 0)`` or ``-``."""
    if row.delta is None:
        return "-"
    if row.delta == 0:
        return "0 B"
    sign = "+" if row.delta > 0 else ""
    pct = "from 0" if row.change == math.inf else f"{row.change:+.1%}"
    return f"{sign}{format_bytes(row.delta)} ({pct})"


def summary(report: GateReport) -> str:
    """One line: how many configurations, how many failed, improved, and at which tolerance."""
    failed = sorted({r.label for r in report.failures})
    improved = sorted({r.label for r in report.improvements} - set(failed))
    head = "FAIL" if failed else "PASS"
    return (
        f"{head}: {report.compared} configuration(s) x {len(report.metrics)} metric(s) compared at "
        f"{report.tolerance:.1%} tolerance; {len(failed)} regressed, {len(improved)} improved"
        + (f", {len(report.only_baseline)} only in the baseline" if report.only_baseline else "")
        + (f", {len(report.only_current)} only in the current results" if report.only_current else "")
    )


def _results_path(source: str | Path) -> Path:
    path = results_file(source)
    if Path(source).is_dir() and not path.is_file():
        raise MemprofError(
            f"folder {str(source)!r} holds no results.json; pass a results.json, a folder with one, or a result JSON"
        )
    return path


def load_sources(sources: str | Path | list[str | Path]) -> ResultSet:
    """Results from one or more sources, concatenated in order: each a results.json, a folder holding
    one (a ``memprof compare`` output folder) or a single result JSON. One source keeps its command
    and options; several give their commands joined by `` && `` and ``options = {"sources": [...]}``."""
    paths = [_results_path(s) for s in (sources if isinstance(sources, (list, tuple)) else [sources])]
    if not paths:
        raise MemprofError("no results file given; pass a results.json, a folder holding one, or a result JSON")
    sets = [load_results(p) for p in paths]
    results = [r for rs in sets for r in rs.results]
    source = ", ".join(str(p) for p in paths)
    if len(sets) == 1:
        return ResultSet(results=results, command=sets[0].command, options=dict(sets[0].options), source=source)
    commands = list(dict.fromkeys(rs.command for rs in sets if rs.command))
    return ResultSet(
        results=results, command=" && ".join(commands), options={"sources": [rs.options for rs in sets]}, source=source
    )


def make_baseline(sources: str | Path | list[str | Path], *, keep_layers: bool = False) -> ResultSet:
    """The baseline to commit from ``sources`` (see ``load_sources``).

    Per-layer tables and timelines are dropped unless ``keep_layers`` (the gate compares totals; the
    file stays small enough to review). A configuration present twice keeps its last result.
    """
    rs = load_sources(sources)
    if not rs.results:
        raise MemprofError("the results given hold no results; run the sweep or profile first")
    by_key: dict[tuple, Result] = {}
    for r in rs.results:
        by_key.pop(r.key, None)
        by_key[r.key] = r if keep_layers else replace(r, layers=empty_layers(), timeline=None)
    return ResultSet(
        results=list(by_key.values()),
        command=rs.command,
        options={**rs.options, "baseline_layers": "kept" if keep_layers else "stripped"},
    )


def update_command(current: list[str | Path], baseline: str | Path) -> str:
    """The command that makes ``current`` the new baseline (printed when something improved)."""
    import shlex

    return shlex.join(["memprof", "baseline", *map(str, current), "--out", str(baseline)])


def write_baseline(
    sources: str | Path | list[str | Path], out: str | Path, *, keep_layers: bool = False
) -> tuple[ResultSet, str]:
    """Write ``make_baseline(sources)`` to ``out`` (replacing it): (the baseline, one line saying what
    was written and how it differs from the baseline it replaced, if that one was readable).

    Refuses (MemprofError, nothing written) an ``out`` that is a folder, whose folder cannot be
    created, or that holds per-layer results other than a baseline's (``check_replaceable``); the
    write itself is atomic (``write_json``)."""
    out = Path(out)
    if out.is_dir():
        raise MemprofError(
            f"baseline --out {str(out)!r} is a folder; pass the path of a JSON file, "
            f"e.g. --out {str(out / 'baseline.json')!r}"
        )
    check_replaceable(out)
    new = make_baseline(sources, keep_layers=keep_layers)
    old = None
    if out.is_file():
        try:
            old = load_results(out)
        except MemprofError:  # an unreadable old baseline is simply replaced
            old = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MemprofError(
            f"cannot create the folder {str(out.parent)!r} of baseline --out {str(out)!r} "
            f"({exc.strerror or exc}); pass an --out in a folder you can write to"
        ) from None
    write_json(new, out)
    return new, refresh_summary(new, old, out)


def check_replaceable(out: Path) -> None:
    """Refuse a baseline ``out`` that holds per-layer rows or timelines and is not a baseline file.

    NOTE [A baseline never replaces a sweep]: ``memprof baseline RUN --out OTHER/results.json`` used
    to replace another sweep's results with their stripped totals. A file ``memprof baseline`` wrote
    says so in its options (``baseline_layers``) and is replaced, ``--keep-layers`` or not; so is one
    without per-layer data (nothing is lost), one that is not JSON (a baseline broken by a merge
    conflict is regenerated this way) and a missing one; JSON that is no memprof file (a model's
    config.json) is refused."""
    if not out.is_file():
        return
    try:
        data = read_json(out)
    except MemprofError:
        return
    if not isinstance(data, dict) or "schema_version" not in data:  # JSON, but someone else's (a config.json)
        raise MemprofError(
            f"baseline --out {str(out)!r} holds JSON that is not a memprof results file, which writing the baseline "
            "would replace; pass another --out, or delete the file first"
        )
    options, results = data.get("options"), data.get("results", [data])
    if (isinstance(options, dict) and "baseline_layers" in options) or not isinstance(results, list):
        return
    if any(isinstance(r, dict) and (r.get("layers") or r.get("timeline")) for r in results):
        raise MemprofError(
            f"baseline --out {str(out)!r} holds results with per-layer rows or timelines and is not a baseline "
            "that `memprof baseline` wrote, so writing the baseline would strip them; pass another --out"
        )


def refresh_summary(new: ResultSet, old: ResultSet | None, out: str | Path) -> str:
    """One line: what was written, and how it differs from the baseline it replaced."""
    head = f"wrote {len(new.results)} configuration(s) to {out}"
    if old is None:
        return head
    before = {r.key: (r.status, asdict(r.memory)) for r in old.results}
    after = {r.key: (r.status, asdict(r.memory)) for r in new.results}
    added = sum(k not in before for k in after)
    removed = sum(k not in after for k in before)
    changed = sum(k in before and before[k] != v for k, v in after.items())
    same = len(after) - added - changed
    return (
        f"{head}; against the previous baseline: {added} added, {removed} removed, {changed} changed, {same} unchanged"
    )
