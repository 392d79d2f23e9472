"""Turning what a client sent into image bytes and a language list.

Requests are read as the original hailo-ocr read them, and more leniently:

- a body that is a JSON object is read as JSON whatever its Content-Type says: the
  original called ``request.json()`` without looking, and its own documentation's
  ``curl -d '{"image": ...}'`` sends ``application/x-www-form-urlencoded``. No image
  format starts with ``{``, so a raw image body is never mistaken for JSON;
- the image may be a data URI, plain base64, a ``file://`` URL (only below
  ``server.file_root``; off by default), a multipart upload, or the raw body (with an
  image Content-Type, or none / a form type when the bytes are an image);
- a data URI's media type is not trusted (the bytes are sniffed when decoded), its
  ``;base64`` may be missing, and whitespace or line breaks in the base64 are skipped;
- a PDF or a multi-page TIFF comes the same ways as an image; how it is read (``pages``,
  ``dpi``, ``pdf_text``) is a field beside ``image`` (JSON, multipart, websocket) or,
  for a raw body, in the query string, as ``languages`` is.

Everything here checks what can be checked cheaply *before* the image is decoded: sizes,
base64 syntax, and file paths. Decoding itself (and the format check against the real
bytes) is the pipeline's job.

Large payloads are decoded in a worker thread: base64 of a 20 MB image is ~30 ms of CPU,
which would otherwise stall every other request on the Trio thread.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from collections.abc import Callable, Iterable
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import attrs
import trio

from ocr.decode import ACCEPTED_MEDIA_TYPES, sniff_format
from ocr.document import (
    MAX_DPI,
    MIN_DPI,
    PDF_MEDIA_TYPES,
    PDF_TEXT_MODES,
    DocumentOptions,
    PageSelection,
)

from .errors import ApiError
from .settings import Config

#: Above this many characters, JSON and base64 are decoded in a worker thread.
_THREAD_THRESHOLD = 256 * 1024

#: The standard and URL-safe base64 alphabets together.
_B64_ALPHABET: Final = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"
)
#: ASCII whitespace, what ``\s`` matches in a bytes pattern.
_WHITESPACE: Final = b" \t\n\r\x0b\x0c"


#: Media types a client may declare for what it sends: the image formats and PDF.
_ACCEPTED_TYPES = ACCEPTED_MEDIA_TYPES | PDF_MEDIA_TYPES


@attrs.frozen
class ImageInput:
    data: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    languages: tuple[str, ...]
    options: DocumentOptions = DocumentOptions()


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        "image_too_large",
        f"the image is {size} bytes; the limit is {limit} bytes (processing.max_image_bytes)",
    )


def check_media_type(media_type: str, where: str) -> None:
    """Refuse a declared media type that is not one of the accepted image formats.

    An empty type and ``application/octet-stream`` say nothing and are let through: the
    pipeline sniffs the bytes anyway."""
    mt = media_type.split(";", 1)[0].strip().lower()
    if not mt or mt == "application/octet-stream":
        return
    if mt not in _ACCEPTED_TYPES:
        raise ApiError(
            "unsupported_media_type",
            f"{where} declares media type {mt!r}; send JPEG, PNG, BMP, WebP, TIFF or PDF",
        )


def _b64decode(text: bytes, max_bytes: int) -> bytes:
    """Strict base64 (standard or URL-safe alphabet, padding optional, whitespace ignored)."""
    # bytes.translate, not a regular expression: the same checks, ten times faster
    # on a receipt's 400 kB of base64 (benchmarks/RESULTS.md, host cost).
    compact = text.translate(None, _WHITESPACE)
    if not compact:
        raise ApiError("invalid_image", "the image is empty")
    if len(compact) * 3 // 4 > max_bytes + 3:
        raise _too_large(len(compact) * 3 // 4, max_bytes)
    stripped = compact.rstrip(b"=")
    if (
        len(compact) - len(stripped) > 2  # at most two padding characters, at the end
        or stripped.translate(None, _B64_ALPHABET)  # anything outside the alphabet
        or len(compact) % 4 == 1
    ):
        raise ApiError("invalid_base64", "the image is not valid base64")
    compact = stripped + b"=" * (-len(stripped) % 4)
    try:
        if b"-" in compact or b"_" in compact:
            data = base64.urlsafe_b64decode(compact)
        else:
            data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("invalid_base64", "the image is not valid base64") from None
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    if not data:
        raise ApiError("invalid_image", "the image is empty")
    return data


async def _b64decode_async(text: str | bytes, max_bytes: int) -> bytes:
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    if len(raw) > _THREAD_THRESHOLD:
        return await trio.to_thread.run_sync(_b64decode, raw, max_bytes)
    return _b64decode(raw, max_bytes)


def _data_uri_bytes(value: str, max_bytes: int) -> bytes:
    """The bytes of ``data:[<media type>][;param]*[;base64],<data>``, read leniently.

    The media type is ignored (the decoder sniffs the bytes: clients label every image
    ``image/jpeg``, or ``application/octet-stream``). Percent-escapes are undone first
    (base64 never contains ``%``). Without ``;base64`` the data is still read as base64
    when it is valid base64 (the original service decoded it so), else as the URI's
    literal bytes (RFC 2397)."""
    header, sep, payload = value[5:].partition(",")
    if not sep:
        raise ApiError("invalid_data_uri", "the data URI has no ',' before its data")
    declared_base64 = "base64" in (p.strip().lower() for p in header.split(";"))
    if "%" in payload:
        payload = unquote(payload, encoding="latin-1")  # %XX -> the character of byte XX
    raw = payload.encode("latin-1", "replace")
    if declared_base64:
        return _b64decode(raw, max_bytes)
    try:
        return _b64decode(raw, max_bytes)
    except ApiError as exc:
        if exc.code != "invalid_base64":
            raise
    if len(raw) > max_bytes:
        raise _too_large(len(raw), max_bytes)
    return raw


def resolve_file_url(url: str, file_root: str | None) -> str:
    """The real path a ``file://`` URL names, if it lies below ``file_root``.

    Both sides are resolved with ``realpath`` so ``..`` and symlinks are judged by where
    they really lead. Errors never echo the path (it would leak the host's layout)."""
    if not file_root:
        raise ApiError(
            "file_urls_disabled",
            "file:// images are disabled on this server (set server.file_root to enable)",
        )
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ApiError("invalid_file_url", "file:// URLs must not name a remote host")
    path = unquote(parts.path)
    if "\x00" in path or not path.startswith("/"):
        raise ApiError("invalid_file_url", "a file:// URL needs an absolute path")
    root = os.path.realpath(file_root)
    real = os.path.realpath(path)
    try:
        inside = os.path.commonpath([root, real]) == root
    except ValueError:
        inside = False
    if not inside:
        raise ApiError(
            "forbidden_path",
            "the file is outside the directory this server may read (server.file_root); "
            "set server.file_root to a directory that holds it",
        )
    return real


def _read_file(path: str, max_bytes: int) -> bytes:
    try:
        if not os.path.isfile(path):
            if os.path.exists(path):
                raise ApiError("not_a_file", "the file:// URL does not name a regular file")
            raise ApiError("file_not_found", "no such file below the configured file root")
        size = os.path.getsize(path)
        if size > max_bytes:
            raise _too_large(size, max_bytes)
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError:
        raise ApiError("file_unreadable", "the file cannot be read by the server") from None
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    return data


async def image_from_string(value: Any, config: Config) -> bytes:
    """The bytes of an ``image`` given as a string: data URI, base64 or file URL."""
    if not isinstance(value, str):
        raise ApiError(
            "invalid_field", "'image' must be a string (data URI, base64 or file://)"
        )
    max_bytes = config.processing.max_image_bytes
    head = value[:16].lstrip().lower()
    if head.startswith("data:"):
        uri = value.strip()
        if len(uri) > _THREAD_THRESHOLD:
            return await trio.to_thread.run_sync(_data_uri_bytes, uri, max_bytes)
        return _data_uri_bytes(uri, max_bytes)
    if head.startswith("file:"):
        # Resolving real paths stats the filesystem too: both off the Trio thread.
        url, root = value.strip(), config.server.file_root
        return await trio.to_thread.run_sync(
            lambda: _read_file(resolve_file_url(url, root), max_bytes)
        )
    if "://" in value[:32]:
        raise ApiError(
            "unsupported_url", "only data:, file:// or plain base64 images are accepted"
        )
    return await _b64decode_async(value, max_bytes)


def parse_languages(value: Any) -> tuple[str, ...]:
    """``["en"]``, ``"en"`` or ``"en,zh"``, lower-cased; None or empty means the default
    language. Which of them the service reads (aliases, unknown codes) is its choice
    (:meth:`actors.service.OcrService.pick_language`), the same for REST and websocket."""
    if value is None:
        return ()
    items: Iterable[Any]
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        raise ApiError("invalid_field", "'languages' must be a list of language codes")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ApiError("invalid_field", "'languages' must be a list of language codes")
        out.extend(part.strip().lower() for part in item.split(",") if part.strip())
    return tuple(dict.fromkeys(out))


def _invalid(message: str) -> ApiError:
    return ApiError("invalid_field", message)


def parse_document_options(get: Callable[[str], Any]) -> DocumentOptions:
    """``pages``, ``dpi`` and ``pdf_text`` of a request, each read with ``get(name)``
    (a JSON object's or form's field, a query parameter). Checked whatever is sent (a
    mistake is answered, not ignored), used only when the image is a document."""
    try:
        pages = PageSelection.parse(get("pages"))
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    dpi = None
    raw = get("dpi")
    if raw is not None and raw != "":
        try:
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise ValueError
            value = float(raw)
        except ValueError:
            value = math.nan
        if not MIN_DPI <= value <= MAX_DPI:  # NaN fails too
            raise _invalid(f"'dpi' must be a number from {MIN_DPI} to {MAX_DPI}")
        dpi = round(value)
    mode = get("pdf_text")
    if mode is None or mode == "":
        mode = "auto"
    if not isinstance(mode, str) or mode.strip().lower() not in PDF_TEXT_MODES:
        raise _invalid(f"'pdf_text' must be one of {', '.join(PDF_TEXT_MODES)}")
    return DocumentOptions(pages, dpi, mode.strip().lower())


async def parse_json_body(body: bytes) -> Any:
    def load() -> Any:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise ApiError("invalid_json", "the request body is not valid JSON") from None

    if len(body) > _THREAD_THRESHOLD:
        return await trio.to_thread.run_sync(load)
    return load()


async def image_from_json(body: bytes, config: Config) -> ImageInput:
    doc = await parse_json_body(body)
    if not isinstance(doc, dict):
        raise ApiError("invalid_json", "the request body must be a JSON object")
    if "image" not in doc or doc["image"] in (None, ""):
        raise ApiError("missing_field", "the request needs an 'image' field")
    languages = parse_languages(doc.get("languages"))
    options = parse_document_options(doc.get)
    data = await image_from_string(doc["image"], config)
    return ImageInput(data, languages, options)


def _is_json_object(body: bytes) -> bool:
    """Whether ``body`` is meant as a JSON object: its first non-blank byte is ``{``
    (which no accepted image format starts with)."""
    return body[:64].removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n").startswith(b"{")


async def image_from_request(request: Any, config: Config) -> ImageInput:
    """Parse a POST /v1/ocr/extract request of any accepted kind."""
    mimetype = (request.mimetype or "").lower()
    max_bytes = config.processing.max_image_bytes
    if mimetype == "multipart/form-data":
        return await _image_from_form(request, config)
    if mimetype.startswith("image/"):
        check_media_type(mimetype, "the request")
    body = await request.get_data(cache=False)
    if mimetype == "application/json" or mimetype.endswith("+json") or _is_json_object(body):
        return await image_from_json(body, config)
    if not body:
        raise ApiError("missing_field", "the request body is empty")
    declared_image = (
        mimetype.startswith("image/") or mimetype == "application/octet-stream"
        or mimetype in PDF_MEDIA_TYPES
    )
    if declared_image or sniff_format(body) is not None:
        if len(body) > max_bytes:
            raise _too_large(len(body), max_bytes)
        return ImageInput(
            body, parse_languages(request.args.getlist("languages") or None),
            parse_document_options(request.args.get),
        )
    raise ApiError(
        "unsupported_media_type",
        f"the body ({repr(mimetype) if mimetype else 'no Content-Type'}) is neither a JSON "
        "object nor an image or PDF; "
        "send {\"image\": ...} as JSON, a multipart upload, or the image itself",
    )


async def _image_from_form(request: Any, config: Config) -> ImageInput:
    max_bytes = config.processing.max_image_bytes
    form = await request.form
    files = await request.files
    languages = parse_languages(form.getlist("languages") or None)
    options = parse_document_options(form.get)
    upload = files.get("image")
    if upload is not None:
        check_media_type(upload.mimetype or "", "the uploaded file")
        data = await trio.to_thread.run_sync(upload.read, max_bytes + 1)
        if len(data) > max_bytes:
            raise _too_large(len(data), max_bytes)
        if not data:
            raise ApiError("invalid_image", "the uploaded image is empty")
        return ImageInput(data, languages, options)
    if form.get("image"):
        return ImageInput(await image_from_string(form["image"], config), languages, options)
    raise ApiError("missing_field", "the form needs an 'image' file field")
