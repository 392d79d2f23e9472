"""Helpers for the web tests: synthetic text images, a backend that can be held or made to
fail on cue, and a real Hypercorn server on a free loopback port inside the test's nursery."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import attrs
import cv2
import numpy as np
import trio
from hypercorn.trio import serve as hypercorn_serve
from PIL import Image

from npu.onnx_backend import OnnxBackend
from ocr.config import Config
from web.app import AppState, create_app, get_state
from web.server import hypercorn_config

# Words the recogniser reads reliably in Hershey Simplex; tests compare them exactly.
WORDS = [
    "HELLO", "WORLD", "INVOICE", "TOTAL", "AMOUNT", "NUMBER", "ORANGE", "PURPLE", "GARDEN",
    "WINDOW", "SILVER", "MARKET", "CASTLE", "RIVER", "FOREST", "PLANET", "BRIDGE", "ROCKET",
]


def text_image(lines: list[str], *, fmt: str = ".png", scale: float = 1.2) -> bytes:
    """Black text lines on white, one per row, encoded as ``fmt``."""
    line_h = int(44 * scale)
    width = max(200, max(len(t) for t in lines) * int(24 * scale) + 60)
    img = np.full((line_h * len(lines) + 40, width, 3), 255, np.uint8)
    for i, text in enumerate(lines):
        y = 20 + line_h * (i + 1) - int(12 * scale)
        cv2.putText(img, text, (30, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)
    ok, buf = cv2.imencode(fmt, img)
    assert ok
    return buf.tobytes()


def gif_image() -> bytes:
    """A real (tiny) GIF: an image format the service does not accept."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(out, "GIF")
    return out.getvalue()


async def wait_until(predicate: Callable[[], object], within_s: float = 20.0) -> None:
    """Poll ``predicate`` (sync or async) until it is truthy; fail after ``within_s``."""
    with trio.fail_after(within_s):
        while True:
            value = predicate()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return
            await trio.sleep(0.02)


async def wait_listening(proc, log_path, within_s: float = 90.0) -> str:
    """Wait until a ``hailo-ocr serve`` subprocess logs its address; return its base URL.
    Fails at once (with the log) if the process exits first."""
    with trio.fail_after(within_s):
        while True:
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log_path.read_text())
            if m:
                return m.group(1)
            assert proc.poll() is None, log_path.read_text()
            await trio.sleep(0.1)


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def words_of(text: str) -> list[str]:
    return re.findall(r"[A-Z]+", text.upper())


class ControlledBackend:
    """The real ONNX backend, with hooks: hold detection or recognition calls until a
    gate opens, or raise an error on the next call. Everything else passes through."""

    def __init__(
        self, config: Config, *, det_gate: trio.Event | None = None,
        rec_gate: trio.Event | None = None, rec_free_calls: int = 0,
        fail_next: BaseException | None = None,
    ) -> None:
        self.inner = OnnxBackend(config)
        self.det_gate = det_gate
        self.rec_gate = rec_gate
        self.rec_free_calls = rec_free_calls
        self.fail_next = fail_next
        self.rec_calls = 0
        self.det_calls = 0

    def load(self):
        return self.inner.load()

    async def infer(self, model_id: str, batch: np.ndarray) -> np.ndarray:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        if model_id == "detection":
            self.det_calls += 1
            if self.det_gate is not None:
                await self.det_gate.wait()
        elif model_id.startswith("recognition"):
            n = self.rec_calls
            self.rec_calls += 1
            if self.rec_gate is not None and n >= self.rec_free_calls:
                await self.rec_gate.wait()
        return await self.inner.infer(model_id, batch)

    def close(self) -> None:
        self.inner.close()


def backend_factory(backend: ControlledBackend) -> Callable[[], ControlledBackend]:
    return lambda: backend


@attrs.frozen
class RunningServer:
    url: str
    ws_url: str
    app: object
    state: AppState


@asynccontextmanager
async def running_server(
    config: Config, make_backend: Callable | None = None
) -> AsyncIterator[RunningServer]:
    """The app under Hypercorn's Trio worker on 127.0.0.1:<free port>."""
    config = attrs.evolve(config, server=attrs.evolve(config.server, host="127.0.0.1", port=1))
    app = create_app(config, make_backend)
    hc = hypercorn_config(config)
    hc.bind = ["127.0.0.1:0"]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, app, hc, shutdown_trigger=stop.wait))
        url = binds[0]
        try:
            yield RunningServer(url, "ws" + url[4:], app, get_state(app))
        finally:
            stop.set()
            get_state(app).begin_shutdown()


def fast(config: Config, **sections: dict) -> Config:
    """``config`` with detection sized for the small synthetic images (no upscaling, so a
    request takes ~0.2 s instead of ~1 s on a busy CI core), plus any other changes."""
    changes = {"ocr": {"det_limit_type": "max", "det_limit_side_len": 960}}
    for name, keys in sections.items():
        changes[name] = {**changes.get(name, {}), **keys}
    return attrs.evolve(config, **{
        name: attrs.evolve(getattr(config, name), **keys) for name, keys in changes.items()
    })
