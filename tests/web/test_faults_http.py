"""Device faults seen through the HTTP server (Hypercorn on loopback, httpx clients).

A :class:`fakes.FakeDevice` stands in for the NPU: its fault plan raises mid-batch, hangs
past the deadline or loses the device. For each fault, while a watcher polls
``/health/ready``: the requests that shared the faulty call end with 503/504 within their
deadline (never a 500, never a hang), readiness goes false and then true again as the NPU
owner restarts its backend, and the next requests succeed with the right text.
"""

from __future__ import annotations

import base64

import httpx
import pytest
import trio

from npu.errors import DeviceFault, InferenceError
from tests.support.config import with_changes
from tests.support.fakes import FakeDevice, bars_image
from tests.support.reliability import assert_error_body
from tests.support.server import running_server


@pytest.fixture
def cfg(config):
    return with_changes(
        config,
        server={"request_timeout_s": 3.0},
        ocr={"det_limit_side_len": 32, "languages": ("en",)},
        backend={"job_timeout_s": 1.0, "restart_backoff_s": 0.3, "restart_backoff_max_s": 0.6},
        batching={"window_ms": 30.0},
    )


def body(ids: list[int]) -> dict:
    return {"image": base64.b64encode(bars_image(ids)).decode()}


class ReadyWatch:
    """Polls /health/ready every 20 ms and keeps the sequence of distinct answers."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.states: list[bool] = []

    async def run(self) -> None:
        while True:
            r = await self.http.get("/health/ready")
            assert r.status_code in (200, 503), r.text
            ready = r.status_code == 200
            if not ready:
                assert r.json()["ready"] is False and r.json()["reason"]
                assert int(r.headers["Retry-After"]) >= 1
            if not self.states or self.states[-1] != ready:
                self.states.append(ready)
            await trio.sleep(0.02)


async def _fault_round(cfg, arm, want: dict[int, set[str]], deadline_s: float) -> dict:
    """Start a server on a fresh FakeDevice; ``arm(device)`` plans the fault; four
    concurrent requests run into it. Returns what was observed."""
    device = FakeDevice(rec_batch_size=8)
    async with running_server(cfg, device.factory()) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            warm = await http.post("/v1/ocr/extract", json=body([1, 2]))
            assert warm.status_code == 200 and warm.json()["lines"] == ["1", "2"]
            watch = ReadyWatch(http)
            answers: dict[int, tuple[int, bytes, dict, float]] = {}
            arm(device)

            async def one(k: int) -> None:
                start = trio.current_time()
                r = await http.post("/v1/ocr/extract", json=body([10 + k, 20 + k]))
                answers[k] = (r.status_code, r.content, dict(r.headers),
                              trio.current_time() - start)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch.run)
                async with trio.open_nursery() as clients:
                    for k in range(4):
                        clients.start_soon(one, k)
                # Wait for the restart to be seen, then for a request to succeed.
                with trio.fail_after(15):
                    while watch.states[-2:] != [False, True]:  # noqa: ASYNC110 - polled
                        await trio.sleep(0.02)
                nursery.cancel_scope.cancel()
            after = await http.post("/v1/ocr/extract", json=body([7, 8, 9]))
            health = (await http.get("/health")).json()
        stats = server.state.service.statistics()

    failed = {k: a for k, a in answers.items() if a[0] != 200}
    assert failed, "the fault reached at least one request"
    for k, (status, raw, headers, took) in answers.items():
        if status == 200:
            continue
        doc = assert_error_body(status, raw)
        assert doc["code"] in want.get(status, set()), (status, doc)
        assert took < deadline_s, f"request {k} took {took:.2f} s"
        if status == 503:
            assert int(headers["retry-after"]) >= 1
    assert watch.states[:1] == [True] and False in watch.states and watch.states[-1] is True
    assert after.status_code == 200 and after.json()["lines"] == ["7", "8", "9"]
    assert health["status"] == "ok"
    assert stats.devices["cpu"].restarts >= 1 and stats.requests_in_flight == 0
    assert device.open_backends == 0  # every backend the owner made was closed
    return {"failed": len(failed), "restarts": stats.devices["cpu"].restarts, "device": device}


async def test_exception_mid_batch_is_503_and_the_device_restarts(cfg):
    seen = await _fault_round(
        cfg, lambda d: d.raise_after(0, DeviceFault("DMA error at /dev/hailo0")),
        {503: {"device_fault", "not_ready"}}, deadline_s=3.5,
    )
    assert seen["device"].loads >= 2


async def test_hang_past_the_deadline_is_504_or_503_within_it(cfg):
    # The device sleeps 60 s; the job timeout (1 s) declares a fault and the request
    # deadline (3 s) bounds every caller.
    seen = await _fault_round(
        cfg, lambda d: d.hang_after(0, 60.0),
        {504: {"request_timeout"}, 503: {"device_timeout", "not_ready", "device_fault"}},
        deadline_s=3.5,
    )
    hung = [c for c in seen["device"].rec_calls() if c.result == "cancelled"]
    assert hung, "the hung call was cancelled by the owner"


async def test_lost_device_is_503_and_it_is_reloaded(cfg):
    seen = await _fault_round(
        cfg, lambda d: d.lose_after(0, kind="recognition"),
        {503: {"device_lost", "not_ready", "device_fault"}}, deadline_s=3.5,
    )
    assert not seen["device"].lost and seen["device"].loads >= 2


async def test_inference_error_fails_one_request_without_a_restart(cfg):
    """A failed call that is not a device fault: 503 for its requests, no restart,
    readiness never drops."""
    device = FakeDevice()
    async with running_server(cfg, device.factory()) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            device.raise_after(0, InferenceError("bad output shape"))
            r = await http.post("/v1/ocr/extract", json=body([3, 4]))
            doc = assert_error_body(r.status_code, r.content, 503)
            assert "shape" not in doc["error"]
            assert (await http.get("/health/ready")).status_code == 200
            r = await http.post("/v1/ocr/extract", json=body([5]))
            assert r.status_code == 200 and r.json()["text"] == "5"
        assert server.state.service.statistics().devices["cpu"].restarts == 0
