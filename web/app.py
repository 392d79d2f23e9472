"""The Quart-Trio application factory and the actor tree's lifecycle.

The actor tree (``open_ocr_service``) is an async context manager: it must be entered and
left by the same task. Quart-Trio's lifespan handler gives the app a nursery
(``app.nursery``) that lives exactly as long as the app serves, so ``before_serving``
starts one *service holder* task there with ``nursery.start``: it enters the tree,
reports started once the models are loaded (so the server only listens once it can
answer), and then waits for ``after_serving`` to ask it to leave. Leaving drains the
requests still in flight (bounded by ``server.shutdown_grace_s``) and cancels the tree.

Route modules each have a ``register(app)`` function; the factory calls them in turn, so
a new feature adds one line here and nothing else.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import trio
from quart import request, websocket
from quart_trio import QuartTrio

from actors.errors import NotReady
from actors.messages import OcrResult
from actors.service import OcrService, open_ocr_service
from npu.backend import BackendFactory

from . import errors
from .body_timeout import BodyReadTimeout
from .cache import ResultCache
from .errors import ApiError
from .openapi.fragment import Fragment
from .settings import Config

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("hailo_ocr.web")

#: Routes anyone may call, even when ``server.auth_token`` is set: liveness and
#: readiness probes (systemd, load balancers and the original's clients send no token).
PUBLIC_PATHS = frozenset({"/health", "/health/ready"})


class AppState:
    """What the routes need: the configuration, the result cache, the metrics and, while
    serving, the service."""

    def __init__(
        self, config: Config, backends: Mapping[str, BackendFactory] | None
    ) -> None:
        self.config = config
        self.backends = backends
        self.service: OcrService | None = None
        #: Set by the app factory (:func:`create_app`).
        self.cache: ResultCache[OcrResult] | None = None
        self.metrics: Metrics | None = None
        self.started_at = time.monotonic()
        self.loading = False
        #: Set on SIGTERM, before shutdown: /health/ready says "draining", all else serves.
        self.draining = False
        #: Set when shutdown begins: websockets close once their images are done.
        self.shutting_down = trio.Event()
        self._stop = trio.Event()
        self._stopped = trio.Event()

    @property
    def not_ready_reason(self) -> str | None:
        """Why requests cannot be served now (None when they can): the service has not
        started or its models are loading, or the service's own reason."""
        if self.service is None:
            return self._startup_reason
        return self.service.not_ready_reason

    @property
    def _startup_reason(self) -> str:
        return "models_loading" if self.loading else "not_started"

    def require_service(self) -> OcrService:
        """The running service, or NotReady (503) while the models load."""
        if self.service is None:
            reason = self._startup_reason
            raise NotReady(f"the service is not ready ({reason})", reason)
        return self.service

    def begin_drain(self) -> None:
        """From now on /health/ready answers 503 ``draining`` so that load balancers stop
        sending new work here; every request is still served until ``begin_shutdown``."""
        self.draining = True

    def begin_shutdown(self) -> None:
        """From now on new requests get 503 shutting_down; those in flight go on."""
        self.draining = False  # over: /health/ready says shutting_down from here on
        self.shutting_down.set()
        if self.service is not None:
            self.service.begin_shutdown()

    async def run_service(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.loading = True
        try:
            async with open_ocr_service(self.config, self.backends) as service:
                self.service = service
                self.loading = False
                _log_loaded(service)
                task_status.started()
                await self._stop.wait()
                self.begin_shutdown()
                with trio.move_on_after(self.config.server.shutdown_grace_s) as scope:
                    await service.wait_idle()
                if scope.cancelled_caught:
                    log.warning(
                        "%d request(s) still in flight after the %.1f s grace period; cancelling",
                        service.statistics().requests_in_flight,
                        self.config.server.shutdown_grace_s,
                    )
        finally:
            self.loading = False
            self._stopped.set()
            log.info("OCR service stopped")

    async def stop_service(self) -> None:
        self._stop.set()
        with trio.move_on_after(self.config.server.shutdown_grace_s + 5.0):
            await self._stopped.wait()


def _log_loaded(service: OcrService) -> None:
    info = service.info
    models = ", ".join(f"{m.id}={m.name} on the {service.models.device(m.id)}" for m in info.models)
    log.info(
        "backend %s loaded (device %s, runtime %s; %s); models: %s; languages: %s",
        info.kind, info.device or "cpu", info.runtime_version, service.backend_choice.reason,
        models, ", ".join(info.languages),
    )


class OcrApp(QuartTrio):
    """The Quart-Trio app, carrying its :class:`AppState` and the OpenAPI fragments its
    route modules add (:func:`web.openapi.add_paths`) as typed attributes."""

    ocr_state: AppState

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.openapi_fragments: list[Fragment] = []


def get_state(app: QuartTrio) -> AppState:
    """``app``'s state (``app`` may be Quart's ``current_app`` proxy of an :class:`OcrApp`)."""
    return cast(OcrApp, app).ocr_state


def _check_token(config: Config, header: str | None) -> None:
    token = config.server.auth_token
    if not token:
        return
    scheme, _, given = (header or "").partition(" ")
    ok = scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), token.encode("utf-8")
    )
    if not ok:
        raise ApiError(
            "unauthorized", "a valid 'Authorization: Bearer <token>' header is required",
            headers={"WWW-Authenticate": 'Bearer realm="hailo-ocr"'},
        )


def create_app(
    config: Config, backends: Mapping[str, BackendFactory] | None = None
) -> OcrApp:
    """Build the app for ``config``. The actor tree starts when the app starts serving
    (Hypercorn, or ``app.test_app()`` in tests) and stops when it stops. ``backends``
    replaces the backend factories of the devices (tests)."""
    from . import cache_routes, metrics, openapi, page, routes, ws

    app = OcrApp("hailo_ocr")
    app.config.update(
        MAX_CONTENT_LENGTH=config.server.max_body_bytes,
        MAX_FORM_MEMORY_SIZE=config.server.max_body_bytes,
        RESPONSE_TIMEOUT=config.server.request_timeout_s + 30.0,
        BODY_TIMEOUT=max(60.0, config.server.request_timeout_s),
        BACKGROUND_TASK_SHUTDOWN_TIMEOUT=config.server.shutdown_grace_s + 10.0,
    )
    app.json.sort_keys = False  # keep the SPEC's field order
    app.json.ensure_ascii = False  # Chinese text stays readable in responses
    state = AppState(config, backends)
    app.ocr_state = state

    @app.before_serving
    async def _start_service() -> None:
        await app.nursery.start(state.run_service)

    @app.after_serving
    async def _stop_service() -> None:
        await state.stop_service()

    @app.before_request
    async def _auth_http() -> None:
        if request.path not in PUBLIC_PATHS and not page.is_public(request.path):
            _check_token(config, request.headers.get("Authorization"))

    @app.before_websocket
    async def _auth_ws() -> None:
        # Browsers cannot set headers on a WebSocket: the page sends ?token= instead.
        query_token = websocket.args.get("token")
        header = websocket.headers.get("Authorization")
        _check_token(config, f"Bearer {query_token}" if query_token and not header else header)

    errors.register(app)
    routes.register(app)
    ws.register(app)
    openapi.register(app)
    page.register(app)
    state.cache = cache_routes.register(app, config)
    state.metrics = metrics.install_metrics(app, lambda: state.service, lambda: state.cache)
    app.asgi_app = ShieldedSend(  # type: ignore[method-assign]
        BodyReadTimeout(app.asgi_app, config.server.read_timeout_s)
    )
    return app


class ShieldedSend:
    """ASGI middleware: every HTTP ``send`` runs to its end, shielded from cancellation.

    Quart-Trio cancels a request's nursery as soon as the client's side of the exchange
    ends, which can be while the last ``send`` is still inside Hypercorn, finishing the
    exchange (closing the connection for ``Connection: close``, or arming the keep-alive
    timer). Cancelled there, that work was lost: ``Connection: close`` was not honoured
    and idle keep-alive connections were never closed, so they piled up and held every
    shutdown for its whole grace period. Hypercorn already shields its socket writes, so
    shielding the call adds no new way to block.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def shielded(message) -> None:
            with trio.CancelScope(shield=True):
                await send(message)

        return await self.app(scope, receive, shielded)
