"""PDF and multi-page TIFF input through the real server (Hypercorn on loopback): every
input path, the response's ``pages``, the websocket's ``page`` events, a failing page,
and the memory bound on rendered pages. The PDFs are written at test time
(``tests/support/pdfgen.py``) with known text: pages with a text layer, scanned-style image
pages, and both in one file."""

from __future__ import annotations

import json
import weakref

import httpx
import trio
from trio_websocket import open_websocket_url

import ocr.document
from tests.support import pdfgen, textgen
from tests.support.images import b64
from tests.support.server import fast, running_server, words_of

PAGE = (320.0, 200.0)  # points: small pages read quickly
TEXT_LINES = ["INVOICE 4711", "TOTAL 12.50"]
SCAN_LINES = ["GARDEN WINDOW", "RIVER FOREST"]


def _font():
    fonts = textgen.latin_fonts()
    return fonts[0] if fonts else None


def scan_page(lines: list[str], dpi: float = 150) -> pdfgen.PageSpec:
    """A scanned-style page: the lines drawn into a grey image, embedded as a JPEG."""
    return pdfgen.scanned_page(pdfgen.render_lines(lines, 20, dpi, page=PAGE, font=_font()), dpi)


def mixed_pdf() -> bytes:
    """Page 1: a text layer; page 2: a scan (no text layer); page 3: text, then a
    broken page 4 (listed, but not a page)."""
    return pdfgen.make_pdf([
        pdfgen.text_page(TEXT_LINES, 20, top=30, left=30, page=PAGE),
        scan_page(SCAN_LINES),
        pdfgen.text_page(["LAST PAGE"], 20, top=30, left=30, page=PAGE),
        pdfgen.PageSpec(broken=True),
    ])


def _check_mixed(body: dict, pdf_text: str = "auto") -> None:
    assert body["success"] is True, body
    pages = body["pages"]
    assert [p["page"] for p in pages] == [1, 2, 3, 4]
    one, two, three, four = pages
    assert one["lines"] == TEXT_LINES and three["lines"] == ["LAST PAGE"]
    assert [words_of(t) for t in two["lines"]] == [words_of(t) for t in SCAN_LINES]
    want = "text_layer" if pdf_text == "auto" else "ocr"
    assert (one["source"], two["source"], three["source"]) == (want, "ocr", want)
    assert one["image_size"] == {"width": 888, "height": 555}  # 320 x 200 pt at 200 dpi, floored
    assert one["dpi"] == 200 and all(p["success"] for p in (one, two, three))
    assert four == {"page": 4, "success": False, "code": "invalid_pdf",
                    "error": four["error"]} and four["error"]
    # The top level is the first page, as for a single image; warnings name the failure.
    assert body["lines"] == one["lines"] and body["text"] == one["text"]
    assert body["image_size"] == one["image_size"] and body["regions"] == one["regions"]
    assert all(r["page"] == 1 for r in body["regions"])
    assert [w["code"] for w in body["warnings"]] == ["page_failed"]
    for p in (one, two, three):
        for r in p["regions"]:
            assert r["page"] == p["page"]
            xs, ys = zip(*r["bbox"], strict=True)
            assert 0 <= min(xs) and max(xs) <= p["image_size"]["width"]
            assert 0 <= min(ys) and max(ys) <= p["image_size"]["height"]
    if pdf_text == "auto":  # a text layer has exact text and confidence 1
        assert all(r["confidence"] == 1.0 for r in one["regions"])


async def test_every_input_path_reads_a_mixed_pdf_page_by_page(config, tmp_path):
    pdf = mixed_pdf()
    (tmp_path / "doc.pdf").write_bytes(pdf)
    cfg = fast(config, server={"file_root": str(tmp_path)}, processing={"pdf_dpi": 200})
    async with running_server(cfg) as server, httpx.AsyncClient(
        base_url=server.url, timeout=120
    ) as http:
        answers = {
            "json base64": await http.post("/v1/ocr/extract", json={"image": b64(pdf)}),
            "json data uri": await http.post("/v1/ocr/extract", json={
                "image": "data:application/pdf;base64," + b64(pdf), "languages": ["en"]}),
            "file url": await http.post("/v1/ocr/extract", json={
                "image": (tmp_path / "doc.pdf").as_uri()}),
            "multipart": await http.post("/v1/ocr/extract", files={
                "image": ("doc.pdf", pdf, "application/pdf")}, data={"languages": "en"}),
            "raw body": await http.post("/v1/ocr/extract", content=pdf,
                                        headers={"Content-Type": "application/pdf"}),
        }
        for name, r in answers.items():
            assert r.status_code == 200, (name, r.text[:300])
            _check_mixed(r.json())
        # pages / dpi / pdf_text through each kind of field.
        ocr_all = await http.post("/v1/ocr/extract", json={"image": b64(pdf), "pdf_text": "ocr"})
        _check_mixed(ocr_all.json(), "ocr")
        some = await http.post("/v1/ocr/extract?pages=2-3&dpi=100", content=pdf,
                               headers={"Content-Type": "application/pdf"})
        form = await http.post("/v1/ocr/extract", files={
            "image": ("doc.pdf", pdf, "application/pdf")}, data={"pages": "2-3", "dpi": "100"})
        for r in (some, form):
            body = r.json()
            assert [p["page"] for p in body["pages"]] == [2, 3], body
            assert body["pages"][0]["dpi"] == 100
            assert body["pages"][0]["image_size"] == {"width": 444, "height": 278}
            assert body["text"] == body["pages"][0]["text"] and not body["warnings"]
        text_only = (await http.post("/v1/ocr/extract", json={
            "image": b64(pdf), "pages": "1-2", "pdf_text": "text"})).json()
        assert [p["source"] for p in text_only["pages"]] == ["text_layer", "text_layer"]
        assert text_only["pages"][1]["lines"] == []  # a scan has no text layer
        # A single image answers as it always did: no pages, no page in regions.
        png = textgen.encode(pdfgen.render_lines(SCAN_LINES, 20, 150, page=PAGE, font=_font()))
        image = (await http.post("/v1/ocr/extract", json={"image": b64(png)})).json()
        assert "pages" not in image and all("page" not in r for r in image["regions"])
        metrics = (await http.get("/metrics")).text
        spec = (await http.get("/openapi.json")).json()
    # /openapi.json describes what a document is answered.
    schemas = spec["components"]["schemas"]
    result = answers["raw body"].json()
    assert set(result) - {"success"} <= set(schemas["ExtractResult"]["properties"])
    read_ok, failed = schemas["Page"]["oneOf"]
    assert set(read_ok["required"]) <= set(result["pages"][0]) <= set(read_ok["properties"])
    assert set(failed["required"]) == set(result["pages"][3]) == set(failed["properties"])
    assert set(result["regions"][0]) <= set(schemas["Region"]["properties"])
    for name in ("pages", "dpi", "pdf_text"):
        assert name in schemas["ExtractRequest"]["properties"]
    codes = schemas["ErrorCode"]["enum"]
    assert {"invalid_pdf", "pdf_encrypted", "too_many_pages", "page_out_of_range"} <= set(codes)
    counted = {source: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               for source in ("ocr", "text_layer", "failed")
               if line.startswith(f'hailo_ocr_document_pages_total{{source="{source}"}}')}
    # Five paths (auto: 1 by OCR, 2 from the text layer, 1 failed), one all by OCR (3 + 1
    # failed), pages 2-3 twice (1 + 1 each), pages 1-2 text only (2).
    assert counted == {"ocr": 5 + 3 + 2, "text_layer": 10 + 2 + 2, "failed": 5 + 1}


async def test_a_multi_page_tiff_is_read_frame_by_frame(config):
    frames = [pdfgen.render_lines(lines, 20, 150, page=PAGE, font=_font())
              for lines in (TEXT_LINES, SCAN_LINES)]
    tiff = pdfgen.multipage_tiff(frames)
    async with running_server(fast(config)) as server, httpx.AsyncClient(
        base_url=server.url, timeout=120
    ) as http:
        body = (await http.post("/v1/ocr/extract", json={"image": b64(tiff)})).json()
    assert [p["page"] for p in body["pages"]] == [1, 2]
    for page, lines in zip(body["pages"], (TEXT_LINES, SCAN_LINES), strict=True):
        assert [words_of(t) for t in page["lines"]] == [words_of(t) for t in lines]
        assert page["source"] == "ocr" and page["dpi"] is None
        assert page["image_size"] == {"width": 667, "height": 417}


async def test_websocket_streams_page_events_and_lines_carry_their_page(config):
    pdf = pdfgen.make_pdf([scan_page(SCAN_LINES), scan_page(TEXT_LINES),
                           pdfgen.text_page(["LAST PAGE"], 20, top=30, left=30, page=PAGE)])
    async with running_server(fast(config)) as server, open_websocket_url(
        server.ws_url + "/v1/ocr/stream"
    ) as ws:
        await ws.send_message(json.dumps({"id": 9, "image": b64(pdf), "pages": "1-3"}))
        events = []
        with trio.fail_after(120):
            while not events or events[-1]["type"] not in ("done", "error"):
                events.append(json.loads(await ws.get_message()))
    assert events[0]["type"] == "accepted" and events[-1]["type"] == "done"
    assert all(e["id"] == 9 for e in events)
    starts = [e for e in events if e["type"] == "page"]
    assert [(e["page"], e["pages"]) for e in starts] == [(1, 3), (2, 3), (3, 3)]
    done_at = {e["page"]: i for i, e in enumerate(events) if e["type"] == "page_done"}
    start_at = {e["page"]: i for i, e in enumerate(events) if e["type"] == "page"}
    assert sorted(done_at) == [1, 2, 3]
    # Pages are read together: the second starts before the first is done.
    assert start_at[2] < done_at[1]
    lines = [e for e in events if e["type"] == "line"]
    assert {e["page"] for e in lines} == {1, 2, 3}
    for e in lines:
        assert start_at[e["page"]] < events.index(e) < done_at[e["page"]]
    by_page = {p: {e["text"] for e in lines if e["page"] == p} for p in (1, 2, 3)}
    assert by_page[3] == {"LAST PAGE"}
    assert {w for t in by_page[1] for w in words_of(t)} == {
        w for t in SCAN_LINES for w in words_of(t)}
    detected = [e for e in events if e["type"] == "detected"]
    assert sorted(e["page"] for e in detected) == [1, 2, 3]
    done = events[-1]
    assert [p["page"] for p in done["pages"]] == [1, 2, 3]
    assert done["pages"][2]["source"] == "text_layer"


async def test_bad_documents_get_their_4xx(config):
    cfg = fast(config, processing={"max_pages": 5})
    locked = pdfgen.make_pdf([pdfgen.text_page(["HELLO"])], user_password="secret")
    six = pdfgen.make_pdf([pdfgen.PageSpec()] * 6)
    async with running_server(cfg) as server, httpx.AsyncClient(
        base_url=server.url, timeout=120
    ) as http:
        async def post(doc, **fields):
            r = await http.post("/v1/ocr/extract", json={"image": b64(doc), **fields})
            return r.status_code, r.json()

        status, body = await post(locked)
        assert (status, body["code"]) == (422, "pdf_encrypted")
        status, body = await post(six)
        assert (status, body["code"]) == (413, "too_many_pages") and "max_pages" in body["error"]
        status, body = await post(six, pages="2-6")
        assert status == 200 and len(body["pages"]) == 5
        status, body = await post(six, pages="7")
        assert (status, body["code"]) == (400, "page_out_of_range")
        status, body = await post(pdfgen.make_pdf([pdfgen.PageSpec(broken=True)] * 2))
        assert (status, body["code"]) == (400, "invalid_pdf")


async def test_a_long_document_holds_only_a_few_rendered_pages_at_once(config, monkeypatch):
    """200 pages (the default max_pages) through the server: no more rendered pages are
    alive at any moment than the orchestrator's image stage admits."""
    alive = 0
    peak = 0
    render = ocr.document._render

    def counted(*args, **kwargs):
        nonlocal alive, peak
        image = render(*args, **kwargs)
        if image is not None:
            alive += 1  # under PDFIUM_LOCK: one render at a time
            peak = max(peak, alive)

            def gone() -> None:
                nonlocal alive
                alive -= 1

            weakref.finalize(image, gone)
        return image

    monkeypatch.setattr(ocr.document, "_render", counted)
    runs = (pdfgen.TextRun("PAGE", 20, 40, 14),)
    pdf = pdfgen.make_pdf([pdfgen.PageSpec(120, 60, texts=runs)] * 200)
    async with running_server(fast(config)) as server, httpx.AsyncClient(
        base_url=server.url, timeout=300
    ) as http:
        r = await http.post("/v1/ocr/extract", json={
            "image": b64(pdf), "pdf_text": "ocr", "dpi": 100})
        stage = server.state.service._orchestrator._image_stage.total_tokens
    body = r.json()
    assert r.status_code == 200, body
    assert len(body["pages"]) == 200 and all(p["success"] for p in body["pages"])
    assert words_of(body["pages"][199]["text"]) == ["PAGE"]
    assert 1 <= peak <= stage <= 8, (peak, stage)
    assert alive == 0

