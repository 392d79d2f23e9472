"""A replay device for the host-cost benchmark: the Hailo models' shapes, recorded answers.

Not a user-facing backend. It implements :class:`npu.backend.Backend` with the shapes of
Hailo's compiled PaddleOCR models (``ocr_det.hef``: one fixed 544 x 960 letterbox, raw
uint8 RGB NHWC, grey 114 padding; ``ocr.hef``: fixed 48 x 320 frames, a batch of 8, padding
128), so the whole pipeline runs exactly as on a Pi's NPU path: tiling, letterbox, line
splitting, fixed-width packing, cross-request batching. What the NPU would compute comes
from a *recording*:

* **record** (``record=True``): every frame the pipeline sends is run once through the real
  PP-OCRv6 ONNX models on the CPU (the frame converted as the chip's first layers would:
  RGB -> BGR, normalised, NCHW) and stored under a hash of the frame's bytes. Frames are
  keyed one by one, not per call: recognition crops arrive in whatever batches the
  cross-request batcher forms, and each crop's answer is found again in any batch.
* **replay**: each frame's answer is looked up by the same hash. A frame never recorded is
  an :class:`~npu.errors.InferenceError` naming it, so a change to the pipeline that alters
  one byte of a device input shows up as failed requests, never as wrong text.

Answers arrive at once (``LatencyModel`` zero) or after a modelled device time: the
device runs one job at a time (a job starts when the previous one ends), each taking
what the Hailo Model Zoo's Hailo-10H figures give (:data:`HAILO10H`). The modelled busy
time is counted, so a benchmark can say what throughput the NPU alone would allow.

Host cost that belongs to the device, not to the service: hashing a frame, copying the
recorded map into the output buffer (DMA on a real NPU) and zeroing the recognition
output. It runs in a worker thread (as HailoRT's launch does) and its CPU time is counted
separately (``statistics().own_cpu_s``) so that it can be subtracted.

Store layout (a directory): ``meta.json`` (models, output shape, character list),
``det/<hash>.npy`` (one float32 probability map per detection frame, memory-mapped on
replay) and ``rec.npz`` (per recognition frame: the best class and its probability at each
time step; greedy CTC decoding reads nothing else, so the dense output rebuilt from them
decodes to exactly the recorded text and confidence).
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from pathlib import Path
from typing import Final

import attrs
import numpy as np
import trio

from npu.backend import BackendInfo, ModelSpec, recognition_id
from npu.errors import InferenceError, ModelLoadError
from npu.hailo_backend import DEFAULT_JOBS_IN_FLIGHT, DET_PAD_VALUE, REC_PAD_VALUE
from npu.models import SHIPPED_DETECTION, SHIPPED_RECOGNITION, shipped_model
from ocr.detection import to_nchw_normalised
from web.settings import load_config

#: Input of Hailo's ocr_det.hef (HxW) and ocr.hef (HxW), and ocr.hef's batch size.
DET_SIZE: Final = (544, 960)
REC_SIZE: Final = (48, 320)
REC_BATCH: Final = 8
STORE_VERSION: Final = 1


@attrs.frozen
class LatencyModel:
    """Device time of one job: detection ``det_s`` per frame; recognition
    ``rec_first_s`` for the first frame of a batch and ``rec_next_s`` per further frame."""

    name: str
    det_s: float = 0.0
    rec_first_s: float = 0.0
    rec_next_s: float = 0.0

    def job_s(self, kind: str, frames: int) -> float:
        if kind == "detection":
            return self.det_s * frames
        return self.rec_first_s + self.rec_next_s * max(0, frames - 1) if frames else 0.0


#: Answers at once: what the host alone can do.
INSTANT: Final = LatencyModel("instant")

#: Hailo-10H, Hailo Model Zoo public models (compiled with DFC v5.4.0; hailo_model_zoo
#: ``docs/public_models/HAILO10H/HAILO10H_text_detection.rst`` and ``..._text_recognition.rst``
#: at commit 717923c0b4a0): ``paddle_ocr_v5_mobile_detection`` 544x960x3 22.5 FPS at
#: batch 1; ``paddle_ocr_v5_mobile_recognition`` 48x320x3 127 FPS at batch 1, 399 FPS at
#: batch 8. A detection frame takes 1/22.5 s (the service sends one tile per job); a
#: recognition batch of k frames 1/127 s for the first and (8/399 - 1/127)/7 s for each
#: further one, so a full batch of 8 takes 8/399 s = 20.1 ms.
HAILO10H: Final = LatencyModel(
    "hailo10h", det_s=1 / 22.5, rec_first_s=1 / 127,
    rec_next_s=(8 / 399 - 1 / 127) / 7,
)

LATENCY_MODELS: Final = {m.name: m for m in (INSTANT, HAILO10H)}


def frame_key(frame: np.ndarray) -> str:
    """The hash a frame is stored under (its bytes, shape and dtype). SHA-1: the fastest
    of hashlib's on this hardware (0.9 ms for a 544 x 960 frame), and that is device-side
    work the benchmark has to subtract."""
    h = hashlib.sha1()
    h.update(f"{frame.dtype.str}{frame.shape}".encode())
    h.update(np.ascontiguousarray(frame).data)
    return h.hexdigest()


@attrs.frozen
class ReplayStatistics:
    jobs: dict[str, int]  # per kind ("detection", "recognition")
    frames: dict[str, int]
    busy_s: float  # modelled device time of every job answered
    own_cpu_s: float  # CPU time of the device's own work (hashing, copying outputs)
    recorded: int  # frames computed with ONNX Runtime (record mode)
    missing: int  # frames asked for that were never recorded (replay mode)


class ReplayStore:
    """The recorded answers on disk (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.det_dir = self.directory / "det"
        self.meta: dict | None = None
        self.rec: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._det: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def open(self) -> ReplayStore:
        meta = self.directory / "meta.json"
        if meta.is_file():
            self.meta = json.loads(meta.read_text(encoding="utf-8"))
            if self.meta.get("version") != STORE_VERSION:
                raise ModelLoadError(f"{meta}: store version {self.meta.get('version')}")
        rec = self.directory / "rec.npz"
        if rec.is_file():
            with np.load(rec) as z:
                for key, idx, p in zip(z["keys"], z["idx"], z["p"], strict=True):
                    self.rec[str(key)] = (idx, p)
        return self

    def det(self, key: str) -> np.ndarray | None:
        with self._lock:
            if key not in self._det:
                path = self.det_dir / f"{key}.npy"
                if not path.is_file():
                    return None
                self._det[key] = np.load(path, mmap_mode="r")
            return self._det[key]

    def put_det(self, key: str, prob: np.ndarray) -> None:
        self.det_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.det_dir / f"{key}.tmp.npy"
        np.save(tmp, np.ascontiguousarray(prob, dtype=np.float32))
        tmp.replace(self.det_dir / f"{key}.npy")

    def put_rec(self, key: str, probs: np.ndarray) -> None:
        best = probs.argmax(axis=1).astype(np.int32)
        self.rec[key] = (best, probs[np.arange(len(best)), best].astype(np.float32))

    def save(self, meta: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.rec)
        if keys:
            tmp = self.directory / "rec.tmp.npz"
            np.savez(tmp, keys=np.array(keys), idx=np.stack([self.rec[k][0] for k in keys]),
                     p=np.stack([self.rec[k][1] for k in keys]))
            tmp.replace(self.directory / "rec.npz")
        (self.directory / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        self.meta = meta


class ReplayBackend:
    """The replay device (see the module docstring). ``languages``: the recognition
    models offered (the shipped PP-OCRv6 model reads English and Chinese, so both are
    answered from the same recording)."""

    def __init__(
        self, store: Path, *, latency: LatencyModel = INSTANT, record: bool = False,
        languages: tuple[str, ...] = ("en", "zh"),
    ) -> None:
        self._store = ReplayStore(store)
        self._latency = latency
        self._record = record
        self._languages = languages
        self._onnx = None
        self._info: BackendInfo | None = None
        self._free_at = 0.0
        self._jobs = {"detection": 0, "recognition": 0}
        self._frames = {"detection": 0, "recognition": 0}
        self._busy_s = 0.0
        self._own_cpu_s = 0.0
        self._recorded = 0
        self._missing = 0
        self._rec_shape: tuple[int, int] = (0, 0)
        self._meta: dict = {}
        self._rec_buffers = _RecBuffers(REC_BATCH)

    # -- loading -------------------------------------------------------------------------
    def load(self) -> BackendInfo:
        store = self._store.open()
        meta = store.meta
        if self._record:
            meta = self._load_onnx()
            if store.meta is not None and store.meta != meta:
                raise ModelLoadError(
                    f"the store {store.directory} was recorded with other models; "
                    "record into an empty directory"
                )
        elif meta is None:
            raise ModelLoadError(f"nothing recorded in {store.directory}: record first")
        self._meta = meta
        charset = tuple(meta["charset"])
        self._rec_shape = (int(meta["rec_steps"]), len(charset))
        self._rec_buffers = _RecBuffers(REC_BATCH, self._rec_shape)
        det_spec = ModelSpec(
            id="detection", kind="detection", name="ocr_det.hef (replay)", policy="fixed",
            layout="nhwc_uint8_rgb", height=DET_SIZE[0], width=DET_SIZE[1], batch_size=1,
            output_shape=DET_SIZE, pad_value=DET_PAD_VALUE,
        )
        rec_specs = tuple(
            ModelSpec(
                id=recognition_id(lang), kind="recognition", name="ocr.hef (replay)",
                policy="fixed", layout="nhwc_uint8_rgb", height=REC_SIZE[0], width=REC_SIZE[1],
                batch_size=REC_BATCH, language=lang, charset=charset,
                output_shape=self._rec_shape, pad_value=REC_PAD_VALUE,
            )
            for lang in self._languages
        )
        self._info = BackendInfo(
            kind="replay", device=f"replay ({self._latency.name})",
            runtime_version="recorded PP-OCRv6 outputs", models=(det_spec, *rec_specs),
            max_jobs_in_flight=DEFAULT_JOBS_IN_FLIGHT,
        )
        return self._info

    def _load_onnx(self) -> dict:
        """Record mode: the CPU backend that computes what is not yet recorded."""
        import onnxruntime as ort

        from npu.onnx_backend import OnnxBackend

        config = load_config(env={}, overrides={"ocr": {"languages": ["en"]}})
        self._onnx = OnnxBackend(config)
        info = self._onnx.load()
        rec = info.model("recognition_en")
        probe = self._onnx._run(  # the number of time steps of a 320-wide frame
            "recognition_en", np.zeros((1, 3, *REC_SIZE), dtype=np.float32)
        )
        return {
            "version": STORE_VERSION,
            "onnxruntime": ort.__version__,
            "detection": _model_id(shipped_model(SHIPPED_DETECTION)),
            "recognition": _model_id(shipped_model(SHIPPED_RECOGNITION)),
            "rec_steps": int(probe.shape[1]),
            "charset": list(rec.charset or ()),
        }

    # -- answering -----------------------------------------------------------------------
    async def infer(self, model_id: str, batch: np.ndarray) -> np.ndarray:
        info = self._info
        if info is None:
            raise InferenceError("the replay device is not loaded")
        try:
            spec = info.model(model_id)
        except KeyError:
            raise InferenceError(f"model {model_id} is not loaded") from None
        shape = (spec.height, spec.width, 3)
        if batch.dtype != np.uint8 or batch.shape[1:] != shape:
            raise InferenceError(
                f"{model_id} takes uint8 frames of {shape}, got {batch.dtype} {batch.shape[1:]}"
            )
        kind = spec.kind
        if self._record:
            await self._record_missing(kind, batch)
        out, cpu = await trio.to_thread.run_sync(self._answer, kind, batch)
        self._own_cpu_s += cpu
        n = len(batch)
        self._jobs[kind] += 1
        self._frames[kind] += n
        job_s = self._latency.job_s(kind, n)
        if job_s > 0:  # one job at a time on the modelled NPU, in arrival order
            start = max(trio.current_time(), self._free_at)
            self._free_at = start + job_s
            self._busy_s += job_s
            await trio.sleep_until(self._free_at)
        return out

    def _answer(self, kind: str, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """The recorded output of every frame (a worker thread); and its CPU time."""
        t0 = time.thread_time()
        n = len(batch)
        if kind == "detection":
            maps = []
            for i in range(n):
                prob = self._store.det(frame_key(batch[i]))
                if prob is None:
                    self._miss(kind, batch[i])
                maps.append(prob)
            # One frame (the service sends one tile a job): the recorded map itself,
            # read-only and memory-mapped, as a real device leaves its output in place.
            out = maps[0][None] if n == 1 else np.stack(maps)
        else:
            entries = []
            for i in range(n):
                entry = self._store.rec.get(frame_key(batch[i]))
                if entry is None:
                    self._miss(kind, batch[i])
                entries.append(entry)
            out = self._rec_buffers.fill(entries)
        return out, time.thread_time() - t0

    def _miss(self, kind: str, frame: np.ndarray) -> None:
        self._missing += 1
        raise InferenceError(
            f"replay: no recorded {kind} output for frame {frame_key(frame)} (the pipeline "
            "sent a device input that the recording run never did; record again)"
        )

    async def _record_missing(self, kind: str, batch: np.ndarray) -> None:
        keys = [frame_key(f) for f in batch]
        if kind == "detection":
            todo = [i for i, k in enumerate(keys) if self._store.det(k) is None]
        else:
            todo = [i for i, k in enumerate(keys) if k not in self._store.rec]
        if not todo:
            return
        assert self._onnx is not None
        # The chip's first layers: RGB -> BGR, normalised, NCHW float.
        x = to_nchw_normalised([batch[i][..., ::-1] for i in todo])
        model = "detection" if kind == "detection" else "recognition_en"
        probs = await self._onnx.infer(model, x)
        for j, i in enumerate(todo):
            if kind == "detection":
                await trio.to_thread.run_sync(self._store.put_det, keys[i], probs[j])
            else:
                self._store.put_rec(keys[i], probs[j])
            self._recorded += 1

    # -- statistics and closing ----------------------------------------------------------
    def statistics(self) -> ReplayStatistics:
        return ReplayStatistics(
            jobs=dict(self._jobs), frames=dict(self._frames), busy_s=self._busy_s,
            own_cpu_s=self._own_cpu_s, recorded=self._recorded, missing=self._missing,
        )

    def close(self) -> None:
        if self._record and self._onnx is not None:
            self._store.save(self._meta)
            self._onnx.close()
            self._onnx = None


class _RecBuffers:
    """Dense recognition outputs, reused. A batch's ``(8, T, C)`` output is 24 MB with
    PP-OCRv6's 18 710 classes; zeroing a fresh one for every batch would cost the host
    more than the service's own decoding of it. So the device keeps its buffers and
    reuses one once nobody else holds it (its reference count says so), clearing only
    the entries the previous batch set."""

    def __init__(self, batch: int, shape: tuple[int, int] = (0, 0)) -> None:
        self._batch = batch
        self._shape = shape
        self._steps = np.arange(shape[0])
        self._free: list[tuple[np.ndarray, list[np.ndarray]]] = []
        self._lock = threading.Lock()
        self._unused_refs = 0  # a buffer's reference count when only this pool holds it

    def fill(self, entries: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        if len(entries) > self._batch:
            raise InferenceError(f"a recognition job of {len(entries)} frames (at most "
                                 f"{self._batch})")
        with self._lock:
            slot = next((s for s in self._free if _refs(s[0]) <= self._unused_refs), None)
            if slot is None:
                buf = np.zeros((self._batch, *self._shape), dtype=np.float32)
                buf.fill(0.0)  # touch every page now, not in the caller's decoding
                slot = (buf, [np.zeros(self._shape[0], dtype=np.int64)] * self._batch)
                self._free.append(slot)
                del buf
                # Measured, not assumed, through the same call as every later check:
                # what getrefcount reports differs between Python versions.
                self._unused_refs = _refs(slot[0])
            buf, set_idx = slot
            for i, (idx, p) in enumerate(entries):
                buf[i, self._steps, set_idx[i]] = 0.0
                buf[i, self._steps, idx] = p
                set_idx[i] = idx
            for i in range(len(entries), self._batch):
                buf[i, self._steps, set_idx[i]] = 0.0
            return buf[: len(entries)]


def _refs(buf: np.ndarray) -> int:
    return sys.getrefcount(buf)


def _model_id(path: Path) -> dict:
    return {"name": path.name, "size": path.stat().st_size}
