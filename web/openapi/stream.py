"""The streaming websocket of :mod:`web.ws`, ``/v1/ocr/stream``.

OpenAPI describes HTTP exchanges, so the websocket appears as the GET that opens it; the
frames it carries are the StreamRequest and StreamEvent schemas.
"""

from __future__ import annotations

from typing import Any, Final

from .errors import CODES, UNAUTHORIZED, error_response
from .fragment import JSON, Fragment, ref
from .results import BBOX

_SCHEMAS: Final[dict[str, Any]] = {
    "StreamRequest": {
        "type": "object",
        "description": "One client message on /v1/ocr/stream (a JSON text frame).",
        "required": ["id", "image"],
        "properties": {
            "id": {
                "type": ["string", "integer"],
                "description": "Chosen by the client; echoed on every event.",
            },
            "image": ref("ImageString"),
            "languages": ref("Languages"),
            "pages": ref("Pages"),
            "dpi": ref("Dpi"),
            "pdf_text": ref("PdfText"),
        },
    },
    "StreamEvent": {
        "description": "Server events on /v1/ocr/stream, in order per id: accepted, detected, "
        "line (one per recognised region, as it is recognised), then done or error. For a "
        "document: accepted, then for each page a page event as it starts, its detected "
        "and line events (carrying page) and a page_done event (that page's entry of "
        "pages), several pages at once, interleaved; then done or error.",
        "oneOf": [
            {
                "type": "object",
                "required": ["type", "id"],
                "properties": {"type": {"const": "accepted"}, "id": {}},
            },
            {
                "type": "object",
                "required": ["type", "id", "page", "pages"],
                "properties": {
                    "type": {"const": "page"},
                    "id": {},
                    "page": {"type": "integer", "description": "The page starting."},
                    "pages": {"type": "integer", "description": "Pages to be read in all."},
                },
            },
            {
                "allOf": [
                    ref("Page"),
                    {
                        "type": "object",
                        "required": ["type", "id"],
                        "properties": {"type": {"const": "page_done"}, "id": {}},
                    },
                ]
            },
            {
                "type": "object",
                "required": ["type", "id", "regions"],
                "properties": {
                    "type": {"const": "detected"},
                    "id": {},
                    "page": {"type": "integer", "description": "A document's page."},
                    "regions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["index", "bbox"],
                            "properties": {"index": {"type": "integer"}, "bbox": BBOX},
                        },
                    },
                },
            },
            {
                "type": "object",
                "required": ["type", "id", "index", "text", "confidence", "bbox"],
                "properties": {
                    "type": {"const": "line"},
                    "id": {},
                    "page": {"type": "integer", "description": "A document's page (index "
                             "then counts within the page)."},
                    "index": {"type": "integer"},
                    "text": {"type": "string"},
                    "confidence": {"type": "number"},
                    "bbox": BBOX,
                },
            },
            {
                "allOf": [
                    ref("ExtractResult"),
                    {
                        "type": "object",
                        "required": ["type", "id"],
                        "properties": {"type": {"const": "done"}, "id": {}},
                    },
                ]
            },
            {
                "type": "object",
                "required": ["type", "id", "error", "code", "status"],
                "properties": {
                    "type": {"const": "error"},
                    "id": {"description": "null when the message's id was unreadable"},
                    "error": {"type": "string"},
                    "code": ref("ErrorCode"),
                    "status": {
                        "enum": sorted(CODES),
                        "description": "The HTTP status REST would answer.",
                    },
                    "retry_after": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "Present when REST would send Retry-After (429, "
                        "503): seconds to wait before sending the image again.",
                    },
                },
            },
        ],
    },
}

FRAGMENT: Final = Fragment(
    schemas=_SCHEMAS,
    paths={
        "/v1/ocr/stream": {
            "get": {
                "summary": "Websocket: stream OCR progress for many images on one socket",
                "operationId": "stream",
                "description": (
                    "Upgrade to a websocket. Send one StreamRequest JSON text frame per "
                    "image; up to server.ws_max_in_flight images may be in flight. The "
                    "server answers with StreamEvent frames for each id: accepted, "
                    "detected, line (per region, as recognised), then done or error. A bad "
                    "message is answered with an error event (id null if unreadable) and "
                    "the socket stays open. Closing the socket cancels its work. A plain "
                    "HTTP GET (no websocket upgrade) is answered 426."
                ),
                "responses": {
                    "101": {
                        "description": "Switching protocols; then StreamEvent frames.",
                        "content": {JSON: {"schema": ref("StreamEvent")}},
                    },
                    "401": UNAUTHORIZED,
                    "426": error_response(
                        426, "Not a websocket upgrade: connect with a websocket client."
                    ),
                },
            },
        },
    },
)
