"""Messages between actors and the events a request emits. All frozen attrs values;
arrays are carried by reference (never compared, never copied)."""

from __future__ import annotations

from typing import Any, Final

import attrs
import numpy as np
import trio

from ocr.document import DocumentOptions


def _array_field() -> Any:
    return attrs.field(eq=False, repr=lambda a: f"<array {getattr(a, 'shape', '?')}>")


# --- NPU owner ------------------------------------------------------------------------


@attrs.frozen
class InferJob:
    """One device call. ``reply`` (capacity 1) receives an ``outcome.Outcome``."""

    model_id: str
    batch: np.ndarray = _array_field()
    reply: trio.MemorySendChannel = attrs.field(eq=False, repr=False)
    submitted_at: float = 0.0


# --- Recognition batcher ----------------------------------------------------------------


@attrs.frozen
class RecSubmission:
    """Crops of one request for one language. ``reply`` has room for every result, so
    the batcher never waits on a slow caller."""

    language: str
    crops: tuple[np.ndarray, ...] = attrs.field(eq=False, repr=lambda c: f"<{len(c)} crops>")
    reply: trio.MemorySendChannel = attrs.field(eq=False, repr=False)
    #: For a dynamic-width recogniser: the width each crop must be padded to (see
    #: ``ocr.recognition.pad_width``); the batcher then batches only crops of equal
    #: width, so a line's text never depends on what else is in flight. None: any width.
    widths: tuple[int, ...] | None = None


@attrs.frozen
class RecResult:
    """The text of crop ``index`` of a submission, or the error that stopped it."""

    index: int
    text: str = ""
    confidence: float = 0.0
    error: BaseException | None = None


# --- Results and progress events ---------------------------------------------------------


@attrs.frozen
class Region:
    text: str
    confidence: float
    #: 4 points in whole image pixels, clockwise from top-left (integers, as the original
    #: service sent them: clients typed for integers fail on 17.0).
    bbox: tuple[tuple[int, int], ...]
    type: str = "text"
    #: The page it is on (1-based), in the result of a document (PDF, multi-page TIFF);
    #: None for an image. ``bbox`` is then in that page's pixels.
    page: int | None = None


@attrs.frozen
class Notice:
    """Something the client should know about a result that still succeeded, e.g. that
    its language was not loaded and the default was used (``language_fallback``)."""

    code: str
    message: str


@attrs.frozen
class Timings:
    decode_ms: float = 0.0
    detection_ms: float = 0.0
    recognition_ms: float = 0.0
    total_ms: float = 0.0


#: How a page was read: rendered (or decoded) and read by OCR, or from its text layer.
PAGE_SOURCES: Final = ("ocr", "text_layer")


@attrs.frozen
class PageResult:
    """One page of a document, read (``error`` None) or not (``error`` says why: its own
    input error; the other pages are still read)."""

    page: int  # 1-based, in the document
    text: str = ""
    regions: tuple[Region, ...] = ()
    lines: tuple[str, ...] = ()
    image_size: tuple[int, int] = (0, 0)  # (width, height) of the page as read, pixels
    source: str = "ocr"
    timings: Timings = Timings()
    #: The resolution the page was rendered at (a PDF page), else None.
    dpi: float | None = None
    error: BaseException | None = attrs.field(default=None, eq=False)


@attrs.frozen
class OcrResult:
    #: Every region's text in reading order, joined by single spaces (the original's).
    text: str
    regions: tuple[Region, ...]
    #: The language used first, then any other script found in the text.
    languages_detected: tuple[str, ...]
    language: str  # the recognition model's language used
    timings: Timings
    image_size: tuple[int, int]  # (width, height)
    #: The text line by line, in reading order (a line's regions joined by spaces).
    lines: tuple[str, ...] = ()
    warnings: tuple[Notice, ...] = ()
    #: A document's pages, in order (empty for an image). ``text``, ``regions``,
    #: ``lines`` and ``image_size`` above are then the first page read (what a client
    #: of single images understands); ``languages_detected``, ``warnings`` and
    #: ``timings`` cover the whole document.
    pages: tuple[PageResult, ...] = ()


@attrs.frozen
class OcrRequest:
    image: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    languages: tuple[str, ...] = ()
    id: str | None = None
    #: How a document (PDF, multi-page TIFF) is to be read; nothing for an image.
    options: DocumentOptions = DocumentOptions()


@attrs.frozen
class Accepted:
    id: str | None


@attrs.frozen
class PageStarted:
    """A document's page is about to be read (``pages``: how many will be, in all)."""

    id: str | None
    page: int
    pages: int


@attrs.frozen
class Detected:
    id: str | None
    bboxes: tuple[tuple[tuple[int, int], ...], ...]
    #: The page the boxes are on, for a document; None for an image.
    page: int | None = None


@attrs.frozen
class LineRecognised:
    id: str | None
    index: int
    region: Region  # region.page: the page, for a document


@attrs.frozen
class PageDone:
    """A document's page is read (or failed: ``result.error``); pages finish in any order."""

    id: str | None
    result: PageResult


@attrs.frozen
class Done:
    id: str | None
    result: OcrResult


@attrs.frozen
class Failed:
    id: str | None
    error: BaseException


Event = Accepted | PageStarted | Detected | LineRecognised | PageDone | Done | Failed
