"""Typed service errors: what a request can end with, besides bad input (``ocr.errors``)
and device faults (``npu.errors``). The web layer maps each ``code`` to a status."""

from __future__ import annotations

import copy
from typing import Final, Literal, get_args

#: Why the service is not ready, as ``GET /health/ready`` and ``NotReady.reason`` say it:
#: the models are loading (or the service is not started yet), a SIGTERM's drain is on,
#: the service is shutting down, or the device failed and is being restarted.
NotReadyReason = Literal[
    "models_loading", "not_started", "draining", "shutting_down", "device_fault"
]
NOT_READY_REASONS: Final[tuple[str, ...]] = get_args(NotReadyReason)


class ServiceError(Exception):
    code = "service_error"


class Overloaded(ServiceError):
    """The admission limit is reached; the client should retry after ``retry_after`` s."""

    code = "overloaded"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotReady(ServiceError):
    """The models are loading, or the device is restarting after a fault."""

    code = "not_ready"

    def __init__(
        self, message: str, reason: NotReadyReason, retry_after: float = 2.0
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class ShuttingDown(ServiceError):
    code = "shutting_down"


class RequestTimeout(ServiceError):
    """The request's deadline inside the service passed before it finished."""

    code = "request_timeout"


class UnsupportedLanguage(ServiceError):
    code = "unsupported_language"

    def __init__(self, message: str, supported: tuple[str, ...]) -> None:
        super().__init__(message)
        self.supported = supported


def fresh_error(exc: BaseException) -> BaseException:
    """A copy of ``exc`` to raise in one more task.

    One device fault or failed batch is reported to every request that shared it. Raising
    the *same* exception object in several tasks splices their tracebacks together (Python
    stores the traceback on the object), so each caller gets its own copy, with the
    original as its cause. Falls back to the original when the type cannot be copied.
    """
    try:
        new = copy.copy(exc)
    except Exception:
        return exc
    if type(new) is not type(exc):  # pragma: no cover - defensive
        return exc
    new.__traceback__ = None
    new.__cause__ = exc
    return new
