"""Every failure the API can answer, mapped in one place.

Errors come from four layers: the request itself (:class:`ApiError`, raised by the web
layer's input parsing and auth), the pure pipeline (``ocr.errors``: the image is bad), the
actors (``actors.errors``: overloaded, not ready, timed out, language) and the device
(``npu.errors``). :func:`describe` turns any of them into one :class:`ErrorInfo`, which the
REST handlers render as ``{"success": false, "error", "code"}`` with a status and the
websocket renders as an ``error`` event, so the two transports can never disagree about
what an error is called.

Messages are written for the client and never carry a traceback or a host path; anything
unexpected becomes a bare ``internal_error`` and its traceback goes to the log only.
"""

from __future__ import annotations

import logging
import math

import attrs
from quart import has_request_context, request
from werkzeug.exceptions import HTTPException

from actors.errors import (
    NotReady,
    Overloaded,
    RequestTimeout,
    ServiceError,
    ShuttingDown,
    UnsupportedLanguage,
)
from npu.errors import BackendError, DeviceFault, InferenceError
from ocr.errors import (
    ImageDecodeError,
    ImageTooLarge,
    ImageTooSmall,
    OcrInputError,
    PageRenderTimeout,
    PdfEncrypted,
    TooManyPages,
    UnsupportedImageFormat,
)

log = logging.getLogger("hailo_ocr.web")


class ApiError(Exception):
    """A request the web layer refuses before it reaches the service."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
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


def _retry_after(seconds: float) -> dict[str, str]:
    # Retry-After takes whole seconds; never advertise 0 (clients would spin).
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


#: Codes for the werkzeug/Quart HTTP errors the framework raises itself.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def describe(exc: BaseException) -> ErrorInfo:
    """The status, stable code and client-facing message for ``exc``."""
    if isinstance(exc, ApiError):
        return ErrorInfo(exc.status, exc.code, exc.message, dict(exc.headers))
    # -- the image --------------------------------------------------------------------
    if isinstance(exc, UnsupportedImageFormat):
        return ErrorInfo(415, "unsupported_media_type", str(exc))
    if isinstance(exc, ImageTooLarge | TooManyPages):
        return ErrorInfo(413, exc.code, str(exc))
    if isinstance(exc, PdfEncrypted | PageRenderTimeout):  # readable, but not processable
        return ErrorInfo(422, exc.code, str(exc))
    if isinstance(exc, ImageDecodeError | ImageTooSmall):
        return ErrorInfo(400, exc.code, str(exc))
    if isinstance(exc, OcrInputError):
        return ErrorInfo(400, exc.code or "invalid_input", str(exc))
    # -- the service ------------------------------------------------------------------
    if isinstance(exc, UnsupportedLanguage):
        return ErrorInfo(422, "unsupported_language", str(exc))
    if isinstance(exc, Overloaded):
        return ErrorInfo(429, "overloaded", str(exc), _retry_after(exc.retry_after))
    if isinstance(exc, NotReady):
        return ErrorInfo(503, "not_ready", str(exc), _retry_after(exc.retry_after))
    if isinstance(exc, ShuttingDown):
        return ErrorInfo(503, "shutting_down", str(exc) or "the service is shutting down",
                         _retry_after(5))
    if isinstance(exc, RequestTimeout):
        return ErrorInfo(504, "request_timeout", str(exc))
    if isinstance(exc, ServiceError):
        return ErrorInfo(503, exc.code, str(exc), _retry_after(1))
    # -- the device -------------------------------------------------------------------
    if isinstance(exc, DeviceFault):
        return ErrorInfo(
            503, exc.code, "the inference device failed; it is being restarted, retry shortly",
            _retry_after(2),
        )
    if isinstance(exc, InferenceError):
        return ErrorInfo(503, exc.code, "inference failed on the device; retry shortly",
                         _retry_after(1))
    if isinstance(exc, BackendError):
        return ErrorInfo(503, exc.code, "the inference backend is unavailable", _retry_after(2))
    # -- the framework ----------------------------------------------------------------
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        code = _HTTP_CODES.get(status, f"http_{status}")
        if status == 413:
            message = "the request body is larger than the configured limit"
        else:
            message = exc.description or exc.name
        headers = {}
        if status == 405 and getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(exc.valid_methods)
        return ErrorInfo(status, code, message, headers)
    return ErrorInfo(500, "internal_error", "internal error; the server log has the details")


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
