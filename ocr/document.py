"""Documents: the pages of a PDF and the frames of a multi-page TIFF, one page at a time.

A PDF page is either read from its own text layer (its characters and their positions,
no OCR) or rendered by PDFium (through ``pypdfium2``) into a BGR image that goes through
the same pipeline as any image; a TIFF frame is decoded exactly as a single image is.
Everything here is synchronous and pure (bytes in, pages out); the orchestrator calls it
in worker threads, a few pages at a time, so a 200-page file never has more than a few
rendered pages in memory.

**PDFium is not thread-safe**: no two PDFium calls may run at once anywhere in the
process, not even on different documents (pypdfium2's documentation, "Incompatibility
with Threading"; doing so crashes or corrupts the process). Every sequence of PDFium calls
here runs holding :data:`PDFIUM_LOCK`, and every PDFium object is closed explicitly inside
it: left to pypdfium2's finalizers, a page or bitmap would be closed by whichever thread
happens to collect it, outside the lock. One lock rather than one dedicated PDFium thread
because PDFium needs its calls serialised, not made from one particular thread (a mutex
is what its documentation prescribes), and a lock lets the existing worker threads do the
work with no thread or queue of our own to start, feed and stop. The orchestrator puts a
one-slot Trio limiter in front of it, so requests wait for PDFium in Trio (cancellable,
holding no worker thread) and the lock itself is never contended in the service.

Rendering is progressive: PDFium asks between page objects whether to pause, and the
answer is yes once the request is cancelled or the page has taken longer than
``processing.page_render_timeout_s``; the render is then abandoned, so neither a client
that left nor a page built to be slow holds the lock for long.
"""

from __future__ import annotations

import abc
import ctypes
import io
import math
import re
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any, Final

import attrs
import numpy as np
from PIL import Image

from .decode import MIN_SIDE, decode_image, sniff_format
from .errors import (
    ImageTooLarge,
    ImageTooSmall,
    InvalidPdf,
    PageOutOfRange,
    PageRenderTimeout,
    PdfEncrypted,
    TooManyPages,
)

#: Held around every sequence of PDFium calls in the process (see the module docstring).
PDFIUM_LOCK: Final = threading.Lock()

#: ``pdf_text``: ``auto`` reads a page's text layer when it has a usable one and renders
#: and reads the page otherwise; ``ocr`` always renders and reads; ``text`` only ever
#: uses the text layer (a page without one is read as empty).
PDF_TEXT_MODES: Final = ("auto", "ocr", "text")
#: Accepted ``dpi`` values. Below 36 no print is legible; above 600 a letter page is 34
#: million pixels, far past what detection looks at.
MIN_DPI: Final = 36
MAX_DPI: Final = 600
#: Content types a client may declare for a PDF.
PDF_MEDIA_TYPES: Final = frozenset({"application/pdf", "application/x-pdf"})

#: ``auto`` on a page mostly covered by raster images (at least this share of its area:
#: a scan) ...
SCAN_COVERAGE: Final = 0.5
#: ... trusts the text layer only if its text covers at least this share of the page, as
#: the invisible text an OCR tool lays over a scan does; a page number or stamp added to
#: a scan covers far less, and such a page is rendered and read.
TEXT_ON_SCAN_COVERAGE: Final = 0.01
#: ``auto`` does not trust a text layer in which more than this share of the characters
#: have no Unicode meaning (fonts without a ToUnicode map extract as U+FFFD, control or
#: private-use characters); such a page is rendered and read.
UNMAPPED_LIMIT: Final = 0.1
#: Form XObjects are searched this deep for images (pypdfium2's own default is 15).
_MAX_FORM_DEPTH: Final = 8


# -- options ----------------------------------------------------------------------------

_RANGE = re.compile(r"^(\d+)(?:\s*(-)\s*(\d*))?$")


@attrs.frozen
class PageSelection:
    """Which pages to read, as ``"1-3,7"`` says: 1-based ranges, ``"5-"`` to the end."""

    ranges: tuple[tuple[int, int | None], ...]

    @classmethod
    def parse(cls, value: Any) -> PageSelection | None:
        """``"1-3,7"``, ``"5-"``, ``7``, ``[1, 2, "5-6"]``; None or ``""`` = every page.
        Raises ValueError saying what is wrong."""
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            raise ValueError("'pages' must look like \"1-3,7\"")
        items = value if isinstance(value, list) else [value]
        ranges: list[tuple[int, int | None]] = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int | str):
                raise ValueError("'pages' must look like \"1-3,7\"")
            for part in str(item).split(","):
                m = _RANGE.match(part.strip())
                if not m:
                    raise ValueError(f"'pages' must look like \"1-3,7\", not {str(item)[:40]!r}")
                first = int(m.group(1))
                last = None if m.group(2) and not m.group(3) else int(m.group(3) or first)
                if last is not None and last < first:  # "3-1": the same pages as "1-3"
                    first, last = last, first
                if first < 1:
                    raise ValueError(
                        f"'pages': {part.strip()[:20]!r} is not a range of pages (pages "
                        "count from 1)"
                    )
                ranges.append((first, last))
        if not ranges:
            return None
        return cls(tuple(ranges))

    @property
    def highest_named(self) -> int:
        return max(last or first for first, last in self.ranges)

    def __str__(self) -> str:
        return ",".join(
            str(first) if last == first else f"{first}-{'' if last is None else last}"
            for first, last in self.ranges
        )

    def resolve(self, count: int) -> tuple[int, ...]:
        """The page numbers selected from a document of ``count`` pages, in document
        order, each once. A range running past the end stops there; a page (or the start
        of a range) past the end is :class:`~ocr.errors.PageOutOfRange`."""
        chosen: set[int] = set()
        for first, last in self.ranges:
            if first > count:
                raise PageOutOfRange(
                    f"page {first} does not exist: the document has {count} "
                    f"page{'s' if count != 1 else ''}"
                )
            chosen.update(range(first, min(count, last or count) + 1))
        return tuple(sorted(chosen))


@attrs.frozen
class DocumentOptions:
    """How a client wants a document read (request fields ``pages``, ``dpi``,
    ``pdf_text``). An image has one page, and these change nothing for it."""

    pages: PageSelection | None = None
    #: Rendering resolution; None = ``processing.pdf_dpi``.
    dpi: int | None = None
    pdf_text: str = "auto"

    def __attrs_post_init__(self) -> None:
        if self.pdf_text not in PDF_TEXT_MODES:
            raise ValueError(f"pdf_text must be one of {', '.join(PDF_TEXT_MODES)}")
        if self.dpi is not None and not MIN_DPI <= self.dpi <= MAX_DPI:
            raise ValueError(f"dpi must be between {MIN_DPI} and {MAX_DPI}")

    def cache_tag(self) -> str:
        """What distinguishes these options in a result-cache key ("" for the defaults,
        so an image's key does not change)."""
        if self == DocumentOptions():
            return ""
        return f"pages={self.pages or ''};dpi={self.dpi or ''};pdf_text={self.pdf_text}"


@attrs.frozen
class DocumentLimits:
    """The ``processing`` limits that apply to documents."""

    #: Most pages one request reads (413 ``too_many_pages`` beyond).
    max_pages: int
    #: Rendering resolution when the request names none.
    dpi: int
    #: Most pixels a rendered page may have; a larger page is rendered at the resolution
    #: that fits (the page entry's ``dpi`` says which).
    max_page_pixels: int
    #: Most pixels of one image embedded in a page, or of one TIFF frame (checked before
    #: anything is decoded: a decompression bomb is refused, as for images).
    max_image_pixels: int
    #: Longest one page may take to render.
    render_timeout_s: float


# -- what a page gives ----------------------------------------------------------------------

Quad = tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]


@attrs.frozen
class TextLayer:
    """A page's own text: ``(text, box)`` pieces in the pixels of the page rendered at
    ``dpi`` (what OCR would have seen), read from the PDF with no OCR."""

    pieces: tuple[tuple[str, Quad], ...]
    size: tuple[int, int]  # (width, height), pixels
    dpi: float


@attrs.frozen
class RenderedPage:
    """A page as a BGR image; ``dpi`` is None for a TIFF frame (its own pixels)."""

    image: np.ndarray = attrs.field(eq=False, repr=lambda a: f"<array {a.shape}>")
    dpi: float | None


class RenderCancelled(Exception):
    """The caller asked a render to stop (its request went away). Never an answer to a
    client: the cancelled request has nobody left to answer."""


class Document(abc.ABC):
    """An open multi-page document and the pages selected from it.

    ``kind`` is ``"PDF"`` or ``"TIFF"``; ``pages`` the 1-based numbers to read, in order;
    ``page_count`` the document's pages (for a TIFF, at most the frames counted).
    ``uses_pdfium``: its methods call PDFium (and must be serialised, see the module
    docstring). :meth:`close` must be called once it is no longer needed."""

    kind: str = ""
    uses_pdfium: bool = False
    pages: tuple[int, ...] = ()
    page_count: int = 0

    @abc.abstractmethod
    def text_layer(self, number: int) -> TextLayer | None:
        """Page ``number``'s text layer when the request's ``pdf_text`` says to use it
        instead of OCR (``text``: always; ``auto``: when the page has a usable one);
        None means: render it and read it."""

    @abc.abstractmethod
    def render(self, number: int, cancelled: Callable[[], bool]) -> RenderedPage:
        """Page ``number`` as a BGR image. ``cancelled`` is polled while rendering."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the document (idempotent)."""


def document_kind(data: bytes) -> str | None:
    """``"PDF"`` or ``"TIFF"`` when ``data`` may hold several pages (a TIFF with one frame
    is still read as an image), else None. Header only: cheap enough for the Trio thread."""
    kind = sniff_format(data)
    return kind if kind in ("PDF", "TIFF") else None


def open_document(
    data: bytes, options: DocumentOptions, limits: DocumentLimits
) -> Document | None:
    """Open ``data`` as a multi-page document and select its pages, or None when it is a
    single image (anything but a PDF or a TIFF of more than one frame).

    Raises :class:`~ocr.errors.InvalidPdf`, :class:`~ocr.errors.PdfEncrypted`,
    :class:`~ocr.errors.PageOutOfRange` or :class:`~ocr.errors.TooManyPages`. A PDF is
    opened under :data:`PDFIUM_LOCK`."""
    kind = document_kind(data)
    if kind == "PDF":
        return PdfPages.open(data, options, limits)
    if kind == "TIFF":
        return TiffPages.open(data, options, limits)
    return None


def _select(
    options: DocumentOptions, count: int, limits: DocumentLimits, *, more: bool = False
) -> tuple[int, ...]:
    """The pages to read out of ``count`` (``more``: the document has more than ``count``,
    which were not counted), within ``processing.max_pages``."""
    if options.pages is None:
        if count > limits.max_pages or more:
            raise TooManyPages(
                f"the document has {'more than ' if more else ''}{count} pages; at most "
                f"{limits.max_pages} are read per request (processing.max_pages): choose "
                "some with 'pages', e.g. \"1-10\""
            )
        return tuple(range(1, count + 1))
    pages = options.pages.resolve(count)
    if len(pages) > limits.max_pages:
        raise TooManyPages(
            f"{len(pages)} pages were asked for; at most {limits.max_pages} are read per "
            "request (processing.max_pages)"
        )
    return pages


# -- PDF ----------------------------------------------------------------------------------


def _pdfium() -> Any:
    """pypdfium2, imported on first use (it loads PDFium into the process)."""
    import pypdfium2

    return pypdfium2


def _is_unmapped(ch: str) -> bool:
    code = ord(ch)
    return ch == "\ufffd" or (code < 32 and ch not in "\t\r\n") or 0xE000 <= code <= 0xF8FF


class PdfPages(Document):
    """A PDF opened with PDFium. Every method takes :data:`PDFIUM_LOCK`."""

    kind = "PDF"
    uses_pdfium = True

    def __init__(
        self, pdf: Any, page_count: int, pages: tuple[int, ...], options: DocumentOptions,
        limits: DocumentLimits,
    ) -> None:
        self._pdf = pdf
        self.page_count = page_count
        self.pages = pages
        self._options = options
        self._limits = limits

    @classmethod
    def open(cls, data: bytes, options: DocumentOptions, limits: DocumentLimits) -> PdfPages:
        pdfium = _pdfium()
        raw = pdfium.raw
        with PDFIUM_LOCK:
            try:
                pdf = pdfium.PdfDocument(data)
            except pdfium.PdfiumError as exc:
                if exc.err_code in (raw.FPDF_ERR_PASSWORD, raw.FPDF_ERR_SECURITY):
                    raise PdfEncrypted(
                        "the PDF is encrypted and needs a password to open; send it "
                        "without a password (or print it to a new PDF) first"
                    ) from None
                raise InvalidPdf("the PDF is damaged or not a PDF: it cannot be opened") from None
            try:
                count = len(pdf)
                pages = _select(options, count, limits)
            except BaseException:
                pdf.close()
                raise
        return cls(pdf, count, pages, options, limits)

    def close(self) -> None:
        with PDFIUM_LOCK:
            if self._pdf is not None:
                self._pdf.close()
                self._pdf = None

    # -- pages (each called holding the lock) --------------------------------------------

    def _load(self, number: int) -> Any:
        pdfium = _pdfium()
        if self._pdf is None:
            raise InvalidPdf("the document is closed")
        try:
            return self._pdf[number - 1]
        except pdfium.PdfiumError:
            raise InvalidPdf("the page is damaged: it cannot be read") from None

    def _pixels(self, page: Any) -> tuple[int, int, float]:
        """The page's size in pixels at the requested resolution, or at the lower one
        that fits ``max_page_pixels``; and that resolution."""
        width_pt, height_pt = page.get_size()  # after the page's own /Rotate
        dpi = float(self._options.dpi or self._limits.dpi)
        area = max(width_pt * height_pt, 1e-6)
        scale = min(dpi / 72.0, math.sqrt(self._limits.max_page_pixels / area))
        width, height = int(width_pt * scale), int(height_pt * scale)
        if width < MIN_SIDE or height < MIN_SIDE:
            raise ImageTooSmall(
                f"the page is {width_pt:g} x {height_pt:g} points, {width}x{height} pixels "
                f"at {dpi:g} dpi; text needs at least {MIN_SIDE}x{MIN_SIDE}"
            )
        return width, height, round(scale * 72.0, 2)

    def _images(self, page: Any) -> list[tuple[int, int, float]]:
        """Every raster image on the page (in form XObjects too): its pixel size and the
        share of the page it covers."""
        raw = _pdfium().raw
        width_pt, height_pt = page.get_size()
        page_area = max(width_pt * height_pt, 1e-6)
        found: list[tuple[int, int, float]] = []

        def visit(parent: Any, count: Callable[[Any], int], get: Callable[[Any, int], Any],
                  depth: int) -> None:
            for i in range(max(0, count(parent))):
                obj = get(parent, i)
                if not obj:
                    continue
                kind = raw.FPDFPageObj_GetType(obj)
                if kind == raw.FPDF_PAGEOBJ_IMAGE:
                    w, h = ctypes.c_uint(), ctypes.c_uint()
                    if not raw.FPDFImageObj_GetImagePixelSize(obj, w, h):
                        continue
                    box = [ctypes.c_float() for _ in range(4)]
                    share = 0.0
                    if raw.FPDFPageObj_GetBounds(obj, *box):
                        left, bottom, right, top = (b.value for b in box)
                        share = max(0.0, right - left) * max(0.0, top - bottom) / page_area
                    found.append((w.value, h.value, min(1.0, share)))
                elif kind == raw.FPDF_PAGEOBJ_FORM and depth < _MAX_FORM_DEPTH:
                    visit(obj, raw.FPDFFormObj_CountObjects, raw.FPDFFormObj_GetObject,
                          depth + 1)

        visit(page, raw.FPDFPage_CountObjects, raw.FPDFPage_GetObject, 0)
        return found

    def text_layer(self, number: int) -> TextLayer | None:
        mode = self._options.pdf_text
        if mode == "ocr":
            return None
        with PDFIUM_LOCK:
            page = self._load(number)
            try:
                width, height, dpi = self._pixels(page)
                textpage = page.get_textpage()
                try:
                    pieces, text_share = _text_pieces(page, textpage, width, height)
                    text = textpage.get_text_range() if pieces else ""
                finally:
                    textpage.close()
                if mode == "auto" and not self._usable(page, text, text_share):
                    return None
            finally:
                page.close()
        return TextLayer(tuple(pieces), (width, height), dpi)

    def _usable(self, page: Any, text: str, text_share: float) -> bool:
        """Whether ``auto`` reads this page from its text layer (see the constants)."""
        visible = [ch for ch in text if not ch.isspace()]
        if not visible:
            return False
        if sum(map(_is_unmapped, visible)) > UNMAPPED_LIMIT * len(visible):
            return False
        image_share = min(1.0, sum(share for _, _, share in self._images(page)))
        return image_share < SCAN_COVERAGE or text_share >= TEXT_ON_SCAN_COVERAGE

    def render(self, number: int, cancelled: Callable[[], bool]) -> RenderedPage:
        limit = self._limits.max_image_pixels
        with PDFIUM_LOCK:
            deadline = time.monotonic() + self._limits.render_timeout_s
            page = self._load(number)
            try:
                width, height, dpi = self._pixels(page)
                for w, h, _ in self._images(page):
                    if w * h > limit:
                        raise ImageTooLarge(
                            f"the page holds an image of {w}x{h} = {w * h} pixels; "
                            f"the limit is {limit} (processing.max_image_pixels)"
                        )
                image = _render(
                    page, width, height, lambda: cancelled() or time.monotonic() > deadline
                )
            finally:
                page.close()
        if image is None:
            if cancelled():
                raise RenderCancelled()
            raise PageRenderTimeout(
                f"the page took longer than {self._limits.render_timeout_s:g} s to render "
                "(processing.page_render_timeout_s)"
            )
        return RenderedPage(image, dpi)


def _text_pieces(
    page: Any, textpage: Any, width: int, height: int
) -> tuple[list[tuple[str, Quad]], float]:
    """The text layer's runs (PDFium's text rectangles: characters of one line and one
    text object) with their boxes in the page's pixels at ``width`` x ``height``, and
    the share of the page their rectangles cover."""
    raw = _pdfium().raw
    width_pt, height_pt = page.get_size()
    page_area = max(width_pt * height_pt, 1e-6)
    pieces: list[tuple[str, Quad]] = []
    covered = 0.0
    for i in range(textpage.count_rects()):
        left, bottom, right, top = textpage.get_rect(i)
        text = " ".join(textpage.get_text_bounded(left, bottom, right, top).split())
        if not text:
            continue
        covered += max(0.0, right - left) * max(0.0, top - bottom)
        xs, ys = [], []
        for x, y in ((left, top), (right, top), (right, bottom), (left, bottom)):
            dx, dy = ctypes.c_int(), ctypes.c_int()
            raw.FPDF_PageToDevice(page, 0, 0, width, height, 0, x, y, dx, dy)
            xs.append(min(max(dx.value, 0), width))
            ys.append(min(max(dy.value, 0), height))
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)  # the page's /Rotate applied
        pieces.append((text, ((x0, y0), (x1, y0), (x1, y1), (x0, y1))))
    return pieces, covered / page_area


def _render(page: Any, width: int, height: int, stop: Callable[[], bool]) -> np.ndarray | None:
    """The page rendered into a ``(height, width, 3)`` BGR array, progressively: PDFium
    asks ``stop`` between page objects, and a True answer abandons the render (None).

    The bitmap's buffer is allocated by Python (a "native" bitmap), so the array stays
    valid after the bitmap is closed."""
    pdfium = _pdfium()
    raw, internal = pdfium.raw, pdfium.internal
    bitmap = pdfium.PdfBitmap.new_native(width, height, raw.FPDFBitmap_BGR)
    stopped = False

    def need_to_pause(_: Any) -> bool:
        nonlocal stopped
        stopped = stopped or bool(stop())
        return stopped

    pause = raw.IFSDK_PAUSE(version=1)
    internal.set_callback(pause, "NeedToPauseNow", need_to_pause)
    try:
        bitmap.fill_rect((255, 255, 255, 255), 0, 0, width, height)
        status = raw.FPDF_RenderPageBitmap_Start(
            bitmap, page, 0, 0, width, height, 0, raw.FPDF_ANNOT, pause
        )
        while status == raw.FPDF_RENDER_TOBECONTINUED and not stopped:
            status = raw.FPDF_RenderPage_Continue(page, pause)
        if stopped:
            return None
        if status != raw.FPDF_RENDER_DONE:
            raise InvalidPdf("the page cannot be rendered: it is damaged")
        return bitmap.to_numpy()
    finally:
        raw.FPDF_RenderPage_Close(page)
        bitmap.close()


# -- multi-page TIFF ------------------------------------------------------------------------


class TiffPages(Document):
    """The frames of a TIFF, each decoded as an image (``ocr.decode``). Each page opens
    its own reader on the bytes, so pages may be decoded in several threads at once."""

    kind = "TIFF"

    def __init__(self, data: bytes, page_count: int, pages: tuple[int, ...],
                 limits: DocumentLimits) -> None:
        self._data = data
        self.page_count = page_count
        self.pages = pages
        self._limits = limits

    @classmethod
    def open(cls, data: bytes, options: DocumentOptions, limits: DocumentLimits
             ) -> TiffPages | None:
        # Frames are counted only as far as they matter: a file of a million tiny
        # frames costs no more than one of max_pages.
        scan = limits.max_pages + (options.pages.highest_named if options.pages else 0)
        count = _count_frames(data, scan + 1)
        if count <= 1:
            return None  # one frame (or unreadable: the image path says why)
        more = count > scan
        pages = _select(options, min(count, scan), limits, more=more)
        return cls(data, min(count, scan), pages, limits)

    def text_layer(self, number: int) -> TextLayer | None:
        return None

    def close(self) -> None:
        """Nothing to release: each page opens and closes its own reader."""

    def render(self, number: int, cancelled: Callable[[], bool]) -> RenderedPage:
        image = decode_image(self._data, max_pixels=self._limits.max_image_pixels,
                             frame=number - 1)
        return RenderedPage(image, None)


def _count_frames(data: bytes, limit: int) -> int:
    """Frames in a TIFF, counted up to ``limit``; 0 when it cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                count = 1
                while count < limit:
                    try:
                        img.seek(count)
                    except EOFError:
                        break
                    count += 1
                return count
    except Exception:  # a malformed header: the image path refuses it with its own error
        return 0
