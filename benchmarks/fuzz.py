"""Long-running fuzzer against a real ``hailo-ocr serve`` on loopback.

    python -m benchmarks.fuzz                    # 10 000 cases, 8 connections
    python -m benchmarks.fuzz --cases 50000 --seed 3
    python -m benchmarks.fuzz --url http://127.0.0.1:11436   # an already running server

Each case is one request to ``POST /v1/ocr/extract`` built by
``tests/support/reliability.fuzz_request``: mutated real encodings (bit flips and
truncations weighted towards the JPEG/PNG/WebP/TIFF/BMP headers, chunk-length and marker
corruption, duplicated segments) sent as base64, data URIs and multipart uploads; random
JSON shapes (wrong types, deep nesting, broken documents); random multipart bodies (odd
field names, filenames, content types, boundaries, truncation); and random bytes under
assorted content types. A further one case in fifty is a websocket frame of the same kinds.

A *crash* is any of: a 5xx answer, an error body that is not the SPEC's (or leaks a
traceback or path), no answer within ``--timeout`` (a hang), or a dropped connection. The
server's liveness is checked every 500 cases, and at the end its log is searched for
tracebacks. Crashing inputs are saved under ``--out`` to be replayed. Exit status 0 when
there were none.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from benchmarks.soak import REPO, spawn_server, stop_server

sys.path.insert(0, str(REPO))

from tests.support.reliability import (
    error_body_problems,
    fuzz_request,
    random_json_value,
    seed_images,
)


class Fuzz:
    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args = args
        self.out = out
        self.rng = random.Random(args.seed)
        self.images = seed_images()
        self.kinds: Counter = Counter()
        self.statuses: Counter = Counter()
        self.crashes: list[dict[str, Any]] = []
        self.done = 0

    def crash(self, kind: str, reason: str, body: bytes, headers: dict[str, str]) -> None:
        n = len(self.crashes)
        if n < 200:
            path = self.out / f"crash-{n:04d}.bin"
            path.write_bytes(body)
            path.with_suffix(".json").write_text(json.dumps({"kind": kind, "reason": reason,
                                                             "headers": headers}))
        self.crashes.append({"kind": kind, "reason": reason[:300]})
        print(f"CRASH {kind}: {reason[:200]}", flush=True)

    async def one_http(self, http: httpx.AsyncClient, rng: random.Random) -> None:
        kind, body, headers = fuzz_request(rng, self.images)
        self.kinds[kind] += 1
        try:
            r = await http.post("/v1/ocr/extract", content=body, headers=headers)
        except httpx.TimeoutException:
            self.crash(kind, f"no answer within {self.args.timeout} s (hang)", body, headers)
            return
        except httpx.TransportError as exc:
            self.crash(kind, f"connection dropped: {exc!r}", body, headers)
            return
        self.statuses[r.status_code] += 1
        if r.status_code >= 500 and r.status_code != 503:
            self.crash(kind, f"{r.status_code}: {r.text[:300]}", body, headers)
        elif r.status_code == 503:
            # 503 is only right for overload/device trouble, never for a bad input.
            self.crash(kind, f"503 on a healthy server: {r.text[:300]}", body, headers)
        elif r.status_code >= 400:
            problems = error_body_problems(r.status_code, r.content, sent=body)
            if problems:
                self.crash(kind, "; ".join(problems), body, headers)
        else:
            doc = r.json()
            if doc.get("success") is not True or not isinstance(doc.get("text"), str):
                self.crash(kind, f"200 with a malformed body: {r.text[:300]}", body, headers)

    async def one_ws(self, ws_url: str, rng: random.Random) -> None:
        _, body, _ = fuzz_request(rng, self.images)
        frame: str | bytes
        choice = rng.randrange(3)
        if choice == 0:
            frame = body
        elif choice == 1:
            frame = json.dumps({"id": rng.randrange(100), "image": random_json_value(rng),
                                "languages": random_json_value(rng)})
        else:
            frame = body.decode("utf-8", "replace")
        self.kinds["websocket"] += 1
        try:
            async with open_websocket_url(ws_url + "/v1/ocr/stream") as ws:
                await ws.send_message(frame)
                with trio.fail_after(self.args.timeout):
                    while True:
                        event = json.loads(await ws.get_message())
                        if event["type"] in ("done", "error"):
                            break
        except trio.TooSlowError:
            self.crash("websocket", "no final event (hang)", body, {})
            return
        except Exception as exc:  # noqa: BLE001 - any failure of the exchange is a finding
            self.crash("websocket", f"socket failed: {exc!r}", body, {})
            return
        status = 200 if event["type"] == "done" else int(event.get("status", 0))
        self.statuses[status] += 1
        if status >= 500 or (event["type"] == "error" and (not event.get("code")
                                                           or "Traceback" in event["error"])):
            self.crash("websocket", f"bad event {event}", body, {})

    async def worker(self, n: int, url: str, counter: list[int]) -> None:
        rng = random.Random(self.args.seed * 7919 + n)
        async with httpx.AsyncClient(base_url=url, timeout=self.args.timeout) as http:
            while counter[0] < self.args.cases:
                counter[0] += 1
                if rng.random() < 0.02:
                    await self.one_ws("ws" + url[4:], rng)
                else:
                    await self.one_http(http, rng)
                self.done += 1
                if self.done % 500 == 0:
                    r = await http.get("/health")
                    ok = r.status_code == 200 and r.json()["status"] == "ok"
                    print(f"{self.done} cases, {len(self.crashes)} crashes, statuses "
                          f"{dict(sorted(self.statuses.items()))}, healthy={ok}", flush=True)
                    if not ok:
                        self.crash("liveness", f"/health says {r.text[:200]}", b"", {})


async def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    server = None
    url = args.url
    if url is None:
        server = spawn_server(out, {"server": {"max_in_flight": 64}})
        url = server.url
    fuzz = Fuzz(args, out)
    started = time.monotonic()
    counter = [0]
    async with trio.open_nursery() as nursery:
        for n in range(args.concurrency):
            nursery.start_soon(fuzz.worker, n, url, counter)
    elapsed = time.monotonic() - started
    tracebacks = 0
    exit_code = None
    if server is not None:
        exit_code = stop_server(server)
        log = server.log_path.read_text()
        tracebacks = log.count("Traceback")
        if tracebacks:
            fuzz.crash("server-log", f"{tracebacks} traceback(s) in {server.log_path}", b"", {})
        if exit_code != 0:
            fuzz.crash("server-exit", f"exit status {exit_code}", b"", {})
    return {
        "cases": fuzz.done, "seconds": round(elapsed, 1), "seed": args.seed,
        "kinds": dict(fuzz.kinds), "statuses": dict(sorted(fuzz.statuses.items())),
        "crashes": len(fuzz.crashes), "crash_samples": fuzz.crashes[:20],
        "server_exit": exit_code, "tracebacks_in_log": tracebacks, "out": str(out),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a hang")
    p.add_argument("--url", help="fuzz this running server instead of spawning one")
    p.add_argument("--out", help="directory for crashing inputs and the server log")
    p.add_argument("--json", metavar="FILE", help="write the summary here")
    args = p.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="hailo-ocr-fuzz-"))
    out.mkdir(parents=True, exist_ok=True)
    result = trio.run(run, args, out)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print("NO CRASHES" if result["crashes"] == 0 else f"{result['crashes']} CRASHES")
    return 0 if result["crashes"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
