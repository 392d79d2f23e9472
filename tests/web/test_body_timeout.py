"""Slow clients cannot hold the service (``web/body_timeout.py``, ``server.read_timeout_s``).

Against the app under Hypercorn on a real socket: a hundred connections that send their
headers and the start of a body, then nothing, are each answered ``408 request_timeout``
and closed once the read timeout has passed (before it, with the Quart body timeout of a
minute as the only bound, all hundred were still open after 70 s); the same for a chunked
body and for headers that promise a body that never starts. Meanwhile a normal request is
answered, and an upload that is slow but steady (a chunk every half timeout, three timeouts
in all) is not cut: the timeout is on silence, not on the length of the upload.
"""

from __future__ import annotations

import base64
import json
import time

import httpx
import trio

from tests.support.images import text_image
from tests.support.server import WORDS, fast, running_server, words_of

READ_TIMEOUT_S = 1.5
STALLED = 100


def _head(port: int, length: int | None, *, chunked: bool = False) -> bytes:
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}"
    return (
        f"POST /v1/ocr/extract HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n"
    ).encode()


async def _stall(port: int, opening: bytes, results: list, within_s: float) -> None:
    """Send ``opening`` and nothing more; record (seconds until closed, bytes received)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(opening)
        sent = time.monotonic()
        received = b""
        with trio.fail_after(within_s):
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    break
                received += data
        results.append((time.monotonic() - sent, received))


async def _read_response(stream: trio.SocketStream) -> bytes:
    """One whole response (the service always sends Content-Length)."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += await stream.receive_some(65536)
    head, _, body = raw.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += await stream.receive_some(65536)
    return head + b"\r\n\r\n" + body


def _status_and_body(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_stalled_uploads_are_answered_408_and_closed_while_others_are_served(config):
    cfg = fast(config, server={"read_timeout_s": READ_TIMEOUT_S})
    lines = WORDS[:3]
    image = base64.b64encode(text_image(lines)).decode()
    body = json.dumps({"image": image}).encode()
    async with running_server(cfg) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        stalled: list[tuple[float, bytes]] = []
        slow: dict[str, object] = {}
        within = READ_TIMEOUT_S + 20

        async def slow_but_steady() -> None:
            """Three read timeouts long, never silent for more than half of one."""
            step = -(-len(body) // 6)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(_head(port, len(body)))
                for i in range(0, len(body), step):
                    await trio.sleep(READ_TIMEOUT_S / 2)
                    await stream.send_all(body[i : i + step])
                with trio.fail_after(60):
                    slow["answer"] = _status_and_body(await _read_response(stream))

        async with trio.open_nursery() as nursery:
            started = time.monotonic()
            opening = _head(port, len(body)) + body[:100]
            for _ in range(STALLED - 2):
                nursery.start_soon(_stall, port, opening, stalled, within)
            # A chunked body that stops after its first chunk, and a body that never starts.
            nursery.start_soon(
                _stall, port, _head(port, None, chunked=True) + b"10\r\n" + body[:16] + b"\r\n",
                stalled, within,
            )
            nursery.start_soon(_stall, port, _head(port, len(body)), stalled, within)
            nursery.start_soon(slow_but_steady)
            await trio.sleep(0.2)
            async with httpx.AsyncClient(base_url=srv.url, timeout=60) as http:
                r = await http.post("/v1/ocr/extract", json={"image": image})
                assert r.status_code == 200, r.text
                assert words_of(r.json()["text"]) == lines
                assert (await http.get("/health/ready")).status_code == 200
        elapsed = time.monotonic() - started

    assert len(stalled) == STALLED
    for closed_after, raw in stalled:
        # Closed after the read timeout (not before), answered with the JSON error first.
        assert READ_TIMEOUT_S - 0.1 <= closed_after <= READ_TIMEOUT_S + 10, closed_after
        status, doc = _status_and_body(raw)
        assert status == 408 and doc["code"] == "request_timeout", raw[:300]
        assert doc["success"] is False and "stalled" in doc["error"]
    status, doc = slow["answer"]
    assert status == 200, doc
    assert words_of(doc["text"]) == lines
    assert elapsed >= 3 * READ_TIMEOUT_S
