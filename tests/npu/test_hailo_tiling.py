"""Tiled detection through the whole service on the HailoRT stand-in (fixed 544x960 input).

A tall receipt letterboxed whole into the landscape detector shrinks until its text is a
few pixels high (SROIE 030: 6 regions against the CPU backend's 40, word F1 0.19). Cut
into overlapping tiles (ocr/tiling.py) it reads like the CPU backend; a landscape image
still goes through as one letterbox, in one detection job.
"""

from __future__ import annotations

import sys
from collections import Counter

import cv2
import numpy as np
import pytest

from tests.support.images import encode
from tests.support.paths import STANDIN

sys.path.insert(0, str(STANDIN))

from hailo_platform import _standin  # noqa: E402  (the stand-in)
from hailo_testing import DET_SHAPE, hailo_config  # noqa: E402

from actors.messages import OcrRequest  # noqa: E402
from actors.orchestrator import PipelineSettings  # noqa: E402
from actors.service import open_ocr_service  # noqa: E402
from ocr.tiling import plan_tiles  # noqa: E402
from tests.support.compare import bag_f1, english_only, read_on_each  # noqa: E402

#: Tall SROIE receipts the single letterbox reads worst (word F1 against the CPU backend:
#: 0.19, 0.70 and 0.78 before tiling).
TALL_RECEIPTS = ("030.jpg", "054.jpg")  # the worst two before tiling (F1 0.19, 0.70)


pytestmark = pytest.mark.usefixtures("hailo_standin")


@pytest.fixture
def hcfg(config, hailo_files):
    return hailo_config(config, hailo_files, timeout_ms=20000)


def line_f1(regions, lines: list[str]) -> float:
    """F1 over whole lines, spaces ignored (the recogniser drops some between words
    of this font; the question here is whether every line is found once)."""
    return bag_f1(Counter(reg.text.replace(" ", "") for reg in regions),
                  Counter(t.replace(" ", "") for t in lines))


def _plan_for(config, h: int, w: int):
    det = PipelineSettings.from_config(config).det
    return plan_tiles(h, w, DET_SHAPE[0], DET_SHAPE[1], det)


def tall_receipt(config) -> tuple[np.ndarray, list[str], str]:
    """A narrow 1800 x 520 "receipt" of numbered lines, one line drawn across the
    first seam between tiles. Returns the image, its lines, and the seam line."""
    h, w = 1800, 520
    img = np.full((h, w, 3), 255, np.uint8)
    plan = _plan_for(config, h, w)
    assert plan.tiled
    seam = plan.tiles[0].y1  # tile 0 ends here, across the line drawn on it
    lines, seam_line = [], "SEAMLINE 77 CROSSING"
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.9, 2
    y = 50
    while y < h - 30:
        if abs(y - seam) < 40 and seam_line not in lines:
            text, base = seam_line, seam + 10  # the cut falls through its letters
        else:
            text, base = f"ITEM {len(lines) + 1:02d} COFFEE {len(lines) * 3 + 1}.50", y
        cv2.putText(img, text, (20, base), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
        lines.append(text)
        y = base + 42
    return img, lines, seam_line


async def test_a_tall_receipt_is_read_in_tiles_and_a_seam_line_once(config, hcfg, hailo_files):
    img, lines, seam_line = tall_receipt(config)
    plan = _plan_for(config, *img.shape[:2])
    # Letterboxed whole, 22-pixel letters would be 6 pixels high: nothing to read.
    assert min(DET_SHAPE[0] / img.shape[0], DET_SHAPE[1] / img.shape[1]) < 0.31
    async with open_ocr_service(hcfg) as service:
        before = _standin.jobs_run(str(hailo_files.det))
        r = await service.extract(OcrRequest(encode(img), ("en",)))
        det_jobs = _standin.jobs_run(str(hailo_files.det)) - before
    assert det_jobs == len(plan.tiles) >= 3  # one job per tile (batch_size_det 1)
    assert line_f1(r.regions, lines) >= 0.9, r.text
    seam_regions = [reg for reg in r.regions if "SEAMLINE" in reg.text]
    assert len(seam_regions) == 1, [reg.text for reg in r.regions]
    assert seam_regions[0].text.replace(" ", "") == seam_line.replace(" ", "")
    # The box is in image pixels, around the line drawn across the seam.
    ys = [p[1] for p in seam_regions[0].bbox]
    assert min(ys) < plan.tiles[0].y1 < max(ys)


async def test_tiles_go_to_the_device_in_batches_of_batch_size_det(config, hailo_files):
    cfg = hailo_config(config, hailo_files, timeout_ms=20000, batch_size_det=4)
    img, lines, _ = tall_receipt(config)
    n_tiles = len(_plan_for(config, *img.shape[:2]).tiles)
    async with open_ocr_service(cfg) as service:
        assert service.info.kind == "hailo"
        before = _standin.jobs_run(str(hailo_files.det))
        r = await service.extract(OcrRequest(encode(img), ("en",)))
        det_jobs = _standin.jobs_run(str(hailo_files.det)) - before
    assert det_jobs == -(-n_tiles // 4) < n_tiles
    assert line_f1(r.regions, lines) >= 0.9, r.text


async def test_a_landscape_image_is_still_one_letterbox(config, hcfg, hailo_files):
    h, w = 720, 1280
    assert not _plan_for(config, h, w).tiled
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.putText(img, "LANDSCAPE 2024", (200, 380), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (0, 0, 0), 4,
                cv2.LINE_AA)
    async with open_ocr_service(hcfg) as service:
        before = _standin.jobs_run(str(hailo_files.det))
        r = await service.extract(OcrRequest(encode(img), ("en",)))
        assert _standin.jobs_run(str(hailo_files.det)) - before == 1
    assert r.text.replace(" ", "") == "LANDSCAPE2024"


@pytest.mark.devdata
@pytest.mark.slow
async def test_tall_receipts_read_like_the_cpu_backend(devdata, devdata_score, config, hcfg,
                                                       hailo_files):
    score = devdata_score
    paths = [devdata / "sroie_dev" / "images" / name for name in TALL_RECEIPTS]
    results = await read_on_each({"hailo": hcfg, "onnx": english_only(config)}, paths)
    bags = {kind: [Counter(w for reg in r.regions for w in score.tokens(reg.text)) for r in rs]
            for kind, rs in results.items()}
    regions = {kind: [len(r.regions) for r in rs] for kind, rs in results.items()}
    assert _standin.jobs_run(str(hailo_files.det)) >= 1 + 2 * len(paths)  # warm-up + tiles
    for i, name in enumerate(TALL_RECEIPTS):
        assert sum(bags["onnx"][i].values()) > 60  # the receipts really have text
        f1 = bag_f1(bags["hailo"][i], bags["onnx"][i])
        assert f1 >= 0.85, f"{name}: word F1 Hailo vs CPU {f1:.3f}"
        # Every line found, none twice from overlapping tiles.
        assert abs(regions["hailo"][i] - regions["onnx"][i]) <= 2, (name, regions)
