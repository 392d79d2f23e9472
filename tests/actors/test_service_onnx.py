"""The actor tree end to end with the real ONNX backend on real images: concurrent
requests, whose crops share recognition batches, read the same text as the same images
processed one at a time, and the service closes without leaving work behind."""

from __future__ import annotations

import threading

import pytest
import trio

from actors.messages import OcrRequest
from actors.service import open_ocr_service
from tests.support.config import with_changes

pytestmark = [pytest.mark.devdata, pytest.mark.slow]

#: Small real images with several lines each (English, Chinese and digits), so a run is
#: quick on a CPU and concurrent requests really do share batches.
IMAGES = ("rapidocr_tests/ch_en_num.jpg", "rapidocr_tests/return_word_debug.jpg")


@pytest.mark.parametrize("fixed_batch", [False, True], ids=["dynamic", "fixed_batch"])
async def test_concurrent_requests_read_the_same_text_as_one_at_a_time(
    config, devdata, fixed_batch
):
    cfg = with_changes(
        config, onnx_models={"fixed_batch": fixed_batch, "batch_size_rec": 8},
        server={"request_timeout_s": 300.0}, backend={"job_timeout_s": 120.0},
    )
    images = {name: (devdata / name).read_bytes() for name in IMAGES}
    before = {t.ident for t in threading.enumerate()}
    async with open_ocr_service(cfg) as svc:
        # fixed_batch emulates the NPU's compiled recogniser: fixed batch and fixed width.
        rec = svc.info.model("recognition_en")
        assert (rec.policy, rec.width, rec.fixed_batch) == (
            ("fixed", 320, True) if fixed_batch else ("dynamic", 320, False)
        )
        alone = {}
        for name, data in images.items():
            result = await svc.extract(OcrRequest(data, ("en",)))
            alone[name] = [(r.text, r.bbox) for r in result.regions]
        batches_alone = svc.statistics().batcher.batches

        together = {}

        async def client(name, data):
            result = await svc.extract(OcrRequest(data, ("en",)))
            together[name] = [(r.text, r.bbox) for r in result.regions]

        async with trio.open_nursery() as nursery:
            for name, data in images.items():
                nursery.start_soon(client, name, data)
        stats = svc.statistics()
    assert sum(len(v) for v in alone.values()) >= 10  # real text was read
    assert together == alone
    assert stats.requests_failed == 0 and stats.batcher.crops_dropped == 0
    assert stats.batcher.batches - batches_alone >= 1
    if fixed_batch:
        assert stats.batcher.slots_padded > 0
        assert stats.batcher.slots_run == 8 * stats.batcher.batches
    leftover = [
        t.name for t in threading.enumerate()
        if t.ident not in before and not t.name.startswith("Trio thread")
    ]
    assert leftover == []


async def test_the_angle_classifier_turns_an_upside_down_image_not_single_lines(
    config, devdata
):
    """With ``ocr.use_angle_cls`` an image whose lines are upside down (text_cls.jpg is
    printed upside down) reads as the same image turned the right way up does without
    the classifier (the same characters: detection, run before the classifier, cuts the
    lines differently); an upright image reads exactly as it does without it."""
    import cv2
    import numpy as np

    upside = (devdata / "rapidocr_tests" / "text_cls.jpg").read_bytes()
    img = cv2.imdecode(np.frombuffer(upside, np.uint8), cv2.IMREAD_COLOR)
    ok, righted = cv2.imencode(".png", cv2.rotate(img, cv2.ROTATE_180))
    assert ok
    upright = (devdata / "rapidocr_tests" / "ch_en_num.jpg").read_bytes()

    async def read(cfg, data):
        async with open_ocr_service(cfg) as svc:
            result = await svc.extract(OcrRequest(data, ("zh",)))
        return [r.text for r in result.regions]

    with_cls = with_changes(config, ocr={"use_angle_cls": True})
    turned = "".join(await read(with_cls, upside))
    # the same characters; the turned-first image is detected as two overlapping lines
    assert turned and set(turned) == set("".join(await read(config, righted.tobytes())))
    assert turned != "".join(await read(config, upside))
    assert await read(with_cls, upright) == await read(config, upright)
