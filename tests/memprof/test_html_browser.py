"""report.html in a real headless browser, driven by playwright: it loads offline with no console
error and no request beyond the file itself, every plot renders (decoded, and its screenshot is
not blank), the results table is visible, and a screenshot of the page shows something.

Playwright drives the system Chromium (``executable_path``; no browser is downloaded). The test
skips when playwright or Chromium is missing; ``.ci/install-chromium.sh`` installs Debian's.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from synthetic_results import golden_resultset

from memprof.reporters import html, plots
from memprof.results.timeline import downsample

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (the test extra has it)")
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH; run .ci/install-chromium.sh")

IMAGES = """Promise.all(Array.from(document.images).map(img => img.decode()
    .then(() => [img.complete, img.naturalWidth, img.naturalHeight], () => [img.complete, 0, 0])))"""


class Page:
    """A page that records what went wrong while it loaded: console errors and warnings, uncaught
    exceptions, failed requests, and requests that leave the file."""

    def __init__(self, browser) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 1600}, device_scale_factor=1)
        self.url = ""
        self.problems: dict[str, list[str]] = {}
        self.page.on("console", lambda m: m.type in ("error", "warning") and self.problems["console"].append(m.text))
        self.page.on("pageerror", lambda exc: self.problems["exceptions"].append(str(exc)))
        self.page.on("requestfailed", lambda r: self.problems["failed"].append(r.url))
        self.page.on("request", self._request)

    def _request(self, request) -> None:
        if not request.url.startswith(("data:", self.url)):
            self.problems["requests"].append(request.url)

    def open(self, url: str) -> dict[str, list[str]]:
        self.url = url
        self.problems = {"console": [], "exceptions": [], "failed": [], "requests": []}
        self.page.goto(url, wait_until="load")
        return self.problems


def with_timelines(rs):
    """``rs`` with a small timeline in each finished result, its peak at the result's ``Memory.peak``
    (every part live at once, in the optimizer step), as results of this memprof have."""
    for r in rs.results:
        if r.status != "ok":
            continue
        m = r.memory
        nbytes = [m.parameters, m.activations_at_peak, m.temporaries, m.gradients, m.optimizer_state]
        events = [0, 1, 2, 3, 4, ~2, ~1, ~3]
        r.timeline = downsample(
            nbytes, events, [0, 3, 4, 1, 2], {"forward": 1, "backward": 3, "optimizer": 4, "end": 8}
        )
    return rs


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    return html.render(with_timelines(golden_resultset()), tmp_path_factory.mktemp("report") / "report.html")


@pytest.fixture
def page(browser):
    p = Page(browser)
    yield p
    p.page.close()


def test_report_loads_without_errors_or_outside_requests(page, report):
    assert page.open(report.as_uri()) == {"console": [], "exceptions": [], "failed": [], "requests": []}


def test_every_plot_renders_and_is_not_blank(page, report):
    from PIL import Image

    page.open(report.as_uri())
    decoded = page.page.evaluate(IMAGES)
    figures = page.page.locator("figure img")
    assert len(decoded) == figures.count() == len(plots.PLOTS)
    captions = page.page.locator("figcaption").all_inner_texts()
    assert captions == [caption for caption, _ in plots.PLOTS.values()]
    for i, (complete, width, height) in enumerate(decoded):
        assert complete and width > 300 and height > 150, captions[i]
        shot = Image.open(io.BytesIO(figures.nth(i).screenshot())).convert("RGB")
        colors = shot.getcolors(maxcolors=1 << 20)
        white = max(count for count, _ in colors)
        # drawn: axes, text and filled areas (the placeholder figure, one line of text, is 98% white)
        assert len(colors) > 50 and white < 0.95 * shot.size[0] * shot.size[1], captions[i]


def test_the_results_table_is_visible(page, report):
    page.open(report.as_uri())
    assert page.page.title() == "memprof compare: bart-large"
    table = page.page.locator("table").nth(1)
    table.scroll_into_view_if_needed()
    assert table.is_visible()
    box = table.bounding_box()
    assert box["width"] > 400 and box["height"] > 100
    rows = table.locator("tbody tr")
    assert rows.count() == len(golden_resultset().results)
    assert all(rows.nth(i).is_visible() for i in range(rows.count()))


def test_screenshot_is_not_blank(page, report, tmp_path):
    from PIL import Image

    page.open(report.as_uri())
    shot = Image.open(io.BytesIO(page.page.screenshot(path=tmp_path / "report.png"))).convert("RGB")
    assert shot.size == (1280, 1600) and (tmp_path / "report.png").stat().st_size > 10_000
    colors = shot.getcolors(maxcolors=1 << 20)
    assert len(colors) > 50  # text, table borders and plot colours, not one flat fill
    white = max(count for count, _ in colors)
    assert white < 0.97 * shot.size[0] * shot.size[1]


def test_the_harness_sees_errors(page, tmp_path):
    """The checks above would catch a broken page: a console error, an exception, a missing image,
    a request that leaves the file and an image that does not decode."""
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!DOCTYPE html><html><head><title>broken</title></head><body>"
        '<img src="data:image/png;base64,AAAA"><img src="missing.png"><img src="http://127.0.0.1:9/x.png">'
        "<script>console.error('bad'); throw new Error('thrown');</script></body></html>"
    )
    problems = page.open(broken.as_uri())
    assert "bad" in problems["console"] and any("thrown" in e for e in problems["exceptions"])
    assert any(url.endswith("missing.png") for url in problems["failed"])
    assert problems["requests"] == [(tmp_path / "missing.png").as_uri(), "http://127.0.0.1:9/x.png"]
    assert [w for _, w, _ in page.page.evaluate(IMAGES)] == [0, 0, 0]
