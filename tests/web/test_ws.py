"""The streaming websocket ``/v1/ocr/stream``: in-process (Quart's test client) and over
a real socket (Hypercorn + trio-websocket)."""

from __future__ import annotations

import json
from collections import defaultdict
from contextlib import asynccontextmanager

import pytest
import trio
from quart.testing.connections import WebsocketResponseError
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.support.images import b64, data_uri, text_image
from tests.support.server import (
    WORDS,
    ControlledBackend,
    fast,
    running_server,
    wait_until,
    words_of,
)
from web.app import create_app, get_state


@asynccontextmanager
async def ws_client(config, backends=None):
    app = create_app(config, backends)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        async with client.websocket("/v1/ocr/stream") as ws:
            yield ws, app


async def receive_until_final(ws, want_id, within_s: float = 60.0) -> list[dict]:
    """Events for ``want_id`` up to and including its done/error event."""
    events = []
    with trio.fail_after(within_s):
        while True:
            event = json.loads(await ws.receive())
            if event.get("id") != want_id:
                continue
            events.append(event)
            if event["type"] in ("done", "error"):
                return events


async def test_events_arrive_in_order_with_the_spec_shapes(config):
    lines = ["HELLO WORLD", "ORANGE", "RIVER FOREST"]
    async with ws_client(fast(config)) as (ws, _):
        await ws.send(json.dumps({"id": "img-1", "image": data_uri(text_image(lines)),
                                  "languages": ["en"]}))
        events = await receive_until_final(ws, "img-1")
    types = [e["type"] for e in events]
    assert types[0] == "accepted" and types[1] == "detected" and types[-1] == "done"
    assert types[2:-1] == ["line"] * 3
    assert all(e["id"] == "img-1" for e in events)
    detected = events[1]["regions"]
    assert [r["index"] for r in detected] == [0, 1, 2]
    assert all(len(r["bbox"]) == 4 and len(r["bbox"][0]) == 2 for r in detected)
    line_events = events[2:-1]
    assert sorted(e["index"] for e in line_events) == [0, 1, 2]
    for e in line_events:
        assert e["bbox"] == detected[e["index"]]["bbox"]
        assert 0.5 <= e["confidence"] <= 1 and e["text"]
    done = events[-1]
    assert done["lines"] == lines and done["text"] == " ".join(lines)
    assert {e["text"] for e in line_events} == set(lines)
    assert done["statistics"]["total_regions"] == 3
    assert done["performance"]["total_time_ms"] > 0
    assert done["hailo_info"]["device"] is None
    assert len(done["regions"]) == 3


async def test_several_images_in_flight_on_one_socket(config):
    images = {f"id-{i}": [WORDS[i], WORDS[i + 5]] for i in range(4)}
    async with ws_client(fast(config)) as (ws, _):
        for client_id, lines in images.items():
            await ws.send(json.dumps({"id": client_id, "image": b64(text_image(lines))}))
        by_id: dict[str, list[dict]] = defaultdict(list)
        finished = set()
        with trio.fail_after(60):
            while len(finished) < len(images):
                event = json.loads(await ws.receive())
                by_id[event["id"]].append(event)
                if event["type"] in ("done", "error"):
                    finished.add(event["id"])
    for client_id, lines in images.items():
        events = by_id[client_id]
        types = [e["type"] for e in events]
        assert types[:2] == ["accepted", "detected"] and types[-1] == "done", types
        assert types.count("line") == 2
        assert events[-1]["lines"] == lines


async def test_bad_messages_get_error_events_and_the_socket_stays_open(config):
    async with ws_client(fast(config, ocr={"unknown_language": "reject"})) as (ws, _):
        cases = [
            (b"\x00\x01binary", None, "invalid_message"),
            ("not json", None, "invalid_json"),
            ("[1, 2]", None, "invalid_message"),
            (json.dumps({"image": "abc"}), None, "missing_field"),
            (json.dumps({"id": {"a": 1}, "image": "abc"}), None, "invalid_field"),
            (json.dumps({"id": "no-image"}), "no-image", "missing_field"),
            (json.dumps({"id": "bad-b64", "image": "@@@"}), "bad-b64", "invalid_base64"),
            (json.dumps({"id": 7, "image": b64(b"not an image at all")}), 7, "invalid_image"),
            (json.dumps({"id": "fr", "image": b64(text_image(["HELLO"])), "languages": ["fr"]}),
             "fr", "unsupported_language"),
        ]
        for message, want_id, code in cases:
            await ws.send(message)
            with trio.fail_after(30):
                event = json.loads(await ws.receive())
                while event["type"] != "error":  # an accepted event may come first
                    event = json.loads(await ws.receive())
            assert event["id"] == want_id and event["code"] == code, (message[:40], event)
            assert event["error"] and "Traceback" not in event["error"]
            assert "retry_after" not in event, "sending it again would not help"
        await ws.send(json.dumps({"id": "good", "image": b64(text_image(["HELLO"]))}))
        events = await receive_until_final(ws, "good")
        assert events[-1]["type"] == "done" and events[-1]["text"] == "HELLO"


async def test_in_flight_limit_per_socket(config):
    gate = trio.Event()
    cfg = fast(config, server={"ws_max_in_flight": 2})
    backend = ControlledBackend(cfg, det_gate=gate)
    image = b64(text_image(["HELLO"]))
    async with ws_client(cfg, {"cpu": lambda _ids: backend}) as (ws, _):
        for i in range(3):
            await ws.send(json.dumps({"id": i, "image": image}))
        with trio.fail_after(30):
            while True:
                event = json.loads(await ws.receive())
                if event["type"] == "error":
                    break
        assert event["id"] == 2 and event["code"] == "overloaded"
        assert event["status"] == 429 and event["retry_after"] == 1  # REST's Retry-After
        gate.set()
        done = set()
        with trio.fail_after(30):
            while len(done) < 2:
                event = json.loads(await ws.receive())
                if event["type"] == "done":
                    done.add(event["id"])
        assert done == {0, 1}


async def test_unauthorised_websocket_is_refused(config):
    cfg = fast(config, server={"auth_token": "tok"})
    app = create_app(cfg)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        rejected = None
        try:
            async with client.websocket("/v1/ocr/stream") as ws:
                await ws.send("{}")
                await ws.receive()
        except* WebsocketResponseError as group:
            rejected = group.exceptions[0]
        assert rejected is not None and rejected.response.status_code == 401
        assert (await rejected.response.get_json())["code"] == "unauthorized"
        async with client.websocket(
            "/v1/ocr/stream", headers={"Authorization": "Bearer tok"}
        ) as ws:
            await ws.send(json.dumps({"id": "a", "image": b64(text_image(["HELLO"]))}))
            events = await receive_until_final(ws, "a")
            assert events[-1]["type"] == "done"


# --- over a real socket ------------------------------------------------------------------


async def test_lines_stream_while_later_batches_still_run(config):
    """The first line event of a 15-region image reaches the client while the second
    recognition batch is still held on the device: lines are streamed, not buffered."""
    gate = trio.Event()
    cfg = fast(config)
    backend = ControlledBackend(cfg, rec_gate=gate, rec_free_calls=1)
    lines = WORDS[:15]
    async with running_server(cfg, {"cpu": lambda _ids: backend}) as server:
        async with open_websocket_url(server.ws_url + "/v1/ocr/stream") as ws:
            await ws.send_message(json.dumps({"id": "page", "image": b64(text_image(lines))}))
            seen = []
            with trio.fail_after(60):
                while True:
                    event = json.loads(await ws.get_message())
                    seen.append(event)
                    if event["type"] == "line":
                        break
            assert [e["type"] for e in seen] == ["accepted", "detected", "line"]
            assert len(seen[1]["regions"]) == 15
            # Held: the second batch cannot have run, so done cannot have been sent.
            assert not gate.is_set()
            with trio.move_on_after(0.3):
                while True:
                    early = json.loads(await ws.get_message())
                    seen.append(early)
                    assert early["type"] == "line", "nothing but lines of the first batch yet"
            gate.set()
            with trio.fail_after(60):
                while seen[-1]["type"] != "done":
                    seen.append(json.loads(await ws.get_message()))
    assert backend.rec_calls >= 2, "15 regions take more than one recognition batch"
    line_events = [e for e in seen if e["type"] == "line"]
    assert sorted(e["index"] for e in line_events) == list(range(15))
    assert words_of(seen[-1]["text"]) == lines


async def test_a_client_that_disconnects_cancels_its_work(config):
    gate = trio.Event()  # detection never finishes unless cancelled
    cfg = fast(config)
    backend = ControlledBackend(cfg, det_gate=gate)
    async with running_server(cfg, {"cpu": lambda _ids: backend}) as server:
        service = server.state.service
        async with open_websocket_url(server.ws_url + "/v1/ocr/stream") as ws:
            for i in range(3):
                await ws.send_message(json.dumps({"id": i, "image": b64(text_image(["HI"]))}))
            await wait_until(lambda: service.statistics().requests_in_flight == 3)
        # The socket is closed; the three requests must go away without the gate opening.
        await wait_until(lambda: service.statistics().requests_in_flight == 0, within_s=10)
        assert not gate.is_set()
        assert get_state(server.app).service is service and service.ready
        gate.set()  # device calls are shielded from cancellation; let the held one end


async def test_at_shutdown_a_socket_finishes_its_images_then_closes(config):
    gate = trio.Event()
    cfg = fast(config)
    backend = ControlledBackend(cfg, det_gate=gate)
    async with running_server(cfg, {"cpu": lambda _ids: backend}) as server:
        service = server.state.service
        async with open_websocket_url(server.ws_url + "/v1/ocr/stream") as ws:
            await ws.send_message(json.dumps({"id": "a", "image": b64(text_image(["HELLO"]))}))
            await wait_until(lambda: service.statistics().requests_in_flight == 1)
            server.state.begin_shutdown()
            await ws.send_message(json.dumps({"id": "late", "image": b64(text_image(["HI"]))}))
            events = []
            with trio.fail_after(30):
                while not (events and events[-1] == ("late", "error")):
                    event = json.loads(await ws.get_message())
                    events.append((event["id"], event["type"]))
            assert event["code"] == "shutting_down"
            assert event["status"] == 503 and event["retry_after"] == 5  # REST's Retry-After
            gate.set()
            with trio.fail_after(30):
                while events[-1] != ("a", "done"):
                    event = json.loads(await ws.get_message())
                    events.append((event["id"], event["type"]))
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
            assert closed.value.reason.code == 1001


@pytest.mark.parametrize(
    "gone", [trio.BusyResourceError, trio.BrokenResourceError, trio.ClosedResourceError]
)
async def test_a_write_onto_a_closing_connection_cancels_the_socket_work(gone):
    """Hypercorn half-closes a transport (send_eof) outside its send lock, so a frame written
    while the client closes meets BusyResourceError; seen at shutdown as a logged traceback.
    The writer must treat every such error as "the client is gone": cancel, never raise."""
    from web.ws import _writer

    sent: list[str] = []

    async def send(text: str) -> None:
        if sent:
            raise gone("another task is currently sending data on this SocketStream")
        sent.append(text)

    outbox_send, outbox_recv = trio.open_memory_channel(4)
    with trio.fail_after(5):
        with trio.CancelScope() as connection:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_writer, outbox_recv, send, connection)
                await outbox_send.send({"type": "accepted", "id": 1})
                await outbox_send.send({"type": "done", "id": 1})
                await trio.sleep_forever()  # the socket's other work, until cancelled
    assert connection.cancelled_caught
    assert [json.loads(t)["type"] for t in sent] == ["accepted"]


async def test_a_plain_http_get_is_told_to_upgrade(config):
    app = create_app(fast(config))
    async with app.test_app() as test_app:
        r = await test_app.test_client().get("/v1/ocr/stream")
        body = await r.get_json()
    assert r.status_code == 426, body
    assert r.headers["Upgrade"] == "websocket"
    assert body == {"success": False, "error": body["error"], "code": "upgrade_required"}
