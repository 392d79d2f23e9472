"""The replay device of the host-cost benchmark: what it records is what it replays,
frame by frame in any batch; an unrecorded frame fails loudly; the modelled NPU runs one
job at a time for the Hailo-10H figures."""

from __future__ import annotations

import numpy as np
import pytest
import trio
import trio.testing

from benchmarks.replay_device import (
    DET_SIZE,
    HAILO10H,
    REC_SIZE,
    ReplayBackend,
)
from npu.backend import recognition_id
from npu.errors import InferenceError, ModelLoadError
from ocr.recognition import ctc_greedy_decode


def _frames(seed: int, n: int, size: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A store holding one detection frame and five recognition frames, recorded with
    the real ONNX models; and what the recording run answered."""
    store = tmp_path_factory.mktemp("replay")
    det = _frames(1, 1, DET_SIZE)
    rec = _frames(2, 5, REC_SIZE)

    async def main():
        dev = ReplayBackend(store, record=True)
        info = await trio.to_thread.run_sync(dev.load)
        det_out = await dev.infer("detection", det)
        rec_out = await dev.infer("recognition_en", rec)
        await trio.to_thread.run_sync(dev.close)
        return info, np.array(det_out), np.array(rec_out), dev.statistics()

    info, det_out, rec_out, stats = trio.run(main)
    assert stats.recorded == 6
    return store, info, det, rec, det_out, rec_out


def test_hailo_shapes(recorded):
    _, info, *_ = recorded
    det = info.model("detection")
    assert (det.height, det.width, det.layout, det.policy) == (544, 960, "nhwc_uint8_rgb", "fixed")
    for lang in ("en", "zh"):
        rec = info.model(recognition_id(lang))
        assert (rec.height, rec.width, rec.batch_size) == (48, 320, 8)
        assert rec.charset and len(rec.charset) == rec.output_shape[1]


def test_replay_answers_each_frame_as_recorded_in_any_batch(recorded):
    store, _, det, rec, det_out, rec_out = recorded

    async def main():
        dev = ReplayBackend(store)
        await trio.to_thread.run_sync(dev.load)
        d = await dev.infer("detection", det)
        # Other batches than at recording: reversed, and two of the frames alone.
        r = await dev.infer("recognition_zh", rec[::-1].copy())
        r2 = await dev.infer("recognition_en", rec[1:3].copy())
        return np.array(d), np.array(r), np.array(r2), dev.statistics()

    d, r, r2, stats = trio.run(main)
    assert np.array_equal(d, det_out)
    charset = recorded[1].model("recognition_en").charset
    want = ctc_greedy_decode(rec_out, charset)
    assert ctc_greedy_decode(r, charset) == want[::-1]
    assert ctc_greedy_decode(r2, charset) == want[1:3]
    assert stats.missing == 0 and stats.recorded == 0 and stats.busy_s == 0


def test_an_answer_still_held_is_never_overwritten_by_the_next(recorded):
    store, _, _, rec, _, rec_out = recorded

    async def main():
        dev = ReplayBackend(store)
        await trio.to_thread.run_sync(dev.load)
        first = await dev.infer("recognition_en", rec[:2].copy())
        kept = np.array(first)
        second = await dev.infer("recognition_en", rec[3:].copy())  # other frames
        assert np.array_equal(first, kept)  # the first buffer was not reused
        assert not np.shares_memory(first, second)
        del first, second
        third = await dev.infer("recognition_en", rec[4:].copy())  # a buffer is free again
        assert np.array_equal(np.array(third)[0], rec_out[4])

    trio.run(main)


def test_an_unrecorded_frame_fails_and_a_wrong_shape_too(recorded, tmp_path):
    store = recorded[0]

    async def main():
        dev = ReplayBackend(store)
        await trio.to_thread.run_sync(dev.load)
        with pytest.raises(InferenceError, match="no recorded detection output"):
            await dev.infer("detection", _frames(9, 1, DET_SIZE))
        with pytest.raises(InferenceError, match="takes uint8 frames"):
            await dev.infer("recognition_en", _frames(9, 1, (48, 100)))
        assert dev.statistics().missing == 1
        with pytest.raises(ModelLoadError, match="record first"):
            ReplayBackend(tmp_path / "empty").load()

    trio.run(main)


def test_modelled_npu_runs_one_job_at_a_time(recorded):
    store, _, det, rec, *_ = recorded
    finished: list[tuple[str, float]] = []

    async def main():
        dev = ReplayBackend(store, latency=HAILO10H)
        await trio.to_thread.run_sync(dev.load)

        async def job(model: str, frames: np.ndarray) -> None:
            await dev.infer(model, frames)
            finished.append((model, trio.current_time()))

        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(job, "detection", det)
            await trio.sleep(0.001)
            nursery.start_soon(job, "recognition_en", rec)
        return t0, dev.statistics()

    t0, stats = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0.05))
    det_s, rec_s = HAILO10H.job_s("detection", 1), HAILO10H.job_s("recognition", 5)
    assert det_s == pytest.approx(1 / 22.5) and HAILO10H.job_s("recognition", 8) == (
        pytest.approx(8 / 399))
    assert [m for m, _ in finished] == ["detection", "recognition_en"]
    assert finished[0][1] - t0 == pytest.approx(det_s, abs=1e-6)
    assert finished[1][1] - t0 == pytest.approx(det_s + rec_s, abs=1e-6)  # after, not beside
    assert stats.busy_s == pytest.approx(det_s + rec_s)
