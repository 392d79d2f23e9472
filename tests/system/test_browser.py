"""The web page, driven in a real headless Chromium against the real server.

The server runs as ``hailo-ocr serve`` in a subprocess on a free loopback port, exactly as
an operator starts it. The test uploads an image through the page's file input and
watches the page work: boxes drawn when detection finishes, lines appearing one by one,
then the full text and timings. To capture the page *mid-stream* deterministically, the
test sits between the page and the server on the websocket (Playwright's
``route_web_socket``): it forwards everything up to the first recognised line, holds the
rest, takes a screenshot, then releases them. The text the page finally shows must be
the text ``POST /v1/ocr/extract`` returns for the same image.

Chromium is the Debian package (``/usr/bin/chromium``, installed by ``.ci/run``), driven
through the ``playwright`` Python package; ``playwright install`` (a browser download) is
never needed. Screenshots go to ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.paths import DEVDATA, REPO

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = REPO / "tests" / "artifacts"
START_TIMEOUT_S = 60.0
STEP_TIMEOUT_MS = 90_000

pytestmark = pytest.mark.slow

if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(
        f"the browser test needs Chromium at {CHROMIUM} (Debian: apt-get install chromium; "
        ".ci/run installs it when run as root)", allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser test needs the 'playwright' package "
    "(pip install -e '.[test]')",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """``hailo-ocr serve`` on 127.0.0.1:<free port>, with a clean environment."""
    config = tmp_path / "config.yaml"
    # Detection sized like tests/support/server.fast(): no upscaling of small images,
    # which halves the time of each request on a busy CI core.
    config.write_text(
        "server:\n  log_level: info\nocr:\n  det_limit_type: max\n  det_limit_side_len: 960\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILO_OCR_")}
    log = (tmp_path / "server.log").open("w+")
    for _attempt in range(3):  # another process may take the port between pick and bind
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "serve", "--config", str(config),
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        if proc.poll() is None and time.monotonic() < deadline:
            break
        proc.kill()
        proc.wait(10)
    else:
        log.seek(0)
        pytest.fail(f"the server did not start:\n{log.read()[-3000:]}")
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture
def image_path(tmp_path) -> Path:
    """The devdata English sample when present, else a synthetic image of known words."""
    if DEVDATA is not None and (DEVDATA / "rapidocr_tests" / "en.jpg").is_file():
        return DEVDATA / "rapidocr_tests" / "en.jpg"
    from tests.support.server import text_image

    path = tmp_path / "synthetic.png"
    path.write_bytes(text_image(["HELLO WORLD", "INVOICE TOTAL", "ORANGE GARDEN"]))
    return path


class HoldAfterFirstLine:
    """Forwards websocket traffic between page and server, holding every server message
    after the first ``line`` event until :meth:`release` (from the test's thread)."""

    def __init__(self) -> None:
        self.holding = True
        self.seen_line = False
        self.held: list[str | bytes] = []
        self.route = None
        self.types: list[str] = []

    def handler(self, ws) -> None:
        self.route = ws
        server = ws.connect_to_server()
        ws.on_message(lambda message: server.send(message))
        server.on_message(self._from_server)

    def _from_server(self, message: str | bytes) -> None:
        kind = json.loads(message).get("type") if isinstance(message, str) else None
        self.types.append(kind)
        if self.holding and self.seen_line:
            self.held.append(message)
            return
        if kind == "line":
            self.seen_line = True
        self.route.send(message)

    def release(self) -> None:
        self.holding = False
        for message in self.held:
            self.route.send(message)
        self.held.clear()


def test_page_reads_an_image_like_the_api(server, image_path):
    started = time.monotonic()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    api = httpx.post(
        server + "/v1/ocr/extract", files={"image": image_path.open("rb")},
        data={"languages": "en"}, timeout=120,
    )
    assert api.status_code == 200, api.text
    expected = api.json()
    assert expected["regions"], "the fixture image should have text"

    hold = HoldAfterFirstLine()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(STEP_TIMEOUT_MS)
            console_errors: list[str] = []
            page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))
            page.on("pageerror", lambda e: console_errors.append(str(e)))
            outside: list[str] = []
            page.on(
                "request",
                lambda r: r.url.startswith(("http", "ws")) and not r.url.startswith(
                    (server, server.replace("http", "ws", 1))) and outside.append(r.url),
            )
            page.route_web_socket("**/v1/ocr/stream*", hold.handler)

            page.goto(server + "/")
            page.wait_for_selector("body[data-state=idle]")
            options = page.eval_on_selector_all("#language option", "os => os.map(o => o.value)")
            assert "en" in options
            page.select_option("#language", "en")
            page.set_input_files("#file", str(image_path))

            # Mid-stream: boxes drawn, the first line shown, the rest held back.
            # (Selectors, not wait_for_function: the page's CSP forbids eval.)
            page.wait_for_selector("#lines:not([data-count='0'])", state="attached")
            mid = {
                "state": page.get_attribute("body", "data-state"),
                "boxes": int(page.get_attribute("#canvas", "data-boxes")),
                "lines": int(page.get_attribute("#lines", "data-count")),
                "result_hidden": page.is_hidden("#result"),
            }
            page.screenshot(path=str(ARTIFACTS / "page-mid-stream.png"), full_page=True)
            assert mid["state"] == "detected"
            assert mid["boxes"] >= len(expected["regions"])
            assert mid["result_hidden"]
            if len(expected["regions"]) > 1:
                assert hold.held, "the other lines should have been held back"
                assert mid["lines"] == 1

            hold.release()
            page.wait_for_selector("body[data-state=done]")
            page.screenshot(path=str(ARTIFACTS / "page-done.png"), full_page=True)

            shown_text = page.input_value("#text")
            line_texts = page.eval_on_selector_all(
                "#lines li:not(.dropped):not(.pending)",
                "lis => lis.map(li => li.firstChild ? li.firstChild.textContent : '')",
            )
            boxes = int(page.get_attribute("#canvas", "data-boxes"))
            timings = page.inner_text("#timings")
            status = page.inner_text("#status")

            # Phone-sized screen: nothing wider than the viewport.
            page.set_viewport_size({"width": 390, "height": 844})
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            page.screenshot(path=str(ARTIFACTS / "page-phone.png"), full_page=True)
        finally:
            browser.close()

    assert shown_text == "\n".join(expected["lines"])  # line by line, not `text`
    assert sorted(line_texts) == sorted(r["text"] for r in expected["regions"])
    assert boxes >= len(expected["regions"])
    assert "total" in timings and "detection" in timings
    assert status.startswith("Done")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone screen"
    assert hold.types[0] == "accepted" and "detected" in hold.types and hold.types[-1] == "done"
    assert not outside, f"the page contacted other hosts: {outside}"
    assert not console_errors, console_errors
    print(f"browser test: {time.monotonic() - started:.1f} s, {len(line_texts)} lines")


def test_page_shows_an_error_in_words(server, tmp_path):
    """A file that is not an image gets the service's error, in words, on the page."""
    bogus = tmp_path / "not-an-image.png"
    bogus.write_bytes(b"this is not an image at all")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.set_default_timeout(STEP_TIMEOUT_MS)
            page.goto(server + "/")
            page.wait_for_selector("body[data-state=idle]")
            page.set_input_files("#file", str(bogus))
            page.wait_for_selector("body[data-state=error]")
            message = page.inner_text("#error")
            page.screenshot(path=str(ARTIFACTS / "page-error.png"))
        finally:
            browser.close()
    assert "image" in message.lower()
    assert "(" in message and ")" in message  # the stable code is shown with the words
