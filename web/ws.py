"""The streaming websocket ``/v1/ocr/stream``.

One handler task per socket owns a nursery; every image the client sends runs as a child
task there, so a client that disconnects (Quart-Trio cancels the handler) cancels all of
its work and nothing else. Child tasks never write to the socket themselves: they put
events on one bounded channel drained by a single writer task, which keeps frames whole
and lets a slow reader push back on its own requests (and only on them).

A malformed message is answered with an ``error`` event and the socket stays open: one
bad frame from a long-lived client should not cost it the images it has in flight.

A write can also find the connection already going: the client closed it while a frame was
on its way, or Hypercorn is half-closing the transport (it sends EOF outside its send lock,
so our write then meets ``trio.BusyResourceError``). Nothing can reach that client any
more, so the socket's work is cancelled, exactly as for a disconnect, and nothing is
logged as an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from quart import Blueprint, current_app, websocket

from actors.errors import Overloaded
from actors.messages import OcrRequest
from actors.service import OcrService

from . import openapi
from .app import AppState, get_state
from .errors import ApiError
from .inputs import image_from_string, parse_document_options, parse_languages
from .openapi import stream as openapi_stream
from .responses import error_event, event_json

bp = Blueprint("stream", __name__)
log = logging.getLogger("hailo_ocr.web")

#: Outgoing events buffered per socket before producers wait for the writer.
_OUTBOX = 64
#: Progress events buffered per image before its orchestrator waits for the forwarder.
_EVENTS_PER_IMAGE = 16
#: Longest one frame write may take; a client that stops reading loses the socket.
_SEND_TIMEOUT_S = 30.0
#: Longest accepted message, characters (the body limit, base64-inflated).
_MESSAGE_SLACK = 1024


#: What a write raises when the transport under the socket is closing or closed.
_CONNECTION_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError)


#: How long a client over its socket's in-flight limit is asked to wait (an image of its
#: own finishes in about that time).
_SOCKET_FULL_RETRY_AFTER_S: Final = 1


async def _writer(
    outbox: trio.MemoryReceiveChannel[dict[str, Any]],
    send: Callable[[str], Awaitable[None]],
    connection: trio.CancelScope,
) -> None:
    """Write every event in order; if the connection goes, cancel the socket's work."""
    async with outbox:
        async for message in outbox:
            text = json.dumps(message, ensure_ascii=False)
            try:
                with trio.fail_after(_SEND_TIMEOUT_S):
                    await send(text)
            except _CONNECTION_GONE as exc:
                log.info("websocket closed under a write (%s); cancelling its work",
                         type(exc).__name__)
                connection.cancel()
                return


async def _run_image(
    state: AppState, service: OcrService, client_id: Any, message: dict[str, Any],
    outbox: trio.MemorySendChannel[dict[str, Any]], work: _SocketWork,
) -> None:
    """Run one image, forwarding its events as they happen."""
    async with outbox:
        try:
            await _forward_image(state, service, client_id, message, outbox)
        finally:
            work.discard(client_id)


async def _forward_image(
    state: AppState, service: OcrService, client_id: Any, message: dict[str, Any],
    outbox: trio.MemorySendChannel[dict[str, Any]],
) -> None:
    try:
        langs = parse_languages(message.get("languages"))
        options = parse_document_options(message.get)
        data = await image_from_string(message["image"], state.config)
    except ApiError as exc:
        await outbox.send(error_event(client_id, exc))
        return
    request = OcrRequest(data, langs, id=str(client_id), options=options)
    async with service.open_events(request, _EVENTS_PER_IMAGE) as events:
        async for event in events:
            await outbox.send(event_json(event, client_id, service.info))


def _parse_message(raw: str | bytes) -> tuple[Any, dict[str, Any]]:
    """(id, the message) of a client message, or ApiError naming what is wrong."""
    if isinstance(raw, bytes):
        raise ApiError("invalid_message", "send JSON text frames, not binary frames")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError("invalid_json", "the message is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ApiError("invalid_message", "the message must be a JSON object")
    client_id = doc.get("id")
    if client_id is None or client_id == "":
        raise ApiError("missing_field", "the message needs an 'id'")
    if not isinstance(client_id, str | int) or isinstance(client_id, bool):
        raise ApiError("invalid_field", "'id' must be a string or an integer")
    if doc.get("image") in (None, ""):
        raise _WithId(client_id, ApiError("missing_field", "the message needs an 'image'"))
    return client_id, doc


class _WithId(Exception):
    """An ApiError for a message whose id could be read."""

    def __init__(self, client_id: Any, error: ApiError) -> None:
        super().__init__(str(error))
        self.client_id = client_id
        self.error = error


class _SocketWork:
    """The ids in flight on one socket, and an event for "none are"."""

    def __init__(self) -> None:
        self.ids: set[Any] = set()
        self._idle = trio.Event()
        self._idle.set()

    def add(self, client_id: Any) -> None:
        self.ids.add(client_id)
        if self._idle.is_set():
            self._idle = trio.Event()

    def discard(self, client_id: Any) -> None:
        self.ids.discard(client_id)
        if not self.ids:
            self._idle.set()

    async def wait_idle(self) -> None:
        while not self._idle.is_set():
            await self._idle.wait()


async def _stop_reading_at_shutdown(
    state: AppState, work: _SocketWork, reading: trio.CancelScope
) -> None:
    """Once the server shuts down and this socket's images are done, stop reading: the
    handler then closes the socket (1001) instead of holding the shutdown for its grace."""
    await state.shutting_down.wait()
    await work.wait_idle()
    reading.cancel()


async def _read_messages(
    state: AppState, images: trio.Nursery, outbox: trio.MemorySendChannel[dict[str, Any]],
    work: _SocketWork,
) -> None:
    max_in_flight = state.config.server.ws_max_in_flight
    max_chars = state.config.server.max_body_bytes + _MESSAGE_SLACK
    while True:
        raw = await websocket.receive()
        if raw is None:  # Quart hands an empty *binary* frame over as None
            raw = b""
        if len(raw) > max_chars:
            await outbox.send(error_event(None, ApiError(
                "payload_too_large", "the message is larger than the configured body limit")))
            continue
        try:
            client_id, message = _parse_message(raw)
        except ApiError as exc:
            await outbox.send(error_event(None, exc))
            continue
        except _WithId as exc:
            await outbox.send(error_event(exc.client_id, exc.error))
            continue
        if client_id in work.ids:
            await outbox.send(error_event(client_id, ApiError(
                "duplicate_id", "an image with this id is still in flight")))
            continue
        if len(work.ids) >= max_in_flight:
            await outbox.send(error_event(client_id, Overloaded(
                f"{len(work.ids)} images are in flight on this socket, the limit is "
                f"{max_in_flight}; wait for a done or error event",
                retry_after=_SOCKET_FULL_RETRY_AFTER_S)))
            continue
        try:
            service = state.require_service()
        except Exception as exc:
            await outbox.send(error_event(client_id, exc))
            continue
        work.add(client_id)
        images.start_soon(
            _run_image, state, service, client_id, message, outbox.clone(), work,
        )


@bp.websocket("/v1/ocr/stream")
async def stream() -> None:
    state = get_state(current_app)
    await websocket.accept()
    outbox_send, outbox_recv = trio.open_memory_channel[dict[str, Any]](_OUTBOX)
    work = _SocketWork()
    with trio.CancelScope() as connection:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_writer, outbox_recv, websocket.send, connection)
            async with outbox_send, trio.open_nursery() as images:
                with trio.CancelScope() as reading:
                    images.start_soon(_stop_reading_at_shutdown, state, work, reading)
                    await _read_messages(state, images, outbox_send, work)
        # Only reached at shutdown: every image finished and every event was written.
        try:
            await websocket.close(1001, "the server is shutting down")
        except _CONNECTION_GONE:
            pass  # the client closed first (or Hypercorn is closing it): it is gone either way


def register(app) -> None:
    app.register_blueprint(bp)
    openapi.add_paths(app, openapi_stream.FRAGMENT)
