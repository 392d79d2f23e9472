"""Recognition padding: a line is recognised at a width its own size decides, whatever
else is in flight.

The PP-OCR recogniser's output depends on how much zero padding follows a line (measured:
the same crop padded to 640 or 960 columns gives character probabilities up to 0.24
apart), while the same width in batches of different sizes gives identical results. So
the orchestrator gives each crop its own padded width (``ocr.recognition.pad_width``) and
the batcher batches a dynamic-width model's crops only with crops of the same width. These
tests pin that down with a recording fake device; tests/actors/test_service_onnx.py checks,
with the real models, that concurrent requests read the same text as one at a time.
"""

from __future__ import annotations

import numpy as np
import pytest
import trio

import actors.batcher as batcher_module
from actors.messages import RecResult, RecSubmission
from ocr.recognition import pad_width
from tests.support.actor_harness import running_batcher
from tests.support.fakes import FakeDevice, id_crop


@pytest.fixture
def packed(monkeypatch) -> list[tuple[int, list[int]]]:
    """Every batch the batcher packs: (tensor width, widths of the crops in it)."""
    seen: list[tuple[int, list[int]]] = []
    original = batcher_module._pack

    def spy(spec, crops, min_width=0):
        tensor, padded = original(spec, crops, min_width)
        seen.append((int(tensor.shape[-1]), [int(c.shape[1]) for c in crops]))
        return tensor, padded

    monkeypatch.setattr(batcher_module, "_pack", spy)
    return seen


async def _submit(h, ids, crop_widths, pad_widths):
    crops = tuple(id_crop(i, w) for i, w in zip(ids, crop_widths, strict=True))
    send, recv = trio.open_memory_channel[RecResult](len(crops))
    await h.inbox.send(RecSubmission("en", crops, send, tuple(pad_widths)))
    texts = [None] * len(crops)
    async with recv:
        for _ in crops:
            res = await recv.receive()
            assert res.error is None
            texts[res.index] = res.text
    return texts


async def test_crops_are_batched_only_with_crops_of_the_same_pad_width(packed):
    device = FakeDevice(rec_batch_size=8)
    async with running_batcher(device, max_in_flight=1) as h:
        results = {}

        async def client(k, ids, crop_widths, pad_widths):
            results[k] = await _submit(h, ids, crop_widths, pad_widths)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client, 1, [11, 12, 13, 14], [96, 300, 500, 700],
                               [320, 320, 704, 704])
            nursery.start_soon(client, 2, [21, 22, 23], [200, 640, 96], [320, 960, 320])
    assert results[1] == ["11", "12", "13", "14"] and results[2] == ["21", "22", "23"]
    assert packed, "nothing was packed"
    declared = {96: 320, 300: 320, 200: 320, 500: 704, 700: 704, 640: 960}
    for tensor_width, crop_widths in packed:
        # one pad width per batch, and the tensor is exactly that wide
        assert {declared[w] for w in crop_widths} == {tensor_width}


async def test_a_declared_width_below_the_nominal_width_is_kept(packed):
    """Short lines are padded to their own width (at least 96), not to the model's nominal
    320 columns: that is where per-line padding saves most of its columns."""
    device = FakeDevice(rec_batch_size=8)
    async with running_batcher(device, max_in_flight=1) as h:
        texts = await _submit(h, [1, 2, 3], [60, 90, 100], [96, 96, 112])
    assert texts == ["1", "2", "3"]
    assert sorted(packed) == [(96, [60, 90]), (112, [100])]


async def test_without_declared_widths_the_batcher_pads_to_the_widest(packed):
    device = FakeDevice(rec_batch_size=8)
    async with running_batcher(device, max_in_flight=1) as h:
        assert await h.recognise([1, 2], widths=[96, 500]) == ["1", "2"]
    assert packed == [(500, [96, 500])]


def test_rec_inputs_pad_each_line_to_its_own_width():
    """The orchestrator's pieces are resized keeping their aspect ratio, and each is to be
    padded to a width that depends on that piece alone."""
    from actors.orchestrator import _rec_inputs
    from npu.backend import ModelSpec

    spec = ModelSpec(id="recognition_en", kind="recognition", name="m", policy="dynamic",
                     layout="nchw_float", height=48, width=320, batch_size=8)
    rng = np.random.default_rng(5)
    crops = [np.zeros((int(h), int(w), 3), np.uint8)
             for h, w in zip(rng.integers(12, 80, 40), rng.integers(10, 2000, 40), strict=True)]
    pieces, owners, widths = _rec_inputs(crops, spec)
    assert owners == list(range(len(crops))) and widths is not None
    for crop, piece, width in zip(crops, pieces, widths, strict=True):
        h, w = crop.shape[:2]
        assert piece.shape[1] == int(np.ceil(48 * (w / float(h))))  # PaddleOCR's resize
        assert width == pad_width(piece.shape[1])
    # alone or among others, a crop gets the same width
    assert _rec_inputs(crops[:1], spec)[2] == widths[:1]
