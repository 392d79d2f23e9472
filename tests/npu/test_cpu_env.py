"""Process- and thread-level CPU settings (npu/cpu_env.py): denormal flushing in the
thread that calls ONNX Runtime, and one CPU arena shared by every session.

The denormal flags are per thread, so every check runs in a thread of its own whose flags the
test clears first: what a Trio worker thread looks like when it was started before any
session existed.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap
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
from tests.support.paths import REPO

x86_only = pytest.mark.skipif(
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


@x86_only
def test_denormals_are_flushed_inside_the_block_only():
    def inside_and_after() -> tuple[float, bool, float, int, float, int]:
        before = float(DENORMAL * np.float32(1.0))
        with cpu_env.denormals_flushed() as ok:
            inside = float(DENORMAL * np.float32(1.0))
            flags = cpu_env.mxcsr() or 0
        after = float(DENORMAL * np.float32(1.0))
        return before, ok, inside, flags, after, cpu_env.mxcsr() or 0

    before, ok, inside, flags, after, flags_after = _in_fresh_thread(inside_and_after)
    assert before == pytest.approx(1e-39, rel=1e-3)  # denormals computed as such
    assert ok and flags & 0x8040 == 0x8040
    assert inside == 0.0  # DAZ: a denormal operand counts as zero
    # the thread's own flags come back: Trio's worker threads are shared
    assert after == pytest.approx(1e-39, rel=1e-3) and flags_after & 0x8040 == 0


@pytest.fixture(scope="module")
def backend() -> OnnxBackend:
    from web.settings import load_config

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


@x86_only
def test_loading_a_backend_leaves_the_loading_threads_flags_as_they_were():
    """ONNX Runtime sets FTZ/DAZ in the thread that creates a session; the backend puts
    the loading thread's flags back."""
    from web.settings import load_config

    def load() -> float:
        b = OnnxBackend(load_config(env={}))
        b.load()
        b.close()
        return float(DENORMAL * np.float32(1.0))

    assert _in_fresh_thread(load) > 0.0


class _FlagRecorder:
    """Wraps an ONNX Runtime session and records the calling thread's MXCSR at run()."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.flags: list[int] = []

    def run(self, *args: Any) -> Any:
        self.flags.append(cpu_env.mxcsr() or 0)
        return self.session.run(*args)


@x86_only
def test_detection_flushes_in_its_worker_thread_and_gives_the_same_map(backend, devdata):
    """A worker thread running a detection has the flags during the call (the
    speed-up) and its own back after it, and the
    probability map is bit-identical to a session without any denormal setting (the
    flags change no result on a real receipt)."""
    import onnxruntime as ort

    tensor = _receipt_tensor(devdata)

    recorder = _FlagRecorder(backend._sessions["detection"])
    backend._sessions["detection"] = recorder
    try:

        def run_and_read_flags() -> tuple[np.ndarray, int]:
            out = backend._run("detection", tensor)
            return out, cpu_env.mxcsr() or 0

        ours, flags_after = _in_fresh_thread(run_and_read_flags)
    finally:
        backend._sessions["detection"] = recorder.session
    assert recorder.flags and recorder.flags[0] & 0x8040 == 0x8040  # set while it runs
    assert flags_after & 0x8040 == 0  # and the worker thread's own flags back after

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


def test_sessions_share_one_arena_that_gives_detection_memory_back(tmp_path):
    """In a fresh process (peak RSS is per process): two backends load (the arena is
    registered once and both use it), a 2 Mpx detection takes its working set from the
    shared arena, and the arena is shrunk afterwards, so most of it goes back."""
    script = textwrap.dedent(
        """
        import numpy as np
        from npu.onnx_backend import OnnxBackend
        from web.settings import load_config

        def mb(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) / 1024

        backends = [OnnxBackend(load_config(env={})) for _ in range(2)]
        for b in backends:
            b.load()
        assert all(b._shared_arena for b in backends)
        x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 1024, 2048)).astype(np.float32)
        before = mb("VmRSS")
        maps = [b._run("detection", x) for b in backends]
        assert np.array_equal(maps[0], maps[1])
        print(before, mb("VmHWM"), mb("VmRSS"))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        cwd=str(REPO),
    )
    assert out.returncode == 0, out.stderr
    before, peak, after = map(float, out.stdout.split()[-3:])
    assert peak - before > 150  # the detection did need its working set
    assert after - before < 0.5 * (peak - before)  # and most of it went back


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_trim_gives_free_heap_pages_back():
    """Freed heap blocks between live ones stay resident until trimmed (in a fresh
    process with the service's malloc settings: 1 MB blocks are below the 4 MB mmap
    threshold, so they live in the heap)."""
    script = textwrap.dedent(
        """
        import numpy as np
        from npu.cpu_env import bound_malloc, trim_malloc

        def mb():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024

        bound_malloc()
        blocks, pins = [], []
        for _ in range(200):  # 200 x 1 MB, each followed by a small live block
            blocks.append(np.ones(1 << 18, dtype=np.float32))
            pins.append(np.ones(1 << 10, dtype=np.float32))
        del blocks  # free, but between live blocks: the heap cannot shrink from its top
        before = mb()
        trim_malloc()
        print(before, mb(), len(pins))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        cwd=str(REPO),
    )
    assert out.returncode == 0, out.stderr
    before, after = map(float, out.stdout.split()[:2])
    assert before - after > 100
