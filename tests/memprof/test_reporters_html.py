"""report.html, read as data: self-contained, the same summary as summary.md, the plots embedded
byte for byte, the environment and the command. (test_html_browser.py opens it in chromium.)"""

import base64
from html.parser import HTMLParser

import pytest
from synthetic_results import ENVIRONMENT, GOLDEN_COMMAND, golden_resultset

from memprof.reporters import html, plots, render_all, table
from memprof.results.result import ResultSet


class Page(HTMLParser):
    """Collects tags with their attributes, and table cells by table."""

    def __init__(self):
        super().__init__()
        self.tags, self.tables, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    render_all(golden_resultset(), out)
    page = Page()
    text = (out / "report.html").read_text()
    page.feed(text)
    return out, text, page


def test_self_contained(rendered):
    _, text, page = rendered
    tags = {t for t, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed"}
    for tag, attrs in page.tags:
        for name in ("src", "href", "srcset", "action"):
            if name in attrs:
                assert attrs[name].startswith("data:"), (tag, attrs[name][:60])
    assert "http://" not in text and "https://" not in text and "url(" not in text


def test_plots_are_embedded_byte_for_byte(rendered):
    out, _, page = rendered
    images = [a["src"] for t, a in page.tags if t == "img"]
    assert len(images) == len(plots.PLOTS)
    for src, name in zip(images, plots.PLOTS):
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :]) == (out / name).read_bytes()
    assert [a["alt"] for t, a in page.tags if t == "img"] == [caption for caption, _ in plots.PLOTS.values()]


def test_tables_show_the_markdown_summary(rendered):
    _, _, page = rendered
    data = table.summary_data(golden_resultset())
    headline, full, env = page.tables
    assert headline == [data["headline"][0], *data["headline"][1]]
    assert full == [data["table"][0], *data["table"][1]]
    env = dict(row for row in env[1:])
    assert env["engine"] == "fake" and env["target"] == "cuda" and env["dtype"] == "fp32" and env["attention"] == "sdpa"
    for key, value in ENVIRONMENT.items():
        assert env[key] == value


def test_command_and_escaping(rendered):
    _, text, _ = rendered
    assert f"<pre><code>{GOLDEN_COMMAND}</code></pre>" in text
    # the failing row's message keeps its pipe and is escaped, not interpreted
    assert "error: RuntimeError: boom | with a pipe" in text
    assert '<tr class="failed">' in text


def test_report_data_is_plain(rendered):
    out, _, _ = rendered
    rs = golden_resultset()
    data = html.report_data(rs, {"peak_breakdown.png": b"\x89PNG"})
    assert data["figures"] == [("Peak memory by part at the largest configuration", "data:image/png;base64,iVBORw==")]
    assert data["environment"]["torch"] == ENVIRONMENT["torch"]


def test_renders_without_image_dir_and_for_an_empty_set(tmp_path):
    path = html.render(ResultSet(), tmp_path / "empty.html")
    text = path.read_text()
    assert "No configuration finished." in text
    assert text.count("data:image/png;base64,") == len(plots.PLOTS)
