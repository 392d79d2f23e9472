"""Every failure the API can answer, mapped in one place.

Errors come from four layers: the request itself (:class:`ApiError`, raised by the web
layer's input parsing and auth), the pure pipeline (``ocr.errors``: the image is bad), the
actors (``actors.errors``: overloaded, not ready, timed out, language) and the device
(``npu.errors``). :func:`describe` turns any of them into one :class:`ErrorInfo`, which the
REST handlers render as ``{"success": false, "error", "code"}`` with a status and the
websocket renders as an ``error`` event, so the two transports can never disagree about
what an error is called.

The same tables give :func:`catalogue`: every (status, code) the server can answer with,
which the OpenAPI document lists, so the document cannot name a code the server never
sends or miss one it does.

Messages are written for the client and never carry a traceback or a host path; anything
unexpected becomes a bare ``internal_error`` and its traceback goes to the log only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Final

import attrs
from quart import has_request_context, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing.exceptions import WebsocketMismatch

from actors.errors import (
    NotReady,
    Overloaded,
    RequestTimeout,
    ServiceError,
    ShuttingDown,
    UnsupportedLanguage,
)
from npu.errors import (
    BackendError,
    BackendUnavailable,
    DeviceAccessDenied,
    DeviceFault,
    DeviceNotFound,
    InferenceError,
)
from ocr.config import ConfigError
from ocr.errors import (
    ImageTooLarge,
    OcrInputError,
    PageRenderTimeout,
    PdfEncrypted,
    TooManyPages,
    UnsupportedImageFormat,
)

log = logging.getLogger("hailo_ocr.web")

#: The codes the web layer refuses a request with itself, and their statuses.
API_ERRORS: Final[Mapping[str, int]] = MappingProxyType({
    "invalid_json": 400,
    "invalid_message": 400,  # a websocket frame that is not a JSON object in text
    "missing_field": 400,
    "invalid_field": 400,
    "duplicate_id": 400,  # a websocket id still in flight on that socket
    "invalid_base64": 400,
    "invalid_data_uri": 400,
    "invalid_image": 400,
    "unsupported_url": 400,
    "invalid_file_url": 400,
    "not_a_file": 400,
    "unauthorized": 401,
    "file_urls_disabled": 403,
    "forbidden_path": 403,
    "file_unreadable": 403,
    "file_not_found": 404,
    "payload_too_large": 413,
    "image_too_large": 413,
    "unsupported_media_type": 415,
    "upgrade_required": 426,  # the websocket route asked for without the upgrade
})


class ApiError(Exception):
    """A request the web layer refuses before it reaches the service; its status is the
    one :data:`API_ERRORS` gives ``code``."""

    def __init__(self, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = API_ERRORS[code]
        self.code = code
        self.message = message
        self.headers = headers or {}


@attrs.frozen
class ErrorInfo:
    status: int
    code: str
    message: str
    headers: dict[str, str] = attrs.field(factory=dict)

    def body(self) -> dict[str, object]:
        return {"success": False, "error": self.message, "code": self.code}


@attrs.frozen
class _Typed:
    """How the errors of one class (and its subclasses) are answered: the code is the
    exception's own ``code``."""

    kind: type[Exception]
    status: int
    #: Retry-After, seconds (None: not sent); Overloaded and NotReady carry their own.
    retry_after_s: float | None = None
    #: Said instead of the exception's text (device errors name host paths and drivers).
    message: str | None = None
    #: Said when the exception has no text.
    if_empty: str = "the request failed"


#: The typed errors of the other layers, most specific first: the first row whose class
#: the exception is an instance of decides.
_TYPED: Final = (
    _Typed(UnsupportedImageFormat, 415),
    _Typed(ImageTooLarge, 413),
    _Typed(TooManyPages, 413),
    _Typed(PdfEncrypted, 422),  # readable, but not processable
    _Typed(PageRenderTimeout, 422),
    _Typed(OcrInputError, 400),
    _Typed(UnsupportedLanguage, 422),
    _Typed(Overloaded, 429, 1),
    _Typed(NotReady, 503, 2),
    _Typed(ShuttingDown, 503, 5, if_empty="the service is shutting down"),
    _Typed(RequestTimeout, 504),
    _Typed(ServiceError, 503, 1),
    _Typed(DeviceFault, 503, 2,
           "the inference device failed; it is being restarted, retry shortly"),
    _Typed(InferenceError, 503, 1, "inference failed on the device; retry shortly"),
    _Typed(BackendError, 503, 2, "the inference backend is unavailable"),
)

#: Each layer's root error class. A root is never raised itself: its row only answers a
#: subclass added later with that layer's status.
_ROOTS: Final = (OcrInputError, ServiceError, BackendError)

#: Errors no request can end with: they stop the service at start-up (a backend or device
#: missing is logged when a reload after a fault meets it, while requests get
#: ``device_fault``; the configuration is read once, before the service starts).
_START_UP_ONLY: Final = (BackendUnavailable, DeviceNotFound, DeviceAccessDenied, ConfigError)

#: Codes for the werkzeug/Quart HTTP errors the framework raises itself, for the statuses
#: it can raise here (a route that does not exist, a method it does not take, a body over
#: the limit or too slow to arrive).
_HTTP_CODES: Final[Mapping[int, str]] = MappingProxyType({
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
})

_INTERNAL: Final = ErrorInfo(
    500, "internal_error", "internal error; the server log has the details"
)


def _retry_after(seconds: float) -> dict[str, str]:
    # Retry-After takes whole seconds; never advertise 0 (clients would spin).
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def _describe_typed(exc: BaseException) -> ErrorInfo | None:
    for row in _TYPED:
        if isinstance(exc, row.kind):
            seconds = exc.retry_after if isinstance(exc, Overloaded | NotReady) \
                else row.retry_after_s
            headers = _retry_after(seconds) if seconds is not None else {}
            message = row.message or str(exc) or row.if_empty
            return ErrorInfo(row.status, exc.code, message, headers)
    return None


def _describe_http(exc: HTTPException) -> ErrorInfo:
    status = exc.code or 500
    if isinstance(exc, WebsocketMismatch):
        # A plain GET of the websocket route: say how to ask for it (RFC 9110, 426).
        return describe(ApiError(
            "upgrade_required", "this route is a websocket: connect with a websocket "
            "client (Upgrade: websocket)",
            headers={"Upgrade": "websocket", "Connection": "Upgrade"},
        ))
    if status == 413:
        message = "the request body is larger than the configured limit"
    else:
        message = exc.description or exc.name
    headers = {}
    if status == 405 and getattr(exc, "valid_methods", None):
        headers["Allow"] = ", ".join(exc.valid_methods)
    # Any other status would be a framework error this service has not met: its code is
    # not in the catalogue, and the Schemathesis test would report it as undocumented.
    return ErrorInfo(status, _HTTP_CODES.get(status, f"http_{status}"), message, headers)


def describe(exc: BaseException) -> ErrorInfo:
    """The status, stable code and client-facing message for ``exc``."""
    if isinstance(exc, ApiError):
        return ErrorInfo(exc.status, exc.code, exc.message, dict(exc.headers))
    typed = _describe_typed(exc)
    if typed is not None:
        return typed
    if isinstance(exc, HTTPException):
        return _describe_http(exc)
    return _INTERNAL


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


#: The packages whose error classes are the service's (a test's own subclass is not).
_PACKAGES: Final = frozenset({"ocr", "npu", "actors", "web"})


def answered_error_classes() -> list[type[Exception]]:
    """The typed error classes a request can end with: every subclass of a layer's root
    that the service defines, but those of start-up."""
    return [cls for root in _ROOTS for cls in _subclasses(root)
            if cls.__module__.split(".")[0] in _PACKAGES
            and not issubclass(cls, _START_UP_ONLY)]


def catalogue() -> frozenset[tuple[int, str]]:
    """Every (status, code) an HTTP request can be answered with."""
    pairs = {(status, code) for code, status in API_ERRORS.items()}
    pairs |= {(status, code) for status, code in _HTTP_CODES.items()}
    pairs.add((_INTERNAL.status, _INTERNAL.code))
    for cls in answered_error_classes():
        row = next(r for r in _TYPED if issubclass(cls, r.kind))
        pairs.add((row.status, cls.code))
    return frozenset(pairs)


def codes_by_status() -> dict[int, tuple[str, ...]]:
    """:func:`catalogue` as status -> its codes, sorted."""
    out: dict[int, list[str]] = {}
    for status, code in sorted(catalogue()):
        out.setdefault(status, []).append(code)
    return {status: tuple(codes) for status, codes in out.items()}


def describe_and_log(exc: BaseException) -> ErrorInfo:
    """Like :func:`describe`, logging the traceback of anything unexpected."""
    info = describe(exc)
    if info.status >= 500 and info.code == "internal_error":
        log.error("unhandled error", exc_info=(type(exc), exc, exc.__traceback__))
    elif info.status >= 500:
        log.warning("request failed: %s: %s", info.code, exc)
    return info


def _request_body_may_be_unread() -> bool:
    if not has_request_context():
        return False
    return bool(request.content_length) or "chunked" in request.headers.get(
        "Transfer-Encoding", ""
    ).lower()


def register(app) -> None:
    """Answer every error, framework ones included, with the JSON error body."""

    async def handle(exc: BaseException):
        info = describe_and_log(exc)
        headers = dict(info.headers)
        if _request_body_may_be_unread():
            # The body may be (partly) unread. Hypercorn stops reading a connection whose
            # app stopped reading its body, so a client reusing it would hang: close it.
            headers["Connection"] = "close"
        return info.body(), info.status, headers

    app.register_error_handler(Exception, handle)
    app.register_error_handler(HTTPException, handle)
