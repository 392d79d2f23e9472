"""SIGTERM under load, on a real ``hailo-ocr serve`` subprocess.

Extends ``test_web_server.py::test_sigterm_lets_requests_in_flight_finish_and_exits_0``
(which checks that four requests in flight finish and that one new request is refused)
with what a supervisor cares about: REST *and* websocket work in flight both finish within
the grace period; a stream of new requests during the grace period is refused every time
(503 ``shutting_down`` with Retry-After, or no connection once the listener is closed),
none is left unanswered; the process exits 0 within the grace period and leaves nothing
behind (no process in its session, no child ever spawned).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio
import yaml
from helpers_server import WORDS, text_image, wait_listening, wait_until, words_of
from reliability_support import assert_error_body, children_of, proc_status
from trio_websocket import open_websocket_url

REPO = Path(__file__).resolve().parent.parent
GRACE_S = 30.0


def session_members(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (the server ran in its own session)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # state ppid pgrp session
            members.append(int(entry.name))
    return members


async def start_server(tmp_path: Path) -> tuple[trio.Process, str, Path]:
    settings = {
        "server": {"shutdown_grace_s": GRACE_S},
        "ocr": {"det_limit_type": "max", "det_limit_side_len": 960},
    }
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(settings))
    log_path = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILO_OCR_")}
    with log_path.open("wb") as log:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "web.cli", "serve", "--config", str(cfg), "--port", "0"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True,
        )
    return proc, await wait_listening(proc, log_path), log_path


@pytest.mark.slow
async def test_sigterm_under_load_finishes_rest_and_websocket_work_then_exits_clean(tmp_path):
    proc, url, log_path = await start_server(tmp_path)
    try:
        jobs = [WORDS[i : i + 6] for i in range(0, 12, 2)]  # six 6-line pages, ~1-3 s each
        images = [base64.b64encode(text_image(lines)).decode() for lines in jobs]
        ws_lines = WORDS[12:18]
        rest: dict[int, httpx.Response] = {}
        late: list[str] = []
        ws_events: list[dict] = []
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            threads_before = proc_status(proc.pid)["Threads"]

            async def one(i: int) -> None:
                rest[i] = await http.post("/v1/ocr/extract", json={"image": images[i]})

            async def stream() -> None:
                async with open_websocket_url(url.replace("http", "ws") + "/v1/ocr/stream") as ws:
                    await ws.send_message(json.dumps(
                        {"id": "w", "image": base64.b64encode(text_image(ws_lines)).decode()}))
                    while True:
                        event = json.loads(await ws.get_message())
                        ws_events.append(event)
                        if event["type"] in ("done", "error"):
                            return

            async def newcomer(fresh: httpx.AsyncClient) -> None:
                """New requests every 50 ms from SIGTERM until the listener is gone."""
                while True:
                    try:
                        r = await fresh.post("/v1/ocr/extract", json={"image": images[0]})
                    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                        late.append("refused")
                        return
                    assert_error_body(r.status_code, r.content, 503, "shutting_down")
                    assert int(r.headers["retry-after"]) >= 1
                    late.append("503")
                    await trio.sleep(0.05)

            async with trio.open_nursery() as nursery:
                for i in range(len(images)):
                    nursery.start_soon(one, i)
                nursery.start_soon(stream)

                async def all_in_flight() -> bool:
                    health = (await http.get("/health")).json()
                    return health["requests_in_flight"] >= len(images) + 1

                await wait_until(all_in_flight, within_s=60)
                assert children_of(proc.pid) == [], "the server spawned child processes"
                proc.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                await trio.sleep(0.1)
                async with httpx.AsyncClient(base_url=url, timeout=30) as fresh:
                    nursery.start_soon(newcomer, fresh)
                    with trio.fail_after(GRACE_S + 15):
                        code = await proc.wait()
            exited_after = time.monotonic() - signalled
        log = log_path.read_text()
        # Every request in flight at SIGTERM finished, with the right text.
        assert sorted(rest) == list(range(len(images)))
        for i, r in rest.items():
            assert r.status_code == 200, r.text
            assert words_of(r.json()["text"]) == jobs[i]
        assert ws_events and ws_events[-1]["type"] == "done", ws_events[-3:]
        assert words_of(ws_events[-1]["text"]) == ws_lines
        # Every newcomer was answered 503 until the listener closed, then refused.
        assert late and late[-1] == "refused" and set(late) <= {"503", "refused"}, late
        assert "503" in late, "the grace period refuses with 503 while it drains"
        # Clean exit within the grace period, nothing left running.
        assert code == 0, log
        assert exited_after < GRACE_S + 5, exited_after
        assert "SIGTERM: shutting down" in log and "Traceback" not in log
        assert session_members(proc.pid) == [], "processes survived the server"
        assert threads_before >= 1
    finally:
        if proc.poll() is None:
            proc.kill()
            await proc.wait()
