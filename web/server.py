"""``hailo-ocr serve``: the app under Hypercorn's Trio worker, with graceful shutdown.

Shutdown order on SIGTERM or SIGINT:

1. drain: for ``server.drain_delay_s`` ``/health/ready`` answers 503 ``draining`` while
   every request, new ones included, is still served. A load balancer's health checks
   see it and stop sending work here, so nothing sent to this instance is refused, even
   a request the balancer could not have retried elsewhere (a body too large for it to
   buffer, a websocket);
2. the service refuses new requests (503 ``shutting_down`` with Retry-After), so a
   balancer or client that still sends here retries elsewhere at once instead of waiting
   on a dying process; websockets finish their images and close with 1001;
3. requests in flight finish, up to ``server.shutdown_grace_s``;
4. Hypercorn stops accepting, closes idle keep-alive connections and gives the rest the
   same grace; then the lifespan shutdown stops the actor tree; the process exits 0.

A second signal during the drain or the grace period stops at once.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve as hypercorn_serve

from npu.backend import BackendFactory

from .app import create_app, get_state
from .settings import Config

log = logging.getLogger("hailo_ocr.server")

#: After the service is idle, how long connections still get to write their last bytes.
_FLUSH_S = 3.0


def hypercorn_config(config: Config) -> HyperConfig:
    hc = HyperConfig()
    host = config.server.host
    hc.bind = [f"[{host}]:{config.server.port}" if ":" in host else f"{host}:{config.server.port}"]
    hc.graceful_timeout = config.server.shutdown_grace_s  # shortened in serve()
    # Hypercorn 0.18 under Quart-Trio never starts a connection's keep-alive timer (it is
    # cancelled with the request's nursery), so idle connections were never closed: a
    # client could hold any number of them open. Bound a connection's silence instead,
    # beyond the longest request; websockets are kept alive by pings (a pong is traffic).
    hc.read_timeout = int(config.server.request_timeout_s) + 60
    hc.websocket_ping_interval = 20.0
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.accesslog = (
        logging.getLogger("hypercorn.access") if config.server.log_level == "debug" else None
    )
    hc.include_server_header = False
    # Hypercorn's own limit on a request line + headers; the body limit is Quart's.
    hc.h11_max_incomplete_size = 64 * 1024
    hc.websocket_max_message_size = config.server.max_body_bytes + 1024
    return hc


async def serve(
    config: Config,
    backends: Mapping[str, BackendFactory] | None = None,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGINT/SIGTERM; ``task_status.started`` gets the bound URLs."""
    app = create_app(config, backends)
    state = get_state(app)
    hc = hypercorn_config(config)
    stop = trio.Event()

    async def shutdown_trigger() -> None:
        await stop.wait()
        if config.server.drain_delay_s > 0:
            log.info(
                "draining for %.1f s: /health/ready answers 503, requests are still served",
                config.server.drain_delay_s,
            )
            state.begin_drain()
            await trio.sleep(config.server.drain_delay_s)
        log.info(
            "refusing new requests; waiting up to %.1f s for %d in flight",
            config.server.shutdown_grace_s,
            state.service.statistics().requests_in_flight if state.service else 0,
        )
        deadline = trio.current_time() + config.server.shutdown_grace_s
        state.begin_shutdown()
        service = state.service
        if service is not None:
            with trio.move_on_at(deadline):
                await service.wait_idle()
        # Hypercorn reads graceful_timeout after this returns: what is left of the grace
        # (plus a moment to write the last responses) is what connections still get --
        # but no more than a few seconds: the work is done, and Hypercorn waits for every
        # open connection, so one idle keep-alive connection (see read_timeout) would
        # otherwise hold the process for the rest of the grace (30 s observed).
        hc.graceful_timeout = max(0.5, min(deadline - trio.current_time(), _FLUSH_S))

    async def on_signals(cancel_scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if not stop.is_set():
                    log.info(
                        "%s: shutting down (drain %.1f s, grace %.1f s)", name,
                        config.server.drain_delay_s, config.server.shutdown_grace_s,
                    )
                    stop.set()
                else:
                    log.warning("%s again: stopping now", name)
                    cancel_scope.cancel()
                    return

    async with trio.open_nursery() as nursery:

        async def run_server(task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                await hypercorn_serve(
                    app, hc, shutdown_trigger=shutdown_trigger, task_status=task_status
                )
            finally:
                nursery.cancel_scope.cancel()  # the signal listener is no longer needed

        nursery.start_soon(on_signals, nursery.cancel_scope)
        binds: list[str] = await nursery.start(run_server)
        info = state.service.info if state.service is not None else None
        for url in binds:
            log.info(
                "listening on %s (backend %s, languages %s)",
                url,
                info.kind if info else config.backend.type,
                ", ".join(info.languages) if info else "?",
            )
        task_status.started(binds)
    log.info("stopped")
