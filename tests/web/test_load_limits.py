"""Admission control over a real socket: beyond ``server.max_in_flight`` the answer is a
quick 429 with Retry-After, the admitted requests finish normally, and afterwards the
server is back to accepting."""

from __future__ import annotations

import time

import httpx
import trio

from tests.support.images import b64, text_image
from tests.support.reliability import assert_error_body
from tests.support.server import ControlledBackend, fast, running_server, wait_until, words_of


async def test_twenty_at_once_against_a_limit_of_two(config):
    cfg = fast(config, server={"max_in_flight": 2})
    gate = trio.Event()
    backend = ControlledBackend(cfg, det_gate=gate)  # holds the admitted two in detection
    image = b64(text_image(["HELLO"], scale=1.0))
    answers: list[tuple[int, bytes, dict, float]] = []
    async with running_server(cfg, {"cpu": lambda _ids: backend}) as server:
        service = server.state.service
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http:

            async def one() -> None:
                start = time.monotonic()
                r = await http.post("/v1/ocr/extract", json={"image": image})
                answers.append((r.status_code, r.content, dict(r.headers),
                                time.monotonic() - start))

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(one)
                # The eighteen refusals arrive while the two admitted ones are held.
                await wait_until(lambda: len(answers) >= 18, within_s=20)
                assert service.statistics().requests_in_flight == 2
                assert not gate.is_set()
                gate.set()
            after = await http.post("/v1/ocr/extract", json={"image": image})
    refused = [a for a in answers if a[0] == 429]
    admitted = [a for a in answers if a[0] == 200]
    assert len(refused) == 18 and len(admitted) == 2, sorted(a[0] for a in answers)
    for status, raw, headers, took in refused:
        assert_error_body(status, raw, 429, "overloaded")
        assert int(headers["retry-after"]) >= 1
        assert took < 5.0, f"a refusal took {took:.2f} s"
    for _, raw, _, _ in admitted:
        assert words_of(httpx.Response(200, content=raw).json()["text"]) == ["HELLO"]
    assert after.status_code == 200
    stats = service.statistics()
    assert stats.requests_refused == 18 and stats.requests_in_flight == 0
