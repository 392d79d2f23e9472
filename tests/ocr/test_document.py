"""``ocr/document.py``: PDF pages (text layer or rendered by PDFium) and multi-page TIFF
frames, from real files written at test time (``tests/support/pdfgen.py``)."""

from __future__ import annotations

import time

import attrs
import numpy as np
import pytest

from ocr.document import (
    DocumentLimits,
    DocumentOptions,
    PageSelection,
    RenderCancelled,
    document_kind,
    open_document,
)
from ocr.errors import (
    ImageTooLarge,
    ImageTooSmall,
    InvalidPdf,
    PageOutOfRange,
    PageRenderTimeout,
    PdfEncrypted,
    TooManyPages,
)
from tests.support import pdfgen

LIMITS = DocumentLimits(max_pages=20, dpi=200, max_page_pixels=12_000_000,
                        max_image_pixels=40_000_000, render_timeout_s=20.0)


def _never() -> bool:
    return False


def _open(data: bytes, limits: DocumentLimits = LIMITS, **options):
    doc = open_document(data, DocumentOptions(**options), limits)
    assert doc is not None
    return doc


def _grey_scan(width: int = 800, height: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(5)
    img = np.full((height, width), 240, np.uint8)
    img[100:140, 60:700] = 20  # a dark bar, where a line of text would be
    return (img - rng.integers(0, 8, img.shape)).astype(np.uint8)


# -- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "count", "pages"), [
    ("1-3,7", 10, (1, 2, 3, 7)),
    ("5-", 7, (5, 6, 7)),
    ("2-40", 4, (2, 3, 4)),
    (" 3 , 1-2 ,2", 5, (1, 2, 3)),
    (7, 9, (7,)),
    ([1, "4-5"], 5, (1, 4, 5)),
    ("3-2", 5, (2, 3)),  # a range written backwards: the same pages
    ("007", 9, (7,)),
])
def test_page_selection_resolves_in_document_order_each_once(value, count, pages):
    assert PageSelection.parse(value).resolve(count) == pages


@pytest.mark.parametrize("value", ["0", "2-0", "x", "1-3-5", "-2", True, 1.5, {"a": 1}, [[1]]])
def test_page_selection_refuses_what_is_not_a_range(value):
    with pytest.raises(ValueError, match="pages"):
        PageSelection.parse(value)


def test_the_documented_page_pattern_is_what_the_parser_takes():
    """/openapi.json states the pages grammar as a pattern: every string it matches parses."""
    import re

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from web.openapi.results import PAGE_LIST

    @settings(max_examples=300, deadline=None)
    @given(st.from_regex(rf"\A *{PAGE_LIST}\Z"))
    def parses(text):
        assert PageSelection.parse(text) is not None

    parses()
    for bad in ("0", "2-0", "x", "-2", "1-3-5"):
        assert not re.fullmatch(rf" *{PAGE_LIST}", bad)


def test_page_selection_none_is_every_page_and_past_the_end_is_an_error():
    assert PageSelection.parse(None) is None and PageSelection.parse("") is None
    with pytest.raises(PageOutOfRange, match="has 3 pages"):
        PageSelection.parse("2,4").resolve(3)


def test_options_check_dpi_and_mode_and_name_themselves_in_a_cache_key():
    with pytest.raises(ValueError):
        DocumentOptions(dpi=20)
    with pytest.raises(ValueError):
        DocumentOptions(pdf_text="never")
    assert DocumentOptions().cache_tag() == ""
    tag = DocumentOptions(PageSelection.parse("1-2"), 150, "ocr").cache_tag()
    assert tag == "pages=1-2;dpi=150;pdf_text=ocr"


# -- kinds ---------------------------------------------------------------------------------


def test_only_pdfs_and_tiffs_of_several_frames_are_documents():
    img = _grey_scan(64, 64)
    one_frame = pdfgen.multipage_tiff([img])
    assert document_kind(one_frame) == "TIFF"
    assert open_document(one_frame, DocumentOptions(), LIMITS) is None  # read as an image
    assert document_kind(b"\x89PNG\r\n\x1a\n") is None
    # Readers allow bytes before the header, and so does the sniffer.
    assert document_kind(b"\n\n junk " + pdfgen.make_pdf([pdfgen.PageSpec()])) == "PDF"


# -- text layer ----------------------------------------------------------------------------


def test_text_layer_gives_each_line_with_its_box_in_rendered_pixels():
    lines = ["Invoice number 4711", "Total amount 12.50"]
    doc = _open(pdfgen.make_pdf([pdfgen.text_page(lines, 12, top=72, left=72)]))
    try:
        assert (doc.kind, doc.page_count, doc.pages) == ("PDF", 1, (1,))
        layer = doc.text_layer(1)
        assert layer is not None
        assert layer.size == (1700, 2200) and layer.dpi == 200  # letter at 200 dpi
        assert [t for t, _ in layer.pieces] == lines
        scale = 200 / 72
        for i, (_, quad) in enumerate(layer.pieces):
            (x0, y0), _, (x1, y1), _ = quad
            baseline = (72 + 12 + i * 12 * 1.6) * scale  # text_page's placement
            assert abs(x0 - 72 * scale) < 6, quad
            assert y0 < baseline <= y1 + 6 and y1 - y0 < 12 * scale * 1.3, (quad, baseline)
            assert x1 - x0 > 100
    finally:
        doc.close()


def test_text_layer_boxes_follow_the_page_rotation():
    doc = _open(pdfgen.make_pdf([attrs.evolve(pdfgen.text_page(["Rotated"], 20), rotate=90)]))
    try:
        layer = doc.text_layer(1)
        assert layer.size == (2200, 1700)  # landscape once turned
        (x0, y0), _, (x1, y1), _ = layer.pieces[0][1]
        assert y1 - y0 > x1 - x0  # a horizontal line turned upright
    finally:
        doc.close()


def test_modes_choose_between_the_text_layer_and_rendering():
    pdf = pdfgen.make_pdf([pdfgen.text_page(["Hello there"]), pdfgen.PageSpec()])
    auto, ocr, text = (_open(pdf, pdf_text=m) for m in ("auto", "ocr", "text"))
    try:
        assert auto.text_layer(1) is not None
        assert auto.text_layer(2) is None  # no text: rendered and read
        assert ocr.text_layer(1) is None  # always rendered
        empty = text.text_layer(2)
        assert empty is not None and empty.pieces == ()  # text only: an empty page
    finally:
        for d in (auto, ocr, text):
            d.close()


def test_auto_renders_a_scan_unless_its_text_layer_covers_it():
    scan = _grey_scan()
    ocred = pdfgen.scanned_page(scan, 100)
    invisible = [pdfgen.TextRun(f"word line {i} of the scan", 40, 60 + 30 * i, 16, True)
                 for i in range(12)]
    page_number = (pdfgen.TextRun("7", 280, 340, 8),)
    pdf = pdfgen.make_pdf([
        ocred,  # a bare scan
        attrs.evolve(ocred, texts=tuple(invisible)),  # a scan an OCR tool has made searchable
        attrs.evolve(ocred, texts=page_number),  # a scan with a page number stamped on it
    ])
    doc = _open(pdf)
    try:
        assert doc.text_layer(1) is None
        layer = doc.text_layer(2)
        assert layer is not None and len(layer.pieces) == 12
        assert doc.text_layer(3) is None
    finally:
        doc.close()


# -- rendering -----------------------------------------------------------------------------


def test_render_gives_a_bgr_page_at_the_asked_resolution():
    scan = _grey_scan()
    doc = _open(pdfgen.make_pdf([pdfgen.scanned_page(scan, 100, jpeg=False)]), dpi=100)
    try:
        page = doc.render(1, _never)
        assert page.dpi == 100 and page.image.shape == (1000, 800, 3)
        assert page.image.dtype == np.uint8
        assert page.image[120, 300].max() < 60 and page.image[500, 300].min() > 200
    finally:
        doc.close()


def test_a_page_over_the_pixel_cap_is_rendered_at_the_resolution_that_fits():
    limits = DocumentLimits(20, 300, 2_000_000, 40_000_000, 20.0)
    doc = _open(pdfgen.make_pdf([pdfgen.text_page(["Big"])]), limits, pdf_text="ocr")
    try:
        page = doc.render(1, _never)
        h, w = page.image.shape[:2]
        assert w * h <= 2_000_000 and w * h > 1_900_000
        assert page.dpi < 300 and abs(w - 612 * page.dpi / 72) <= 1
    finally:
        doc.close()


def test_an_embedded_image_over_the_pixel_limit_fails_that_page():
    limits = DocumentLimits(20, 72, 12_000_000, 700_000, 20.0)
    doc = _open(pdfgen.make_pdf([pdfgen.scanned_page(_grey_scan(), 100)]), limits)
    try:
        with pytest.raises(ImageTooLarge, match="800x1000"):
            doc.render(1, _never)
    finally:
        doc.close()


def test_a_page_too_small_to_hold_text_is_refused():
    doc = _open(pdfgen.make_pdf([pdfgen.PageSpec(width=1, height=1)]), pdf_text="ocr")
    try:
        with pytest.raises(ImageTooSmall):
            doc.render(1, _never)
    finally:
        doc.close()


def _slow_page() -> bytes:
    """A page of thousands of text objects: PDFium asks whether to pause between them."""
    runs = tuple(pdfgen.TextRun(f"w{i}", 20 + (i % 50) * 11, 20 + (i // 50) * 9, 6)
                 for i in range(4000))
    return pdfgen.make_pdf([pdfgen.PageSpec(texts=runs)])


def test_a_render_stops_when_cancelled_and_when_past_its_time():
    doc = _open(_slow_page(), pdf_text="ocr")
    try:
        with pytest.raises(RenderCancelled):
            doc.render(1, lambda: True)
    finally:
        doc.close()
    limits = DocumentLimits(20, 200, 12_000_000, 40_000_000, 1e-6)
    doc = _open(_slow_page(), limits, pdf_text="ocr")
    try:
        t0 = time.perf_counter()
        with pytest.raises(PageRenderTimeout):
            doc.render(1, _never)
        assert time.perf_counter() - t0 < 5
    finally:
        doc.close()


# -- bad documents -------------------------------------------------------------------------


def test_a_pdf_needing_a_password_is_refused_and_an_owner_password_alone_is_not():
    page = pdfgen.text_page(["Secret text"])
    with pytest.raises(PdfEncrypted):
        open_document(pdfgen.make_pdf([page], user_password="pw"), DocumentOptions(), LIMITS)
    doc = _open(pdfgen.make_pdf([page], user_password=""))
    try:
        assert [t for t, _ in doc.text_layer(1).pieces] == ["Secret text"]
    finally:
        doc.close()


@pytest.mark.parametrize("data", [
    b"%PDF-1.4\n",
    b"%PDF-1.7\n" + bytes(range(256)) * 4,
    pdfgen.make_pdf([pdfgen.text_page(["cut"])])[:300],
])
def test_a_damaged_pdf_is_invalid_pdf(data):
    with pytest.raises(InvalidPdf):
        open_document(data, DocumentOptions(), LIMITS)


def test_a_broken_page_is_that_page_s_error_only():
    pdf = pdfgen.make_pdf([pdfgen.text_page(["first"]), pdfgen.PageSpec(broken=True),
                           pdfgen.text_page(["third"])])
    doc = _open(pdf)
    try:
        assert doc.pages == (1, 2, 3)
        with pytest.raises(InvalidPdf):
            doc.text_layer(2)
        with pytest.raises(InvalidPdf):
            doc.render(2, _never)
        assert [t for t, _ in doc.text_layer(3).pieces] == ["third"]
    finally:
        doc.close()


def test_page_limits():
    pdf = pdfgen.make_pdf([pdfgen.PageSpec()] * 25)
    with pytest.raises(TooManyPages, match="25 pages"):
        open_document(pdf, DocumentOptions(), LIMITS)
    doc = _open(pdf, pages=PageSelection.parse("5-10,25"))
    try:
        assert doc.pages == (5, 6, 7, 8, 9, 10, 25) and doc.page_count == 25
    finally:
        doc.close()
    with pytest.raises(TooManyPages, match="21 pages were asked"):
        open_document(pdf, DocumentOptions(PageSelection.parse("1-21")), LIMITS)
    with pytest.raises(PageOutOfRange):
        open_document(pdf, DocumentOptions(PageSelection.parse("26")), LIMITS)


def test_close_is_idempotent_and_a_closed_document_reads_nothing():
    doc = _open(pdfgen.make_pdf([pdfgen.text_page(["x"])]))
    doc.close()
    doc.close()
    with pytest.raises(InvalidPdf):
        doc.text_layer(1)


# -- multi-page TIFF -----------------------------------------------------------------------


def test_tiff_frames_are_pages_decoded_one_by_one():
    frames = [_grey_scan(300 + 10 * i, 200) for i in range(3)]
    doc = _open(pdfgen.multipage_tiff(frames), pages=PageSelection.parse("2-3"))
    try:
        assert (doc.kind, doc.pages, doc.uses_pdfium) == ("TIFF", (2, 3), False)
        assert doc.text_layer(2) is None
        for n in doc.pages:
            page = doc.render(n, _never)
            assert page.dpi is None and page.image.shape == (200, 300 + 10 * (n - 1), 3)
    finally:
        doc.close()


def test_tiff_frames_are_counted_only_as_far_as_the_limit():
    limits = DocumentLimits(3, 200, 12_000_000, 40_000_000, 20.0)
    data = pdfgen.multipage_tiff([_grey_scan(40, 40)] * 6)
    with pytest.raises(TooManyPages, match="more than 3 pages"):
        open_document(data, DocumentOptions(), limits)
    doc = _open(data, limits, pages=PageSelection.parse("6"))
    try:
        assert doc.pages == (6,)
    finally:
        doc.close()


def test_a_tiff_frame_over_the_pixel_limit_is_that_page_s_error():
    limits = DocumentLimits(20, 200, 12_000_000, 50_000, 20.0)
    doc = _open(pdfgen.multipage_tiff([_grey_scan(100, 100), _grey_scan(400, 400)]), limits)
    try:
        assert doc.render(1, _never).image.shape == (100, 100, 3)
        with pytest.raises(ImageTooLarge):
            doc.render(2, _never)
    finally:
        doc.close()
