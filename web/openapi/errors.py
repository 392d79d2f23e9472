"""Error responses, their codes derived from :func:`web.errors.codes_by_status`.

Every error body is ``{success: false, error, code}``. Each documented error response
lists, as an ``enum``, the codes that status can carry on that route: all the codes the
server has for the status, or the few a route names. A route cannot name a code the
server does not have for that status (the document fails to build), and a code added to
the server's error tables appears here by itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from web.errors import codes_by_status

from .fragment import JSON, ref

#: status -> the codes the server answers it with.
CODES: Final = codes_by_status()

#: The statuses whose error responses carry Retry-After.
_RETRY_STATUSES: Final = frozenset({429, 503})

SCHEMAS: Final[dict[str, Any]] = {
    "ErrorCode": {
        "description": "Stable machine-readable code: every code the server sends.",
        "enum": sorted({code for codes in CODES.values() for code in codes}),
    },
    "Error": {
        "type": "object",
        "required": ["success", "error", "code"],
        "properties": {
            "success": {"const": False},
            "error": {"type": "string", "description": "What went wrong, for a person."},
            "code": ref("ErrorCode"),
        },
    },
}


def error_codes(status: int, codes: Iterable[str] | None = None,
                exclude: Iterable[str] = ()) -> list[str]:
    """The codes of ``status`` (or those of ``codes``, each checked), minus ``exclude``."""
    known = CODES.get(status, ())
    chosen = list(known if codes is None else codes)
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise ValueError(f"the server never answers {status} with {', '.join(unknown)}")
    return [code for code in chosen if code not in set(exclude)]


def error_response(status: int, description: str, *, codes: Iterable[str] | None = None,
                   exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The response for ``status``: the Error body with its code one of ``codes`` (default:
    every code the server has for ``status``), and Retry-After where the server sends it."""
    schema = {"allOf": [ref("Error"), {"properties": {"code": {
        "enum": error_codes(status, codes, exclude)}}}]}
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if status in _RETRY_STATUSES:
        response["headers"] = {"Retry-After": {
            "$ref": "#/components/headers/RetryAfter", "required": True}}
    return response


UNAUTHORIZED: Final = error_response(
    401, "Missing or wrong bearer token (only when server.auth_token is set)."
)
