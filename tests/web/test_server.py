"""The service over real sockets: Hypercorn's Trio worker on a free loopback port, called
with httpx; and ``hailo-ocr serve`` as a subprocess, stopped with SIGTERM mid-load."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.support.images import b64, data_uri, text_image
from tests.support.paths import REPO
from tests.support.server import WORDS, fast, running_server, start_serve, wait_until, words_of


async def test_every_endpoint_over_http(config):
    cfg = fast(config, server={"max_body_bytes": 2_000_000})
    png = text_image(["HELLO WORLD"])
    async with running_server(cfg) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            health = (await http.get("/health")).json()
            assert health["status"] == "ok" and health["backend"] == "onnx"
            assert (await http.get("/health/ready")).json() == {"ready": True}
            models = (await http.get("/models")).json()
            assert {m["id"] for m in models["data"]} >= {"detection", "recognition_en"}
            assert (await http.get("/openapi.json")).json()["openapi"].startswith("3.1")

            r = await http.post("/v1/ocr/extract", json={"image": data_uri(png)})
            assert r.status_code == 200 and r.json()["text"] == "HELLO WORLD"
            r = await http.post(
                "/v1/ocr/extract", files={"image": ("page.png", png, "image/png")},
                data={"languages": "en"},
            )
            assert r.status_code == 200 and r.json()["text"] == "HELLO WORLD"
            assert r.headers["content-type"].startswith("application/json")

            r = await http.post("/v1/ocr/extract", json={"image": "A" * 3_000_000})
            assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
            assert r.headers["connection"] == "close"  # its body was left unread
            # The client's next request (on a new connection) is answered, not stuck.
            r = await http.post("/v1/ocr/extract", content=b"{", headers={
                "Content-Type": "application/json"})
            assert r.status_code == 400 and r.json() == {
                "success": False, "error": r.json()["error"], "code": "invalid_json"}
            r = await http.post("/v1/ocr/extract", json={"image": b64(png), "languages": ["xx"]})
            assert r.status_code == 200 and r.json()["language"] == "en"
            assert [w["code"] for w in r.json()["warnings"]] == ["language_fallback"]


async def test_sixteen_concurrent_extracts_are_all_correct(config):
    jobs = [[WORDS[i % len(WORDS)], WORDS[(i * 7 + 3) % len(WORDS)]] for i in range(16)]
    results: dict[int, httpx.Response] = {}
    async with running_server(fast(config)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:

            async def one(i: int) -> None:
                results[i] = await http.post(
                    "/v1/ocr/extract", json={"image": b64(text_image(jobs[i]))}
                )

            async with trio.open_nursery() as nursery:
                for i in range(16):
                    nursery.start_soon(one, i)
        stats = server.state.service.statistics()
    for i, lines in enumerate(jobs):
        body = results[i].json()
        assert results[i].status_code == 200, body
        assert body["lines"] == lines, (i, body["lines"])
    assert stats.requests_admitted == 16 and stats.requests_failed == 0


# --- the real command, stopped by a signal ---------------------------------------------------


async def _start_serve(tmp_path: Path, extra: dict) -> tuple[trio.Process, str, Path]:
    settings = {
        "server": {"shutdown_grace_s": 30.0, **extra},
        "ocr": {"det_limit_type": "max", "det_limit_side_len": 960},
    }
    return await start_serve(tmp_path, settings)


@pytest.mark.slow
async def test_sigterm_lets_requests_in_flight_finish_and_exits_0(tmp_path):
    # No drain (drain_delay_s: 0): refusing starts at the signal. test_shutdown.py
    # covers the drain a load balancer sees.
    proc, url, log_path = await _start_serve(tmp_path, {"drain_delay_s": 0})
    try:
        log = log_path.read_text()
        assert "backend onnx loaded" in log and "PP-OCRv6_det_small.onnx" in log
        lines = WORDS[:12]
        image = b64(text_image(lines))
        answers: list[httpx.Response] = []
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:

            async def one() -> None:
                answers.append(await http.post("/v1/ocr/extract", json={"image": image}))

            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(one)

                async def all_in_flight() -> bool:
                    return (await http.get("/health")).json()["requests_in_flight"] >= 4

                await wait_until(all_in_flight, within_s=60)
                proc.send_signal(signal.SIGTERM)
                await trio.sleep(0.2)
                # A new request now is refused: 503 shutting_down, or no connection at all.
                try:
                    async with httpx.AsyncClient(base_url=url, timeout=30) as fresh:
                        late = await fresh.post("/v1/ocr/extract", json={"image": image})
                    assert late.status_code == 503, late.text
                    assert late.json()["code"] == "shutting_down"
                    assert int(late.headers["Retry-After"]) >= 1
                except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                    pass
        assert len(answers) == 4
        for r in answers:
            assert r.status_code == 200, r.text
            assert words_of(r.json()["text"]) == lines
        with trio.fail_after(60):
            code = await proc.wait()
        log = log_path.read_text()
        assert code == 0, log
        assert "SIGTERM: shutting down" in log and "Traceback" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            await proc.wait()


def test_serve_refuses_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"server": {"prot": 1}}))
    out = subprocess.run(
        [sys.executable, "-m", "web.cli", "serve", "--config", str(bad)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert out.returncode == 2
    assert "prot" in out.stderr and "allowed" in out.stderr
