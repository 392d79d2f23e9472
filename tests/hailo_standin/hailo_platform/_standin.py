"""The machinery behind the HailoRT TEST DOUBLE: a pretend NPU that runs ONNX models.

* **Descriptor ("HEF")**: a JSON file standing for a compiled model::

    {"standin_hef": 1, "name": "ocr_det", "kind": "detection" | "recognition",
     "onnx": "/path/model.onnx", "input_shape": [544, 960, 3],
     "output": "probabilities" | "logits", "async_queue_size": 16, "latency_ms": 0,
     "faults": [{"kind": "error", "after": 3, "times": 1, "status": 8}]}

  The chip normalises its input, so the stand-in takes raw uint8 RGB frames and itself
  converts them to what the ONNX model wants (BGR, float, ``(x/255 - 0.5)/0.5``, NCHW).
  Detection outputs are per frame ``(H, W, 1)``; recognition ``(1, T, C)`` -- the HEF layout.

* **Device registry** (process-wide): one physical device, ``0000:01:00.0``. VDevices with
  the same group id (other than ``UNIQUE``) share it; any other VDevice while it is held
  fails with ``HAILO_OUT_OF_PHYSICAL_DEVICES`` (74). Opening a VDevice follows
  ``VDevice::create`` in HailoRT 5.2 (``vdevice.cpp``): with ``HAILO_STANDIN_ARCH=HAILO10H``
  (default) ``multi_process_service=True`` is refused with ``HAILO_INVALID_OPERATION`` (6,
  ``validate_params``: a Hailo-10H needs no service); with ``HAILO8`` it is accepted (the
  service is assumed to be running). A device id the scan does not list is
  ``HAILO_INVALID_ARGUMENT`` (2, ``get_accelerator_type``). :func:`set_devices` changes
  what the scan finds: with none, opening fails with 74 (``create_devices`` finds nothing
  to open). :func:`set_node_openable` ``(False)`` makes opening the node fail with
  ``HAILO_DRIVER_OPERATION_FAILED`` (36, ``open_device_file``), as for a user outside the
  node's group.

* **Jobs**: a ``run_async`` that raises shuts its configured model down first, as
  ``ConfiguredInferModel::run_async`` does; later calls on it are refused. A completion
  callback that raises is recorded in :data:`callback_failures` and reported on stderr:
  real HailoRT calls callbacks on a C++ thread without a handler, so the process would
  abort (``std::terminate``); the tests' fixture fails the test instead.

* **Descriptor outputs**: ``"extra_outputs": ["name", ...]`` gives a model more outputs
  (``InferModel.output()`` without a name is then 6, "Model has more than one output!").

* **Faults**, from the descriptor or injected at run time with :func:`inject`:
  ``error`` (the job completes with ``status``, default 8; afterwards the model refuses
  jobs, as HailoRT shuts the pipeline down after a failed job), ``lost`` (the job completes
  with 62 and the device session is dead: every later call raises
  ``HailoCommunicationClosedException``; a VDevice opened after all holders released it
  works again), ``hang`` (the job never completes until shutdown), ``delay``
  (``delay_ms`` more latency), ``not_ready`` (``wait_for_async_ready`` waits its whole
  timeout and raises ``HailoRTTimeout``), ``refuse`` (``run_async`` itself raises
  ``status``, default 82, and so shuts the model down). ``after`` counts matching events
  (jobs; waits for ``not_ready``; ``run_async`` calls for ``refuse``) since the fault was
  added; it fires ``times`` times.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import traceback
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from .pyhailort import _pyhailort

DEVICE_IDS = ("0000:01:00.0",)
_present: list[str] = list(DEVICE_IDS)
_node_openable = True
#: Exceptions raised by completion callbacks (each would have aborted a real process).
callback_failures: list[BaseException] = []


def set_devices(ids) -> None:
    """What HailoRT's scan finds from now on (``[]``: no device on this host)."""
    with _lock:
        _present[:] = [str(i) for i in ids]


def present_devices() -> list[str]:
    with _lock:
        return list(_present)


def set_node_openable(openable: bool) -> None:
    """``False``: opening the device node fails (status 36), as without permission."""
    global _node_openable
    _node_openable = bool(openable)


def _status(code: int) -> _pyhailort.HailoRTStatusException:
    return _pyhailort.HailoRTStatusException(str(code))


# --- descriptors --------------------------------------------------------------------------


class Descriptor:
    def __init__(self, path: str, data: dict[str, Any]) -> None:
        self.path = str(Path(path).resolve())
        self.name = str(data.get("name") or Path(path).stem)
        self.kind = data["kind"]
        self.onnx = str(data["onnx"])
        self.input_shape = tuple(int(v) for v in data["input_shape"])
        self.output_kind = data.get("output", "probabilities")
        self.latency_ms = float(data.get("latency_ms", 0))
        self.async_queue_size = int(data.get("async_queue_size", 16))
        self.input_name = f"{self.name}/input_layer1"
        self.output_name = f"{self.name}/output_layer1"
        self.extra_outputs = tuple(str(n) for n in data.get("extra_outputs", ()))
        self.output_scale = 1.0 / 255.0
        self.session = _session(self.onnx)
        h, w, _ = self.input_shape
        if self.kind == "detection":
            self.output_shape = (h, w, 1)
        else:
            probe = np.zeros((1, 3, h, w), dtype=np.float32)
            out = self.session.run(None, {self.session.get_inputs()[0].name: probe})[0]
            self.output_shape = (1, int(out.shape[1]), int(out.shape[2]))
        for fault in data.get("faults", []):
            inject(self.path, **fault)


_descriptors: dict[str, Descriptor] = {}
_sessions: dict[str, Any] = {}
_lock = threading.RLock()


def _session(onnx_path: str):
    import onnxruntime as ort

    with _lock:
        if onnx_path not in _sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(os.environ.get("HAILO_STANDIN_THREADS", "2"))
            opts.log_severity_level = 3
            _sessions[onnx_path] = ort.InferenceSession(
                onnx_path, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        return _sessions[onnx_path]


def load_descriptor(path: str) -> Descriptor:
    """Read a descriptor as HailoRT reads a HEF: 13 if unreadable, 26 if not a HEF."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError:
        raise _status(13) from None  # HAILO_OPEN_FILE_FAILURE
    try:
        data = json.loads(raw.decode("utf-8"))
        if data.get("standin_hef") != 1:
            raise ValueError("not a stand-in HEF")
    except (UnicodeDecodeError, ValueError, AttributeError):
        raise _status(26) from None  # HAILO_INVALID_HEF
    key = str(p.resolve())
    with _lock:
        desc = _descriptors.get(key)
        if desc is None or desc.raw != raw:
            desc = Descriptor(path, data)
            desc.raw = raw
            _descriptors[key] = desc
        return desc


# --- faults ----------------------------------------------------------------------------------


class _Fault:
    def __init__(self, kind: str, after: int = 0, times: int = 1, status: int | None = None,
                 delay_ms: float = 0.0) -> None:
        if kind not in ("error", "lost", "hang", "delay", "not_ready", "refuse"):
            raise ValueError(f"unknown fault kind {kind!r}")
        self.kind = kind
        self.after = int(after)
        self.times = int(times)
        self.status = status
        self.delay_ms = float(delay_ms)
        self.seen = 0
        self.fired = 0


_faults: dict[str, list[_Fault]] = {}
_jobs_run: dict[str, int] = {}


def inject(hef_path: str, kind: str, **options: Any) -> None:
    """Add a fault to the model at ``hef_path`` (see the module docstring)."""
    with _lock:
        _faults.setdefault(str(Path(hef_path).resolve()), []).append(_Fault(kind, **options))


def reset() -> None:
    """Forget faults, counters and device settings (between tests)."""
    global _node_openable
    with _lock:
        _faults.clear()
        _jobs_run.clear()
        _present[:] = list(DEVICE_IDS)
        _node_openable = True
        callback_failures.clear()


def jobs_run(hef_path: str) -> int:
    """Jobs the model at ``hef_path`` has completed successfully."""
    return _jobs_run.get(str(Path(hef_path).resolve()), 0)


_EVENT_OF = {"not_ready": "wait", "refuse": "run"}  # every other kind fires on "job"


def take_fault(descriptor: Descriptor, event: str) -> _Fault | None:
    """The fault that fires on this event ("wait", "run" or "job"), if any."""
    with _lock:
        for fault in _faults.get(descriptor.path, []):
            if _EVENT_OF.get(fault.kind, "job") != event:
                continue
            fault.seen += 1
            if fault.seen > fault.after and fault.fired < fault.times:
                fault.fired += 1
                return fault
    return None


# --- the device ----------------------------------------------------------------------------


class _Session:
    """A physical device in use by one group of VDevices, with its worker thread."""

    def __init__(self, device_id: str, group_id: str) -> None:
        self.device_id = device_id
        self.group_id = group_id
        self.holders = 0
        self.lost = False
        self.jobs: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._work, name="standin-npu", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            job.execute(self)


_devices: dict[str, _Session | None] = {d: None for d in DEVICE_IDS}
_live_jobs: weakref.WeakSet = weakref.WeakSet()


class VDeviceHandle:
    """What ``_pyhailort.VDevice`` is to the Python wrapper."""

    def __init__(self, session: _Session) -> None:
        self.session = session
        self.released = False

    def check_alive(self) -> None:
        if self.released:
            raise _status(6)
        if self.session.lost:
            raise _status(62)  # HAILO_COMMUNICATION_CLOSED

    def physical_ids(self) -> list[str]:
        self.check_alive()
        return [self.session.device_id]

    def submit(self, job: Job) -> None:
        self.check_alive()
        _live_jobs.add(job)
        self.session.jobs.put(job)

    def release(self) -> None:
        with _lock:
            if self.released:
                return
            self.released = True
            s = self.session
            s.holders -= 1
            if s.holders <= 0 and _devices.get(s.device_id) is s:
                _devices[s.device_id] = None
                s.jobs.put(None)


def open_vdevice(params) -> VDeviceHandle:
    arch = os.environ.get("HAILO_STANDIN_ARCH", "HAILO10H").upper()
    present = present_devices()
    if params.device_ids and any(d not in present for d in params.device_ids):
        raise _status(2)  # HAILO_INVALID_ARGUMENT: "device_id ... not found"
    if params.multi_process_service and arch != "HAILO8" and present:
        raise _status(6)  # HAILO_INVALID_OPERATION: Hailo-10H needs no service
    if params.scheduling_algorithm != _pyhailort.SchedulingAlgorithm.ROUND_ROBIN:
        raise _status(2)  # the stand-in only models the scheduler
    wanted = list(params.device_ids) or present
    group = str(params.group_id)
    with _lock:
        for device_id in wanted:
            if not _node_openable:
                raise _status(36)  # HAILO_DRIVER_OPERATION_FAILED: open(/dev/hailo0) failed
            session = _devices.get(device_id)
            if session is None:
                session = _Session(device_id, group)
                _devices[device_id] = session
            elif group == _pyhailort.HAILO_UNIQUE_VDEVICE_GROUP_ID or session.group_id != group:
                if params.device_ids:
                    raise _status(73)  # HAILO_DEVICE_IN_USE: asked for it by id
                continue
            session.holders += 1
            return VDeviceHandle(session)
    raise _status(74)  # HAILO_OUT_OF_PHYSICAL_DEVICES


def held_by() -> dict[str, tuple[str, int] | None]:
    """Who holds each device: (group id, number of VDevices), for tests."""
    with _lock:
        return {d: (s.group_id, s.holders) if s else None for d, s in _devices.items()}


# --- jobs ------------------------------------------------------------------------------------


def _preprocess(frames: list[np.ndarray]) -> np.ndarray:
    """What the chip's first layers do: RGB uint8 HWC -> normalised BGR float NCHW."""
    batch = np.stack(frames)[..., ::-1].astype(np.float32)
    batch = (batch / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


class Job:
    def __init__(self, configured, frames, outputs, callback) -> None:
        self.configured = configured
        self.frames = frames
        self.outputs = outputs
        self.callback = callback
        self.callback_done = threading.Event()
        self.finished = False
        self.hang = threading.Event()

    def execute(self, session: _Session) -> None:
        desc = self.configured.model.descriptor
        status = 0
        if self.configured.shut or session.lost:
            status = 63 if not session.lost else 62
        else:
            fault = take_fault(desc, "job")
            if fault is not None and fault.kind == "hang":
                # Never completes by itself: released (aborted) by shutdown.
                self.hang.wait()
                status = 63
            elif fault is not None and fault.kind == "lost":
                session.lost = True
                status = 62
            elif fault is not None and fault.kind == "error":
                status = int(fault.status or 8)
                self.configured.failed = True
            else:
                delay = desc.latency_ms + (fault.delay_ms if fault is not None else 0.0)
                if delay:
                    time.sleep(delay / 1000.0)
                try:
                    self._compute(desc)
                    with _lock:
                        _jobs_run[desc.path] = _jobs_run.get(desc.path, 0) + 1
                except Exception:
                    status = 8  # HAILO_INTERNAL_FAILURE
        self.complete(status)

    def _compute(self, desc: Descriptor) -> None:
        session = desc.session
        x = _preprocess(self.frames)
        out = session.run(None, {session.get_inputs()[0].name: x})[0]
        model = self.configured.model
        if desc.kind == "detection":
            out = out[:, 0][..., None]  # (N, 1, H, W) -> (N, H, W, 1)
            if desc.output_kind == "logits":  # a HEF without its final sigmoid
                p = np.clip(out, 1e-6, 1 - 1e-6)
                out = np.log(p / (1 - p))
        else:
            if desc.output_kind == "logits":
                out = np.log(np.clip(out, 1e-12, None))
            out = out[:, None]  # (N, T, C) -> (N, 1, T, C)
        fmt = model.output.format.type
        for i, y in enumerate(self.outputs):
            frame = out[i].reshape(model.output.shape)
            if fmt == _pyhailort.FormatType.FLOAT32:
                y.reshape(-1).view(np.float32)[:] = frame.reshape(-1)
            else:  # the HEF's own quantised output
                q = np.clip(np.round(frame / model.output.quant.qp_scale), 0, 255).astype(np.uint8)
                y.reshape(-1).view(np.uint8)[: q.size] = q.reshape(-1)

    def complete(self, status: int) -> None:
        with _lock:
            if self.finished:
                return
            self.finished = True
        cfg = self.configured
        with cfg.cond:
            cfg.frames_in_flight -= len(self.frames)
            cfg.cond.notify_all()
        try:
            self.callback(status)
        except BaseException as exc:  # real HailoRT: std::terminate, the process aborts
            callback_failures.append(exc)
            traceback.print_exc()
            print("HailoRT stand-in: a completion callback raised; real HailoRT would abort "
                  "the process here", file=sys.stderr)
        finally:
            self.callback_done.set()


def abort_jobs_of(configured) -> None:
    """Shutdown: release hung jobs; queued ones complete as aborted when reached."""
    for job in list(_live_jobs):
        if job.configured is configured and not job.finished:
            job.hang.set()
