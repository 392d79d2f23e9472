"""SIGTERM under load, on a real ``hailo-ocr serve`` subprocess.

Extends ``tests/web/test_server.py::test_sigterm_lets_requests_in_flight_finish_and_exits_0``
(no drain: four requests in flight finish and one new request is refused) with what a
supervisor and a load balancer care about. First the drain (``server.drain_delay_s``):
``/health/ready`` answers 503 ``draining`` at once, while new requests are still answered
with the right text and a websocket opened during the drain reads its image. Then the
shutdown: REST *and* websocket work in flight both finish within the grace period; a
stream of new requests is refused every time (503 ``shutting_down`` with Retry-After, or
no connection once the listener is closed), none is left unanswered; the idle websocket
is closed with 1001 only after the drain; the process exits 0 within the grace period and
leaves nothing behind (no process in its session, no child ever spawned).
"""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Final

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.support.images import text_image
from tests.support.reliability import assert_error_body, children_of, proc_status
from tests.support.server import WORDS, start_serve, wait_until, words_of

GRACE_S = 60.0
DRAIN_S = 3.0
#: Work in flight at SIGTERM, in seconds of one page read alone: enough to outlast the
#: drain by far even if concurrent pages are read twice as fast as one alone.
WORK_IN_DRAINS: Final = 4.0
MAX_PAGES: Final = 150
#: How far the server's clock may lag the test's on a loaded 2-core machine.
SLACK_S = 1.0


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
        "server": {
            "shutdown_grace_s": GRACE_S, "drain_delay_s": DRAIN_S, "max_in_flight": MAX_PAGES + 200,
        },
        "ocr": {"det_limit_type": "max", "det_limit_side_len": 960},
    }
    return await start_serve(tmp_path, settings, start_new_session=True)


def _order(seq: list[str], stages: list[str]) -> bool:
    """True when ``seq`` only moves forward through ``stages`` (each may be skipped)."""
    ranks = [stages.index(x) for x in seq]
    return ranks == sorted(ranks)


@pytest.mark.slow
async def test_sigterm_drains_then_finishes_rest_and_websocket_work_then_exits_clean(tmp_path):
    proc, url, log_path = await start_server(tmp_path)
    ws_url = url.replace("http", "ws") + "/v1/ocr/stream"
    try:
        small_lines = WORDS[:2]
        small = base64.b64encode(text_image(small_lines)).decode()
        # Requests must still be in flight when the drain ends, or the refusals that follow
        # cannot be seen: the number of 6-line pages is calibrated on this machine, now.
        probe_page = base64.b64encode(text_image(WORDS[:6])).decode()
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            await http.post("/v1/ocr/extract", json={"image": probe_page})  # warm
            started = time.monotonic()
            await http.post("/v1/ocr/extract", json={"image": probe_page})
            one_page_s = time.monotonic() - started
        pages = min(MAX_PAGES, max(16, math.ceil(2 * WORK_IN_DRAINS * DRAIN_S / one_page_s)))
        jobs = [WORDS[(2 * i) % 12 : (2 * i) % 12 + 6] for i in range(pages)]
        images = [base64.b64encode(text_image(lines)).decode() for lines in jobs]
        ws_lines = WORDS[12:18]
        rest: dict[int, httpx.Response] = {}
        late: list[tuple[float, str]] = []  # (sent, outcome) of new requests after SIGTERM
        ready: list[tuple[float, str]] = []  # /health/ready after SIGTERM
        ws_events: list[dict] = []
        drain_ws: dict[str, object] = {}
        signalled = 0.0
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            threads_before = proc_status(proc.pid)["Threads"]

            async def one(i: int) -> None:
                rest[i] = await http.post("/v1/ocr/extract", json={"image": images[i]})

            async def stream() -> None:
                async with open_websocket_url(ws_url) as ws:
                    await ws.send_message(json.dumps(
                        {"id": "w", "image": base64.b64encode(text_image(ws_lines)).decode()}))
                    while True:
                        event = json.loads(await ws.get_message())
                        ws_events.append(event)
                        if event["type"] in ("done", "error"):
                            return

            async def newcomer(fresh: httpx.AsyncClient) -> None:
                """A new request every 0.1 s from SIGTERM until one finds the listener gone:
                answered during the drain, then refused. Each is sent on its own: one sent
                during the drain waits behind the work in flight, the next must not."""
                gone = trio.Event()

                async def one_new(sent: float) -> None:
                    try:
                        r = await fresh.post("/v1/ocr/extract", json={"image": small})
                    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                        late.append((sent, "refused"))
                        gone.set()
                        return
                    if r.status_code == 200:
                        assert words_of(r.json()["text"]) == small_lines, r.text
                        late.append((sent, "200"))
                    else:
                        assert_error_body(r.status_code, r.content, 503, "shutting_down")
                        assert int(r.headers["retry-after"]) >= 1
                        late.append((sent, "503"))

                async with trio.open_nursery() as sending:
                    while not gone.is_set():
                        sending.start_soon(one_new, time.monotonic() - signalled)
                        with trio.move_on_after(0.1):
                            await gone.wait()

            async def watch_ready(fresh: httpx.AsyncClient) -> None:
                while True:
                    at = time.monotonic() - signalled
                    try:
                        r = await fresh.get("/health/ready")
                    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                        ready.append((at, "refused"))
                        return
                    ready.append((at, "ready" if r.status_code == 200 else r.json()["reason"]))
                    await trio.sleep(0.05)

            async def websocket_during_drain() -> None:
                """A websocket opened during the drain works; closed (1001) only after it."""
                await trio.sleep(0.3)
                async with open_websocket_url(ws_url) as ws:
                    await ws.send_message(json.dumps({"id": "d", "image": small}))
                    while True:
                        event = json.loads(await ws.get_message())
                        if event["type"] in ("done", "error"):
                            drain_ws["event"] = event
                            drain_ws["answered"] = time.monotonic() - signalled
                            break
                    try:
                        await ws.get_message()  # nothing more is sent: wait for the close
                    except ConnectionClosed as exc:
                        drain_ws["closed"] = time.monotonic() - signalled
                        drain_ws["code"] = exc.reason.code

            async with trio.open_nursery() as nursery:
                for i in range(len(images)):
                    nursery.start_soon(one, i)
                nursery.start_soon(stream)

                async def all_sent() -> bool:
                    """Every request answered or in flight (the first ones may be done
                    before the last arrive on a loaded machine): none is new at SIGTERM."""
                    health = (await http.get("/health")).json()
                    return len(rest) + health["requests_in_flight"] >= len(images) + 1

                await wait_until(all_sent, within_s=60)
                assert children_of(proc.pid) == [], "the server spawned child processes"
                proc.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                await trio.sleep(0.1)
                unpooled = httpx.Limits(max_connections=None, max_keepalive_connections=0)
                async with httpx.AsyncClient(base_url=url, timeout=60, limits=unpooled) as fresh, \
                        httpx.AsyncClient(base_url=url, timeout=30) as probe:
                    nursery.start_soon(newcomer, fresh)
                    nursery.start_soon(watch_ready, probe)
                    nursery.start_soon(websocket_during_drain)
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
        # The drain: not ready at once, while new work is still answered; then refusals.
        states = [state for _, state in ready]
        assert _order(states, ["ready", "draining", "shutting_down", "refused"]), ready
        assert "draining" in states, ready
        assert all(at < SLACK_S for at, state in ready if state == "ready"), ready
        assert all(at < DRAIN_S + SLACK_S for at, state in ready if state == "draining"), ready
        late.sort()  # by the time each was sent
        outcomes = [outcome for _, outcome in late]
        assert _order(outcomes, ["200", "503", "refused"]), late
        assert outcomes[0] == "200" and "503" in outcomes and outcomes[-1] == "refused", late
        assert all(outcome == "200" for sent, outcome in late if sent < DRAIN_S - SLACK_S), late
        assert all(sent < DRAIN_S + SLACK_S for sent, outcome in late if outcome == "200"), late
        # A websocket opened during the drain read its image, and was closed after it.
        event = drain_ws["event"]
        assert event["type"] == "done" and words_of(event["text"]) == small_lines, event
        assert drain_ws.get("code") == 1001, drain_ws
        assert drain_ws["closed"] >= DRAIN_S - 0.1, drain_ws
        # Clean exit within the drain and grace periods, nothing left running.
        assert code == 0, log
        assert DRAIN_S <= exited_after < DRAIN_S + GRACE_S + 5, exited_after
        assert "SIGTERM: shutting down" in log and "draining for" in log
        assert "Traceback" not in log
        assert session_members(proc.pid) == [], "processes survived the server"
        assert threads_before >= 1
    finally:
        if proc.poll() is None:
            proc.kill()
            await proc.wait()
