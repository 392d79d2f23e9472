"""Synthetic text with known ground truth, end to end through the service.

Lines are rendered at test time (tests/support/textgen.py) with every installed font of the
list, several sizes, rotations up to 10 degrees and Gaussian noise, from a fixed seed.
The character error rate over all lines must stay at or under 2 %, for English and (when
a CJK font is installed) for Chinese.
"""

from __future__ import annotations

import random
import unicodedata

import pytest
import trio
from rapidfuzz.distance import Levenshtein

from actors.messages import OcrRequest
from actors.service import open_ocr_service
from ocr.document import DocumentOptions
from tests.support import textgen
from tests.support.config import with_changes

MAX_CER = 0.02
SIZES = (20, 28, 40)
SEED = 20240611


def _samples(fonts, words, n: int, words_per_line: tuple[int, int], sep: str, seed: int,
             per_page: int = 6):
    """Pages of ``per_page`` lines each, ``n`` lines in all, cycling through fonts and sizes,
    each line with its own random angle and noise. Several lines share a page because a
    lone line would be scaled up to the detector's 704-pixel short side, which costs more
    than the whole page. Returns ``(truth_lines, page)`` pairs."""
    rng = random.Random(seed)
    pages = []
    lines: list[str] = []
    images = []
    for k in range(n):
        font = fonts[k % len(fonts)] if fonts else None
        size = SIZES[(k // max(1, len(fonts))) % len(SIZES)]
        text = textgen.random_line(rng, words, rng.randint(*words_per_line), sep=sep)
        angle = rng.uniform(-10, 10)
        noise = rng.choice((0.0, 6.0, 12.0))
        lines.append(text)
        images.append(textgen.render_line(text, font, size, angle=angle, noise=noise, rng=rng))
        if len(lines) == per_page or k == n - 1:
            pages.append((tuple(lines), textgen.stack(images)))
            lines, images = [], []
    return pages


def _norm(s: str, drop_spaces: bool) -> str:
    s = unicodedata.normalize("NFKC", s)
    return "".join(s.split()) if drop_spaces else " ".join(s.split())


async def _cer(config, samples, language: str, drop_spaces: bool) -> tuple[float, list]:
    cfg = with_changes(config, server={"request_timeout_s": 120.0})
    results: dict[int, str] = {}
    async with open_ocr_service(cfg) as service:
        limiter = trio.CapacityLimiter(4)

        async def one(k, img):
            async with limiter:
                r = await service.extract(OcrRequest(textgen.encode(img), (language,)))
                results[k] = r.text

        async with trio.open_nursery() as nursery:
            for k, (_, img) in enumerate(samples):
                nursery.start_soon(one, k, img)
    edits = total = 0
    wrong = []
    for k, (truth, _) in enumerate(samples):
        # lines compared in reading order: a line read out of place counts as errors
        t, p = _norm(" ".join(truth), drop_spaces), _norm(results[k], drop_spaces)
        e = Levenshtein.distance(p, t)
        edits += e
        total += len(t)
        if e:
            wrong.append((truth, results[k]))
    return edits / total, wrong


async def test_english_character_error_rate(config):
    fonts = textgen.latin_fonts()  # [] -> OpenCV Hershey fonts
    samples = _samples(fonts, textgen.ENGLISH_WORDS, 36, (2, 6), " ", SEED)
    cer, wrong = await _cer(config, samples, "en", drop_spaces=False)
    assert cer <= MAX_CER, f"CER {cer:.3%}; misread: {wrong}"


async def test_chinese_character_error_rate(config):
    fonts = textgen.cjk_fonts()
    if not fonts:
        pytest.skip(
            "no CJK font installed (looked for " + ", ".join(textgen.CJK_FONTS) + "); "
            "install fonts-noto-cjk to test Chinese"
        )
    if "zh" not in config.ocr.languages:
        pytest.skip("Chinese is not among the configured languages")
    samples = _samples(fonts, textgen.CHINESE_WORDS, 24, (2, 5), "", SEED + 1)
    # spaces carry no meaning in Chinese: compared without them (score.py's CER_nospace)
    cer, wrong = await _cer(config, samples, "zh", drop_spaces=True)
    assert cer <= MAX_CER, f"CER {cer:.3%}; misread: {wrong}"


async def test_pdf_pages_character_error_rate_per_page(config):
    """A PDF written at test time: scanned-style pages (the synthetic lines above, each
    page a JPEG image, no text layer) and printed pages (Helvetica in a text layer),
    all rendered by PDFium and read by OCR (``pdf_text: ocr``); then ``auto``, which
    reads the printed pages from their text layer. The CER target holds for each page."""
    from tests.support import pdfgen

    fonts = textgen.latin_fonts()
    scans = _samples(fonts, textgen.ENGLISH_WORDS, 18, (2, 6), " ", SEED + 2)
    rng = random.Random(SEED + 3)
    printed = [tuple(textgen.random_line(rng, textgen.ENGLISH_WORDS, rng.randint(3, 6))
                     for _ in range(8)) for _ in range(2)]
    specs, truths = [], []
    for k, (truth, img) in enumerate(scans):
        specs.append(pdfgen.scanned_page(img, 150))
        truths.append(truth)
        if k < len(printed):
            specs.append(pdfgen.text_page(printed[k], 11, page=(420.0, 300.0)))
            truths.append(printed[k])
    pdf = pdfgen.make_pdf(specs)
    cfg = with_changes(config, server={"request_timeout_s": 120.0})
    async with open_ocr_service(cfg) as service:
        by_ocr = await service.extract(OcrRequest(pdf, ("en",), options=DocumentOptions(
            pdf_text="ocr")))
        auto = await service.extract(OcrRequest(pdf, ("en",)))
    assert len(by_ocr.pages) == len(truths) == 5
    for page, truth in zip(by_ocr.pages, truths, strict=True):
        t, p = _norm(" ".join(truth), False), _norm(page.text, False)
        cer = Levenshtein.distance(p, t) / len(t)
        assert page.source == "ocr" and cer <= MAX_CER, (page.page, f"CER {cer:.3%}", p, t)
    sources = [p.source for p in auto.pages]
    assert sources == ["ocr", "text_layer", "ocr", "text_layer", "ocr"]
    for page, truth in zip(auto.pages, truths, strict=True):
        if page.source == "text_layer":
            assert page.lines == truth  # exact: no OCR involved


def test_generator_is_deterministic():
    fonts = textgen.latin_fonts()
    a = _samples(fonts, textgen.ENGLISH_WORDS, 3, (2, 4), " ", 7)
    b = _samples(fonts, textgen.ENGLISH_WORDS, 3, (2, 4), " ", 7)
    assert [t for t, _ in a] == [t for t, _ in b] and len(a[0][0]) == 3
    assert all((x == y).all() for (_, x), (_, y) in zip(a, b, strict=True))
