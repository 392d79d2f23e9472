"""The websocket client behind ``hailo-ocr read`` (``web/client.py``) against the real
service under Hypercorn: limits from /health, retries after temporary refusals, a dropped
or silent connection, a refused token, an unreachable server.

Connections are dropped for real: the client talks to the server through a TCP proxy on
loopback that a test can cut (every connection through it closes, as when a network
fails) or freeze (bytes stop flowing, the sockets stay open, as with a hung peer)."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
import trio

import web.client as client_module
from tests.support.server import (
    ControlledBackend,
    free_port,
    quick,
    running_server,
    wait_until,
    words_of,
    write_pages,
)
from web.client import (
    ClientSettings,
    FileOutcome,
    InputFile,
    ServerLimits,
    StreamClient,
    fetch_limits,
    stream_url,
)


async def read_all(client: StreamClient) -> list[FileOutcome]:
    outcomes = []
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            async for outcome in client.outcomes:
                outcomes.append(outcome)
    return outcomes


def assert_all_read(outcomes: list[FileOutcome], words: dict[str, list[str]]) -> None:
    assert sorted(o.file for o in outcomes) == sorted(words), "each file exactly once"
    for o in outcomes:
        assert o.ok, o.body
        assert words_of(o.body["text"]) == words[o.file]


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of ``target_port``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections = 0
        self._live: list[tuple[trio.CancelScope, dict]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, downstream: trio.SocketStream) -> None:
        self.connections += 1
        state = {"frozen": False}
        async with downstream, await trio.open_tcp_stream("127.0.0.1", self.target_port) as up:
            with trio.CancelScope() as scope:
                self._live.append((scope, state))

                async def pump(src, dst) -> None:
                    while data := await src.receive_some(65536):
                        if state["frozen"]:
                            await trio.sleep_forever()
                        await dst.send_all(data)
                    scope.cancel()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pump, downstream, up)
                    nursery.start_soon(pump, up, downstream)

    def cut(self) -> None:
        """Close every connection through the proxy; new ones are proxied as before."""
        for scope, _ in self._live:
            scope.cancel()
        self._live.clear()

    def freeze(self) -> None:
        """Stop forwarding on every open connection, leaving them open."""
        for _, state in self._live:
            state["frozen"] = True


@asynccontextmanager
async def proxied(server):
    proxy = Proxy(int(server.url.rsplit(":", 1)[1]))
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        yield proxy
        nursery.cancel_scope.cancel()


def test_urls_keep_the_scheme_and_a_path_prefix():
    assert stream_url("http://pi.local:11436") == "ws://pi.local:11436/v1/ocr/stream"
    assert stream_url("https://lb/ocr/") == "wss://lb/ocr/v1/ocr/stream"
    assert stream_url("127.0.0.1:8080") == "ws://127.0.0.1:8080/v1/ocr/stream"
    with pytest.raises(ValueError):
        stream_url("ftp://host")


async def test_limits_come_from_health_and_the_window_follows_them(config, tmp_path):
    cfg = quick(config, server={"ws_max_in_flight": 3, "max_body_bytes": 4_000_000})
    files, words = write_pages(tmp_path, 5)
    async with running_server(cfg) as server:
        limits = await fetch_limits(ClientSettings(server.url))
        assert limits == ServerLimits(ws_max_in_flight=3, max_body_bytes=4_000_000)
        client = StreamClient(ClientSettings(server.url), files, limits)
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, server.state.service.statistics().requests_in_flight)
                await trio.sleep(0.005)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            outcomes = await read_all(client)
            nursery.cancel_scope.cancel()
    assert_all_read(outcomes, words)
    stats = client.statistics()
    assert stats.max_window == 3 and stats.retries == 0
    assert 1 < peak <= 3, peak
    assert stats.lines == sum(len(w) for w in words.values())
    # A server that cannot be asked: the documented defaults, and why.
    unreachable = await fetch_limits(ClientSettings(f"http://127.0.0.1:{free_port()}"))
    assert unreachable.ws_max_in_flight == client_module.DEFAULT_IN_FLIGHT
    assert "GET /health failed" in unreachable.assumed_because


async def test_overloaded_files_are_sent_again_and_the_window_shrinks(config, tmp_path):
    """A server admitting one request at a time: the client, sending up to 8, is refused
    with 429 (retry_after 1) and sends those files again; every file is read."""
    cfg = quick(config, server={"max_in_flight": 1})
    files, words = write_pages(tmp_path, 8)
    async with running_server(cfg) as server:
        limits = await fetch_limits(ClientSettings(server.url))
        assert limits.ws_max_in_flight == 8
        client = StreamClient(ClientSettings(server.url), files, limits)
        windows = []

        async def watch() -> None:
            while True:
                windows.append(client.statistics().window)
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            outcomes = await read_all(client)
            nursery.cancel_scope.cancel()
        refused = server.state.service.statistics().requests_refused
    assert_all_read(outcomes, words)
    stats = client.statistics()
    assert refused > 0 and stats.retries == refused, (refused, stats)
    assert min(windows) < 8, "an overloaded answer halves the window"
    assert max(o.tries for o in outcomes) <= client_module.DEFAULT_RETRIES + 1


async def test_retries_are_bounded(config, tmp_path):
    cfg = quick(config, server={"max_in_flight": 1})
    files, _ = write_pages(tmp_path, 4)
    async with running_server(cfg) as server:
        settings = ClientSettings(server.url, in_flight=4, retries=0)
        client = StreamClient(settings, files, await fetch_limits(settings))
        outcomes = await read_all(client)
    refused = [o for o in outcomes if not o.ok]
    assert refused, "with 4 sent at once to a server taking 1, some are refused"
    for o in refused:
        assert o.body == {"success": False, "error": o.error, "code": "overloaded"}
        assert o.tries == 1
    assert client.statistics().retries == 0


async def test_a_dropped_connection_resends_what_was_in_flight(config, tmp_path):
    gate = trio.Event()  # detection is held: the four files stay in flight
    cfg = quick(config)
    backend = ControlledBackend(cfg, det_gate=gate)
    files, words = write_pages(tmp_path, 4)
    async with running_server(cfg, {"cpu": lambda _ids: backend}) as server, \
            proxied(server) as proxy:
        service = server.state.service
        client = StreamClient(ClientSettings(proxy.url, in_flight=4), files, ServerLimits())
        outcomes = []
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.run)
                await wait_until(lambda: service.statistics().requests_in_flight == 4)
                proxy.cut()
                await wait_until(lambda: client.statistics().resent == 4)
                gate.set()
                async for outcome in client.outcomes:
                    outcomes.append(outcome)
    assert_all_read(outcomes, words)
    stats = client.statistics()
    assert (stats.resent, stats.reconnects, proxy.connections) == (4, 1, 2)
    assert all(o.tries == 2 for o in outcomes)


async def test_a_silent_connection_is_given_up_and_its_files_resent(config, tmp_path, monkeypatch):
    monkeypatch.setattr(client_module, "DISCONNECT_TIMEOUT_S", 0.5)
    gate = trio.Event()
    cfg = quick(config)
    backend = ControlledBackend(cfg, det_gate=gate)
    files, words = write_pages(tmp_path, 2)
    async with running_server(cfg, {"cpu": lambda _ids: backend}) as server, \
            proxied(server) as proxy:
        service = server.state.service
        settings = ClientSettings(proxy.url, in_flight=2, timeout_s=1.0)
        client = StreamClient(settings, files, ServerLimits())
        outcomes = []
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.run)
                await wait_until(lambda: service.statistics().requests_in_flight == 2)
                proxy.freeze()  # nothing more reaches the client on that connection
                gate.set()
                async for outcome in client.outcomes:
                    outcomes.append(outcome)
    assert_all_read(outcomes, words)
    assert client.statistics().resent == 2 and proxy.connections == 2


async def test_a_wrong_token_fails_every_file_at_once(config, tmp_path):
    cfg = quick(config, server={"auth_token": "sesame"})
    files, words = write_pages(tmp_path, 2)
    async with running_server(cfg) as server:
        refused = StreamClient(ClientSettings(server.url), files, ServerLimits())
        with trio.fail_after(10):  # no reconnection loop: no retry can fix a token
            outcomes = await read_all(refused)
        assert {o.code for o in outcomes} == {"unauthorized"} and len(outcomes) == 2
        assert all(o.tries == 0 for o in outcomes)
        settings = ClientSettings(server.url, token="sesame")
        outcomes = await read_all(StreamClient(settings, files, await fetch_limits(settings)))
    assert_all_read(outcomes, words)


async def test_an_unreachable_server_fails_every_file_after_bounded_tries(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(client_module, "RECONNECT_BACKOFF_S", 0.01)
    monkeypatch.setattr(client_module, "RECONNECT_BACKOFF_MAX_S", 0.02)
    monkeypatch.setattr(client_module, "RECONNECT_TRIES", 3)
    files, _ = write_pages(tmp_path, 3)
    url = f"http://127.0.0.1:{free_port()}"
    client = StreamClient(ClientSettings(url), files, ServerLimits())
    with trio.fail_after(30):
        outcomes = await read_all(client)
    assert [o.code for o in outcomes] == ["connection_failed"] * 3
    assert stream_url(url) in outcomes[0].error and "3 attempts" in outcomes[0].error


async def test_files_that_cannot_be_sent_fail_without_a_round_trip(config, tmp_path):
    cfg = quick(config, server={"max_body_bytes": 20_000})
    rng = __import__("numpy").random.default_rng(0)
    noise = tmp_path / "noise.png"
    import cv2

    noise.write_bytes(cv2.imencode(".png", rng.integers(0, 255, (200, 200, 3), "uint8"))[1])
    files, words = write_pages(tmp_path, 1)
    files += [InputFile("noise.png", noise), InputFile("gone.png", tmp_path / "gone.png"),
              InputFile("empty.png", tmp_path / "empty.png")]
    (tmp_path / "empty.png").write_bytes(b"")
    async with running_server(cfg) as server:
        settings = ClientSettings(server.url)
        outcomes = await read_all(StreamClient(settings, files, await fetch_limits(settings)))
        admitted = server.state.service.statistics().requests_admitted
    by_file = {o.file: o for o in outcomes}
    assert by_file["page00.png"].ok
    assert by_file["noise.png"].code == "payload_too_large"
    assert "server.max_body_bytes" in by_file["noise.png"].error
    assert by_file["gone.png"].code == "file_unreadable"
    assert by_file["empty.png"].code == "invalid_image"
    assert all(by_file[f].tries == 0 for f in ("noise.png", "gone.png", "empty.png"))
    assert admitted == 1
