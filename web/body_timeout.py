"""A request body that stalls is answered 408 and its connection closed.

Hypercorn bounds a connection's silence only as a whole (``read_timeout``), and that bound
must outlast the longest request, because a client waiting for its answer sends nothing
either; Quart bounds only the time to the *end* of a body. Between the two, a client that
sent its headers and the start of a body and then nothing held its socket, its handler task
and the part of the body it had sent for a minute or more; a hundred such clients could
hold a Pi's memory. This middleware bounds the silence *inside* a body instead: every read
of the next body chunk must arrive within ``server.read_timeout_s``. A client that stalls
there gets ``408 request_timeout`` and Hypercorn closes the connection (the body is
unfinished, so it cannot be reused). Steady slow uploads are unaffected: each chunk restarts
the clock.
"""

from __future__ import annotations

import json
import logging

import trio

from .errors import ErrorInfo

log = logging.getLogger("hailo_ocr.web")

class BodyReadTimeout:
    """ASGI middleware: a request body silent for ``timeout_s`` ends the request with 408."""

    def __init__(self, app, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body_done = False
        responding = False
        stalled = False
        request_scope = trio.CancelScope()

        async def timed_receive():
            nonlocal body_done, stalled
            if body_done or responding:
                return await receive()
            with trio.move_on_after(self.timeout_s):
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    body_done = True
                return message
            # Nothing for timeout_s: to the app the client is gone; to the client, a 408.
            stalled = True
            request_scope.cancel()
            return {"type": "http.disconnect"}

        async def tracking_send(message) -> None:
            nonlocal responding
            if message["type"] == "http.response.start":
                responding = True
            await send(message)

        with request_scope:
            await self.app(scope, timed_receive, tracking_send)
        if stalled and not responding:
            log.info(
                "%s %s: the request body sent nothing for %.0f s; answered 408, closing",
                scope.get("method", "?"), scope.get("path", "?"), self.timeout_s,
            )
            await _send_408(send, self.timeout_s)


async def _send_408(send, timeout_s: float) -> None:
    info = ErrorInfo(
        408, "request_timeout",
        f"the request body stalled: nothing was received for {timeout_s:g} s",
    )
    body = json.dumps(info.body()).encode()
    await send({
        "type": "http.response.start",
        "status": info.status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    })
    await send({"type": "http.response.body", "body": body, "more_body": False})
