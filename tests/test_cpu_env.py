"""Denormal flushing for ONNX Runtime's calling thread (npu/cpu_env.py).

The flags are per thread, so every check runs in a thread of its own whose flags the
test clears first: what a Trio worker thread looks like when it was started before any
session existed.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from npu import cpu_env
from npu.models import SHIPPED_DETECTION, shipped_model
from npu.onnx_backend import OnnxBackend
from ocr.decode import decode_image
from ocr.detection import DynamicDetParams, prepare_dynamic, to_nchw_normalised

pytestmark = pytest.mark.skipif(
    cpu_env.mxcsr() is None, reason="FTZ/DAZ are x86-64 flags; elsewhere flushing is a no-op"
)

#: The smallest positive float32 is 1.4e-45; 1e-39 is denormal.
DENORMAL = np.float32(1e-39)


def _clear_ftz_daz() -> None:
    libm = ctypes.CDLL("libm.so.6")
    env = (ctypes.c_uint8 * 32)()
    assert libm.fegetenv(env) == 0
    value = int.from_bytes(bytes(env[28:32]), "little") & ~0x8040
    env[28:32] = list(value.to_bytes(4, "little"))
    assert libm.fesetenv(env) == 0


def _in_fresh_thread(body: Callable[[], Any]) -> Any:
    """Run ``body`` in a new thread with FTZ/DAZ cleared (and the once-per-thread memo
    empty, as in any new thread); return what it returns or raise what it raises."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            _clear_ftz_daz()
            out["value"] = body()
        except BaseException as exc:  # re-raised in the test's thread
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive()
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_flushing_makes_denormals_zero_in_the_calling_thread_only():
    def before_and_after() -> tuple[float, bool, float, int]:
        before = float(DENORMAL * np.float32(1.0))
        ok = cpu_env.flush_denormals_in_this_thread()
        after = float(DENORMAL * np.float32(1.0))
        return before, ok, after, cpu_env.mxcsr() or 0

    before, ok, after, mxcsr = _in_fresh_thread(before_and_after)
    assert before == pytest.approx(1e-39, rel=1e-3)  # denormals computed as such
    assert ok and mxcsr & 0x8040 == 0x8040
    assert after == 0.0  # DAZ: a denormal operand counts as zero

    # another thread keeps its own flags
    assert _in_fresh_thread(lambda: float(DENORMAL * np.float32(1.0))) > 0.0


@pytest.fixture(scope="module")
def backend() -> OnnxBackend:
    from ocr.config import load_config

    b = OnnxBackend(load_config(env={}))
    b.load()
    yield b
    b.close()


def _receipt_tensor(devdata: Path) -> np.ndarray:
    img = decode_image(
        (devdata / "sroie_dev" / "images" / "006.jpg").read_bytes(), max_pixels=50_000_000
    )
    params = DynamicDetParams(limit_side_len=736, limit_type="min", max_side_len=2000)
    return to_nchw_normalised(prepare_dynamic(img, params)[0])


def test_detection_flushes_in_its_worker_thread_and_gives_the_same_map(backend, devdata):
    """A worker thread that runs a detection gets the flags (the speed-up), and the
    probability map is bit-identical to a session without any denormal setting (the
    flags change no result on a real receipt)."""
    import onnxruntime as ort

    tensor = _receipt_tensor(devdata)

    def run_and_read_flags() -> tuple[np.ndarray, int]:
        out = backend._run("detection", tensor)
        return out, cpu_env.mxcsr() or 0

    ours, flags = _in_fresh_thread(run_and_read_flags)
    assert flags & 0x8040 == 0x8040

    def plain() -> np.ndarray:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        session = ort.InferenceSession(
            str(shipped_model(SHIPPED_DETECTION)), opts, providers=["CPUExecutionProvider"]
        )
        return session.run(None, {session.get_inputs()[0].name: tensor})[0][:, 0]

    reference = _in_fresh_thread(plain)
    assert ours.shape == reference.shape
    assert np.array_equal(ours, reference)
