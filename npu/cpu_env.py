"""Process- and thread-level CPU settings that ONNX Runtime's speed and memory depend on.

Three things outside ONNX Runtime's session options decide how fast and how large the
CPU backend runs, and all three are per process or per thread, not per session:

* **glibc malloc** (:func:`bound_malloc`): how many arenas worker threads spread freed
  memory over, and which blocks go back to the system; :func:`trim_malloc` gives free
  heap pages back before each detection.
* **denormal floats** (:func:`denormals_flushed`): PP-OCR's detector
  produces denormal (tiny, subnormal) intermediates. x86 cores handle those in microcode,
  at many times the cost of a normal multiply, unless the thread's MXCSR register has
  flush-to-zero (FTZ) and denormals-are-zero (DAZ) set. ONNX Runtime's
  ``session.set_denormal_as_zero`` sets them in its own pool threads and in the thread
  that creates the session, but the thread that calls ``run()`` computes a share of every
  operator too, and that is one of Trio's worker threads. Detection took 2-3x as long
  without the flags; the outputs are bit-identical either way (benchmarks/RESULTS.md).
* **ONNX Runtime's CPU arena** (:func:`shared_cpu_arena`): one arena registered with
  ONNX Runtime's process-wide environment and used by every session, rather than one per
  session, so memory a detection freed is there for recognition to reuse. Peak RSS under
  load fell from 650-700 MB to 575-607 MB at the same speed (benchmarks/RESULTS.md).

The malloc and denormal settings are no-ops where they do not apply (not glibc; not
x86-64).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import platform
import sys
import threading
from collections.abc import Iterator

#: glibc's mallopt parameter numbers (malloc.h).
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: Blocks from this size up are mmapped and go back to the system when freed. Setting it
#: also stops glibc raising the threshold (up to 32 MB) after large frees, which left
#: tensors of 4-32 MB in the heap, fragmenting it.
_MMAP_THRESHOLD = 4 * 1024 * 1024
_malloc_lock = threading.Lock()
_malloc_tuned: list[bool] = []

#: x86-64 ``fenv_t`` (glibc and musl): 32 bytes, the SSE control register at byte 28.
_FENV_SIZE = 32
_MXCSR_OFFSET = 28
#: MXCSR bits: flush-to-zero (15) and denormals-are-zero (6).
_FTZ_DAZ = 0x8040
_X86_64 = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")
_arena_lock = threading.Lock()
_arena_registered: list[bool] = []


def bound_malloc() -> None:
    """Limit glibc to two malloc arenas and fix its mmap threshold at 4 MB (once per
    process; a no-op off glibc).

    Decoded images, crops and batches are allocated in Trio's worker threads, and glibc
    gives each thread that allocates its own arena (up to 8 per core), so freed memory
    sits in many half-empty arenas instead of being reused: under load that cost
    300-500 MB of peak RSS (benchmarks/RESULTS.md). The fixed threshold sends
    the 4-32 MB blocks (detection inputs, probability maps, arena chunks) back to the
    system when freed; with ONNX Runtime's arena on it costs no speed (benchmarks/RESULTS.md)."""
    with _malloc_lock:
        if _malloc_tuned:
            return
        _malloc_tuned.append(True)
        libc = _libc()
        if libc is not None:  # not glibc (musl, macOS): nothing to tune
            libc.mallopt(_M_ARENA_MAX, 2)
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def trim_malloc() -> None:
    """Give free heap pages back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    Called before each detection, the largest working set the service allocates: under
    concurrency the heap holds freed crops, batches and request bodies in pages that a
    detection would otherwise stack its ~350 MB on. Trimming there lowered peak RSS in
    the full load run by ~30 MB and its spread between runs, at no measurable cost
    (benchmarks/RESULTS.md)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, loaded once (every inference call may use it); None elsewhere."""
    try:
        lib = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None


@functools.cache
def _libm() -> ctypes.CDLL | None:
    """The C maths library (``fegetenv``/``fesetenv``), loaded once: every inference
    call reads and restores the floating-point environment through it."""
    try:
        return ctypes.CDLL("libm.so.6")
    except OSError:
        try:
            return ctypes.CDLL(None)  # musl: the C library holds the fenv functions
        except OSError:
            return None


def _get_env() -> tuple[ctypes.CDLL, ctypes.Array, int] | None:
    """The calling thread's floating-point environment and its MXCSR value, or None off
    x86-64 Linux (or without a C library that has ``fegetenv``)."""
    libm = _libm() if _X86_64 else None
    if libm is None:
        return None
    env = (ctypes.c_uint8 * _FENV_SIZE)()
    if libm.fegetenv(env) != 0:
        return None
    return libm, env, int.from_bytes(bytes(env[_MXCSR_OFFSET : _MXCSR_OFFSET + 4]), "little")


def mxcsr() -> int | None:
    """The calling thread's SSE control register, or None off x86-64 Linux."""
    got = _get_env()
    return None if got is None else got[2]


@contextlib.contextmanager
def fp_flags_kept() -> Iterator[None]:
    """Restore the calling thread's floating-point environment on exit.

    ONNX Runtime sets FTZ/DAZ in whichever thread creates a session; loading a backend
    in a caller's thread should not change how that thread computes afterwards (a test
    runner's thread, say, where Hypothesis checks that subnormal floats still exist)."""
    got = _get_env()
    try:
        yield
    finally:
        if got is not None:
            libm, env, _ = got
            libm.fesetenv(env)


@contextlib.contextmanager
def denormals_flushed() -> Iterator[bool]:
    """FTZ and DAZ set in the calling thread for the block, its own flags back after.

    Yields whether the flags are set: off x86-64 Linux nothing changes (ONNX Runtime's own
    setting is x86-only too, and ARM cores handle denormals in hardware). Scoped, not
    left behind: Trio's worker threads are shared, and whatever runs next in one (a
    decode, a test's Hypothesis strategies) should compute with the usual IEEE rules."""
    got = _get_env()
    if got is None:
        yield False
        return
    libm, env, value = got
    flushed = (ctypes.c_uint8 * _FENV_SIZE).from_buffer_copy(env)
    flushed[_MXCSR_OFFSET : _MXCSR_OFFSET + 4] = list((value | _FTZ_DAZ).to_bytes(4, "little"))
    try:
        ok = libm.fesetenv(flushed) == 0
        yield ok
    finally:
        libm.fesetenv(env)


def shared_cpu_arena() -> bool:
    """Register one CPU arena allocator with ONNX Runtime's environment (once per
    process). Returns whether it is there; sessions then opt in with the session option
    ``session.use_env_allocators``. If ONNX Runtime refuses (an allocator for the CPU
    is already registered in another way), sessions keep arenas of their own."""
    import onnxruntime as ort

    with _arena_lock:
        if not _arena_registered:
            try:
                info = ort.OrtMemoryInfo(
                    "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
                )
                # kNextPowerOfTwo (ONNX Runtime's default): measured no worse than
                # kSameAsRequested in memory and slightly faster (benchmarks/RESULTS.md).
                cfg = ort.OrtArenaCfg({"arena_extend_strategy": 0})
                ort.create_and_register_allocator(info, cfg)
                _arena_registered.append(True)
            except Exception:  # noqa: BLE001 - any refusal means: use per-session arenas
                _arena_registered.append(False)
        return _arena_registered[0]
