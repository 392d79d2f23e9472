"""Several instances behind the real HAProxy, with ``deploy/haproxy/haproxy.cfg`` itself.

The steps are README's "More than one Pi": three ``hailo-ocr serve`` processes (loopback
ports here, Pis there) with the same token and default drain, HAProxy started on the
shipped file with the instances' addresses in its environment, then a rolling restart
(SIGTERM one instance, start it again once it has exited and wait until HAProxy has it
back, then the next) and a crash (SIGKILL) while eight HTTP clients and two websocket
clients send real images through the balancer the whole time:

* the rolling restart loses nothing: zero failed or wrong answers, including uploads too
  large for HAProxy to buffer and send again (only the drain protects those) and the
  websockets (closed with 1001 after the drain; they reconnect through the balancer and
  land on another instance);
* the SIGKILL fails no more requests than the killed instance held, all of them its own;
  HAProxy marks it down within its check interval and sends it nothing after that;
* every answer's text equals that image's text read alone, before the run.

It prints what was sent, answered and failed, and how long each instance was out.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import attrs
import httpx
import pytest
import trio
import yaml
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from tests.support.images import text_image
from tests.support.paths import REPO
from tests.support.server import WORDS, wait_listening, words_of
from web.config import ServerConfig
from web.server import hypercorn_config
from web.settings import Config

HAPROXY_CFG = REPO / "deploy" / "haproxy" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy")
NEEDS_HAPROXY = pytest.mark.skipif(
    HAPROXY is None,
    reason="needs HAProxy (the Debian package haproxy; .ci/run installs it as root)",
)
NAMES = ("ocr1", "ocr2", "ocr3")
BACKEND = "ocr_instances"
TOKEN = "fleet-test-token-a8f3e9c1"
HTTP_CLIENTS = 8
WS_CLIENTS = 2
#: HAProxy's default tune.bufsize: a request larger than this is never sent twice.
HAPROXY_BUFSIZE = 16384


# -- the example config -----------------------------------------------------------------


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)?", value)
    assert m, value
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2) or "ms"]
    return float(m.group(1)) * scale


@attrs.frozen
class Checks:
    inter: float
    fastinter: float
    fall: int
    rise: int

    @property
    def out_within(self) -> float:
        """Longest time from an instance's first 503 to HAProxy marking it down: the next
        check comes within ``inter``, the ``fall - 1`` confirming ones ``fastinter`` apart."""
        return self.inter + (self.fall - 1) * self.fastinter


def example_checks(text: str) -> Checks:
    line = next(x for x in text.splitlines() if x.strip().startswith("default-server"))
    words = line.split()
    value = {k: words[i + 1] for i, k in enumerate(words[:-1])}
    return Checks(
        _seconds(value["inter"]), _seconds(value["fastinter"]), int(value["fall"]),
        int(value["rise"]),
    )


def example_timeouts(text: str) -> dict[str, float]:
    return {
        m.group(1): _seconds(m.group(2))
        for m in re.finditer(r"^\s*timeout\s+(\S+)\s+(\S+)", text, re.MULTILINE)
    }


def test_the_example_config_and_the_service_defaults_agree():
    """The numbers README explains, tied together: the drain outlasts the checks, the
    timeouts outlast what the service itself allows."""
    text = HAPROXY_CFG.read_text()
    checks = example_checks(text)
    server = ServerConfig()
    assert server.drain_delay_s == 2 * checks.inter  # "two check intervals"
    assert server.drain_delay_s > checks.out_within
    timeouts = example_timeouts(text)
    assert timeouts["server"] > server.request_timeout_s  # the instance's 504 comes first
    assert timeouts["client"] > server.read_timeout_s  # and its 408 for a stalled body
    assert timeouts["tunnel"] > hypercorn_config(Config()).websocket_ping_interval
    assert 0 < timeouts["http-request"] < timeouts["client"]
    assert timeouts["check"] < timeouts["server"]
    for line in ("balance leastconn", "option redispatch", "option httpchk",
                 "http-check send meth GET uri /health/ready", "retry-on conn-failure"):
        assert line in text, line


@NEEDS_HAPROXY
def test_haproxy_accepts_the_example_config(tmp_path):
    out = subprocess.run(
        [HAPROXY, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, timeout=30,
        env={**os.environ, "OCR_LB_STATS": str(tmp_path / "admin.sock")},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Configuration file is valid" in out.stdout + out.stderr
    assert "WARNING" not in out.stdout + out.stderr, out.stdout + out.stderr


# -- the system test's parts ---------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@attrs.define
class Instance:
    """One ``hailo-ocr serve`` process, restarted on the same port."""

    name: str
    port: int
    config: Path
    logs: Path
    proc: trio.Process | None = None
    log_path: Path | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.starts += 1
        self.log_path = self.logs / f"{self.name}.{self.starts}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HAILO_OCR_")}
        with self.log_path.open("wb") as log:
            self.proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "web.cli", "serve", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
            )
        await wait_listening(self.proc, self.log_path)

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path else ""


@attrs.frozen
class Image:
    name: str
    data: bytes
    media_type: str
    multipart: bool
    text: str = ""

    def json_body(self) -> dict:
        return {"image": base64.b64encode(self.data).decode()}

    @property
    def request_bytes(self) -> int:
        """About what HAProxy must hold to send the request again."""
        return 400 + (len(self.data) + 200 if self.multipart else len(json.dumps(self.json_body())))

    async def post(self, http: httpx.AsyncClient) -> httpx.Response:
        if self.multipart:
            return await http.post(
                "/v1/ocr/extract", files={"image": (self.name, self.data, self.media_type)}
            )
        return await http.post("/v1/ocr/extract", json=self.json_body())


def make_images(devdata: Path | None) -> list[Image]:
    """Small images, some fitting HAProxy's buffer (it can send them again), some not (only
    the drain protects those): synthetic text made here, two real ones where present."""
    images = [
        Image("two-lines.png", text_image(WORDS[0:2]), "image/png", False),
        Image("four-lines.jpg", text_image(WORDS[2:6], fmt=".jpg"), "image/jpeg", True),
        Image("six-lines.png", text_image(WORDS[6:12]), "image/png", False),
        Image("two-lines.bmp", text_image(WORDS[12:14], fmt=".bmp"), "image/bmp", True),
        Image("three-lines.png", text_image(WORDS[14:17]), "image/png", True),
    ]
    if devdata is not None:
        for rel, media_type in (("rapidocr_tests/text_rec.jpg", "image/jpeg"),
                                ("rapidocr_tests/ch_doc_server.png", "image/png")):
            path = devdata / rel
            if path.is_file():
                images.append(Image(path.name, path.read_bytes(), media_type, False))
    return images


@attrs.define
class Outcome:
    client: str
    image: str
    started: float
    ended: float
    served_by: str
    #: ok, wrong (another text), failed, or moved (a websocket told to go elsewhere: its
    #: image was sent again on a new connection through the balancer).
    result: str
    detail: str = ""


@attrs.define
class Rotation:
    """HAProxy's view of the instances, polled from its stats page."""

    stats_url: str
    #: name -> [(time, in rotation)] on every change
    changes: dict[str, list[tuple[float, bool]]] = attrs.Factory(dict)
    last: dict[str, dict[str, str]] = attrs.Factory(dict)
    _changed: trio.Event = attrs.Factory(trio.Event)

    async def read(self, http: httpx.AsyncClient) -> dict[str, dict[str, str]]:
        r = await http.get(self.stats_url)
        rows = csv.DictReader(io.StringIO(r.text.lstrip("# ")))
        return {
            row["svname"]: row for row in rows
            if row["pxname"] == BACKEND and row["svname"] in NAMES
        }

    async def watch(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            with trio.fail_after(15):  # HAProxy starting
                while True:
                    try:
                        await self.read(http)
                        break
                    except httpx.ConnectError:
                        await trio.sleep(0.05)
            started = False
            while True:
                rows = await self.read(http)
                now = time.monotonic()
                for name, row in rows.items():
                    inside = row["status"].startswith("UP")
                    seen = self.changes.setdefault(name, [])
                    if not seen or seen[-1][1] != inside:
                        seen.append((now, inside))
                        self._changed.set()
                        self._changed = trio.Event()
                self.last = rows
                if not started:
                    started = True
                    task_status.started()
                await trio.sleep(0.05)

    def inside(self, name: str) -> bool:
        seen = self.changes.get(name)
        return bool(seen) and seen[-1][1]

    async def wait(self, name: str, inside: bool, within_s: float) -> float:
        """When ``name`` entered (or left) the rotation."""
        with trio.fail_after(within_s):
            while self.inside(name) != inside:
                await self._changed.wait()
        return self.changes[name][-1][0]


async def http_client(
    k: int, lb_url: str, images: list[Image], stop: trio.Event, outcomes: list[Outcome],
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=lb_url, headers=headers, timeout=60) as http:
        i = k
        while not stop.is_set():
            image = images[i % len(images)]
            i += 1
            started = time.monotonic()
            try:
                r = await image.post(http)
            except httpx.HTTPError as exc:
                outcomes.append(Outcome(f"http{k}", image.name, started, time.monotonic(),
                                        "", "failed", type(exc).__name__))
                continue
            served_by = r.headers.get("x-served-by", "")
            if r.status_code != 200:
                result, detail = "failed", f"{r.status_code} {r.text[:200]}"
            elif r.json()["text"] != image.text:
                result, detail = "wrong", r.json()["text"][:200]
            else:
                result, detail = "ok", ""
            outcomes.append(Outcome(f"http{k}", image.name, started, time.monotonic(),
                                    served_by, result, detail))


async def ws_client(
    k: int, lb_url: str, images: list[Image], stop: trio.Event, outcomes: list[Outcome],
) -> None:
    """One image at a time on one socket; when the instance says it is shutting down (an
    error event ``shutting_down``, or a close with 1001) reconnect through the balancer
    and send the image again. One client sends the token as a header, one as ?token=."""
    url = lb_url.replace("http", "ws") + "/v1/ocr/stream"
    if k % 2:
        url, headers = url + f"?token={TOKEN}", None
    else:
        headers = [(b"Authorization", f"Bearer {TOKEN}".encode())]
    i, n = k, 0
    pending: Image | None = None
    while not stop.is_set():
        served_by, started = "", time.monotonic()
        try:
            async with open_websocket_url(url, extra_headers=headers) as ws:
                served_by = dict(ws.handshake_headers).get(b"x-served-by", b"").decode()
                while not stop.is_set():
                    if pending is None:
                        pending = images[i % len(images)]
                        i += 1
                    n += 1
                    started = time.monotonic()
                    await ws.send_message(json.dumps({"id": n, **pending.json_body()}))
                    while True:
                        event = json.loads(await ws.get_message())
                        if event["type"] in ("done", "error"):
                            break
                    ended = time.monotonic()
                    if event["type"] == "error" and event.get("code") == "shutting_down":
                        outcomes.append(Outcome(f"ws{k}", pending.name, started, ended,
                                                served_by, "moved", "shutting_down event"))
                        break  # reconnect, send it again
                    if event["type"] == "error":
                        result, detail = "failed", json.dumps(event)[:200]
                    elif event["text"] != pending.text:
                        result, detail = "wrong", event["text"][:200]
                    else:
                        result, detail = "ok", ""
                    outcomes.append(Outcome(f"ws{k}", pending.name, started, ended,
                                            served_by, result, detail))
                    pending = None
        except ConnectionClosed as exc:
            if pending is not None:
                code = exc.reason.code
                outcomes.append(Outcome(
                    f"ws{k}", pending.name, started, time.monotonic(), served_by,
                    "moved" if code == 1001 else "failed", f"closed {code}",
                ))
                if code != 1001:
                    pending = None
        except (HandshakeError, OSError) as exc:
            outcomes.append(Outcome(f"ws{k}", pending.name if pending else "-", started,
                                    time.monotonic(), served_by, "failed",
                                    f"connect: {type(exc).__name__}"))
            await trio.sleep(0.1)


def count(outcomes: list[Outcome], result: str) -> int:
    return sum(1 for o in outcomes if o.result == result)


# -- the system test -------------------------------------------------------------------


@NEEDS_HAPROXY
@pytest.mark.skipif(
    os.geteuid() != 0,
    reason="the example config starts HAProxy as root to chroot and drop to the haproxy "
    "user, as a production balancer should; run as root (CI does)",
)
@pytest.mark.slow
async def test_rolling_restart_and_a_crash_behind_haproxy(tmp_path, devdata_if_present):
    checks = example_checks(HAPROXY_CFG.read_text())
    drain_s = ServerConfig().drain_delay_s
    lb_port, stats_port, *ports = free_ports(2 + len(NAMES))
    instances = []
    for name, port in zip(NAMES, ports, strict=True):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump({
            # README's instance settings (host, token; drain and grace left at their
            # defaults), on loopback; detection sized for small images, one ONNX thread.
            "server": {"host": "127.0.0.1", "port": port, "auth_token": TOKEN},
            "onnx_models": {"intra_op_threads": 1},
            "ocr": {"det_limit_type": "max", "det_limit_side_len": 960},
        }))
        instances.append(Instance(name, port, cfg, tmp_path))
    images = make_images(devdata_if_present)
    lb_url = f"http://127.0.0.1:{lb_port}"
    rotation = Rotation(f"http://127.0.0.1:{stats_port}/stats;csv")
    outcomes: list[Outcome] = []
    report: list[str] = []
    haproxy = None
    try:
        async with trio.open_nursery() as nursery:
            for inst in instances:
                nursery.start_soon(inst.start)

        # Each image read alone, straight from one instance: the texts every answer must equal.
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=instances[0].url, headers=headers,
                                     timeout=60) as http:
            for j, image in enumerate(images):
                r = await image.post(http)
                assert r.status_code == 200, r.text
                images[j] = attrs.evolve(image, text=r.json()["text"])
        for image, lines in zip(images, (WORDS[0:2], WORDS[2:6], WORDS[6:12], WORDS[12:14],
                                         WORDS[14:17]), strict=False):
            assert words_of(image.text) == lines, (image.name, image.text)
        assert any(i.request_bytes < HAPROXY_BUFSIZE for i in images)
        assert any(i.request_bytes > 2 * HAPROXY_BUFSIZE for i in images)

        # HAProxy on the shipped file; only addresses come from its environment.
        env = {
            **os.environ,
            "OCR_LB_BIND": f"127.0.0.1:{lb_port}",
            "OCR_LB_STATS_BIND": f"127.0.0.1:{stats_port}",
            "OCR_LB_STATS": str(tmp_path / "admin.sock"),
            **{f"OCR_NODE{n + 1}": f"127.0.0.1:{inst.port}" for n, inst in enumerate(instances)},
        }
        haproxy_log = tmp_path / "haproxy.log"
        with haproxy_log.open("wb") as log:
            haproxy = await trio.lowlevel.open_process(
                [HAPROXY, "-db", "-f", str(HAPROXY_CFG)], stdout=log, stderr=subprocess.STDOUT,
                env=env,
            )

        async with trio.open_nursery() as watching:
            await watching.start(rotation.watch)
            for inst in instances:
                await rotation.wait(inst.name, True, within_s=15)
            stop = trio.Event()
            async with trio.open_nursery() as clients:
                for k in range(HTTP_CLIENTS):
                    clients.start_soon(http_client, k, lb_url, images, stop, outcomes)
                for k in range(WS_CLIENTS):
                    clients.start_soon(ws_client, k, lb_url, images, stop, outcomes)
                load_started = time.monotonic()
                await trio.sleep(2)

                # -- rolling restart: each in turn, the next once HAProxy has it back.
                for inst in instances:
                    signalled = time.monotonic()
                    inst.proc.send_signal(signal.SIGTERM)
                    out_at = await rotation.wait(inst.name, False, within_s=drain_s + 5)
                    with trio.fail_after(40):
                        code = await inst.proc.wait()
                    exited = time.monotonic()
                    assert code == 0, inst.log_tail()
                    await inst.start()
                    back_at = await rotation.wait(inst.name, True, within_s=30)
                    report.append(
                        f"{inst.name} SIGTERM: out of rotation after {out_at - signalled:.2f} s "
                        f"(drain {drain_s:g} s), exited after {exited - signalled:.2f} s, "
                        f"back after {back_at - signalled:.2f} s: out {back_at - out_at:.2f} s"
                    )
                    # HAProxy stopped sending before the instance refused anything.
                    assert out_at - signalled < drain_s, report[-1]
                await trio.sleep(1)

                # -- a crash: SIGKILL, with whatever it holds at that moment.
                victim = instances[1]
                before = rotation.last[victim.name]
                victim.proc.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                out_at = await rotation.wait(victim.name, False, within_s=10)
                sessions_when_out = int(rotation.last[victim.name]["stot"])
                # What it held: its open sessions just before, and any HAProxy gave it
                # until it was out (a dying process's socket still accepts for a moment).
                held = int(before["scur"]) + sessions_when_out - int(before["stot"])
                await victim.proc.wait()
                await trio.sleep(1)  # while it is out, HAProxy sends it nothing
                sessions_later = int(rotation.last[victim.name]["stot"])
                await victim.start()
                back_at = await rotation.wait(victim.name, True, within_s=30)
                detected = out_at - killed
                report.append(
                    f"{victim.name} SIGKILL holding {held} request(s): out of rotation "
                    f"after {detected:.2f} s, back after {back_at - killed:.2f} s: out "
                    f"{back_at - out_at:.2f} s"
                )
                await trio.sleep(1)
                stop.set()  # each client ends with its current request
                clients.cancel_scope.deadline = trio.current_time() + 60
            assert not clients.cancel_scope.cancelled_caught, "a client did not finish"
            ended = time.monotonic()
            watching.cancel_scope.cancel()

        stats = rotation.last
        rolling = [o for o in outcomes if o.ended < killed]  # answered before the crash
        after_kill = [o for o in outcomes if o.ended >= killed]
        failed = [o for o in outcomes if o.result == "failed"]
        lines = [
            f"{len(images)} images, {HTTP_CLIENTS} HTTP + {WS_CLIENTS} websocket clients, "
            f"{ended - load_started:.0f} s of load",
            *report,
            f"rolling restart: {len(rolling)} sent, {count(rolling, 'ok')} answered, "
            f"{count(rolling, 'failed')} failed, {count(rolling, 'wrong')} wrong, "
            f"{count(rolling, 'moved')} websocket images moved",
            f"crash: {len(after_kill)} sent or in flight from the kill on, "
            f"{count(after_kill, 'ok')} answered, {len(failed)} failed (it held {held}): "
            + ", ".join(f"{o.client} {o.image} {o.detail[:40]}" for o in failed),
            "answered per instance: " + ", ".join(
                f"{k}={v}" for k, v in sorted(Counter(
                    o.served_by for o in outcomes if o.result == "ok").items())
            ),
            "HAProxy retries / redispatches: " + ", ".join(
                f"{n} {stats[n]['wretr']}/{stats[n]['wredis']}" for n in NAMES
            ),
        ]
        print("\n" + "\n".join(lines))
        # Nothing lost and nothing wrong through the rolling restart; the answers are the
        # images' own texts throughout.
        assert count(outcomes, "wrong") == 0, [o for o in outcomes if o.result == "wrong"][:5]
        assert count(rolling, "failed") == 0, [o for o in rolling if o.result == "failed"][:5]
        assert count(rolling, "ok") >= 30, lines
        assert count(after_kill, "ok") >= 10, lines
        # The crash: no more failures than it held, all of them its own, all sent before
        # HAProxy took it out (within its check interval) and ended by the kill.
        assert len(failed) <= held, (held, failed)
        for o in failed:
            # (a connection HAProxy closed without an answer names no server)
            assert o.served_by in (victim.name, "") and o.started < out_at, o
            assert o.ended >= killed, o
        assert detected <= checks.out_within + 0.5, report[-1]
        assert sessions_later == sessions_when_out, (sessions_when_out, sessions_later)
        # The token never reaches HAProxy's log (a websocket sends it as ?token=), and no
        # instance logged a traceback.
        assert TOKEN not in haproxy_log.read_text()
        assert "/v1/ocr/stream" in haproxy_log.read_text()
        for log in tmp_path.glob("ocr*.log"):
            assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
        for name in NAMES:
            assert any(o.served_by == name for o in outcomes if o.result == "ok"), name
    finally:
        for inst in instances:
            if inst.proc is not None and inst.proc.poll() is None:
                inst.proc.kill()
                await inst.proc.wait()
        if haproxy is not None and haproxy.poll() is None:
            haproxy.terminate()
            with trio.move_on_after(10):
                await haproxy.wait()
            if haproxy.poll() is None:
                haproxy.kill()
                await haproxy.wait()
