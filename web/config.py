"""The web layer's sections of the configuration: ``server`` (listening, auth, request
limits, shutdown) and ``cache``. The whole file is composed and loaded in
:mod:`web.settings`.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 11436
    #: Bearer token required on every route but /health; None = no authentication.
    auth_token: str | None = None
    #: Largest request body accepted (bytes); larger bodies get 413.
    #: (A 20 MiB image is about 27 MiB as base64 in JSON, hence the margin.)
    max_body_bytes: int = 32 * 1024 * 1024
    #: Requests admitted at once; more get 429 with Retry-After.
    max_in_flight: int = 32
    #: A request's deadline inside the service; past it the answer is 504.
    request_timeout_s: float = 30.0
    #: On SIGTERM/SIGINT, how long requests in flight may take to finish.
    shutdown_grace_s: float = 10.0
    #: On SIGTERM/SIGINT, first: how long ``/health/ready`` answers 503 ``draining`` while
    #: every request is still served, so a load balancer's health checks take the
    #: instance out of rotation before it refuses anything. The default is two check
    #: intervals of deploy/haproxy/haproxy.cfg (``inter 1s``): HAProxy marks a server down
    #: after ``fall 2`` failed checks, at most ``inter`` + ``fastinter`` = 1.25 s after the
    #: first 503, and the rest covers the checks' own latency. 0 = no drain.
    drain_delay_s: float = 2.0
    #: A request body that sends nothing for this long is answered 408 and its connection
    #: closed, so a stalled upload holds no socket, task or partial body for long.
    read_timeout_s: float = 20.0
    #: Root directory ``file://`` image paths may be read from; None = file:// disabled.
    file_root: str | None = None
    #: Websocket: most images one socket may have in flight at once.
    ws_max_in_flight: int = 8
    log_level: str = "info"


@attrs.frozen
class CacheConfig:
    enabled: bool = False
    max_entries: int = 256
    max_mb: float = 64.0
    ttl_s: float = 600.0
