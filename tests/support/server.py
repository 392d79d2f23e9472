"""Helpers for the web tests: synthetic text images, a backend that can be held or made to
fail on cue, and a real Hypercorn server on a free loopback port inside the test's nursery."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import numpy as np
import trio
import yaml
from hypercorn.trio import serve as hypercorn_serve
from PIL import Image

from npu.backend import BackendFactory
from npu.onnx_backend import OnnxBackend
from tests.support.images import gif_image, text_image
from web.app import AppState, create_app, get_state
from web.client import InputFile
from web.server import hypercorn_config
from web.settings import Config

from .paths import REPO

# Words the recogniser reads reliably in Hershey Simplex; tests compare them exactly.
WORDS = [
    "HELLO", "WORLD", "INVOICE", "TOTAL", "AMOUNT", "NUMBER", "ORANGE", "PURPLE", "GARDEN",
    "WINDOW", "SILVER", "MARKET", "CASTLE", "RIVER", "FOREST", "PLANET", "BRIDGE", "ROCKET",
]


def write_pages(
    root: Path, n: int, lines: int = 2
) -> tuple[list[InputFile], dict[str, list[str]]]:
    """``n`` PNG pages of ``lines`` words each in ``root``: the files (named as in the
    folder) and the words of each."""
    files, words = [], {}
    for i in range(n):
        page = [WORDS[(i + 7 * k) % len(WORDS)] for k in range(lines)]
        path = root / f"page{i:02d}.png"
        path.write_bytes(text_image(page))
        files.append(InputFile(path.name, path))
        words[path.name] = page
    return files, words


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_image_folder(root: Path) -> dict[str, list[str] | str]:
    """A folder for ``hailo-ocr read``: text images in every accepted format, in
    subfolders; bad files among them; and files a folder walk skips (not images by name,
    hidden). Returns ``{path below root: the words in it, or the error code it gets}``."""
    good = {
        "a/01.png": (WORDS[0:2], ".png"), "a/02.jpg": (WORDS[2:4], ".jpg"),
        "a/deeper/03.bmp": (WORDS[4:5], ".bmp"), "b/04.webp": (WORDS[5:8], ".webp"),
        "b/05.tiff": (WORDS[8:10], ".tiff"), "06.PNG": (WORDS[10:12], ".png"),
    }
    expected: dict[str, list[str] | str] = {}
    for name, (lines, fmt) in good.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(text_image(lines, fmt=fmt))
        expected[name] = lines
    tiny = io.BytesIO()
    Image.new("RGB", (2, 2), (255, 255, 255)).save(tiny, "PNG")
    bad = {
        "bad/junk.png": (b"this is not an image", "invalid_image"),
        "bad/empty.jpg": (b"", "invalid_image"),
        "bad/anim.png": (gif_image(), "unsupported_media_type"),
        "bad/tiny.png": (tiny.getvalue(), "image_too_small"),
    }
    (root / "bad").mkdir()
    for name, (data, code) in bad.items():
        (root / name).write_bytes(data)
        expected[name] = code
    (root / "notes.txt").write_text("not read: not an image by name")
    (root / ".hidden.png").write_bytes(text_image(["HIDDEN"]))
    (root / ".cache").mkdir()
    (root / ".cache" / "x.png").write_bytes(text_image(["HIDDEN"]))
    return expected


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


async def start_serve(
    tmp_path: Path, settings: dict, **popen: Any
) -> tuple[trio.Process, str, Path]:
    """``hailo-ocr serve`` on a free port, configured by ``settings`` (a YAML file in
    ``tmp_path``) and by no ``HAILO_OCR_*`` variable: the process, its base URL once it
    listens, and its log."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(settings))
    log_path = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILO_OCR_")}
    with log_path.open("wb") as log:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "web.cli", "serve", "--config", str(cfg), "--port", "0"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
            cwd=REPO, **popen,
        )
    return proc, await wait_listening(proc, log_path), log_path


def words_of(text: str) -> list[str]:
    return re.findall(r"[A-Z]+", text.upper())


class ControlledBackend:
    """The real ONNX backend, with hooks: hold detection or recognition calls (after the
    first ``det_free_calls`` / ``rec_free_calls``) until a gate opens, or raise an error on
    the next call. Everything else passes through."""

    def __init__(
        self, config: Config, *, det_gate: trio.Event | None = None,
        rec_gate: trio.Event | None = None, rec_free_calls: int = 0, det_free_calls: int = 0,
        fail_next: BaseException | None = None,
    ) -> None:
        self.inner = OnnxBackend(config)
        self.det_gate = det_gate
        self.rec_gate = rec_gate
        self.rec_free_calls = rec_free_calls
        self.det_free_calls = det_free_calls
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
            n = self.det_calls
            self.det_calls += 1
            if self.det_gate is not None and n >= self.det_free_calls:
                await self.det_gate.wait()
        elif model_id.startswith("recognition"):
            n = self.rec_calls
            self.rec_calls += 1
            if self.rec_gate is not None and n >= self.rec_free_calls:
                await self.rec_gate.wait()
        return await self.inner.infer(model_id, batch)

    def close(self) -> None:
        self.inner.close()


def fails_once(config: Config, fault: BaseException) -> BackendFactory:
    """A CPU backend factory: the first backend raises ``fault`` on its first call; the
    ones made after it (the reload) are plain ONNX backends."""
    made: list[object] = []

    def make_backend(_model_ids: frozenset[str]):
        made.append(None)
        if len(made) == 1:
            return ControlledBackend(config, fail_next=fault)
        return OnnxBackend(config)

    return make_backend


@attrs.frozen
class RunningServer:
    url: str
    ws_url: str
    app: object
    state: AppState


@asynccontextmanager
async def running_server(
    config: Config, backends: Mapping[str, BackendFactory] | None = None
) -> AsyncIterator[RunningServer]:
    """The app under Hypercorn's Trio worker on 127.0.0.1:<free port>."""
    config = attrs.evolve(config, server=attrs.evolve(config.server, host="127.0.0.1", port=1))
    app = create_app(config, backends)
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


def quick(config: Config, **sections: dict) -> Config:
    """:func:`fast`, with one ONNX Runtime thread (quick on a shared 2-core machine) and a
    short shutdown grace (:func:`running_server` waits that long for idle connections
    as it stops)."""
    onnx = {"intra_op_threads": 1, **sections.pop("onnx_models", {})}
    server = {"shutdown_grace_s": 1.0, **sections.pop("server", {})}
    return fast(config, onnx_models=onnx, server=server, **sections)


def fast(config: Config, **sections: dict) -> Config:
    """``config`` with detection sized for the small synthetic images (no upscaling, so a
    request takes ~0.2 s instead of ~1 s on a busy CI core), plus any other changes."""
    changes = {"ocr": {"det_limit_type": "max", "det_limit_side_len": 960}}
    for name, keys in sections.items():
        changes[name] = {**changes.get(name, {}), **keys}
    return attrs.evolve(config, **{
        name: attrs.evolve(getattr(config, name), **keys) for name, keys in changes.items()
    })


@attrs.define
class ServedProcess:
    """A ``hailo-ocr serve`` subprocess: where it listens; its log and exit status once
    it has stopped."""

    proc: subprocess.Popen
    base: str
    log: str = ""
    returncode: int | None = None


@contextmanager
def serve_subprocess(
    args: list[str], *, env: dict[str, str], cwd: Path, ready_within_s: float = 90.0
) -> Iterator[ServedProcess]:
    """``python -m web.cli serve ARGS`` on a free loopback port, yielded once
    ``/health/ready`` answers 200 (failing at once, with the log, if it exits first);
    stopped with SIGTERM on the way out (killed after 30 s)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "web.cli", "serve", *args, "--port", str(port)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    served = ServedProcess(proc, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + ready_within_s
        while True:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            try:
                if httpx.get(f"{served.base}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        served.log = out.decode(errors="replace")
        served.returncode = proc.returncode
