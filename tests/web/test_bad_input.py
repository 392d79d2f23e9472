"""The bad-input suite (issue 7): every malformed, hostile or merely odd request gets a 4xx
with the SPEC's error body and a stable code, no error body leaks a traceback or a host
path, and the service goes on answering valid requests while and after it is hit.

Most cases run through Quart's in-process test client; the same list, plus what only a
real socket can send (lying Content-Length, garbage request lines, oversized headers,
websocket frames), runs against Hypercorn on loopback."""

from __future__ import annotations

import json
import time

import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.support.images import b64, data_uri, png_header_only, text_image
from tests.support.reliability import (
    EXTRACT,
    JSON,
    assert_error_body,
    bad_input_cases,
    json_body,
    multipart,
    proc_status,
)
from tests.support.server import fast, running_server, words_of
from web.app import create_app, get_state

MAX_BODY = 300_000


def small_limits(config):
    return fast(config, server={"max_body_bytes": MAX_BODY})


async def _valid_requests_until(done: trio.Event, post, answers: list[int]) -> None:
    """Keep sending one valid image until ``done``; record each status."""
    image = json_body({"image": b64(text_image(["HELLO"], scale=1.0))})
    while not done.is_set():
        status, body = await post(image)
        assert status == 200, body[:300]
        assert words_of(json.loads(body)["text"]) == ["HELLO"]
        answers.append(status)


async def test_every_bad_input_gets_its_4xx_while_valid_requests_keep_working(config):
    cases = bad_input_cases(MAX_BODY)
    assert len(cases) >= 60
    app = create_app(small_limits(config))
    async with app.test_app() as test_app:
        client = test_app.test_client()

        async def post_valid(body: bytes) -> tuple[int, bytes]:
            r = await client.post(EXTRACT, data=body, headers=JSON)
            return r.status_code, await r.get_data()

        valid: list[int] = []
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_valid_requests_until, done, post_valid, valid)
            for case in cases:
                r = await client.open(
                    case.path, method=case.method, data=case.body, headers=case.headers
                )
                body = await r.get_data()
                if case.code is None:
                    assert r.status_code == 200, (case.name, body[:300])
                    continue
                try:
                    assert_error_body(r.status_code, body, case.status, case.code)
                except AssertionError as exc:
                    raise AssertionError(f"case {case.name!r}: {exc}") from None
                assert 400 <= r.status_code < 500, case.name
            done.set()
        assert valid, "valid requests ran alongside the bad ones"
        # ... and after them.
        status, body = await post_valid(json_body({"image": b64(text_image(["WORLD"], scale=1.0))}))
        assert status == 200 and words_of(json.loads(body)["text"]) == ["WORLD"]
        stats = get_state(app).service.statistics()
        assert stats.requests_in_flight == 0


async def test_decompression_bomb_is_refused_before_allocating(config):
    """A ~100-byte PNG declaring 50 000 x 50 000 (7.5 GB of pixels) is refused from its
    header: the answer is quick and the process's peak RSS does not move."""
    bomb = png_header_only(50_000, 50_000)
    assert len(bomb) < 200
    app = create_app(fast(config))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        before = proc_status()["VmHWM"]
        body, headers = multipart([("image", "bomb.png", "image/png", bomb)])
        for kwargs in (
            dict(data=json_body({"image": b64(bomb)}), headers=JSON),
            dict(data=json_body({"image": data_uri(bomb, "image/png")}), headers=JSON),
            dict(data=body, headers=headers),
            dict(data=bomb, headers={"Content-Type": "image/png"}),
        ):
            start = time.monotonic()
            r = await client.post(EXTRACT, **kwargs)
            assert time.monotonic() - start < 5.0
            doc = assert_error_body(r.status_code, await r.get_data(), 413, "image_too_large")
            assert "2500000000" in doc["error"]
        grown_mb = (proc_status()["VmHWM"] - before) / 1024
    assert grown_mb < 100, f"peak RSS grew by {grown_mb:.0f} MB on a refused bomb"


async def _raw_exchange(port: int, data: bytes, within_s: float = 10.0) -> bytes:
    """Send raw bytes on a fresh connection; what the server answers before closing or
    going quiet for 1 s."""
    out = b""
    with trio.fail_after(within_s):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(data)
            while True:
                with trio.move_on_after(1.0) as quiet:
                    chunk = await stream.receive_some(65536)
                if quiet.cancelled_caught or not chunk:
                    return out
                out += chunk


def _status_and_body(raw: bytes) -> tuple[int, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_bad_inputs_over_a_real_socket(config):
    import httpx

    cases = bad_input_cases(MAX_BODY)
    async with running_server(small_limits(config)) as server:
        port = int(server.url.rsplit(":", 1)[1])
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            for case in cases:
                r = await http.request(
                    case.method, case.path, content=case.body, headers=case.headers
                )
                if case.code is None:
                    assert r.status_code == 200, (case.name, r.text[:300])
                    continue
                try:
                    assert_error_body(r.status_code, r.content, case.status, case.code)
                except AssertionError as exc:
                    raise AssertionError(f"case {case.name!r}: {exc}") from None

            # A body declared far over the limit is refused from its Content-Length alone,
            # without waiting for (or reading) a byte of it.
            start = time.monotonic()
            raw = await _raw_exchange(port, (
                f"POST {EXTRACT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: 1000000000\r\n\r\n{\"image\": \"").encode())
            status, body = _status_and_body(raw)
            assert status == 413 and time.monotonic() - start < 5
            assert_error_body(status, body.split(b"\r\n0\r\n")[0].split(b"\r\n", 1)[-1]
                              if body[:1] != b"{" else body, 413, "payload_too_large")

            # A body shorter than its Content-Length: the server waits, the client gives
            # up; nothing is left behind (checked below through requests_in_flight).
            with trio.move_on_after(1.5):
                await _raw_exchange(port, (
                    f"POST {EXTRACT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    "Content-Length: 100\r\n\r\n{\"ima").encode(), within_s=60)

            # Garbage where a request line should be, and 100 kB of headers: the HTTP
            # layer answers (a 4xx, or h11's lenient 200 for an odd version) or closes the
            # connection, never a 5xx.
            for junk in (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # TLS hello
                b"GET / HTTP/9.9\r\n\r\n",
                b"BREW /pot HTCPCP/1.0\r\n\r\n",
                b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
            ):
                raw = await _raw_exchange(port, junk)
                if raw.startswith(b"HTTP/"):
                    assert _status_and_body(raw)[0] < 500, raw[:200]

            # Still serving, with nothing stuck in flight.
            r = await http.post(EXTRACT, json={"image": b64(text_image(["HELLO"], scale=1.0))})
            assert r.status_code == 200 and words_of(r.json()["text"]) == ["HELLO"]
            assert (await http.get("/health")).json()["requests_in_flight"] == 0


async def test_websocket_binary_and_non_json_frames_over_a_real_socket(config):
    cfg = fast(config, server={"max_body_bytes": MAX_BODY})
    async with running_server(cfg) as server:
        async with open_websocket_url(server.ws_url + "/v1/ocr/stream") as ws:
            frames = [
                (b"\x00\x01\x02binary", "invalid_message"),
                (b"", "invalid_message"),  # found by benchmarks/fuzz.py: closed the socket
                ("", "invalid_json"),
                (bytes(5000), "invalid_message"),
                ("not json at all", "invalid_json"),
                ("{\"id\": 1, ", "invalid_json"),
                ("[" * 10000 + "]" * 10000, "invalid_json"),
                ("\"just a string\"", "invalid_message"),
                (json.dumps({"id": "x", "image": b64(b"%PDF-1.4 nope")}), "invalid_pdf"),
                (json.dumps({"id": "y", "image": b64(text_image(["HELLO"], scale=1.0)),
                             "pages": "x"}), "invalid_field"),
            ]
            for frame, code in frames:
                await ws.send_message(frame)
                with trio.fail_after(30):
                    event = json.loads(await ws.get_message())
                    while event["type"] != "error":  # "accepted" may come first
                        event = json.loads(await ws.get_message())
                assert event["code"] == code, (str(frame)[:40], event)
                for leak in ("Traceback", "/work/", 'File "'):
                    assert leak not in json.dumps(event)
            # The socket is still open and still reads images.
            hello = b64(text_image(["HELLO"], scale=1.0))
            await ws.send_message(json.dumps({"id": "ok", "image": hello}))
            with trio.fail_after(60):
                while True:
                    event = json.loads(await ws.get_message())
                    if event["type"] in ("done", "error"):
                        break
            assert event["type"] == "done" and event["id"] == "ok", event
            assert words_of(event["text"]) == ["HELLO"]

        # A message over the size limit: Hypercorn closes that socket with 1009 (message
        # too big) before buffering it; the server and other sockets carry on.
        async with open_websocket_url(server.ws_url + "/v1/ocr/stream") as ws:
            await ws.send_message(json.dumps({"id": "big", "image": "A" * (MAX_BODY + 5000)}))
            with trio.fail_after(10):
                try:
                    await ws.get_message()
                    raise AssertionError("an oversized message was not refused")
                except ConnectionClosed as exc:
                    assert exc.reason.code == 1009, exc.reason
        async with open_websocket_url(server.ws_url + "/v1/ocr/stream") as ws:
            await ws.send_message("nope")
            with trio.fail_after(10):
                assert json.loads(await ws.get_message())["code"] == "invalid_json"
