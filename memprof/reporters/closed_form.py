"""The closed-form section of ``report.html``: each method's formula beside the measured numbers."""

from __future__ import annotations

import html
from typing import Any

from memprof.results.formula import EVALUATED_KEY, FALLBACK_KEY, Formula
from memprof.results.result import ResultSet
from memprof.units import format_bytes

QUANTITIES = (("saved activations", "saved_activations"), ("peak activations", "peak_activations"), ("peak", "peak"))


def closed_form_data(formulas: list[Formula], rs: ResultSet) -> list[dict[str, Any]]:
    """Per formula: its method, how it was derived, and per quantity the polynomial, its value at the
    grid's largest configuration and the result recorded there (a real profile: the check of the formula)."""
    out = []
    for f in formulas:
        ok = [r for r in rs.results if r.method == f.method and r.status == "ok"]
        largest = max(ok, key=lambda r: (r.batch_size * r.seq_len, r.seq_len), default=None)
        texts = {
            "saved_activations": str(f.sums["saved_activations"]),
            "peak_activations": f.peak_activations_expression,
            "peak": f.peak_expression,
        }
        rows = []
        for label, name in QUANTITIES:
            at = getattr(f.memory_at(largest.batch_size, largest.seq_len), name) if largest else None
            measured = getattr(largest.memory, name) if largest else None
            rows.append({"quantity": label, "formula": texts[name], "formula_bytes": at, "measured_bytes": measured})
        where = (largest.batch_size, largest.seq_len) if largest else None
        profiled = largest is not None and EVALUATED_KEY not in largest.environment
        out.append(
            {
                "method": f.method,
                "how": f.how,
                "note": f.note,
                "valid": [f.bounds_text, *f.valid],
                "at": where,
                "profiled": profiled,
                "rows": rows,
            }
        )
    return out


def provenance(rs: ResultSet) -> dict[str, Any]:
    """How many results were evaluated from formulas and how many profiled, and each method that was
    profiled throughout although its sweep answered from closed forms, with why."""
    evaluated = sum(EVALUATED_KEY in r.environment for r in rs.results)
    fallbacks = {r.method: r.environment[FALLBACK_KEY] for r in rs.results if FALLBACK_KEY in r.environment}
    return {"evaluated": evaluated, "profiled": len(rs.results) - evaluated, "fallbacks": fallbacks}


def to_html(data: list[dict[str, Any]], how: dict[str, Any] | None = None) -> str:
    """The section; ``how`` (``provenance``) adds which results were evaluated and which profiled."""
    esc = html.escape
    counts = how or {"evaluated": 0, "profiled": 0, "fallbacks": {}}
    if not data and not counts["fallbacks"]:
        return ""
    parts = [
        "<h2>Closed form</h2>",
        "<p>Bytes as exact polynomials in batch size <code>b</code> and sequence "
        "length <code>s</code> (<code>memprof formula</code>), beside the measured numbers. "
        f"{counts['evaluated']} of {counts['evaluated'] + counts['profiled']} results were evaluated from "
        f"these formulas and {counts['profiled']} profiled: a formula's check (none where the cache held a "
        "checked formula), sizes outside a formula's bounds, methods with too few sizes to pay for a trace, "
        "and the methods named below, if any.</p>",
    ]
    for method, why in counts["fallbacks"].items():
        parts.append(f"<p><b>{esc(method)}</b>: every configuration {esc(why)}.</p>")
    for d in data:
        how = d["note"] or "one symbolic trace"  # a fit, or a composition from shallow copies, says so
        valid = f"; holds where {'; '.join(d['valid'])}" if d["valid"] else ""
        parts.append(f"<h3>{esc(d['method'])}</h3><p>{esc(how + valid)}</p>")
        if d["at"] is None:
            parts.append("<p>No configuration of this method finished.</p>")
            continue
        b, s = d["at"]
        source = "profiled" if d["profiled"] else "from the formula"
        parts.append(
            f'<table><thead><tr><th class="text">quantity</th><th class="text">formula (bytes)</th>'
            f"<th>formula at b={b}, s={s}</th><th>result at b={b}, s={s} ({source})</th></tr></thead><tbody>"
        )
        for row in d["rows"]:
            parts.append(
                f'<tr><td class="text">{esc(row["quantity"])}</td><td class="text"><code>'
                f"{esc(row['formula'])}</code></td><td>{format_bytes(row['formula_bytes'])}</td>"
                f"<td>{format_bytes(row['measured_bytes'])}</td></tr>"
            )
        parts.append("</tbody></table>")
    return "\n".join(parts)
