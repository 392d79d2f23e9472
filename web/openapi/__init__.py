"""The OpenAPI 3.1 document served at ``GET /openapi.json``.

Written by hand as plain dicts (no generator dependency) so it says exactly what the
routes do, including every error body, and so clients can generate code and fuzzers
(Schemathesis, in ``tests/test_openapi.py``) can hold the server to it. What is not
written by hand is derived: the error codes each status carries come from the error
tables of :mod:`web.errors`, the accepted image types from :mod:`ocr.decode`, the
readiness reasons from :mod:`actors.errors`.

Each route module describes its own routes: its ``register(app)`` calls
:func:`add_paths` with a :class:`Fragment` from this package (one module per route
group), so a route and its description are added together, and a test checks that every
route is described and every description is a route.
"""

from __future__ import annotations

import copy
from typing import Any, Final, Protocol, cast

from quart import Blueprint, current_app

from .errors import SCHEMAS as ERROR_SCHEMAS
from .errors import UNAUTHORIZED
from .fragment import JSON, Fragment
from .results import SCHEMAS as RESULT_SCHEMAS

__all__ = ["Fragment", "add_paths", "document", "register"]

bp = Blueprint("openapi", __name__)


#: The document without its paths and without the schemas only they use.
_BASE: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "hailo-ocr",
        "version": "0.1.0",
        "description": "OCR for edge NPUs: text detection and recognition on a Hailo NPU "
        "or the CPU. Every error is {success: false, error, code}; each response lists "
        "the codes it can carry. A method a path does not take is answered 405 "
        "method_not_allowed, with Allow.",
    },
    "servers": [{"url": "http://127.0.0.1:11436"}],
    "security": [{"bearer": []}, {}],
    "paths": {},
    "components": {
        "schemas": {**ERROR_SCHEMAS, **RESULT_SCHEMAS},
        "headers": {
            "RetryAfter": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer", "minimum": 1},
            },
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "Required only when server.auth_token is set.",
            },
        },
    },
}

#: This module's own route.
FRAGMENT: Final = Fragment(paths={
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1 document.",
                    "content": {JSON: {"schema": {"type": "object"}}},
                },
                "401": UNAUTHORIZED,
            },
        },
    },
})


class DescribedApp(Protocol):
    """An app that keeps the fragments its route modules describe themselves with."""

    openapi_fragments: list[Fragment]


def add_paths(app: DescribedApp, fragment: Fragment) -> None:
    """Describe routes a module registers on ``app`` (call it from its ``register``)."""
    app.openapi_fragments.append(fragment)


def document(app: DescribedApp) -> dict[str, Any]:
    """The document for ``app``: the base plus every fragment its route modules added."""
    doc = copy.deepcopy(_BASE)
    schemas = doc["components"]["schemas"]
    for fragment in app.openapi_fragments:
        for path, operations in fragment.paths.items():
            if path in doc["paths"]:
                raise ValueError(f"{path} is described twice")
            doc["paths"][path] = copy.deepcopy(operations)
        for name, schema in fragment.schemas.items():
            if schemas.setdefault(name, copy.deepcopy(schema)) != schema:
                raise ValueError(f"two different schemas are named {name}")
    return doc


@bp.get("/openapi.json")
async def openapi_json() -> dict[str, Any]:
    return document(cast(DescribedApp, current_app))


def register(app: Any) -> None:
    app.register_blueprint(bp)
    add_paths(app, FRAGMENT)
