"""``report.html``: one self-contained page (plots as base64 data URIs, inline CSS, no script, no
external resource) with the summary, the plots, the environment and the command to reproduce."""

from __future__ import annotations

import base64
import html
import tempfile
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from memprof.reporters import exactness, plots
from memprof.reporters.base import REPORT_FILE, Extras
from memprof.reporters.table import TEXT_HEADERS, summary_data, summary_sentence
from memprof.results.files import write_atomically
from memprof.results.result import ResultSet


def environment_data(rs: ResultSet) -> dict[str, str]:
    """What produced the numbers: engine, target, dtype, attention, then the recorded versions (of
    the first finished result; the first result if none finished)."""
    about = summary_data(rs)["about"]
    env = {k: about[k] for k in ("backbone", "engine", "target", "dtype", "attention", "task")}
    source = next((r for r in rs.results if r.status == "ok"), rs.results[0] if rs.results else None)
    if source is not None:
        env.update({str(k): str(v) for k, v in source.environment.items()})
    return env


def report_data(rs: ResultSet, images: dict[str, bytes]) -> dict[str, Any]:
    """Everything the page shows: the summary data, the environment and the images as data URIs
    (``images``: PNG file name -> bytes, captioned from ``plots.PLOTS``)."""
    data = summary_data(rs)
    data["environment"] = environment_data(rs)
    data["figures"] = [
        (
            plots.PLOTS[name][0] if name in plots.PLOTS else name,
            "data:image/png;base64," + base64.b64encode(png).decode(),
        )
        for name, png in images.items()
    ]
    return data


def _table(headers: list[str], rows: list[list[str]], *, cls: str = "") -> str:
    """An HTML table; text columns (``TEXT_HEADERS``) left-aligned, a row whose status is not ok marked."""
    esc = html.escape
    text = [h in TEXT_HEADERS for h in headers]
    status_col = headers.index("status") if "status" in headers else None
    out = [f'<table class="{cls}">' if cls else "<table>", "<thead><tr>"]
    out += [f'<th class="text">{esc(h)}</th>' if t else f"<th>{esc(h)}</th>" for h, t in zip(headers, text)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        failed = status_col is not None and row[status_col] != "ok"
        out.append('<tr class="failed">' if failed else "<tr>")
        out += [f'<td class="text">{esc(c)}</td>' if t else f"<td>{esc(c)}</td>" for c, t in zip(row, text)]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _exactness(data: dict[str, Any] | None) -> str:
    """The section "What exactness costs" (``exactness.exactness_data``); "" without a pair."""
    if data is None:
        return ""
    note = exactness.skipped_note(data)
    return (
        f"<h2>{html.escape(exactness.TITLE)}</h2>\n<p>{html.escape(exactness.INTRO)}</p>\n{_table(*data['table'])}"
        + (f'\n<p class="about">{html.escape(note)}</p>' if note else "")
    )


def to_html(data: dict[str, Any]) -> str:
    esc = html.escape
    about, line = data["about"], summary_sentence(data)
    if data["largest"] is not None:
        seq, batch = data["largest"]
        headline = f"<p>At the largest configuration (sequence length {seq}, batch size {batch}):</p>" + _table(
            *data["headline"]
        )
    else:
        headline = "<p>No configuration finished.</p>"
    figures = "\n".join(
        f'<figure><img src="{uri}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'
        for caption, uri in data["figures"]
    )
    env_rows = [[k, v] for k, v in data["environment"].items()]
    template = Template(resources.files("memprof.reporters").joinpath("templates/report.html").read_text())
    return template.substitute(
        title=esc(f"memprof compare: {about['backbone']}"),
        about=esc(line),
        headline=headline,
        figures=figures,
        table=_table(*data["table"]),
        exactness=_exactness(data["exactness"]),
        closed_form=data.get("closed_form", ""),
        environment=_table(["", "value"], env_rows, cls="env"),
        command=esc(data["command"] or "(not recorded)"),
    )


def render(rs: ResultSet, outfile: str | Path, image_dir: str | Path | None = None, formulas: Any = ()) -> Path:
    """Write ``report.html``; the plots are read from ``image_dir`` (rendered there if missing),
    or drawn in a temporary folder when no ``image_dir`` is given; ``formulas`` (``Formula``s, as
    ``compare`` writes them) add the closed-form section."""
    from memprof.reporters import closed_form

    path = Path(outfile)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(image_dir) if image_dir is not None else Path(tmp)
        if any(not (folder / name).is_file() for name in plots.PLOTS):
            plots.render(rs, folder)
        images = {name: (folder / name).read_bytes() for name in plots.PLOTS}
        data = report_data(rs, images)
        data["closed_form"] = closed_form.to_html(
            closed_form.closed_form_data(list(formulas), rs), closed_form.provenance(rs)
        )
        write_atomically(path, to_html(data))
    return path


def write(rs: ResultSet, out: Path, extras: Extras) -> dict[str, Path]:
    """The reporter interface (NOTE [ One reporter interface ]): ``report.html``, its plots read from
    ``out`` (where the plots reporter has drawn them)."""
    return {REPORT_FILE: render(rs, out / REPORT_FILE, image_dir=out, formulas=extras.formulas)}
