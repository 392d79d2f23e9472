"""npu.onnx_backend: a recognition call split into per-core shares reads every line as the
whole batch and the line alone do; the backend runs a job per core, two batches side by
side on one core each and a lone batch over every core; it closes its share threads."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import trio

from npu.onnx_backend import OnnxBackend
from ocr.recognition import ctc_greedy_decode, pack_dynamic, resize_for_rec
from web.settings import load_config

#: Lines the recogniser reads exactly (spaces aside).
WORDS = ("Invoice 2024", "Total 12.50", "River Street", "copper pipes", "Thank you!")


def _lines(n: int) -> list[np.ndarray]:
    """Printed text lines (black on white), resized for the recogniser."""
    out = []
    for text in (WORDS * n)[:n]:
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 2)
        crop = np.full((h + 20, w + 20, 3), 255, np.uint8)
        cv2.putText(crop, text, (10, h + 10), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2,
                    cv2.LINE_AA)
        out.append(resize_for_rec(crop))
    return out


@pytest.fixture
def backend():
    b = OnnxBackend(load_config(env={}, overrides={"onnx_models": {"intra_op_threads": 2}}))
    b.load()
    yield b
    b.close()


def test_a_split_batch_reads_each_line_as_the_line_alone(backend):
    """The backend splits a batch of five lines into shares (3 + 2) on two threads: each
    line's probabilities are those of the whole batch run at once, and of the line alone,
    up to float rounding (ONNX Runtime's kernels for one row and for several differ in
    the last bits), and the texts are the same."""
    lines = _lines(5)
    width = max(c.shape[1] for c in lines)
    batch = pack_dynamic(lines, width)
    split = backend._run("recognition_en", batch)
    session = backend._sessions["recognition_en"]
    whole = session.run(None, {backend._input_names["recognition_en"]: batch})[0]
    alone = np.concatenate([backend._run("recognition_en", pack_dynamic([c], width))
                            for c in lines])
    assert split.shape == whole.shape == alone.shape and split.shape[0] == 5
    assert np.allclose(split, whole, atol=1e-5) and np.allclose(split, alone, atol=1e-5)
    charset = backend._info.model("recognition_en").charset
    texts = [t for t, _ in ctc_greedy_decode(split, charset)]
    assert texts == [t for t, _ in ctc_greedy_decode(whole, charset)]
    assert texts == [t for t, _ in ctc_greedy_decode(alone, charset)]
    assert [t.replace(" ", "") for t in texts] == [w.replace(" ", "") for w in WORDS]


def test_close_stops_the_share_threads():
    before = {t.ident for t in threading.enumerate()}
    b = OnnxBackend(load_config(env={}, overrides={"onnx_models": {"intra_op_threads": 2}}))
    b.load()
    b._run("recognition_en", pack_dynamic(_lines(4), max(c.shape[1] for c in _lines(4))))
    assert any(t.name.startswith("onnx-share") for t in threading.enumerate())
    b.close()
    left = [t for t in threading.enumerate() if t.ident not in before]
    assert not [t for t in left if t.name.startswith("onnx-share")], left


def test_the_backend_runs_a_job_per_core(backend):
    assert backend._info.max_jobs_in_flight == 2
    limited = OnnxBackend(load_config(env={}, overrides={
        "onnx_models": {"intra_op_threads": 2}, "backend": {"max_jobs_in_flight": 1},
    }))
    try:
        assert limited.load().max_jobs_in_flight == 1
    finally:
        limited.close()


async def test_two_batches_run_side_by_side_and_a_lone_one_on_every_core(backend):
    """Two 3-line batches sent together run at the same time (each waits at a barrier for
    the other), one core each, unsplit; a batch alone is split over both cores."""
    calls: list[tuple[str, int | None]] = []
    both_running = threading.Barrier(2, timeout=10)
    real = backend._run

    def run(model_id, batch, cores=None):
        calls.append((model_id, cores))
        if len(batch) == 3:
            both_running.wait()
        return real(model_id, batch, cores)

    backend._run = run
    lines = _lines(3)
    batch = pack_dynamic(lines, max(c.shape[1] for c in lines))
    results = []

    async def infer() -> None:
        results.append(await backend.infer("recognition_en", batch))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(infer)
        nursery.start_soon(infer)
    assert calls == [("recognition_en", 1)] * 2
    assert np.allclose(results[0], results[1], atol=1e-5)
    lone = await backend.infer("recognition_en", pack_dynamic(_lines(4), batch.shape[-1]))
    assert calls[-1] == ("recognition_en", 2) and lone.shape[0] == 4
    await backend.infer("detection", np.zeros((1, 3, 64, 64), np.float32))
    assert calls[-1] == ("detection", 2)
