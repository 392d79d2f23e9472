"""A client of the websocket ``/v1/ocr/stream`` that reads many files through a running
service: what ``hailo-ocr read`` sends them with.

One websocket carries every file, up to a window of them in flight at once (at most the
server's ``ws_max_in_flight``, read from ``/health``), each answered by a ``done`` event
(the REST result) or an ``error`` event. A batch of thousands of scans must survive a
busy or restarting server without a person watching it, so the client retries, but only
within bounds:

- An error the server says is temporary (status 429 or 503; the event's ``retry_after``
  is the websocket's form of REST's ``Retry-After``) sends that file again after that many
  seconds (``FALLBACK_RETRY_AFTER_S`` from a server that does not say), at most
  ``retries`` times. ``overloaded`` also halves the window (once per window of files
  sent), and every window's worth of files done adds one back: the server's admission limit is
  shared with its other clients, so a fixed window would keep running into it.
- ``request_timeout`` (504) means the server was slower than its own deadline with the
  files in flight: the window halves as for ``overloaded`` and the file is sent again at
  once, but only ``TIMEOUT_RETRIES`` time(s) (a file that times out on its own would
  otherwise hold the run for a deadline per try).
- ``shutting_down`` means that server is going away: nothing more is sent on that socket,
  and once its files are answered (or the server closes it) the client connects again
  after the Retry-After; behind a load balancer that reaches a server that stays.
- A dropped connection (or one silent for ``timeout_s`` while files are in flight) is
  opened again with backoff (``RECONNECT_BACKOFF_S``, doubling to ``RECONNECT_BACKOFF_MAX_S``,
  at most ``RECONNECT_TRIES`` failures in a row), and the files that were in flight on it
  are sent again, each resend counted as a try.

Every file gets exactly one :class:`FileOutcome`, in the order files finish.
"""

from __future__ import annotations

import base64
import collections
import heapq
import json
import math
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    DisconnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

#: The path of the streaming websocket, below the service's base URL.
STREAM_PATH: Final = "/v1/ocr/stream"
#: Files in flight when the server does not say its ``ws_max_in_flight`` (its default).
DEFAULT_IN_FLIGHT: Final = 8
#: Largest message when the server does not say its ``max_body_bytes`` (its default).
DEFAULT_MAX_BODY_BYTES: Final = 32 * 2**20
#: Sends after the first one, per file, after errors the server calls temporary or a
#: dropped connection.
DEFAULT_RETRIES: Final = 8
#: Silence from the server, with files in flight, after which the connection is taken as
#: lost (the server answers every image within its own deadline, 30 s by default).
DEFAULT_TIMEOUT_S: Final = 60.0
#: Statuses the server uses for "not now, later": 429 overloaded, 503 not ready, shutting
#: down, device restarting.
RETRY_STATUSES: Final = frozenset({429, 503})
#: Sends again after a ``request_timeout`` (504), per file.
TIMEOUT_RETRIES: Final = 1
TIMEOUT_STATUS: Final = 504
#: The wait before a retry when an error event has no ``retry_after`` (an older server).
FALLBACK_RETRY_AFTER_S: Final = 2.0
#: Reconnection: first wait, doubling to the largest, for at most this many failed
#: connection attempts in a row (about a minute of waiting), then every file left fails.
RECONNECT_BACKOFF_S: Final = 0.5
RECONNECT_BACKOFF_MAX_S: Final = 8.0
RECONNECT_TRIES: Final = 10
#: Handshake and closing-handshake bounds.
CONNECT_TIMEOUT_S: Final = 10.0
DISCONNECT_TIMEOUT_S: Final = 5.0
#: Largest event accepted from the server (a done event for a page of 1000 lines is
#: ~200 KB; trio-websocket's own default, 1 MiB, is too close).
MAX_EVENT_BYTES: Final = 64 * 2**20
#: Events buffered between trio-websocket's reader and ours, and bytes read from the
#: socket at a time (its defaults, 1 and 4 KiB, take a wake-up per message and a dozen
#: reads per ``done`` event: on a busy machine each wake-up waits for a core).
EVENT_QUEUE: Final = 64
RECEIVE_BUFFER_BYTES: Final = 256 * 1024
#: Files above this size are read and base64-encoded in a worker thread.
_THREAD_THRESHOLD: Final = 256 * 1024
#: Rejected handshakes that no retry can fix: a wrong token, a wrong URL.
_FATAL_HANDSHAKE_STATUSES: Final = frozenset({400, 401, 403, 404, 405})

#: What a lost connection raises from trio-websocket and the socket under it.
_CONNECTION_LOST = (
    ConnectionClosed, HandshakeError, DisconnectionTimeout, OSError, trio.BrokenResourceError,
    trio.ClosedResourceError, trio.TooSlowError,
)


@attrs.frozen
class ClientSettings:
    """How ``hailo-ocr read`` talks to the service."""

    #: The service's base URL, ``http(s)://host:port`` (a path prefix is kept).
    url: str
    token: str | None = None
    #: Recognition languages to ask for; empty: the server's default.
    languages: tuple[str, ...] = ()
    #: Files in flight at most; None: the server's ``ws_max_in_flight``.
    in_flight: int | None = attrs.field(default=None)
    retries: int = DEFAULT_RETRIES
    timeout_s: float = DEFAULT_TIMEOUT_S

    @in_flight.validator
    def _check_in_flight(self, _attr: Any, value: int | None) -> None:
        if value is not None and value < 1:
            raise ValueError("in_flight must be at least 1")

    @property
    def ws_url(self) -> str:
        return stream_url(self.url)


def stream_url(base_url: str) -> str:
    """``http://host:port[/prefix]`` -> ``ws://host:port[/prefix]/v1/ocr/stream``."""
    parts = urlsplit(base_url if "://" in base_url else f"http://{base_url}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {base_url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + STREAM_PATH, "", ""))


def health_url(base_url: str) -> str:
    parts = urlsplit(base_url if "://" in base_url else f"http://{base_url}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/health", "", ""))


@attrs.frozen
class ServerLimits:
    """What the client sizes its work to; from ``/health``, else the server's defaults."""

    ws_max_in_flight: int = DEFAULT_IN_FLIGHT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: Why these are the defaults rather than the server's own figures ("" if they are its).
    assumed_because: str = ""


async def fetch_limits(settings: ClientSettings) -> ServerLimits:
    """The server's limits from ``GET /health`` (``limits``); defaults when it cannot say."""

    def get() -> dict[str, Any]:
        req = urllib.request.Request(health_url(settings.url))
        if settings.token:
            req.add_header("Authorization", f"Bearer {settings.token}")
        # No proxy from the environment: the websocket goes straight to the URL, so the
        # limits must come from the same place.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=CONNECT_TIMEOUT_S) as resp:
            return json.loads(resp.read())

    try:
        health = await trio.to_thread.run_sync(get)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        return ServerLimits(assumed_because=f"GET /health failed: {exc}")
    limits = health.get("limits") if isinstance(health, dict) else None
    if not isinstance(limits, dict):
        return ServerLimits(assumed_because="the server's /health does not say its limits")
    defaults = ServerLimits()
    ws_max = limits.get("ws_max_in_flight")
    max_body = limits.get("max_body_bytes")
    return ServerLimits(
        ws_max_in_flight=ws_max if isinstance(ws_max, int) and ws_max > 0
        else defaults.ws_max_in_flight,
        max_body_bytes=max_body if isinstance(max_body, int) and max_body > 0
        else defaults.max_body_bytes,
    )


@attrs.frozen
class InputFile:
    """One file to read: ``name`` is what results call it (the path as the user gave it)."""

    name: str
    path: Path


@attrs.frozen
class FileOutcome:
    """One file's answer. ``body`` is exactly what ``POST /v1/ocr/extract`` would have
    answered: ``{"success": true, ...result}`` or ``{"success": false, "error", "code"}``."""

    file: str
    body: dict[str, Any]
    #: How many times the file was sent (0: it failed before it could be).
    tries: int

    @property
    def ok(self) -> bool:
        return self.body.get("success") is True

    @property
    def code(self) -> str | None:
        return None if self.ok else str(self.body.get("code"))

    @property
    def error(self) -> str:
        return "" if self.ok else str(self.body.get("error"))

    def json_line(self) -> dict[str, Any]:
        """The REST body with ``file`` in front, as one JSONL line holds it."""
        return {"file": self.file, **self.body}


def _failure(code: str, message: str) -> dict[str, Any]:
    return {"success": False, "error": message, "code": code}


@attrs.frozen
class ReadStatistics:
    """A snapshot of the client's progress."""

    files: int
    succeeded: int
    failed: int
    in_flight: int
    #: ``line`` events received: text lines read so far (of finished and unfinished files).
    lines: int
    #: Files sent again after a temporary error (429, 503).
    retries: int
    #: Files sent again because the connection was lost while they were in flight.
    resent: int
    reconnects: int
    connected: bool
    #: Files the client keeps in flight now, and at most.
    window: int
    max_window: int
    #: ``page_done`` events received: pages of PDF and multi-page TIFF files read so far.
    pages: int = 0

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed


@attrs.define(eq=False)
class _Job:
    index: int
    file: InputFile
    #: Sends so far, and those answered ``request_timeout``.
    tries: int = 0
    timeouts: int = 0
    #: The number of the last send of it, counted over all files.
    sent_seq: int = 0
    #: Waiting to be sent again because the server was full (429).
    refused_as_full: bool = False


@attrs.define(eq=False)
class _Connection:
    """One socket's share of the work: what is in flight on it, and whether the server
    said it is going away (nothing more is sent on it then)."""

    in_flight: dict[int, _Job] = attrs.field(factory=dict)
    draining: bool = False
    #: The server sent something on it: the connection works (resets the backoff).
    answered: bool = False


class _Lost(Exception):
    """The connection went away; the files in flight on it are sent again."""


class _Refused(Exception):
    """The server refused the handshake for a reason no retry can fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StreamClient:
    """Sends ``files`` over one websocket at a time; :meth:`run` puts each file's outcome
    on :attr:`outcomes` as it finishes. See the module docstring for the retry rules."""

    def __init__(
        self, settings: ClientSettings, files: Sequence[InputFile], limits: ServerLimits
    ) -> None:
        self._settings = settings
        self._limits = limits
        self._max_window = settings.in_flight or limits.ws_max_in_flight
        self._window = self._max_window
        self._window_credit = 0
        self._sends = 0
        self._shrunk_after_seq = 0
        self._ready: collections.deque[_Job] = collections.deque(
            _Job(i, f) for i, f in enumerate(files))
        self._later: list[tuple[float, int, _Job]] = []  # heap of (due, index, job)
        self._files = len(files)
        self._unfinished = len(files)
        self._connect_not_before = 0.0
        self._changed = trio.Event()
        # Sized to the files, so handing over an outcome never waits (each file has
        # exactly one) and can happen anywhere, even while a connection is torn down.
        self._results, self.outcomes = trio.open_memory_channel[FileOutcome](max(1, len(files)))
        self._in_flight = 0
        self._succeeded = self._failed = self._lines = self._pages = 0
        self._retries = self._resent = self._connections = 0
        self._connected = False

    def statistics(self) -> ReadStatistics:
        return ReadStatistics(
            files=self._files, succeeded=self._succeeded, failed=self._failed,
            in_flight=self._in_flight, lines=self._lines, retries=self._retries,
            resent=self._resent, reconnects=max(0, self._connections - 1),
            connected=self._connected, window=self._window, max_window=self._max_window,
            pages=self._pages,
        )

    async def run(self) -> None:
        """Read every file; return when each has its outcome in :attr:`outcomes`."""
        async with self._results:
            await self._connect_until_done()

    async def _connect_until_done(self) -> None:
        failures = 0  # connection attempts in a row that got no answer from the server
        while self._unfinished:
            await trio.sleep_until(self._connect_not_before)
            conn = _Connection()
            try:
                await self._connect_and_serve(conn)
            except _Refused as exc:
                self._fail_unsent(exc.code, exc.message)
                return
            except (_Lost, *_CONNECTION_LOST) as exc:
                self._requeue(conn)
                failures = 0 if conn.answered else failures + 1
                if failures >= RECONNECT_TRIES:
                    self._fail_unsent(
                        "connection_failed",
                        f"could not connect to {self._settings.ws_url} "
                        f"({failures} attempts): {_describe(exc)}")
                    return
                delay = min(RECONNECT_BACKOFF_MAX_S,
                            RECONNECT_BACKOFF_S * 2 ** max(0, failures - 1))
                self._connect_not_before = max(self._connect_not_before,
                                               trio.current_time() + delay)

    async def _connect_and_serve(self, conn: _Connection) -> None:
        headers = []
        if self._settings.token:
            headers.append((b"Authorization", f"Bearer {self._settings.token}".encode()))
        try:
            async with open_websocket_url(
                self._settings.ws_url, extra_headers=headers, max_message_size=MAX_EVENT_BYTES,
                message_queue_size=EVENT_QUEUE, receive_buffer_size=RECEIVE_BUFFER_BYTES,
                connect_timeout=CONNECT_TIMEOUT_S, disconnect_timeout=DISCONNECT_TIMEOUT_S,
            ) as ws:
                self._connections += 1
                self._connected = True
                self._notify()
                await self._serve(ws, conn)
        except ConnectionRejected as exc:
            if exc.status_code in _FATAL_HANDSHAKE_STATUSES:
                raise _Refused(*_rejection(exc)) from None
            raise
        finally:
            self._connected = False

    async def _serve(self, ws: WebSocketConnection, conn: _Connection) -> None:
        """Send and receive until every file is finished, or the socket is drained."""
        lost: BaseException | None = None

        async def guarded(loop: Any) -> None:
            nonlocal lost
            try:
                await loop(ws, conn)
            except _CONNECTION_LOST as exc:
                lost = lost or exc
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(guarded, self._send_loop)
            nursery.start_soon(guarded, self._receive_loop)
            while self._unfinished and not (conn.draining and not conn.in_flight):
                await self._changed.wait()
            nursery.cancel_scope.cancel()
        if lost is not None:
            raise _Lost(_describe(lost)) from lost

    # -- sending ------------------------------------------------------------------------

    async def _send_loop(self, ws: WebSocketConnection, conn: _Connection) -> None:
        while True:
            job = await self._next_job(conn)
            try:
                message = await self._message(job)
            except _FileFailure as exc:
                self._finish(job, _failure(exc.code, exc.message))
                continue
            job.tries += 1
            self._sends += 1
            job.sent_seq = self._sends
            conn.in_flight[job.index] = job  # before sending: its events may come at once
            self._in_flight += 1
            with trio.fail_after(self._settings.timeout_s):
                await ws.send_message(message)

    async def _next_job(self, conn: _Connection) -> _Job:
        """The next file to send on ``conn``: once the window has room, a retry that is
        due, else the next file not yet sent."""
        while True:
            if not conn.draining and len(conn.in_flight) < self._window:
                now = trio.current_time()
                while self._later and self._later[0][0] <= now:
                    _, _, job = heapq.heappop(self._later)
                    self._ready.appendleft(job)
                if self._ready:
                    return self._ready.popleft()
            due = self._later[0][0] if self._later else math.inf
            with trio.move_on_at(due):
                await self._changed.wait()

    async def _message(self, job: _Job) -> str:
        path = job.file.path
        try:
            data = await trio.Path(path).read_bytes()
        except OSError as exc:
            raise _FileFailure("file_unreadable", exc.strerror or str(exc)) from None
        if not data:  # sent, it would read as a message without an image
            raise _FileFailure("invalid_image", "the file is empty")
        langs = list(self._settings.languages)
        if len(data) > _THREAD_THRESHOLD:
            message = await trio.to_thread.run_sync(_encode, job.index, data, langs)
        else:
            message = _encode(job.index, data, langs)
        limit = self._limits.max_body_bytes
        if len(message) > limit:
            raise _FileFailure(
                "payload_too_large",
                f"the file is {len(data)} bytes, {len(message)} as a websocket message; the "
                f"server takes at most {limit} (server.max_body_bytes)")
        return message

    # -- receiving ----------------------------------------------------------------------

    async def _receive_loop(self, ws: WebSocketConnection, conn: _Connection) -> None:
        while True:
            with trio.move_on_after(self._settings.timeout_s) as silence:
                raw = await ws.get_message()
            if silence.cancelled_caught:
                if conn.in_flight:
                    raise trio.TooSlowError(
                        f"no answer from the server for {self._settings.timeout_s:g} s")
                continue
            conn.answered = True
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict):
                self._on_event(conn, event)

    def _on_event(self, conn: _Connection, event: dict[str, Any]) -> None:
        kind, client_id = event.get("type"), event.get("id")
        job = conn.in_flight.get(client_id) if isinstance(client_id, int) else None
        if job is None:  # not ours (an id-less error: nothing this client sends has one)
            return
        if kind == "line":
            self._lines += 1
        elif kind == "page_done":
            self._pages += 1
        elif kind == "done":
            self._take(conn, job)
            self._grow_window()
            self._release_one_refused()
            body = {k: v for k, v in event.items() if k not in ("type", "id")}
            self._finish(job, {"success": True, **body})
        elif kind == "error":
            self._take(conn, job)
            self._on_error(conn, job, event)

    def _on_error(self, conn: _Connection, job: _Job, event: dict[str, Any]) -> None:
        code = str(event.get("code") or "error")
        status = event.get("status")
        if status in RETRY_STATUSES and job.tries <= self._settings.retries:
            retry_after = event.get("retry_after")
            delay = (float(retry_after) if isinstance(retry_after, int | float)
                     and retry_after > 0 else FALLBACK_RETRY_AFTER_S)
            now = trio.current_time()
            job.refused_as_full = status == 429
            if job.refused_as_full:
                self._shrink_window(job)
            if code == "shutting_down":
                conn.draining = True
                self._connect_not_before = max(self._connect_not_before, now + delay)
            self._retries += 1
            heapq.heappush(self._later, (now + delay, job.index, job))
            self._notify()
            return
        if (status == TIMEOUT_STATUS and job.timeouts < TIMEOUT_RETRIES
                and job.tries <= self._settings.retries):
            job.timeouts += 1
            self._shrink_window(job)
            self._retries += 1
            self._ready.appendleft(job)
            self._notify()
            return
        self._release_one_refused()
        self._finish(job, _failure(code, str(event.get("error") or code)))

    # -- bookkeeping --------------------------------------------------------------------

    def _take(self, conn: _Connection, job: _Job) -> None:
        del conn.in_flight[job.index]
        self._in_flight -= 1

    def _shrink_window(self, job: _Job) -> None:
        """Halve the window, once per window of files: answers to files sent before the
        last halving are the same burst, not a new signal."""
        if job.sent_seq > self._shrunk_after_seq:
            self._window = max(1, self._window // 2)
            self._window_credit = 0
            self._shrunk_after_seq = self._sends

    def _grow_window(self) -> None:
        if self._window < self._max_window:
            self._window_credit += 1
            if self._window_credit >= self._window:
                self._window += 1
                self._window_credit = 0
                self._notify()

    def _release_one_refused(self) -> None:
        """One of our files has finished, so a slot of the server's is free: the file
        refused as overloaded longest ago goes now instead of at its Retry-After (what the
        server advises for a full socket: wait for a done or error event). Without it a
        full server would sit idle until the Retry-After while files wait."""
        waiting = [entry for entry in self._later if entry[2].refused_as_full]
        if waiting:
            entry = min(waiting)
            self._later.remove(entry)
            heapq.heapify(self._later)
            self._ready.appendleft(entry[2])

    def _requeue(self, conn: _Connection) -> None:
        """The connection is gone: what was in flight on it is sent again first (in its
        original order), or fails if it has used its tries."""
        for index in sorted(conn.in_flight, reverse=True):
            job = conn.in_flight.pop(index)
            self._in_flight -= 1
            if job.tries <= self._settings.retries:
                self._resent += 1
                self._ready.appendleft(job)
            else:
                self._finish(job, _failure(
                    "connection_lost",
                    f"the connection to the server was lost while the file was in flight "
                    f"({job.tries} times)"))
        self._notify()

    def _fail_unsent(self, code: str, message: str) -> None:
        """No more connections: every file not finished fails with the reason."""
        jobs = list(self._ready) + [job for _, _, job in self._later]
        self._ready.clear()
        self._later.clear()
        for job in sorted(jobs, key=lambda j: j.index):
            self._finish(job, _failure(code, message))

    def _finish(self, job: _Job, body: dict[str, Any]) -> None:
        if body.get("success") is True:
            self._succeeded += 1
        else:
            self._failed += 1
        self._unfinished -= 1
        self._results.send_nowait(FileOutcome(job.file.name, body, job.tries))
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


class _FileFailure(Exception):
    """A file that fails before it is sent (unreadable, too large)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _encode(client_id: int, data: bytes, languages: list[str]) -> str:
    message: dict[str, Any] = {"id": client_id, "image": base64.b64encode(data).decode("ascii")}
    if languages:
        message["languages"] = languages
    return json.dumps(message)


def _rejection(exc: ConnectionRejected) -> tuple[str, str]:
    """(code, message) of a refused handshake, from the server's JSON error body."""
    code = f"http_{exc.status_code}"
    message = f"the server refused the connection ({exc.status_code})"
    try:
        body = json.loads(exc.body or b"")
        code = str(body.get("code") or code)
        message = str(body.get("error") or message)
    except (ValueError, AttributeError):
        pass
    return code, message


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed) and exc.reason is not None:
        reason = exc.reason
        why = f": {reason.reason}" if reason.reason else ""
        return f"connection closed ({reason.code} {reason.name}{why})"
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, HandshakeError) and cause is not None:
        text = f"{text} {cause}".strip()
    return text
