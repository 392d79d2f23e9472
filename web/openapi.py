"""The OpenAPI 3.1 document served at ``GET /openapi.json``.

Written by hand as a plain dict (no generator dependency) so it says exactly what the
routes do, including every error body, and so clients can generate code and fuzzers can
derive requests from it. A test checks that every registered route appears here; a
module that adds routes (``register(app)``) should add its paths with :func:`add_paths`.
"""

from __future__ import annotations

import copy
from typing import Any

from quart import Blueprint, current_app

bp = Blueprint("openapi", __name__)

_ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _error(description: str, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ERROR_REF}},
    }
    if retry_after:
        response["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
    return response


_UNAUTHORIZED = _error("Missing or wrong bearer token (only when server.auth_token is set).")

_BBOX = {
    "type": "array",
    "minItems": 4,
    "maxItems": 4,
    "description": "Quadrilateral in whole original-image pixels, clockwise from top-left.",
    "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer"}},
}

_WARNING = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {
            "type": "string",
            "examples": ["language_fallback", "page_failed"],
            "description": "language_fallback: no language asked for is loaded; the image "
            "was read in the default language (ocr.unknown_language: fallback). "
            "page_failed: a page of a document could not be read (its entry in pages "
            "says why); the other pages were.",
        },
        "message": {"type": "string"},
    },
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["success", "error", "code"],
        "properties": {
            "success": {"const": False},
            "error": {"type": "string", "description": "What went wrong, for a person."},
            "code": {
                "type": "string",
                "pattern": "^[a-z0-9_]+$",
                "description": "Stable machine-readable code.",
                "examples": [
                    "invalid_json",
                    "missing_field",
                    "invalid_field",
                    "invalid_base64",
                    "invalid_data_uri",
                    "invalid_image",
                    "image_too_small",
                    "invalid_pdf",
                    "pdf_encrypted",
                    "page_out_of_range",
                    "too_many_pages",
                    "page_render_timeout",
                    "unsupported_url",
                    "invalid_file_url",
                    "not_a_file",
                    "file_urls_disabled",
                    "forbidden_path",
                    "file_not_found",
                    "file_unreadable",
                    "unauthorized",
                    "not_found",
                    "method_not_allowed",
                    "payload_too_large",
                    "image_too_large",
                    "unsupported_media_type",
                    "unsupported_language",
                    "overloaded",
                    "not_ready",
                    "shutting_down",
                    "device_fault",
                    "device_timeout",
                    "device_lost",
                    "device_busy",
                    "inference_failed",
                    "request_timeout",
                    "internal_error",
                ],
            },
        },
    },
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
            "reason": {
                "type": "string",
                "examples": [
                    "models_loading", "not_started", "draining", "shutting_down", "device_fault",
                ],
            },
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
            "batch_size": {"type": "integer"},
            "device": {"enum": ["npu", "cpu"], "description": "Where it runs (models.placement)."},
            "file": {"type": ["string", "null"], "description": "The file it was loaded from."},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
        },
    },
    "Languages": {
        "description": "Recognition language(s): the first one loaded is used; aliases "
        "such as ch_sim, zh-CN, zh-TW, en-US or english are read as zh / en. None loaded: "
        "the default language with a language_fallback warning (or 422 with "
        "ocr.unknown_language: reject). Default: ocr.default_language.",
        "oneOf": [
            {"type": "array", "items": {"type": "string"}},
            {"type": "string", "description": "One code or a comma-separated list."},
        ],
    },
    "ImageString": {
        "type": "string",
        "description": "A data URI (data:image/png;base64,...; the media type is not "
        "trusted, ;base64 may be missing, whitespace and line breaks are skipped), plain "
        "base64, or file:///path below server.file_root (disabled by default). "
        "JPEG, PNG, BMP, WebP or TIFF, or a document: a PDF or a multi-page TIFF, read "
        "page by page (see pages, dpi, pdf_text).",
    },
    "Pages": {
        "description": "Pages of a PDF or multi-page TIFF to read: \"1-3,7\", \"5-\" (to "
        "the end), a page number, or a list of those; pages count from 1, a range "
        "running past the end stops there. Default: every page, up to "
        "processing.max_pages (413 too_many_pages beyond). Ignored for an image.",
        "oneOf": [
            {"type": "string", "examples": ["1-3,7"]},
            {"type": "integer", "minimum": 1},
            {"type": "array", "items": {"type": ["string", "integer"]}},
        ],
    },
    "Dpi": {
        "type": "number",
        "minimum": 36,
        "maximum": 600,
        "description": "Resolution PDF pages are rendered at (default processing.pdf_dpi). "
        "A page larger than processing.max_page_pixels at it is rendered at the "
        "resolution that fits (its pages entry's dpi says which). Ignored for images.",
    },
    "PdfText": {
        "enum": ["auto", "ocr", "text"],
        "description": "A PDF page's own text layer: auto (default) reads a page from it "
        "when it has a usable one (no OCR; source text_layer) and renders and reads the "
        "page otherwise (a scan: mostly an image with little text over it, or text "
        "without Unicode meaning); ocr always renders and reads; text only uses the text "
        "layer (a page without one is empty).",
    },
    "ExtractRequest": {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {"$ref": "#/components/schemas/ImageString"},
            "languages": {"$ref": "#/components/schemas/Languages"},
            "pages": {"$ref": "#/components/schemas/Pages"},
            "dpi": {"$ref": "#/components/schemas/Dpi"},
            "pdf_text": {"$ref": "#/components/schemas/PdfText"},
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
            "pages": {"type": "string", "description": "e.g. 1-3,7 (documents)"},
            "dpi": {"type": "string", "description": "e.g. 200 (PDF)"},
            "pdf_text": {"enum": ["auto", "ocr", "text"]},
        },
    },
    "Region": {
        "type": "object",
        "required": ["text", "confidence", "bbox", "type"],
        "properties": {
            "text": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "bbox": _BBOX,
            "type": {"const": "text"},
            "page": {
                "type": "integer",
                "description": "A document's region: the page it is on (its bbox is in "
                "that page's pixels, pages[].image_size). Absent for an image.",
            },
        },
    },
    "Page": {
        "description": "One page of a document: read (success true) or not (success "
        "false, with the error and code of that page alone).",
        "oneOf": [
            {
                "type": "object",
                "required": ["page", "success", "text", "lines", "regions", "image_size",
                             "source", "performance"],
                "properties": {
                    "page": {"type": "integer", "minimum": 1},
                    "success": {"const": True},
                    "text": {"type": "string"},
                    "lines": {"type": "array", "items": {"type": "string"}},
                    "regions": {"type": "array",
                                "items": {"$ref": "#/components/schemas/Region"}},
                    "statistics": {"type": "object"},
                    "image_size": {
                        "type": "object",
                        "description": "The page as read: rendered at dpi (PDF), or the "
                        "TIFF frame's own pixels.",
                        "properties": {"width": {"type": "integer"},
                                       "height": {"type": "integer"}},
                    },
                    "source": {
                        "enum": ["ocr", "text_layer"],
                        "description": "ocr: rendered (or decoded) and read; text_layer: "
                        "the PDF's own text and positions, no OCR (confidence 1).",
                    },
                    "dpi": {"type": ["number", "null"],
                            "description": "The PDF page's rendering resolution; null for "
                            "a TIFF frame."},
                    "performance": {"$ref": "#/components/schemas/Performance"},
                },
            },
            {
                "type": "object",
                "required": ["page", "success", "error", "code"],
                "properties": {
                    "page": {"type": "integer", "minimum": 1},
                    "success": {"const": False},
                    "error": {"type": "string"},
                    "code": {"type": "string", "examples": [
                        "invalid_pdf", "invalid_image", "image_too_small", "image_too_large",
                        "page_render_timeout"]},
                },
            },
        ],
    },
    "Performance": {
        "type": "object",
        "description": "Measured inside the service, milliseconds.",
        "required": ["detection_time_ms", "recognition_time_ms", "total_time_ms"],
        "properties": {
            "decode_time_ms": {"type": "integer"},
            "detection_time_ms": {"type": "integer"},
            "recognition_time_ms": {"type": "integer"},
            "total_time_ms": {"type": "integer"},
        },
    },
    "HailoInfo": {
        "type": "object",
        "required": ["device", "detection_model", "recognition_model"],
        "properties": {
            "device": {"type": ["string", "null"], "description": "null on the CPU backend"},
            "backend": {"enum": ["onnx", "hailo", "device-manager"]},
            "detection_model": {"type": ["string", "null"]},
            "recognition_model": {"type": ["string", "null"]},
        },
    },
    "ExtractResult": {
        "type": "object",
        "required": [
            "text",
            "lines",
            "regions",
            "languages_detected",
            "language",
            "warnings",
            "statistics",
            "performance",
            "hailo_info",
        ],
        "properties": {
            "text": {
                "type": "string",
                "description": "Every region's text in reading order, joined by single "
                "spaces (as the original service). A document: its first page read.",
            },
            "lines": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The text line by line, in reading order (a document: "
                "its first page read).",
            },
            "regions": {"type": "array", "items": {"$ref": "#/components/schemas/Region"}},
            "languages_detected": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string"},
                "description": "The language used first, then other scripts found.",
            },
            "language": {"type": "string", "description": "The recognition model's language."},
            "warnings": {"type": "array", "items": _WARNING},
            "statistics": {
                "type": "object",
                "required": ["total_regions", "average_confidence"],
                "properties": {
                    "total_regions": {"type": "integer"},
                    "average_confidence": {"type": "number"},
                },
            },
            "performance": {"$ref": "#/components/schemas/Performance"},
            "image_size": {
                "type": "object",
                "description": "The image's size; for a document, the first page read.",
                "properties": {"width": {"type": "integer"}, "height": {"type": "integer"}},
            },
            "hailo_info": {"$ref": "#/components/schemas/HailoInfo"},
            "pages": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Page"},
                "description": "Only for a document (PDF, multi-page TIFF): one entry per "
                "page asked for, in order. text, lines, regions, statistics and "
                "image_size above are then the first page read (valid as for one image); "
                "languages_detected, warnings and performance (stage times summed over "
                "the pages, total_time_ms the whole request) cover the whole document.",
            },
        },
    },
    "ExtractResponse": {
        "allOf": [
            {"$ref": "#/components/schemas/ExtractResult"},
            {"type": "object", "required": ["success"], "properties": {"success": {"const": True}}},
        ],
    },
    "StreamRequest": {
        "type": "object",
        "description": "One client message on /v1/ocr/stream (a JSON text frame).",
        "required": ["id", "image"],
        "properties": {
            "id": {
                "type": ["string", "integer"],
                "description": "Chosen by the client; echoed on every event.",
            },
            "image": {"$ref": "#/components/schemas/ImageString"},
            "languages": {"$ref": "#/components/schemas/Languages"},
            "pages": {"$ref": "#/components/schemas/Pages"},
            "dpi": {"$ref": "#/components/schemas/Dpi"},
            "pdf_text": {"$ref": "#/components/schemas/PdfText"},
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
                    {"$ref": "#/components/schemas/Page"},
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
                            "properties": {"index": {"type": "integer"}, "bbox": _BBOX},
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
                    "bbox": _BBOX,
                },
            },
            {
                "allOf": [
                    {"$ref": "#/components/schemas/ExtractResult"},
                    {
                        "type": "object",
                        "required": ["type", "id"],
                        "properties": {"type": {"const": "done"}, "id": {}},
                    },
                ]
            },
            {
                "type": "object",
                "required": ["type", "id", "error", "code"],
                "properties": {
                    "type": {"const": "error"},
                    "id": {"description": "null when the message's id was unreadable"},
                    "error": {"type": "string"},
                    "code": {"type": "string"},
                    "status": {
                        "type": "integer",
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

_JSON = "application/json"


def _ok(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An optional query parameter."""
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


_PATHS: dict[str, Any] = {
    "/health": {
        "get": {
            "summary": "Liveness and service facts (never needs a token)",
            "operationId": "health",
            "security": [],
            "responses": {"200": _ok("Health", "The process is alive.")},
        },
    },
    "/health/ready": {
        "get": {
            "summary": "Readiness: can the service take OCR requests now? (never needs a token)",
            "operationId": "ready",
            "security": [],
            "responses": {
                "200": _ok("Ready", "Ready."),
                "503": {
                    "description": (
                        "Not ready (models loading, device restarting, draining before a "
                        "shutdown, shutting down)."
                    ),
                    "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
                    "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Ready"}}},
                },
            },
        },
    },
    "/models": {
        "get": {
            "summary": "The loaded models",
            "operationId": "models",
            "responses": {
                "200": _ok("ModelList", "Models and their status."),
                "401": _UNAUTHORIZED,
                "503": _error("The service has not started yet.", retry_after=True),
            },
        },
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1 document.",
                    "content": {_JSON: {"schema": {"type": "object"}}},
                },
                "401": _UNAUTHORIZED,
            },
        },
    },
    "/": {
        "get": {
            "summary": "The web page: pick an image, watch it being read (no token needed)",
            "operationId": "page",
            "security": [],
            "responses": {
                "200": {
                    "description": "HTML page.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        },
    },
    "/index.html": {
        "get": {
            "summary": "The web page (same as /)",
            "operationId": "page_index",
            "security": [],
            "responses": {
                "200": {
                    "description": "HTML page.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
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
            "responses": {"200": {"description": "The file."}, "404": _error("No such file.")},
        },
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics (text exposition format)",
            "operationId": "metrics",
            "responses": {
                "200": {
                    "description": "Metrics.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": _UNAUTHORIZED,
            },
        },
    },
    "/cache/stats": {
        "get": {
            "summary": "Result cache statistics",
            "operationId": "cache_stats",
            "responses": {
                "200": {
                    "description": "Hits, misses, entries and size.",
                    "content": {_JSON: {"schema": {
                        "type": "object",
                        "required": ["enabled", "entries", "items_cached"],
                        "properties": {
                            "enabled": {"type": "boolean"},
                            "entries": {"type": "integer"},
                            "items_cached": {
                                "type": "integer",
                                "description": "Same as entries (the original's name).",
                            },
                            "bytes": {"type": "integer"},
                            "max_entries": {"type": "integer"},
                            "max_bytes": {"type": "integer"},
                            "ttl_s": {"type": "number"},
                            "hits": {"type": "integer"},
                            "misses": {"type": "integer"},
                            "evictions": {"type": "integer"},
                            "expirations": {"type": "integer"},
                        },
                    }}},
                },
                "401": _UNAUTHORIZED,
            },
        },
    },
    "/v1/ocr/extract": {
        "post": {
            "summary": "Read the text in one image, or in a PDF or multi-page TIFF page by page",
            "operationId": "extract",
            "parameters": [
                _query("languages", "Only for a raw image body: language code(s), e.g. en or "
                       "en,zh.", {"type": "string"}),
                _query("pages", "Only for a raw body: pages of a PDF or TIFF, e.g. 1-3,7.",
                       {"type": "string"}),
                _query("dpi", "Only for a raw body: PDF rendering resolution.",
                       {"$ref": "#/components/schemas/Dpi"}),
                _query("pdf_text", "Only for a raw body: auto, ocr or text.",
                       {"$ref": "#/components/schemas/PdfText"}),
            ],
            "requestBody": {
                "required": True,
                "description": "A body that is a JSON object is read as JSON whatever its "
                "Content-Type (curl -d sends application/x-www-form-urlencoded).",
                "content": {
                    _JSON: {"schema": {"$ref": "#/components/schemas/ExtractRequest"}},
                    "multipart/form-data": {
                        "schema": {"$ref": "#/components/schemas/MultipartRequest"},
                    },
                    "image/*": {
                        "schema": {"type": "string", "format": "binary"},
                        "description": "A raw image body (languages in the query).",
                    },
                    "application/pdf": {
                        "schema": {"type": "string", "format": "binary"},
                        "description": "A raw PDF body (languages, pages, dpi, pdf_text in "
                        "the query).",
                    },
                },
            },
            "responses": {
                "200": _ok("ExtractResponse", "The text, its regions and timings."),
                "400": _error(
                    "Bad JSON, bad base64, not an image, missing or invalid field (pages, "
                    "dpi, pdf_text included), bad file:// URL, a file:// path that is not a "
                    "file, a damaged PDF (invalid_pdf), a page the document does not have "
                    "(page_out_of_range)."
                ),
                "401": _UNAUTHORIZED,
                "403": _error(
                    "file:// disabled (file_urls_disabled) or outside "
                    "server.file_root (forbidden_path)."
                ),
                "404": _error("file:// names no file below server.file_root."),
                "408": _error(
                    "The body sent nothing for server.read_timeout_s (request_timeout); the "
                    "connection is closed."
                ),
                "413": _error(
                    "Body over server.max_body_bytes (payload_too_large), image over "
                    "processing.max_image_bytes bytes or processing.max_image_pixels "
                    "pixels (image_too_large; also a TIFF page or an image in a PDF page, "
                    "when no page could be read), more pages than processing.max_pages "
                    "(too_many_pages). An image over processing.max_image_size pixels a "
                    "side is not refused: it is read scaled down."
                ),
                "415": _error(
                    "Unsupported media type: a GIF/SVG, a wrong Content-Type, "
                    "or a data URI that is not an image or PDF."
                ),
                "422": _error(
                    "Unsupported language, only with ocr.unknown_language: reject (else "
                    "the default language is used with a warning); the message names the "
                    "supported ones. An encrypted PDF (pdf_encrypted: it needs a password; "
                    "one protected by an owner password only is read), or a page too slow "
                    "to render (page_render_timeout) when it was the only page."
                ),
                "429": _error("Too many requests in flight.", retry_after=True),
                "500": _error("A bug; details are in the server log only."),
                "503": _error("Not ready, shutting down, or the device failed.", retry_after=True),
                "504": _error("The request took longer than server.request_timeout_s."),
            },
        },
    },
    "/v1/ocr/stream": {
        "get": {
            "summary": "Websocket: stream OCR progress for many images on one socket",
            "operationId": "stream",
            "description": (
                "Upgrade to a websocket. Send one StreamRequest JSON text frame per image; "
                "up to server.ws_max_in_flight images may be in flight. The server answers "
                "with StreamEvent frames for each id: accepted, detected, line (per region, "
                "as recognised), then done or error. A bad message is answered with an "
                "error event (id null if unreadable) and the socket stays open. Closing the "
                "socket cancels its work."
            ),
            "responses": {
                "101": {
                    "description": "Switching protocols; then StreamEvent frames.",
                    "content": {_JSON: {"schema": {"$ref": "#/components/schemas/StreamEvent"}}},
                },
                "401": _UNAUTHORIZED,
            },
        },
    },
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "hailo-ocr",
        "version": "0.1.0",
        "description": "OCR for edge NPUs: text detection and recognition on a Hailo NPU "
        "or the CPU. Every error is {success: false, error, code}.",
    },
    "servers": [{"url": "http://127.0.0.1:11436"}],
    "security": [{"bearer": []}, {}],
    "paths": _PATHS,
    "components": {
        "schemas": _SCHEMAS,
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


def document(app: Any) -> dict[str, Any]:
    """The document for ``app``: the base spec plus any paths other modules added."""
    doc = copy.deepcopy(SPEC)
    for path, ops in app.extensions.get("hailo_ocr_openapi_paths", {}).items():
        doc["paths"].setdefault(path, {}).update(ops)
    return doc


def add_paths(app: Any, paths: dict[str, Any]) -> None:
    """For route modules registered after this one: describe their routes too."""
    app.extensions.setdefault("hailo_ocr_openapi_paths", {}).update(paths)


@bp.get("/openapi.json")
async def openapi_json() -> dict[str, Any]:
    return document(current_app)


def register(app: Any) -> None:
    app.register_blueprint(bp)
