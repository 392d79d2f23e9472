"""The REST routes of :mod:`web.routes`: health, readiness, models and extraction."""

from __future__ import annotations

from typing import Any, Final

from actors.errors import NOT_READY_REASONS
from ocr.decode import ACCEPTED_MEDIA_TYPES
from ocr.document import PDF_MEDIA_TYPES, PDF_TEXT_MODES

from .errors import UNAUTHORIZED, error_response
from .fragment import JSON, Fragment, ok, ref
from .results import IMAGE_RULES, PAGE_LIST

#: Codes only the websocket answers with.
_WEBSOCKET_ONLY: Final = ("invalid_message", "duplicate_id", "upgrade_required")

_SCHEMAS: Final[dict[str, Any]] = {
    "Health": {
        "type": "object",
        "required": [
            "status",
            "models_loaded",
            "languages_supported",
            "memory_usage_mb",
            "uptime_seconds",
            "hailo_device",
            "backend",
        ],
        "properties": {
            "status": {
                "enum": ["ok", "starting", "degraded"],
                "description": "ok whenever the service can take OCR requests.",
            },
            "models_loaded": {"type": "boolean"},
            "languages_supported": {"type": "array", "items": {"type": "string"}},
            "memory_usage_mb": {"type": "integer"},
            "uptime_seconds": {"type": "integer"},
            "hailo_device": {"type": ["string", "null"]},
            "backend": {"enum": ["onnx", "hailo", "device-manager", "auto"]},
            "backend_reason": {
                "type": ["string", "null"],
                "description": "Why this backend runs the models (backend auto: the "
                "device manager, the NPU or the CPU); null while the models load.",
            },
            "model_loads": {
                "type": "integer",
                "description": "Times the models were loaded: 1, plus one per reload after "
                "a device fault.",
            },
            "requests_in_flight": {"type": "integer"},
            "devices": {
                "type": "array",
                "description": "Each device that runs a model (models.placement), its state "
                "('ready', or why not: models_loading, device_fault while it restarts, "
                "stopped), the model ids it serves and its restarts after faults.",
                "items": {
                    "type": "object",
                    "required": ["device", "state", "models", "restarts"],
                    "properties": {
                        "device": {"enum": ["npu", "cpu"]},
                        "state": {"type": "string",
                                  "examples": ["ready", "models_loading", "device_fault"]},
                        "models": {"type": "array", "items": {"type": "string"}},
                        "restarts": {"type": "integer"},
                    },
                },
            },
            "debug": {
                "type": "object",
                "description": "Live thread and Trio task counts (flat under steady load).",
                "properties": {"threads": {"type": "integer"}, "tasks": {"type": "integer"}},
            },
            "limits": {
                "type": "object",
                "description": "Admission limits (server.max_in_flight, "
                "server.ws_max_in_flight, server.max_body_bytes), for clients that size "
                "their work to the server.",
                "properties": {
                    "max_in_flight": {"type": "integer"},
                    "ws_max_in_flight": {"type": "integer"},
                    "max_body_bytes": {"type": "integer"},
                },
            },
        },
    },
    "Ready": {
        "type": "object",
        "required": ["ready"],
        "properties": {
            "ready": {"type": "boolean"},
            "reason": {"enum": list(NOT_READY_REASONS)},
        },
    },
    "Model": {
        "type": "object",
        "required": ["id", "name", "type", "status"],
        "properties": {
            "id": {"type": "string", "examples": ["detection", "recognition_en"]},
            "name": {"type": "string", "description": "Model file name."},
            "type": {"enum": ["detection", "recognition", "classifier"]},
            "language": {"type": "string"},
            "status": {
                "enum": ["loaded", "unavailable"],
                "description": "unavailable while its device restarts after a fault",
            },
            "device": {"enum": ["npu", "cpu"], "description": "Where it runs (models.placement)."},
            "file": {"type": ["string", "null"], "description": "The file it was loaded from."},
            "batch_size": {"type": "integer"},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": ref("Model")},
        },
    },
    "ExtractRequest": {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": ref("ImageString"),
            "languages": ref("Languages"),
            "pages": ref("Pages"),
            "dpi": ref("Dpi"),
            "pdf_text": ref("PdfText"),
        },
    },
    "MultipartRequest": {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {
                "type": "string",
                "format": "binary",
                "description": "The image or PDF file (or a data URI / base64 text field).",
            },
            "languages": {"type": "string", "description": "e.g. en, or en,zh"},
            "pages": {"type": "string", "pattern": f"^( *{PAGE_LIST})?$",
                      "description": "e.g. 1-3,7 (documents)"},
            "dpi": {"type": "string", "description": "e.g. 200 (PDF)"},
            "pdf_text": {"enum": list(PDF_TEXT_MODES)},
        },
    },
    "ExtractResponse": {
        "allOf": [
            ref("ExtractResult"),
            {"type": "object", "required": ["success"], "properties": {"success": {"const": True}}},
        ],
    },
}

#: A raw image body: each accepted image type, and octet-stream (the bytes are sniffed).
_RAW_IMAGE: Final = {"schema": {"type": "string", "format": "binary"}}
_RAW_TYPES: Final = sorted(
    ACCEPTED_MEDIA_TYPES | PDF_MEDIA_TYPES | {"application/octet-stream"}
)


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An optional query parameter."""
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


_EXTRACT: Final = {
    "summary": "Read the text in one image, or in a PDF or multi-page TIFF page by page",
    "operationId": "extract",
    "parameters": [
        _query("languages", "Only for a raw image body: language code(s), e.g. en or "
               "en,zh.", {"type": "string"}),
        _query("pages", "Only for a raw body: pages of a PDF or TIFF, e.g. 1-3,7.",
               {"type": "string", "pattern": f"^( *{PAGE_LIST})?$"}),
        _query("dpi", "Only for a raw body: PDF rendering resolution.", ref("Dpi")),
        _query("pdf_text", "Only for a raw body: auto, ocr or text.", ref("PdfText")),
    ],
    "requestBody": {
        "required": True,
        "description": "A body that is a JSON object is read as JSON whatever its "
        "Content-Type (curl -d sends application/x-www-form-urlencoded). The image: "
        + IMAGE_RULES,
        "content": {
            JSON: {"schema": ref("ExtractRequest")},
            "multipart/form-data": {"schema": ref("MultipartRequest")},
            **{media_type: _RAW_IMAGE for media_type in _RAW_TYPES},
        },
    },
    "responses": {
        "200": ok("ExtractResponse", "The text, its regions and timings."),
        "400": error_response(
            400,
            "Bad JSON, bad base64, not an image, an image under the minimum size, missing "
            "or invalid field (pages, dpi, pdf_text included), bad file:// URL, a file:// "
            "path that is not a file, a damaged PDF (invalid_pdf), a page the document "
            "does not have (page_out_of_range).",
            exclude=_WEBSOCKET_ONLY,
        ),
        "401": UNAUTHORIZED,
        "403": error_response(
            403,
            "file:// disabled (file_urls_disabled), outside server.file_root "
            "(forbidden_path), or not readable by the server (file_unreadable).",
        ),
        "404": error_response(
            404, "file:// names no file below server.file_root.", codes=["file_not_found"]
        ),
        "408": error_response(
            408,
            "The body sent nothing for server.read_timeout_s (request_timeout); the "
            "connection is closed.",
        ),
        "413": error_response(
            413,
            "Body over server.max_body_bytes (payload_too_large), image over "
            "processing.max_image_bytes bytes or processing.max_image_pixels "
            "pixels (image_too_large; also a TIFF page or an image in a PDF page, "
            "when no page could be read), more pages than processing.max_pages "
            "(too_many_pages). An image over processing.max_image_size pixels a "
            "side is not refused: it is read scaled down.",
        ),
        "415": error_response(
            415,
            "Unsupported media type: a GIF/SVG, a wrong Content-Type, "
            "or a data URI that is not an image or PDF.",
        ),
        "422": error_response(
            422,
            "Unsupported language, only with ocr.unknown_language: reject (else "
            "the default language is used with a warning); the message names the "
            "supported ones. An encrypted PDF (pdf_encrypted: it needs a password; "
            "one protected by an owner password only is read), or a page too slow "
            "to render (page_render_timeout) when it was the only page.",
        ),
        "429": error_response(429, "Too many requests in flight."),
        "500": error_response(500, "A bug; details are in the server log only."),
        "503": error_response(503, "Not ready, shutting down, or the device failed."),
        "504": error_response(504, "The request took longer than server.request_timeout_s."),
    },
}

FRAGMENT: Final = Fragment(
    schemas=_SCHEMAS,
    paths={
        "/health": {
            "get": {
                "summary": "Liveness and service facts (never needs a token)",
                "operationId": "health",
                "security": [],
                "responses": {"200": ok("Health", "The process is alive.")},
            },
        },
        "/health/ready": {
            "get": {
                "summary": "Readiness: can the service take OCR requests now? "
                "(never needs a token)",
                "operationId": "ready",
                "security": [],
                "responses": {
                    "200": ok("Ready", "Ready."),
                    "503": {
                        "description": (
                            "Not ready (models loading, device restarting after a fault, "
                            "draining before a shutdown, shutting down)."
                        ),
                        "headers": {"Retry-After": {
                            "$ref": "#/components/headers/RetryAfter", "required": True}},
                        "content": {JSON: {"schema": ref("Ready")}},
                    },
                },
            },
        },
        "/models": {
            "get": {
                "summary": "The loaded models",
                "operationId": "models",
                "responses": {
                    "200": ok("ModelList", "Models and their status."),
                    "401": UNAUTHORIZED,
                    "503": error_response(
                        503, "The service has not started yet.", codes=["not_ready"]
                    ),
                },
            },
        },
        "/v1/ocr/extract": {"post": _EXTRACT},
    },
)
