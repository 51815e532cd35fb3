"""report.html in a real headless browser: it loads offline with no console error and no request
beyond the file itself, every image decodes, and a screenshot shows something.

Chromium is driven over the Chrome DevTools protocol on ``--remote-debugging-pipe`` (file
descriptors 3 and 4, NUL-separated JSON messages), so no websocket library is needed. The test
skips when no chromium is installed; ``.ci/install-chromium.sh`` installs Debian's.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memprof.reporters import html
from synthetic_results import golden_resultset

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH; run .ci/install-chromium.sh")

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")


_LAUNCH = """import os, sys
r, w = int(sys.argv[1]), int(sys.argv[2])
a, b = os.dup(r), os.dup(w)
os.dup2(a, 3)
os.dup2(b, 4)
os.set_inheritable(3, True)  # dup2(fd, fd) keeps close-on-exec: a or b may already be 3 or 4
os.set_inheritable(4, True)
for fd in {a, b, r, w} - {3, 4}:
    os.close(fd)
os.execv(sys.argv[3], sys.argv[3:])
"""


class Browser:
    """A minimal CDP client: one headless chromium, one page session."""

    def __init__(self, user_data_dir: Path, timeout: float = 30.0) -> None:
        self.timeout = timeout
        cmd_r, self._cmd_w = os.pipe()  # we write commands; chromium reads them on fd 3
        self._out_r, out_w = os.pipe()  # chromium writes replies and events on fd 4

        # Chromium reads the protocol on fd 3 and writes on fd 4. A tiny python moves the pipe ends
        # there and execs chromium (pass_fds cannot renumber, and a preexec_fn is not thread-safe).
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, str(cmd_r), str(out_w), CHROMIUM, *FLAGS,
             f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(cmd_r, out_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(cmd_r)
        os.close(out_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict] = []
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out_r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the debugging pipe")
            self._buf += chunk
        message, self._buf = self._buf.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            event = self._read(deadline)
            if event.get("method") == method:
                return event
            self.events.append(event)

    def open(self, url: str) -> dict:
        """Load ``url``; returns what went wrong: console errors, exceptions and outside requests."""
        self.events.clear()
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=1280, height=1600,
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")
        self.call("Runtime.evaluate", session=True, expression="1")  # drain events logged during load
        problems = {"console": [], "exceptions": [], "log": [], "requests": []}
        for ev in self.events:
            method, p = ev.get("method"), ev.get("params", {})
            if method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert", "warning"):
                problems["console"].append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif method == "Runtime.exceptionThrown":
                problems["exceptions"].append(p["exceptionDetails"].get("text"))
            elif method == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                problems["log"].append(p["entry"]["text"])
            elif method == "Network.requestWillBeSent" and not p["request"]["url"].startswith(("data:", url)):
                problems["requests"].append(p["request"]["url"])
        return problems

    def evaluate(self, expression: str):
        reply = self.call("Runtime.evaluate", session=True, expression=expression, awaitPromise=True,
                          returnByValue=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(reply["exceptionDetails"])
        return reply["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (EOFError, TimeoutError, RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._out_r)


IMAGES = """Promise.all(Array.from(document.images).map(img => img.decode()
    .then(() => [img.complete, img.naturalWidth, img.naturalHeight], () => [img.complete, 0, 0])))"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    return html.render(golden_resultset(), tmp_path_factory.mktemp("report") / "report.html")


def test_report_loads_without_errors_or_outside_requests(browser, report):
    problems = browser.open(report.as_uri())
    assert problems == {"console": [], "exceptions": [], "log": [], "requests": []}


def test_every_image_decodes(browser, report):
    browser.open(report.as_uri())
    images = browser.evaluate(IMAGES)
    assert len(images) == 5
    for complete, width, height in images:
        assert complete and width > 300 and height > 150
    assert browser.evaluate("document.title") == "memprof compare: bart-large"
    rows = browser.evaluate("document.querySelectorAll('table')[1].querySelectorAll('tbody tr').length")
    assert rows == len(golden_resultset().results)


def test_screenshot_is_not_blank(browser, report):
    from PIL import Image

    browser.open(report.as_uri())
    shot = Image.open(io.BytesIO(browser.screenshot())).convert("RGB")
    assert shot.size == (1280, 1600)
    colors = shot.getcolors(maxcolors=1 << 20)
    assert len(colors) > 50  # text, table borders and plot colours, not one flat fill
    white = max(count for count, _ in colors)
    assert white < 0.97 * shot.size[0] * shot.size[1]


def test_the_harness_sees_errors(browser, tmp_path):
    """The checks above would catch a broken page: a console error, an exception, a missing image
    and a request that leaves the file."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>broken</title></head><body>"
        '<img src="data:image/png;base64,AAAA"><img src="missing.png">'
        "<script>console.error('bad'); throw new Error('thrown');</script></body></html>"
    )
    problems = browser.open(page.as_uri())
    assert problems["console"] == ["bad"]
    assert problems["exceptions"]
    assert problems["log"]  # the missing file
    images = browser.evaluate(IMAGES)
    assert [w for _, w, _ in images] == [0, 0]
