"""Typed service errors: what a request can end with, besides bad input (``ocr.errors``)
and device faults (``npu.errors``). The web layer maps each ``code`` to a status."""

from __future__ import annotations


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

    def __init__(self, message: str, reason: str, retry_after: float = 2.0) -> None:
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
