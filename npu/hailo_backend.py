"""The NPU backend: compiled PaddleOCR models (HEF files) on a Hailo NPU through HailoRT.

Written against HailoRT's Python API (``hailo_platform``, 4.23 for Hailo-8 and 5.x for
Hailo-10H), which is imported only when the backend loads: the project imports, and the
CPU backend runs, on hosts without it.

**One VDevice per process.** The VDevice is opened with the round-robin scheduler and the
configured group id (``hailo_models.group_id``, default ``"SHARED"``). HailoRT's own
default group, ``"UNIQUE"``, takes the whole device, so a second NPU service on the host
fails with ``HAILO_OUT_OF_PHYSICAL_DEVICES`` (74); processes that use the same group id
share the NPU through HailoRT's scheduler. Every backend instance in the process shares
that one VDevice through :mod:`npu.hailo_vdevice`.

**Models.** ``create_infer_model(hef)``, ``set_batch_size`` before ``configure()``, inputs
as raw ``UINT8`` RGB frames (the chip normalises), outputs as ``FLOAT32``. Shapes are read
from the model (per frame, no batch axis), never assumed, and published as fixed-size
:class:`~npu.backend.ModelSpec` s so the pipeline letterboxes detection input (pad 114)
and pads recognition crops to the model's width (pad 128), as Hailo's example does. A
batch shorter than the batch size is sent as is (a list of bindings is a batch): no black
frames are added.

**Inference** bridges HailoRT's callback API into Trio: binding the buffers,
``wait_for_async_ready`` (which blocks, with the GIL released) and ``run_async`` run in a
worker thread; the completion callback, called on a HailoRT thread, hands the status back
to the Trio loop with ``TrioToken.run_sync_soon`` and the waiting task wakes. Every wait is
bounded by ``hailo_models.timeout_ms``. HailoRT calls the callback from its own C++ thread
with no handler above it, so an exception escaping the callback would abort the process:
its body is guarded, and a failure there fails that job only.

**Errors** are classified by HailoRT status (:mod:`npu.hailo_errors`): at start-up a busy
device is :class:`~npu.errors.DeviceBusy` naming the group id and the fix, no device at all
:class:`~npu.errors.DeviceNotFound` and a node this user may not open
:class:`~npu.errors.DeviceAccessDenied` (told apart by :mod:`npu.hailo_devices`); a
launch that finds no room (``wait_for_async_ready`` timing out) is retried once, then is
a :class:`~npu.errors.DeviceTimeout`;
any ``run_async`` failure is a :class:`~npu.errors.DeviceFault`, never retried, because
HailoRT shuts the configured model down before raising it; a lost device (communication
closed, RPC failed, driver timeout, ...) is :class:`~npu.errors.DeviceLost`. After a fault
the NPU owner reloads the backend.

**Outputs.** Detection gives the ``(N, H, W)`` probability map. Recognition gives
``(N, T, C)`` class probabilities: at load one frame of padding is run through each
model, and if its rows are not probability distributions (values outside [0, 1] or rows
not summing to 1) the model outputs logits and a softmax is applied after each call.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import trio

from . import hailo_devices
from .backend import DETECTION, BackendInfo, ModelSpec, recognition_id
from .config import NpuConfig
from .errors import (
    BackendUnavailable,
    DeviceFault,
    DeviceLost,
    DeviceTimeout,
    InferenceError,
    ModelLoadError,
)
from .hailo_charsets import charset_for
from .hailo_errors import (
    HAILO_INVALID_OPERATION,
    HAILO_TIMEOUT,
    classify,
    describe,
    is_hailort_error,
    status_of,
)
from .hailo_vdevice import SharedVDevice, acquire_vdevice, mark_broken, release_vdevice
from .hef_specs import (
    DET_PAD_VALUE,
    DEVICE_NODE,
    REC_PAD_VALUE,
    detection_spec,
    import_hailort,
    looks_like_probabilities,
    recognition_spec,
    sigmoid,
    softmax,
)
from .models import configured_hefs, resolve_model_path

log = logging.getLogger("hailo_ocr.hailo")

DEFAULT_JOBS_IN_FLIGHT = 2  # detection of one image pipelines with recognition of another
LOAD_JOB_TIMEOUT_MS = 30000  # the warm-up job at load (first job of a freshly loaded model)

INSTALL_HINT = (
    "the Hailo backend needs HailoRT's Python bindings (the hailo_platform module), which "
    "are not installed for this Python. On a Raspberry Pi 5 with an AI HAT+ 2 (Hailo-10H): "
    "`sudo apt install hailo-h10-all` (HailoRT, driver, firmware and python3-hailort); with "
    "a Hailo-8/8L AI HAT+ or AI Kit: `sudo apt install hailo-all`. Elsewhere install the "
    "`hailort` .deb and the matching hailort Python wheel from the Hailo Developer Zone. "
    "If hailo-ocr runs in a virtualenv, create it with --system-site-packages so it sees "
    "the system's hailo_platform. Or run with --backend onnx (CPU)."
)


def missing_parts(config: NpuConfig) -> list[str]:
    """What stops the NPU from serving any model before it is tried, in words: HailoRT's
    Python bindings, the HEF files, the device itself. Empty when all are there (the
    device may still be busy or refuse us: that is found at load).

    HEFs count only when none of the models that may use one (placement not ``cpu``) has
    its file: one missing alone moves only its model to the CPU (``npu.placement``)."""
    import importlib.util

    missing = []
    if importlib.util.find_spec("hailo_platform") is None:
        missing.append("HailoRT's Python bindings (hailo_platform) are not installed")
    hefs = [h for h in configured_hefs(config)
            if config.models.placement.get(h.role) != "cpu"]
    if not hefs:
        missing.append("models.placement puts every model on the CPU")
    elif all(hef.path is None for hef in hefs):
        missing += [f"{hef.name} is missing (looked in {', '.join(hef.tried)})" for hef in hefs]
    if not missing:
        try:
            presence = hailo_devices.probe(_import_hailo())
        except BackendUnavailable as exc:  # found but not importable (a broken install)
            return [str(exc)]
        if not presence.present:
            missing.append("no Hailo device is present")
    return missing


def _import_hailo() -> Any:
    return import_hailort(INSTALL_HINT)


# --- models --------------------------------------------------------------------------


@attrs.define(eq=False)
class _Model:
    """One configured HEF."""

    path: Path
    infer_model: Any
    configured: Any
    input_shape: tuple[int, ...]  # per frame, e.g. (48, 320, 3)
    output_shape: tuple[int, ...]  # per frame, as the HEF gives it, e.g. (1, 40, 97)
    batch_size: int
    queue_size: int
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    activation: str = "none"  # "softmax" / "sigmoid" when the HEF outputs raw scores
    jobs: set = attrs.field(factory=set)  # AsyncInferJob s not yet completed

    @property
    def chunk(self) -> int:
        """Most frames per ``run_async``: the batch size, within the async queue."""
        return max(1, min(self.batch_size, self.queue_size))


@attrs.define(eq=False)
class _Completion:
    """Where a finished job's status lands, on the Trio side."""

    model: _Model
    event: trio.Event = attrs.field(factory=trio.Event)
    error: BaseException | None = None
    job: Any = None

    def set(self, error: BaseException | None) -> None:
        self.error = error
        self.event.set()
        if self.job is not None:  # launched, and possibly abandoned by a cancelled caller
            self.model.jobs.discard(self.job)


class _Retry(Exception):
    """A transient status (timeout, queue full) worth one more try."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(describe(cause))
        self.cause = cause


def _shape(stream: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in stream.shape)


def _check_single_edges(infer_model: Any, path: Path) -> None:
    """One input and one output, or a message naming them (``input()`` would answer a
    bare HAILO_INVALID_OPERATION)."""
    for kind, names in (("inputs", infer_model.input_names), ("outputs", infer_model.output_names)):
        if len(names) != 1:
            raise ModelLoadError(
                f"{path.name} has {len(names)} {kind} ({', '.join(map(str, names))}); "
                f"hailo-ocr takes models with exactly one input and one output (Hailo's "
                f"ocr_det.hef / ocr.hef)"
            )


class HailoBackend:
    """Runs the compiled detection and recognition models on a Hailo NPU."""

    def __init__(self, config: NpuConfig, model_ids: frozenset[str] | None = None) -> None:
        """Load ``model_ids`` (:mod:`npu.placement` decides them). None: detection and every
        language of ``ocr.languages`` that has a HEF in ``hailo_models.recognition_hefs``."""
        self._config = config
        self._cfg = config.hailo_models
        if model_ids is None:
            model_ids = frozenset(
                [DETECTION, *(recognition_id(lang) for lang in config.ocr.languages
                              if lang in config.hailo_models.recognition_hefs)]
            )
        self._model_ids = model_ids
        self._timeout_ms = max(1, int(self._cfg.timeout_ms))
        self._shared: SharedVDevice | None = None
        self._models: dict[str, _Model] = {}
        self._by_path: dict[Path, _Model] = {}
        self._faulted = False
        self._closed = False
        self._info: BackendInfo | None = None

    # -- loading ----------------------------------------------------------------------
    def load(self) -> BackendInfo:
        hp = _import_hailo()
        cfg = self._cfg
        version = str(getattr(hp, "__version__", "unknown"))
        self._shared = acquire_vdevice(hp, cfg)
        try:
            return self._load_models(hp, version)
        except BaseException:
            self._faulted = True  # do not hand a half-configured VDevice to the next load
            self.close()
            raise

    def _load_models(self, hp: Any, version: str) -> BackendInfo:
        cfg, base = self._cfg, self._config.base_dir
        assert self._shared is not None
        ids = ", ".join(self._shared.device_ids)
        # The device node when there is the usual single one (what the original service
        # reports, and its clients show); otherwise HailoRT's device id (what
        # hailo_models.device takes).
        device = DEVICE_NODE if cfg.device is None and os.path.exists(DEVICE_NODE) else ids
        device = device or DEVICE_NODE
        log.info(
            "HailoRT %s: VDevice on %s (%s), group id %r, scheduler round-robin%s",
            version, device, ids or "device id unknown", cfg.group_id,
            ", multi-process service" if cfg.multi_process_service else "",
        )
        specs: list[ModelSpec] = []
        known = {DETECTION, *(recognition_id(lang) for lang in self._config.ocr.languages)}
        unknown = sorted(self._model_ids - known)
        if unknown:
            raise ModelLoadError(f"the Hailo backend has no HEF for {', '.join(unknown)}")

        det: _Model | None = None
        if DETECTION in self._model_ids:
            det_path = resolve_model_path(cfg.detection_hef, base, cfg.search_paths)
            det = self._open(hp, det_path, cfg.batch_size_det)
            specs.append(detection_spec(det_path.name, det.input_shape, det.output_shape,
                                        det.chunk, path=str(det_path)))
            self._models[DETECTION] = det

        for lang in self._config.ocr.languages:
            model_id = recognition_id(lang)
            if model_id not in self._model_ids:
                continue
            hef = cfg.recognition_hefs.get(lang)
            if hef is None:
                raise ModelLoadError(
                    f"no recognition HEF for language {lang!r} in hailo_models.recognition_hefs"
                )
            path = resolve_model_path(hef, base, cfg.search_paths)
            model = self._by_path.get(path) or self._open(hp, path, cfg.batch_size_rec)
            charset = charset_for(lang, cfg.character_lists.get(lang), base, cfg.search_paths)
            specs.append(recognition_spec(
                lang, path.name, model.input_shape, model.output_shape, model.chunk, charset,
                path=str(path),
            ))
            self._models[model_id] = model
        if not specs:
            raise ModelLoadError(
                "no model to load on the NPU: none of ocr.languages "
                f"({', '.join(self._config.ocr.languages)}) has a HEF in "
                "hailo_models.recognition_hefs, and detection is not placed there"
            )

        for model in self._by_path.values():
            if model is det:
                self._decide_activation(model, DET_PAD_VALUE, rows=False)
            else:
                self._decide_activation(model, REC_PAD_VALUE, rows=True)

        jobs = self._config.backend.max_jobs_in_flight or DEFAULT_JOBS_IN_FLIGHT
        self._info = BackendInfo(
            kind="hailo", device=device, runtime_version=f"HailoRT {version}",
            models=tuple(specs), max_jobs_in_flight=jobs,
        )
        return self._info

    def _open(self, hp: Any, path: Path, batch_size: int) -> _Model:
        assert self._shared is not None
        reading = "reading its inputs and outputs"
        stage = "creating the model"
        try:
            infer_model = self._shared.vdevice.create_infer_model(str(path))
            stage = reading
            _check_single_edges(infer_model, path)
            infer_model.set_batch_size(int(batch_size))
            infer_model.input().set_format_type(hp.FormatType.UINT8)
            infer_model.output().set_format_type(hp.FormatType.FLOAT32)
            input_shape = _shape(infer_model.input())
            output_shape = _shape(infer_model.output())
            in_format = infer_model.input().format
            out_format = infer_model.output().format
            stage = "configuring it"
            configured = infer_model.configure()
        except Exception as exc:
            err = classify(exc, phase="load", group_id=self._cfg.group_id, what=f"loading {path}")
            if status_of(exc) == HAILO_INVALID_OPERATION and stage == reading:
                # InferModel::input()/output() without a name: "Model has more than one input!"
                err = ModelLoadError(
                    f"{err}; this HEF has more than one input or output, and hailo-ocr takes "
                    f"models with exactly one of each (Hailo's ocr_det.hef / ocr.hef)"
                )
            elif status_of(exc) == HAILO_INVALID_OPERATION and stage == "configuring it":
                err = ModelLoadError(
                    f"{err}; HailoRT refuses a batch size larger than the model's queue: "
                    f"try a smaller hailo_models.batch_size_rec / batch_size_det (now {batch_size})"
                )
            raise err from exc
        try:
            queue_size = int(configured.get_async_queue_size())
        except Exception:
            queue_size = int(batch_size)
        model = _Model(
            path=path, infer_model=infer_model, configured=configured, input_shape=input_shape,
            output_shape=output_shape, batch_size=int(batch_size), queue_size=queue_size,
        )
        self._by_path[path] = model
        log.info(
            "loaded %s: input %s %s, output %s %s, batch size %d, async queue %d",
            path.name, input_shape, _format_str(in_format), output_shape,
            _format_str(out_format), batch_size, queue_size,
        )
        return model

    def _decide_activation(self, model: _Model, pad: int, *, rows: bool) -> None:
        """Run one frame of padding (which also warms the model up) and see whether the
        HEF ends in its softmax/sigmoid or leaves it to us."""
        frame = np.full((1, *model.input_shape), pad, dtype=np.uint8)
        out = np.empty((1, *model.output_shape), dtype=np.float32)
        self._run_blocking(model, frame, out)
        if looks_like_probabilities(out, rows=rows):
            model.activation = "none"
        else:
            model.activation = "softmax" if rows else "sigmoid"
        log.info(
            "%s outputs %s", model.path.name,
            "probabilities" if model.activation == "none"
            else f"raw scores: applying {model.activation} on the host",
        )

    # -- running a job ------------------------------------------------------------------
    def _launch(
        self, model: _Model, frames: np.ndarray, out: np.ndarray, callback: Callable[..., None],
        timeout_ms: int | None = None,
    ) -> Any:
        """Bind buffers, wait for room, start the job. Blocking: runs in a worker thread.

        The model's lock keeps the wait and the launch together, so two callers cannot
        both see room for their frames and then overfill the queue."""
        timeout_ms = timeout_ms or self._timeout_ms
        if not model.lock.acquire(timeout=timeout_ms / 1000.0):
            raise _Retry(DeviceTimeout(f"{model.path.name}: another launch holds the model"))
        try:
            configured = model.configured
            if configured is None:
                raise DeviceFault(f"{model.path.name} is closed")
            try:
                bindings = []
                for i in range(len(frames)):
                    b = configured.create_bindings()
                    b.input().set_buffer(frames[i])
                    b.output().set_buffer(out[i])
                    bindings.append(b)
            except Exception as exc:
                if not is_hailort_error(exc):
                    raise InferenceError(f"{model.path.name}: {exc}") from exc
                raise classify(exc, phase="launch", what=model.path.name) from exc
            try:
                configured.wait_for_async_ready(timeout_ms=timeout_ms, frames_count=len(frames))
            except Exception as exc:
                if is_hailort_error(exc) and status_of(exc) == HAILO_TIMEOUT:
                    raise _Retry(exc) from exc  # no room yet: nothing was started
                if not is_hailort_error(exc):
                    raise
                raise classify(exc, phase="launch", what=model.path.name) from exc
            try:
                job = configured.run_async(bindings, callback)
            except Exception as exc:
                # HailoRT has shut this model down before raising: no retry can succeed.
                model.configured = None
                raise classify(exc, phase="run", what=model.path.name) from exc
            model.jobs.add(job)
            return job
        finally:
            model.lock.release()

    def _launch_retrying(
        self, model: _Model, frames: np.ndarray, out: np.ndarray, callback: Callable[..., None],
        timeout_ms: int | None = None,
    ) -> Any:
        """:meth:`_launch`, once more if the device had no room (nothing was started
        then); no room twice is a :class:`~npu.errors.DeviceTimeout`. Blocking."""
        try:
            return self._launch(model, frames, out, callback, timeout_ms)
        except _Retry as retry:
            log.warning("%s: %s; retrying once", model.path.name, retry)
        try:
            return self._launch(model, frames, out, callback, timeout_ms)
        except _Retry as retry:
            raise self._fault(DeviceTimeout(
                f"{model.path.name}: the NPU had no room for a job within "
                f"{timeout_ms or self._timeout_ms} ms, twice; another process may be "
                f"monopolising it ({retry})"
            )) from retry.cause

    def _run_blocking(self, model: _Model, frames: np.ndarray, out: np.ndarray) -> None:
        """One job from a plain thread (used at load, before there is a Trio caller).

        Bounded by at least :data:`LOAD_JOB_TIMEOUT_MS`: a model's first job also pays for
        loading it onto the device, which may take longer than a request's bound."""
        timeout_ms = max(self._timeout_ms, LOAD_JOB_TIMEOUT_MS)
        done = threading.Event()
        box: list[BaseException | None] = []

        def on_done(completion_info: Any) -> None:
            # On a HailoRT thread with no handler above it: an exception escaping here
            # would abort the process (std::terminate), so nothing may escape.
            try:
                box.append(completion_info.exception)
            except BaseException as exc:
                log.exception("%s: reading a job's completion failed", model.path.name)
                box.append(InferenceError(f"{model.path.name}: completion unreadable: {exc}"))
            finally:
                done.set()

        job = self._launch_retrying(model, frames, out, on_done, timeout_ms)
        if not done.wait(timeout_ms / 1000.0):
            raise self._fault(DeviceTimeout(
                f"{model.path.name}: no answer from the NPU within {timeout_ms} ms"
            ))
        model.jobs.discard(job)
        if box and box[0] is not None:
            raise self._fault(classify(box[0], phase="complete", what=model.path.name))

    async def _run_once(self, model: _Model, frames: np.ndarray, out: np.ndarray) -> None:
        token = trio.lowlevel.current_trio_token()
        completion = _Completion(model)

        def on_done(completion_info: Any) -> None:
            # On a HailoRT thread with no handler above it: an exception escaping here
            # would abort the process (std::terminate). Hand the status over, quickly.
            try:
                token.run_sync_soon(completion.set, completion_info.exception)
            except trio.RunFinishedError:
                pass  # the service stopped; nobody waits for this job any more
            except BaseException as exc:
                log.exception("%s: handing a job's completion to Trio failed", model.path.name)
                failure = InferenceError(f"{model.path.name}: completion lost: {exc}")
                try:
                    token.run_sync_soon(completion.set, failure)
                except BaseException:
                    pass  # the job then ends by its timeout

        job = await trio.to_thread.run_sync(
            self._launch_retrying, model, frames, out, on_done, abandon_on_cancel=True
        )
        completion.job = job
        if completion.event.is_set():  # it finished before the launching thread returned
            model.jobs.discard(job)
        with trio.move_on_after(self._timeout_ms / 1000.0) as scope:
            await completion.event.wait()
        if scope.cancelled_caught:
            raise self._fault(DeviceTimeout(
                f"{model.path.name}: a job of {len(frames)} frame(s) did not complete within "
                f"{self._timeout_ms} ms"
            ))
        if completion.error is not None:
            raise self._fault(classify(completion.error, phase="complete", what=model.path.name))

    def _fault(self, exc: Exception) -> Exception:
        if isinstance(exc, DeviceFault):
            self._faulted = True
        if isinstance(exc, DeviceLost) and self._shared is not None:
            mark_broken(self._shared)
        return exc

    async def infer(self, model_id: str, batch: np.ndarray) -> np.ndarray:
        model = self._models.get(model_id)
        if model is None:
            raise InferenceError(f"model {model_id} is not loaded")
        batch = np.asarray(batch)
        if batch.dtype != np.uint8 or batch.shape[1:] != model.input_shape:
            raise InferenceError(
                f"{model_id} takes uint8 frames of {model.input_shape}, got {batch.dtype} "
                f"{batch.shape[1:]}"
            )
        if not (batch.flags.c_contiguous and batch.flags.writeable):
            batch = np.array(batch, order="C")  # HailoRT binds buffers zero-copy
        n = batch.shape[0]
        out = np.empty((n, *model.output_shape), dtype=np.float32)
        for start in range(0, n, model.chunk):
            end = min(n, start + model.chunk)
            await self._run_once(model, batch[start:end], out[start:end])
        if model_id == DETECTION:
            prob = out.reshape(n, *(d for d in model.output_shape if d != 1))
            if model.activation == "sigmoid":  # per pixel: not on the Trio thread
                prob = await trio.to_thread.run_sync(sigmoid, prob)
            return prob
        probs = out.reshape(n, -1, model.output_shape[-1])
        if model.activation == "softmax":
            probs = await trio.to_thread.run_sync(softmax, probs)
        return probs

    # -- closing --------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        wait_ms = min(self._timeout_ms, 2000)
        for model in list(self._by_path.values()):
            for job in list(model.jobs):
                try:  # let the device finish with our buffers before the model goes
                    job.wait(wait_ms)
                except Exception:
                    pass
            model.jobs.clear()
            configured, model.configured = model.configured, None
            if configured is not None:
                try:
                    configured.shutdown()
                except Exception as exc:
                    log.debug("shutting %s down: %s", model.path.name, describe(exc))
        self._models.clear()
        self._by_path.clear()
        shared, self._shared = self._shared, None
        if shared is not None:
            release_vdevice(shared, broken=self._faulted)


def _format_str(fmt: Any) -> str:
    try:
        return f"{fmt.type.name}/{fmt.order.name}"
    except AttributeError:
        return str(fmt)


__all__ = ["INSTALL_HINT", "HailoBackend", "missing_parts"]
