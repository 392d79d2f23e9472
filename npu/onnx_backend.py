"""The CPU backend: PP-OCR ONNX models on ONNX Runtime, the embedded default.

Sessions are created once at load. ``infer`` runs ``session.run`` in a Trio worker thread
(ONNX Runtime releases the GIL while it computes), so the event loop stays free. One
session serves every language that has no model of its own: the shipped PP-OCRv6
recognition model reads Chinese and English.

Threads and jobs: detection, one large input, runs with ``onnx_models.intra_op_threads``
ONNX Runtime threads (one per core by default). Recognition and classifier sessions run one
thread each. The backend runs as many jobs at once as it has threads, and each job takes
cores from a :class:`~npu.cpu_cores.CoreLease` first: a detection all of them; a
recognition or classifier batch one, plus the cores idle at that moment, its lines split
into one share per core, the shares run at once. A line crop is a small input: splitting
each operator of it across cores costs more in synchronisation than it gains (on two busy
cores a 2-thread session took 1.2-1.6x as long as the same lines split in two 1-thread
shares), while independent lines and independent batches need no synchronisation at all
(benchmarks/RESULTS.md, rows 34 and 42). A line's output does not depend on which share
or which job it is in: every line of a batch is padded to the same width either way.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import numpy as np
import trio

from ocr.classify import CLS_HEIGHT, CLS_WIDTH
from ocr.recognition import REC_HEIGHT, REC_NOMINAL_WIDTH, build_charset

from .backend import CLASSIFIER, DETECTION, BackendInfo, ModelSpec, recognition_id
from .config import NpuConfig
from .cpu_cores import CoreLease
from .cpu_env import (
    bound_malloc,
    denormals_flushed,
    fp_flags_kept,
    shared_cpu_arena,
    trim_malloc,
)
from .errors import InferenceError, ModelLoadError
from .models import (
    SHIPPED_CLASSIFIER,
    SHIPPED_DETECTION,
    SHIPPED_RECOGNITION,
    resolve_model_path,
    shipped_model,
)
from .placement import wanted_model_ids

#: The warm-up input of a dynamic detection model (any multiple of 32 will do).
WARM_UP_DET_SIDE: Final = 64


#: Run option: after the call, the session's arena gives back the chunks it no longer
#: uses, so one large detection does not keep its working set for good.
_SHRINK_ARENA = ("memory.enable_memory_arena_shrinkage", "cpu:0")
#: Recognition and classifier calls shrink the arena only from this many input columns
#: (lines x padded width) up. Most calls are a few short lines, whose working set (about
#: 27 kB a column) the next call reuses: giving it back and faulting it in again after
#: every one of them made recognition 1.1-1.7x as slow (benchmarks/RESULTS.md);
#: a large batch still gives its memory back, so what a detection starts from stays
#: bounded.
_SHRINK_FROM_COLUMNS = 1024


class OnnxBackend:
    """Runs the PP-OCR ONNX models on the CPU."""

    def __init__(
        self, config: NpuConfig, model_ids: frozenset[str] | None = None, *,
        threads: int | None = None,
    ) -> None:
        """Load ``model_ids`` (None: every model the configuration asks for) with
        ``threads`` ONNX Runtime threads for detection and as many single-threaded shares
        for a recognition or classifier call (None: ``onnx_models.intra_op_threads``;
        0: one per core)."""
        self._config = config
        self._model_ids = wanted_model_ids(config) if model_ids is None else tuple(
            m for m in (*wanted_model_ids(config), CLASSIFIER) if m in model_ids
        )
        self._unknown = sorted(set(model_ids or ()) - set(self._model_ids))
        configured = config.onnx_models.intra_op_threads if threads is None else threads
        #: ONNX Runtime threads for detection; recognition shares a call across as many.
        self._threads = max(1, configured or (os.cpu_count() or 1))
        #: One core per thread, taken by each job for its computation (npu/cpu_cores.py).
        self._cores = CoreLease(self._threads)
        self._sessions: dict[str, object] = {}
        self._input_names: dict[str, str] = {}
        self._info: BackendInfo | None = None
        self._run_options: object | None = None  # with the shrink (if the arena is on)
        self._keep_options: object | None = None  # without
        self._shared_arena = False
        #: Runs the other shares of a recognition or classifier call (None: one thread).
        self._pool: ThreadPoolExecutor | None = None

    def _path(self, configured: str | None, shipped: str) -> Path:
        if configured is None:
            return shipped_model(shipped)
        return resolve_model_path(configured, self._config.base_dir, ())

    def _session(self, path: Path, cache: dict[tuple[Path, int], object], threads: int = 1):
        import onnxruntime as ort

        if (path, threads) in cache:
            return cache[(path, threads)]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # Denormal floats flushed to zero in ONNX Runtime's own pool threads; the thread
        # that calls run() computes a share too, see _run (npu/cpu_env.py says why).
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
        # With the arena (default) a call reuses memory its earlier operators freed, and
        # the run option in _run shrinks it after each call; without it every tensor is
        # fresh pages from malloc, 15-35 % slower (benchmarks/RESULTS.md). One
        # arena serves every session, so what detection freed is recognition's to reuse
        # instead of each model holding its own (benchmarks/RESULTS.md).
        opts.enable_cpu_mem_arena = self._config.onnx_models.memory_arena
        if self._shared_arena:
            opts.add_session_config_entry("session.use_env_allocators", "1")
        try:
            session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelLoadError(f"cannot load ONNX model {path.name}: {exc}") from exc
        cache[(path, threads)] = session
        return session

    def load(self) -> BackendInfo:
        # ONNX Runtime sets FTZ/DAZ in the thread that creates a session; give the
        # loading thread its own floating-point flags back (only inference threads get
        # them, in _run).
        with fp_flags_kept():
            return self._load()

    def _load(self) -> BackendInfo:
        import onnxruntime as ort

        cfg = self._config
        if self._unknown:
            raise ModelLoadError(
                f"the CPU backend has no model {', '.join(self._unknown)} in this configuration"
            )
        bound_malloc()
        self._shared_arena = cfg.onnx_models.memory_arena and shared_cpu_arena()
        self._run_options = ort.RunOptions()
        self._keep_options = ort.RunOptions()
        if cfg.onnx_models.memory_arena:
            self._run_options.add_run_config_entry(*_SHRINK_ARENA)
        cache: dict[tuple[Path, int], object] = {}
        specs: list[ModelSpec] = []
        wanted = set(self._model_ids)
        if self._threads > 1:
            self._pool = ThreadPoolExecutor(self._threads - 1, thread_name_prefix="onnx-share")

        if DETECTION in wanted:
            det_path = self._path(cfg.onnx_models.detection, SHIPPED_DETECTION)
            self._register(DETECTION, self._session(det_path, cache, self._threads))
            specs.append(
                ModelSpec(
                    id=DETECTION, kind="detection", name=det_path.name, policy="dynamic",
                    layout="nchw_float", height=None, width=None, batch_size=1,
                    path=str(det_path),
                )
            )

        batch = cfg.onnx_models.batch_size_rec
        for lang in cfg.ocr.languages:
            model_id = recognition_id(lang)
            if model_id not in wanted:
                continue
            rec_path = self._path(cfg.onnx_models.recognition.get(lang), SHIPPED_RECOGNITION)
            session = self._session(rec_path, cache)
            meta = session.get_modelmeta().custom_metadata_map
            if "character" not in meta:
                raise ModelLoadError(
                    f"recognition model {rec_path.name} has no 'character' list in its metadata"
                )
            charset = build_charset(meta["character"].splitlines())
            classes = session.get_outputs()[0].shape[-1]
            if isinstance(classes, int) and classes != len(charset):
                raise ModelLoadError(
                    f"{rec_path.name} outputs {classes} classes but its character list "
                    f"gives {len(charset)}"
                )
            self._register(model_id, session)
            # fixed_batch emulates a compiled NPU model: a fixed batch *and* a fixed
            # 320-column input, so lines are split and any crops can share a batch.
            fixed = cfg.onnx_models.fixed_batch
            specs.append(
                ModelSpec(
                    id=model_id, kind="recognition", name=rec_path.name,
                    policy="fixed" if fixed else "dynamic",
                    layout="nchw_float", height=REC_HEIGHT, width=REC_NOMINAL_WIDTH,
                    batch_size=batch, fixed_batch=fixed, language=lang, charset=charset,
                    path=str(rec_path),
                )
            )

        if CLASSIFIER in wanted:
            cls_path = self._path(cfg.onnx_models.classifier, SHIPPED_CLASSIFIER)
            self._register(CLASSIFIER, self._session(cls_path, cache))
            specs.append(
                ModelSpec(
                    id=CLASSIFIER, kind="classifier", name=cls_path.name, policy="fixed",
                    layout="nchw_float", height=CLS_HEIGHT, width=CLS_WIDTH, batch_size=batch,
                    path=str(cls_path),
                )
            )

        self._warm_up(specs)
        self._info = BackendInfo(
            kind="onnx", device=None, runtime_version=f"onnxruntime {ort.__version__}",
            models=tuple(specs),
            max_jobs_in_flight=cfg.backend.max_jobs_in_flight or self._threads,
        )
        return self._info

    def _warm_up(self, specs: list[ModelSpec]) -> None:
        """Run each session once on a small input at load. ONNX Runtime's first run
        allocates and plans (seconds on a Pi); doing it here moves that cost from the
        first request to start-up, before the service reports ready."""
        shapes = {
            "detection": (WARM_UP_DET_SIDE, WARM_UP_DET_SIDE),
            "recognition": (REC_HEIGHT, REC_NOMINAL_WIDTH),
            "classifier": (CLS_HEIGHT, CLS_WIDTH),
        }
        for spec in specs:
            height, width = shapes[spec.kind]
            self._run(spec.id, np.zeros((1, 3, height, width), dtype=np.float32))

    def _register(self, model_id: str, session) -> None:
        self._sessions[model_id] = session
        self._input_names[model_id] = session.get_inputs()[0].name

    def _run(self, model_id: str, batch: np.ndarray, cores: int | None = None) -> np.ndarray:
        """Run ``model_id`` on ``batch``; a recognition or classifier batch in one share
        per core of ``cores`` (None: every thread)."""
        session = self._sessions.get(model_id)
        if session is None:
            raise InferenceError(f"model {model_id} is not loaded")
        if model_id == DETECTION:
            trim_malloc()  # the largest working set: do not stack it on free heap pages
        try:
            n_shares = min(self._threads if cores is None else cores, len(batch))
            if model_id == DETECTION or self._pool is None or n_shares < 2:
                out = self._run_session(session, model_id, batch)
            else:  # one share of the lines per core, run at once (module docstring)
                shares = np.array_split(batch, n_shares)
                others = [self._pool.submit(self._run_session, session, model_id, share)
                          for share in shares[1:]]
                first = self._run_session(session, model_id, shares[0])
                out = np.concatenate([first, *(f.result() for f in others)])
        except Exception as exc:
            raise InferenceError(f"{model_id} failed: {exc}") from exc
        if out.ndim == 4 and model_id == DETECTION:  # (N, 1, H, W) -> (N, H, W)
            out = out[:, 0]
        return out

    def _run_session(self, session, model_id: str, batch: np.ndarray) -> np.ndarray:
        small = model_id != DETECTION and batch.shape[0] * batch.shape[-1] < _SHRINK_FROM_COLUMNS
        options = self._keep_options if small else self._run_options
        with denormals_flushed():  # this thread computes a share too (npu/cpu_env.py)
            out = session.run(None, {self._input_names[model_id]: batch}, options)
        return out[0]

    async def infer(self, model_id: str, batch: np.ndarray) -> np.ndarray:
        if model_id == DETECTION:
            wanted = (self._threads, self._threads)
        else:
            wanted = (1, len(batch))
        async with self._cores.hold(*wanted) as cores:
            # abandon_on_cancel: a job whose deadline passed returns control at once; the
            # thread finishes its (bounded) computation and its result is dropped.
            return await trio.to_thread.run_sync(
                self._run, model_id, batch, cores, abandon_on_cancel=True
            )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._sessions.clear()
        self._input_names.clear()
