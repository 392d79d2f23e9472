"""The schemas REST and the websocket share: what an image is sent as, and what reading
it gives (``web.responses`` builds these bodies for both transports)."""

from __future__ import annotations

from typing import Any, Final

from ocr.decode import MIN_SIDE
from ocr.document import MAX_DPI, MIN_DPI, PDF_TEXT_MODES

from .fragment import ref

BBOX: Final = {
    "type": "array",
    "minItems": 4,
    "maxItems": 4,
    "description": "Quadrilateral in whole original-image pixels, clockwise from top-left.",
    "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer"}},
}

#: What every accepted image must be, for the descriptions.
IMAGE_RULES: Final = (
    "JPEG, PNG, BMP, WebP or TIFF, or a document: a PDF or a multi-page TIFF, read page "
    f"by page (see pages, dpi, pdf_text). An image at least {MIN_SIDE}x{MIN_SIDE} pixels (400 "
    "image_too_small under that), at most processing.max_image_bytes bytes and "
    "processing.max_image_pixels pixels (413 image_too_large). Which bytes are an image "
    "is decided by the bytes themselves, so a request this document calls valid can still "
    "be refused for its image: 400 invalid_base64, invalid_data_uri, invalid_image or "
    "image_too_small, 413 image_too_large, 415 unsupported_media_type."
)

#: One or more page ranges as :class:`ocr.document.PageSelection` reads them ("1-3,7",
#: "5-"), pages counted from 1 (a leading zero is allowed, a page 0 is not).
_PAGE_RANGE: Final = "0*[1-9][0-9]*( *- *(0*[1-9][0-9]*)?)?"
PAGE_LIST: Final = f"{_PAGE_RANGE} *(, *{_PAGE_RANGE} *)*"

_WARNING: Final = {
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

SCHEMAS: Final[dict[str, Any]] = {
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
        "minLength": 1,
        "description": "A data URI (data:image/png;base64,...; the media type is not "
        "trusted, ;base64 may be missing, whitespace and line breaks are skipped), plain "
        "base64, or file:///path below server.file_root (disabled by default). "
        + IMAGE_RULES,
    },
    "Pages": {
        "description": "Pages of a PDF or multi-page TIFF to read: \"1-3,7\", \"5-\" (to "
        "the end), a page number, or a list of those; pages count from 1, a range "
        "running past the end stops there, one written backwards (3-1) reads the same "
        "pages. Default: every page, up to processing.max_pages (413 too_many_pages "
        "beyond). Ignored for an image.",
        "oneOf": [
            {"type": "string", "pattern": f"^( *{PAGE_LIST})?$", "examples": ["1-3,7"]},
            {"type": "integer", "minimum": 1},
            {"type": "array", "items": {"oneOf": [
                {"type": "string", "pattern": f"^ *{PAGE_LIST}$"},
                {"type": "integer", "minimum": 1},
            ]}},
        ],
    },
    "Dpi": {
        "type": "number",
        "minimum": MIN_DPI,
        "maximum": MAX_DPI,
        "description": "Resolution PDF pages are rendered at (default processing.pdf_dpi). "
        "A page larger than processing.max_page_pixels at it is rendered at the "
        "resolution that fits (its pages entry's dpi says which). Ignored for images.",
    },
    "PdfText": {
        "enum": list(PDF_TEXT_MODES),
        "description": "A PDF page's own text layer: auto (default) reads a page from it "
        "when it has a usable one (no OCR; source text_layer) and renders and reads the "
        "page otherwise (a scan: mostly an image with little text over it, or text "
        "without Unicode meaning); ocr always renders and reads; text only uses the text "
        "layer (a page without one is empty).",
    },
    "Region": {
        "type": "object",
        "required": ["text", "confidence", "bbox", "type"],
        "properties": {
            "text": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "bbox": BBOX,
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
                                "items": ref("Region")},
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
                    "performance": ref("Performance"),
                },
            },
            {
                "type": "object",
                "required": ["page", "success", "error", "code"],
                "properties": {
                    "page": {"type": "integer", "minimum": 1},
                    "success": {"const": False},
                    "error": {"type": "string"},
                    "code": ref("ErrorCode"),
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
                "description": "The text line by line, in reading order (a document: its "
                "first page read).",
            },
            "regions": {"type": "array", "items": ref("Region")},
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
            "performance": ref("Performance"),
            "image_size": {
                "type": "object",
                "description": "The image's size; for a document, the first page read.",
                "properties": {"width": {"type": "integer"}, "height": {"type": "integer"}},
            },
            "hailo_info": ref("HailoInfo"),
            "pages": {
                "type": "array",
                "items": ref("Page"),
                "description": "Only for a document (PDF, multi-page TIFF): one entry per "
                "page asked for, in order. text, lines, regions, statistics and "
                "image_size above are then the first page read (valid as for one image); "
                "languages_detected, warnings and performance (stage times summed over "
                "the pages, total_time_ms the whole request) cover the whole document.",
            },
        },
    },
}
