"""Load and soak test: 16 concurrent clients against ``hailo-ocr serve`` on loopback.

    python -m benchmarks.soak                 # 10 minutes (the recorded run, RELIABILITY.md)
    python -m benchmarks.soak --minutes 1     # a quick look
    python -m benchmarks.soak --json out.json # keep every number

The server is spawned as a subprocess (the CPU backend, detection sized for the small
synthetic images as in the tests). 14 HTTP clients and 2 websocket clients each send one
request at a time, alternating at random between valid images (JSON base64, data URI,
multipart; the answer's text is checked) and the bad-input suite's invalid requests (the
answer's status and code are checked). At the end of the first minute (the warm-up: a
tenth of the run when it is shorter than ten minutes) the clients pause, the server is
allowed to go idle, and the baseline is taken: RSS and thread count from
``/proc/<pid>/status``, Trio task count from ``/health``. The same is taken after the last
request. The run passes when:

* every request got an answer (none lost: no client timeout, no dropped connection);
* no valid request got a 5xx (a 429 under overload is allowed, and counted);
* every invalid request got the 4xx and code the suite expects;
* RSS at the end is within 10 % of the baseline;
* threads and tasks at the end are not above the baseline.

Exit status 0 when it passes, 1 otherwise; the summary is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
import yaml
from trio_websocket import open_websocket_url

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.images import b64, data_uri, text_image  # noqa: E402
from tests.support.reliability import (  # noqa: E402
    JSON,
    bad_input_cases,
    error_body_problems,
    multipart,
    proc_status,
)

WORDS = ["HELLO", "WORLD", "TOTAL", "AMOUNT", "GARDEN", "WINDOW", "SILVER", "MARKET",
         "RIVER", "FOREST", "PLANET", "BRIDGE"]
#: A client gives up on one answer after this long and counts the request as hung.
CLIENT_TIMEOUT_S = 120.0
MAX_BODY = 2_000_000


# -- the server --------------------------------------------------------------------------


@attrs.define
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


def spawn_server(workdir: Path, extra: dict[str, dict[str, Any]] | None = None,
                 timeout_s: float = 120.0) -> Server:
    """``hailo-ocr serve`` on a free loopback port, once it listens (models loaded)."""
    settings: dict[str, dict[str, Any]] = {
        "server": {"max_body_bytes": MAX_BODY, "shutdown_grace_s": 20.0, "log_level": "warning"},
        "ocr": {"det_limit_type": "max", "det_limit_side_len": 960, "languages": ["en", "zh"]},
    }
    for section, keys in (extra or {}).items():
        settings[section] = {**settings.get(section, {}), **keys}
    cfg = workdir / "server.yaml"
    cfg.write_text(yaml.safe_dump(settings))
    log_path = workdir / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILO_OCR_")}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "serve", "--config", str(cfg), "--port", "0",
             "--log-level", "info"],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log_path.read_text())
        if m:
            return Server(proc, m.group(1), log_path)
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}):\n"
                               + log_path.read_text()[-3000:])
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start in time")


def stop_server(server: Server, timeout_s: float = 60.0) -> int:
    """SIGTERM and wait; the exit status (killed and -9 if it would not stop)."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            return server.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
            return -9
    return server.proc.returncode


# -- the clients -------------------------------------------------------------------------


@attrs.define
class Tally:
    sent: int = 0
    answered: int = 0
    valid_ok: int = 0
    valid_overloaded: int = 0
    valid_5xx: int = 0
    valid_wrong: int = 0
    invalid_ok: int = 0
    invalid_wrong: int = 0
    hung: int = 0
    dropped: int = 0
    ws_messages: int = 0
    statuses: Counter = attrs.Factory(Counter)
    problems: list[str] = attrs.Factory(list)
    latencies: list[float] = attrs.Factory(list)

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)


class Gate:
    """Lets the clients be paused (for the baseline) and stopped."""

    def __init__(self) -> None:
        self.open = trio.Event()
        self.open.set()
        self.stop = False
        self.busy = 0


def _valid_request(rng: random.Random, images: dict[str, bytes]) -> tuple[str, bytes, dict]:
    words = rng.sample(WORDS, rng.randint(1, 3))
    key = " ".join(words)
    if key not in images:
        images[key] = text_image(words, rng.choice([".png", ".jpg"]), scale=1.0)
    data = images[key]
    form = rng.randrange(3)
    if form == 0:
        return key, json.dumps({"image": b64(data), "languages": ["en"]}).encode(), JSON
    if form == 1:
        mt = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
        return key, json.dumps({"image": data_uri(data, mt)}).encode(), JSON
    body, headers = multipart([("image", "page", None, data), ("languages", None, None, b"en")])
    return key, body, headers


def _check_valid(t: Tally, key: str, status: int, raw: bytes) -> None:
    if status == 200:
        lines = json.loads(raw).get("lines", [])
        if lines == key.split(" "):
            t.valid_ok += 1
        else:
            t.valid_wrong += 1
            t.problem(f"valid {key!r} read as {lines!r}")
    elif status == 429:
        t.valid_overloaded += 1
    elif status >= 500:
        t.valid_5xx += 1
        t.problem(f"valid {key!r}: {status} {raw[:200]!r}")
    else:
        t.valid_wrong += 1
        t.problem(f"valid {key!r}: {status} {raw[:200]!r}")


async def http_client(n: int, url: str, gate: Gate, t: Tally, seed: int) -> None:
    rng = random.Random(seed * 1000 + n)
    cases = bad_input_cases(MAX_BODY)
    images: dict[str, bytes] = {}
    async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT_S) as http:
        while not gate.stop:
            await gate.open.wait()
            if gate.stop:
                return
            gate.busy += 1
            try:
                if rng.random() < 0.5:
                    key, body, headers = _valid_request(rng, images)
                    case = None
                else:
                    case = rng.choice(cases)
                    body, headers = case.body, case.headers
                t.sent += 1
                start = time.monotonic()
                try:
                    if case is None:
                        r = await http.post("/v1/ocr/extract", content=body, headers=headers)
                    else:
                        r = await http.request(case.method, case.path, content=body,
                                               headers=headers)
                except httpx.TimeoutException:
                    t.hung += 1
                    t.problem(f"client {n}: no answer in {CLIENT_TIMEOUT_S} s")
                    continue
                except httpx.TransportError as exc:
                    t.dropped += 1
                    t.problem(f"client {n}: connection dropped: {exc!r}")
                    continue
                t.answered += 1
                t.statuses[r.status_code] += 1
                t.latencies.append(time.monotonic() - start)
                if case is None:
                    _check_valid(t, key, r.status_code, r.content)
                elif case.code is None:
                    ok = r.status_code == 200
                    t.invalid_ok += ok
                    t.invalid_wrong += not ok
                    if not ok:
                        t.problem(f"{case.name}: {r.status_code} {r.content[:200]!r}")
                else:
                    problems = error_body_problems(r.status_code, r.content)
                    code = r.json().get("code") if not problems else None
                    if r.status_code == case.status and code == case.code:
                        t.invalid_ok += 1
                    elif r.status_code == 429:
                        t.invalid_ok += 1  # refused before it was looked at: fine
                    else:
                        t.invalid_wrong += 1
                        t.problem(f"{case.name}: {r.status_code} {r.content[:200]!r} {problems}")
            finally:
                gate.busy -= 1


async def ws_client(n: int, ws_url: str, gate: Gate, t: Tally, seed: int) -> None:
    """One socket for the whole run; one image (or one bad frame) in flight at a time."""
    rng = random.Random(seed * 1000 + n)
    images: dict[str, bytes] = {}
    async with open_websocket_url(ws_url + "/v1/ocr/stream",
                                  max_message_size=MAX_BODY * 2) as ws:
        i = 0
        while not gate.stop:
            await gate.open.wait()
            if gate.stop:
                return
            gate.busy += 1
            try:
                i += 1
                valid = rng.random() < 0.6
                if valid:
                    words = rng.sample(WORDS, rng.randint(1, 3))
                    key = " ".join(words)
                    images.setdefault(key, text_image(words, scale=1.0))
                    await ws.send_message(json.dumps({"id": i, "image": b64(images[key])}))
                else:
                    await ws.send_message(rng.choice(
                        [b"\x00binary", "not json", json.dumps({"id": i, "image": "@@"})]))
                t.sent += 1
                start = time.monotonic()
                with trio.move_on_after(CLIENT_TIMEOUT_S) as scope:
                    while True:
                        event = json.loads(await ws.get_message())
                        t.ws_messages += 1
                        if event["type"] == "error" or (
                            event["type"] == "done" and event.get("id") == i):
                            break
                if scope.cancelled_caught:
                    t.hung += 1
                    t.problem(f"ws client {n}: no final event in {CLIENT_TIMEOUT_S} s")
                    continue
                t.answered += 1
                t.latencies.append(time.monotonic() - start)
                status = 200 if event["type"] == "done" else int(event.get("status", 400))
                t.statuses[status] += 1
                if valid:
                    raw = json.dumps({"lines": event.get("lines", [])}).encode()
                    _check_valid(t, key, status, raw if status == 200 else
                                 json.dumps(event).encode())
                elif event["type"] == "error" and 400 <= status < 500:
                    t.invalid_ok += 1
                else:
                    t.invalid_wrong += 1
                    t.problem(f"ws bad frame answered {event}")
            finally:
                gate.busy -= 1


# -- the run -----------------------------------------------------------------------------


async def snapshot(http: httpx.AsyncClient, pid: int) -> dict[str, Any]:
    health = (await http.get("/health")).json()
    st = proc_status(pid)
    return {"rss_mb": round(st["VmRSS"] / 1024, 1), "threads": st["Threads"],
            "python_threads": health["debug"]["threads"], "tasks": health["debug"]["tasks"],
            "in_flight": health["requests_in_flight"]}


async def quiet_snapshot(http: httpx.AsyncClient, pid: int, gate: Gate) -> dict[str, Any]:
    """Pause the clients, let the server go idle (and Trio's idle worker threads, which
    linger 10 s, exit), then measure."""
    gate.open = trio.Event()
    with trio.fail_after(CLIENT_TIMEOUT_S + 30):
        while gate.busy:  # noqa: ASYNC110 - polling a counter the clients keep
            await trio.sleep(0.05)
    await trio.sleep(12.0)
    return await snapshot(http, pid)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="hailo-ocr-soak-"))
    server = spawn_server(workdir)
    started = time.monotonic()
    tally = Tally()
    gate = Gate()
    samples: list[dict[str, Any]] = []
    total_s = args.minutes * 60.0
    warmup_s = min(60.0, total_s / 10.0)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            async with trio.open_nursery() as nursery:
                for n in range(args.clients):
                    if n < args.ws_clients:
                        nursery.start_soon(ws_client, n, "ws" + server.url[4:], gate, tally,
                                           args.seed)
                    else:
                        nursery.start_soon(http_client, n, server.url, gate, tally, args.seed)

                async def sampler() -> None:
                    while True:
                        await trio.sleep(10.0)
                        s = await snapshot(http, server.pid)
                        s["t"] = round(time.monotonic() - started)
                        s["sent"] = tally.sent
                        samples.append(s)
                        print(f"[{s['t']:>4} s] sent {tally.sent} answered {tally.answered} "
                              f"rss {s['rss_mb']} MB threads {s['threads']} tasks {s['tasks']}"
                              f" in flight {s['in_flight']}", flush=True)

                nursery.start_soon(sampler)
                await trio.sleep(warmup_s)
                baseline = await quiet_snapshot(http, server.pid, gate)
                print(f"baseline after warm-up: {baseline}", flush=True)
                gate.open.set()
                await trio.sleep(max(0.0, total_s - warmup_s))
                final = await quiet_snapshot(http, server.pid, gate)
                print(f"final: {final}", flush=True)
                gate.stop = True
                gate.open.set()
                nursery.cancel_scope.cancel()
        exit_code = stop_server(server)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    log = server.log_path.read_text()
    rss_growth = (final["rss_mb"] - baseline["rss_mb"]) / baseline["rss_mb"]
    lat = sorted(tally.latencies)
    result = {
        "minutes": args.minutes, "clients": args.clients, "ws_clients": args.ws_clients,
        "sent": tally.sent, "answered": tally.answered,
        "lost": tally.sent - tally.answered, "hung": tally.hung, "dropped": tally.dropped,
        "valid_ok": tally.valid_ok, "valid_overloaded": tally.valid_overloaded,
        "valid_5xx": tally.valid_5xx, "valid_wrong": tally.valid_wrong,
        "invalid_ok": tally.invalid_ok, "invalid_wrong": tally.invalid_wrong,
        "statuses": dict(sorted(tally.statuses.items())),
        "p50_s": round(lat[len(lat) // 2], 3) if lat else None,
        "p99_s": round(lat[int(len(lat) * 0.99)], 3) if lat else None,
        "baseline": baseline, "final": final, "rss_growth_pct": round(100 * rss_growth, 1),
        "server_exit": exit_code, "tracebacks_in_log": log.count("Traceback"),
        "problems": tally.problems, "samples": samples,
    }
    # The last requests a client had open when the run was cancelled are not "lost": the
    # pause before the final snapshot waited for every one of them to be answered.
    result["passed"] = bool(
        result["lost"] == 0 and tally.valid_5xx == 0 and tally.valid_wrong == 0
        and tally.invalid_wrong == 0 and abs(rss_growth) <= 0.10
        and final["threads"] <= baseline["threads"] and final["tasks"] <= baseline["tasks"]
        and exit_code == 0 and result["tracebacks_in_log"] == 0
    )
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--ws-clients", type=int, default=2, help="how many of the clients use "
                   "the websocket")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="write every number here")
    args = p.parse_args(argv)
    result = trio.run(run, args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    print("PASSED" if result["passed"] else "FAILED")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
