"""The web page of :mod:`web.page` and its static files."""

from __future__ import annotations

from typing import Final

from .errors import error_response
from .fragment import Fragment

_HTML: Final = {
    "description": "HTML page.",
    "content": {"text/html": {"schema": {"type": "string"}}},
}

FRAGMENT: Final = Fragment(paths={
    "/": {
        "get": {
            "summary": "The web page: pick an image, watch it being read (no token needed)",
            "operationId": "page",
            "security": [],
            "responses": {"200": _HTML},
        },
    },
    "/index.html": {
        "get": {
            "summary": "The web page (same as /)",
            "operationId": "page_index",
            "security": [],
            "responses": {"200": _HTML},
        },
    },
    "/static/{filename}": {
        "get": {
            "summary": "The web page's script and style sheet (no token needed)",
            "operationId": "static",
            "security": [],
            "parameters": [
                {"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "The file."},
                "404": error_response(404, "No such file.", codes=["not_found"]),
            },
        },
    },
})
