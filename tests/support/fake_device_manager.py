"""TEST DOUBLE of hailo-device-manager -- not the real daemon.

The real one (``device_manager/hailo_device_manager.py`` in
gregm123456/raspberry_pi_hailo_ai_services) owns the Hailo VDevice and runs every
service's models for clients on a Unix socket. This double speaks its protocol as that
file does, so that ``backend.type: device-manager`` is tested against the same surface:

* framing: 4-byte big-endian length, then one JSON object; a message over the size limit
  or a body that is not JSON is answered ``{"error": <text>}`` (no ``request_id``) and the
  connection is closed;
* one request at a time per connection (the next is read after the reply is written), and
  one worker thread running every connection's requests in arrival order;
* the actions ``ping``, ``status``, ``device_status``, ``load_model``, ``infer``,
  ``unload_model``, with the real reply shapes and error strings (``model_path required``,
  ``Model file not found: ...``, ``Failed to load model: ...``, ``Inference failed: ...``,
  ``Unknown action: ...``, ``Unsupported model_type: ...``), the ``request_id`` echoed;
* the OCR handler (``model_type: "ocr"``): detection + per-language recognition HEFs from
  ``model_params``, ``model_info.detection_input_shape`` in the load reply, ``mode:
  detection`` on one frame and ``mode: recognition`` on a list of crops padded with zero
  frames to ``batch_size`` and trimmed again, with the same HailoRT calls
  (``create_infer_model``, UINT8 in / FLOAT32 out, ``configure``, ``wait_for_async_ready``
  and ``job.wait`` of 1000 ms, no completion callback, so a failed job's status is never
  seen) -- run on the HailoRT stand-in (``tests/hailo_standin``), so the text is real;
* a request that is JSON but not an object closes the connection without a reply (the
  daemon's ``except Exception`` around a client);
* a lost device context is not rebuilt except by a restart, as in the real daemon.

Not modelled: the other model types (``vlm``, ``clip``, ...: they answer ``Failed to load
model: Unsupported model_type: ...``), what triggers an LRU eviction (another service's
load meeting ``HAILO_RESOURCE_EXHAUSTED``; the stand-in has no memory limit), the HTTP
status endpoint, socket ownership. For tests: ``stop()`` is the process going away (every
connection closed at once), ``evict_lru()`` is the daemon's eviction of the
least-recently-used model (what another service's load does when the NPU's memory is
full), ``hold()`` / ``release()`` keep the worker from starting the next job (another
service's long job ahead of ours), ``fail_next()`` makes the OCR handler raise an exception
on the next job of a mode (answered through the daemon's own ``Inference failed: ...``
path), ``requests`` logs what was asked, and ``job_wait_ms`` stretches the 1000 ms waits
because the stand-in computes on a shared CPU.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # the real daemon's default
REAL_JOB_WAIT_MS = 1000


class _OcrRuntime:
    def __init__(self) -> None:
        self.detection_model: Any = None
        self.detection_configured: Any = None
        self.detection_input_shape: tuple[int, ...] = ()
        self.recognition_models: dict[str, Any] = {}
        self.recognition_configured: dict[str, Any] = {}
        self.batch_sizes: dict[str, int] = {}


def _to_array(payload: Any):
    import numpy as np

    dtype = payload.get("dtype")
    shape = payload.get("shape")
    data = payload.get("data_b64")
    if not dtype or shape is None or not data:
        raise ValueError("tensor must include dtype, shape, and data_b64")
    return np.frombuffer(base64.b64decode(data), dtype=np.dtype(dtype)).reshape(shape).copy()


def _to_tensor(array) -> dict[str, Any]:
    return {"dtype": str(array.dtype), "shape": list(array.shape),
            "data_b64": base64.b64encode(array.tobytes()).decode("ascii")}


class _OcrHandler:
    """``model_type: "ocr"`` on the stand-in, with the real handler's calls and checks."""

    def __init__(self, hp: Any, job_wait_ms: int) -> None:
        self.hp = hp
        self.wait_ms = job_wait_ms

    def _open(self, vdevice: Any, path: str) -> tuple[Any, Any]:
        model = vdevice.create_infer_model(str(path))
        model.input().set_format_type(self.hp.FormatType.UINT8)
        model.output().set_format_type(self.hp.FormatType.FLOAT32)
        return model, model.configure()

    def load(self, vdevice: Any, model_path: str, params: dict[str, Any]) -> _OcrRuntime:
        det_path = params.get("detection_hef_path")
        rec_hefs = params.get("recognition_hefs", {})
        if not det_path:
            raise ValueError("detection_hef_path is required for ocr")
        if not rec_hefs:
            raise ValueError("recognition_hefs dict is required for ocr")
        if not Path(det_path).exists():
            raise ValueError(f"Detection HEF not found: {det_path}")
        rt = _OcrRuntime()
        rt.detection_model, rt.detection_configured = self._open(vdevice, det_path)
        rt.detection_input_shape = tuple(rt.detection_model.input().shape)
        for lang, path in rec_hefs.items():
            if not Path(path).exists():
                raise ValueError(f"Recognition HEF for {lang} not found: {path}")
            rt.recognition_models[lang], rt.recognition_configured[lang] = self._open(
                vdevice, path
            )
        rt.batch_sizes = params.get("batch_sizes", {})
        return rt

    def _run(self, model: Any, configured: Any, frames: list) -> list:
        import numpy as np

        bindings, outputs = [], []
        for frame in frames:
            b = configured.create_bindings()
            x = np.empty(model.input().shape, dtype=np.uint8)
            x[:] = frame
            b.input().set_buffer(x)
            y = np.empty(model.output().shape, dtype=np.float32)
            b.output().set_buffer(y)
            bindings.append(b)
            outputs.append(y)
        configured.wait_for_async_ready(timeout_ms=self.wait_ms)
        job = configured.run_async(bindings)
        job.wait(timeout_ms=self.wait_ms)
        return outputs

    def infer(self, rt: _OcrRuntime, input_data: dict[str, Any]) -> Any:
        import numpy as np

        mode = input_data.get("mode")
        if mode == "detection":
            image = _to_array(input_data.get("image"))
            (out,) = self._run(rt.detection_model, rt.detection_configured, [image])
            return _to_tensor(out.copy())
        if mode == "recognition":
            lang = input_data.get("language", "en")
            crops = input_data.get("crops", [])
            size = input_data.get("batch_size", rt.batch_sizes.get(lang, 8))
            if lang not in rt.recognition_models:
                raise ValueError(
                    f"Unsupported language: {lang}. Available: {list(rt.recognition_models.keys())}"
                )
            frames = [_to_array(c) for c in crops]
            results = []
            for start in range(0, len(frames), size):
                chunk = frames[start:start + size]
                real = len(chunk)
                chunk = chunk + [np.zeros(chunk[0].shape, chunk[0].dtype)] * (size - real)
                outs = self._run(rt.recognition_models[lang], rt.recognition_configured[lang],
                                 chunk)
                results.extend(_to_tensor(o.copy()) for o in outs[:real])
            return results
        raise ValueError(f"Unknown OCR mode: {mode}. Must be 'detection' or 'recognition'")

    def unload(self, rt: _OcrRuntime) -> None:
        objects = [rt.detection_configured, rt.detection_model,
                   *rt.recognition_configured.values(), *rt.recognition_models.values()]
        for obj in objects:
            if hasattr(obj, "release"):
                obj.release()


class _Item:
    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request
        self.response: dict[str, Any] | None = None
        self.done = threading.Event()


class FakeDeviceManager:
    """The double. ``start()`` listens on ``socket_path``; ``stop()`` goes away."""

    def __init__(self, socket_path: str | os.PathLike[str], *, job_wait_ms: int = REAL_JOB_WAIT_MS,
                 group_id: str | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.socket_path = str(socket_path)
        self.job_wait_ms = job_wait_ms
        self.group_id = group_id  # None: HailoRT's default, as without hailo_apps installed
        self.max_message_bytes = max_message_bytes
        self.requests: list[dict[str, Any]] = []
        self.loaded_models: dict[str, dict[str, Any]] = {}
        self._gate = threading.Event()
        self._gate.set()
        self._failures: list[tuple[str, BaseException]] = []
        self._running = False
        self._threads: list[threading.Thread] = []
        self._clients: set[socket.socket] = set()
        self._jobs: queue.Queue[_Item | None] = queue.Queue()
        self._listener: socket.socket | None = None
        self.device: Any = None
        self.vdevice: Any = None
        self.queue_depth = 0
        self.total_lru_evictions = 0
        self.last_capacity_event_reason: str | None = None
        self.last_capacity_event_model: str | None = None
        self.last_capacity_event_at: float | None = None
        self._device_lock = threading.Lock()  # the daemon's one executor thread
        self.start_time = time.time()

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> FakeDeviceManager:
        import hailo_platform as hp

        assert getattr(hp, "STANDIN", False), "the fake manager runs on the HailoRT stand-in"
        self.hp = hp
        self.handler = _OcrHandler(hp, self.job_wait_ms)
        self.start_time = time.time()  # a fresh process: its counters start again
        self.queue_depth = self.total_lru_evictions = 0
        self.last_capacity_event_reason = self.last_capacity_event_model = None
        self.last_capacity_event_at = None
        self.device = hp.Device()
        self._create_vdevice()
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.socket_path)
        os.chmod(self.socket_path, 0o660)
        listener.listen(16)
        listener.settimeout(0.05)
        self._listener = listener
        self._running = True
        self._jobs = queue.Queue()
        self._spawn(self._accept_loop, "fake-hdm-accept")
        self._spawn(self._worker_loop, "fake-hdm-worker")
        return self

    def _create_vdevice(self) -> None:
        params = self.hp.VDevice.create_params()
        if self.group_id is not None:
            params.group_id = self.group_id
        self.vdevice = self.hp.VDevice(params)

    def stop(self) -> None:
        """The process goes away: the socket, every connection, the models, the device."""
        if not self._running:
            return
        self._running = False
        self._gate.set()
        if self._listener is not None:
            self._listener.close()
        for client in list(self._clients):
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=30)
        self._threads.clear()
        for entry in list(self.loaded_models.values()):
            try:
                self.handler.unload(entry["model"])
            except Exception:
                pass
        self.loaded_models.clear()
        for handle in (self.vdevice, self.device):
            if handle is not None:
                handle.release()
        self.vdevice = self.device = None
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)

    def restart(self) -> None:
        self.stop()
        self.start()

    def hold(self) -> None:
        """The worker starts no new job until :meth:`release` (a long job ahead of ours)."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def evict_lru(self, reason: str = "RESOURCE_EXHAUSTED while loading another service's "
                  "model") -> str | None:
        """Unload the least-recently-used model, between two jobs, as the daemon's
        ``_evict_lru`` does; its key (``model_type:model_path``), or None if none is loaded."""
        with self._device_lock:
            if not self.loaded_models:
                return None
            key = min(self.loaded_models, key=lambda k: self.loaded_models[k]["last_used"])
            entry = self.loaded_models.pop(key)
            try:
                self.handler.unload(entry["model"])
            except Exception:
                pass  # the daemon logs and ignores an unload error here
            self.total_lru_evictions += 1
            self.last_capacity_event_reason = reason
            self.last_capacity_event_model = entry["model_path"]
            self.last_capacity_event_at = time.time()
            return key

    def fail_next(self, mode: str, exc: BaseException) -> None:
        """The handler raises ``exc`` on the next ``infer`` of ``mode`` (detection or
        recognition), as HailoRT would inside it."""
        self._failures.append((mode, exc))

    def __enter__(self) -> FakeDeviceManager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target, name: str, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    # -- connections ----------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while self._running:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self._clients.add(client)
            self._spawn(self._serve_client, "fake-hdm-client", client)

    def _recv_exactly(self, client: socket.socket, n: int) -> bytes | None:
        chunks, got = [], 0
        while got < n:
            chunk = client.recv(min(n - got, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _read_message(self, client: socket.socket) -> dict[str, Any] | None:
        header = self._recv_exactly(client, 4)
        if not header:
            return None
        (length,) = struct.unpack(">I", header)
        if length > self.max_message_bytes:
            raise ValueError(f"Message too large: {length} bytes")
        body = self._recv_exactly(client, length)
        if body is None:
            return None
        return json.loads(body.decode("utf-8"))

    def _write_message(self, client: socket.socket, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode("utf-8")
        if len(body) > self.max_message_bytes:
            raise ValueError(f"Response too large: {len(body)} bytes")
        client.sendall(struct.pack(">I", len(body)) + body)

    def _serve_client(self, client: socket.socket) -> None:
        try:
            while self._running:
                request = self._read_message(client)
                if request is None:
                    break
                response = self._process(request)
                if response is None:  # stopped while the job waited
                    break
                self._write_message(client, response)
        except ValueError as exc:  # framing, JSON, or a reply over the limit
            try:
                self._write_message(client, {"error": str(exc)})
            except OSError:
                pass
        except Exception:  # a JSON request that is not an object, a closed socket, ...
            pass  # the daemon logs it and closes the connection without a reply
        finally:
            self._clients.discard(client)
            client.close()

    def _process(self, request: dict[str, Any]) -> dict[str, Any] | None:
        request_id = request.get("request_id")  # before queueing, as the daemon reads it
        item = _Item(request)
        self.queue_depth += 1
        self._jobs.put(item)
        while not item.done.wait(0.05):
            if not self._running:
                return None
        response = item.response or {}
        if request_id is not None:
            response["request_id"] = request_id
        return response

    def _worker_loop(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            while not self._gate.wait(0.05):
                pass
            if not self._running:
                return
            self.requests.append(_summary(item.request))
            try:
                with self._device_lock:
                    item.response = self._handle(item.request)
            except Exception as exc:
                item.response = {"error": f"Internal error: {exc}"}
            self.queue_depth = max(0, self.queue_depth - 1)
            item.done.set()

    # -- actions --------------------------------------------------------------------------
    def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        action = request.get("action")
        if action in ("ping", "status"):
            return self._status()
        if action == "device_status":
            return self._device_status()
        if action == "load_model":
            return self._load_model(request)
        if action == "infer":
            return self._infer(request)
        if action == "unload_model":
            return self._unload_model(request)
        return {"error": f"Unknown action: {action}"}

    def _status(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "device_id": self.device.device_id if self.device else None,
            "loaded_models": [
                {k: e[k] for k in ("model_type", "model_path", "loaded_at", "last_used")}
                for e in self.loaded_models.values()
            ],
            "uptime_seconds": time.time() - self.start_time,
            "socket_path": self.socket_path,
            "queue_depth": self.queue_depth,
            "total_lru_evictions": self.total_lru_evictions,
            "runtime_broken_reason": None,
            "last_capacity_event_reason": self.last_capacity_event_reason,
            "last_capacity_event_model": self.last_capacity_event_model,
            "last_capacity_event_at": self.last_capacity_event_at,
        }

    def _device_status(self) -> dict[str, Any]:
        if not self.device:
            return {"status": "error", "message": "Device not initialized"}
        status = self._status()
        networks = [{"name": Path(e["model_path"]).name, **{k: e[k] for k in (
            "model_type", "model_path", "loaded_at", "last_used")}}
            for e in self.loaded_models.values()]
        return {
            "status": "ok",
            "device": {"device_id": self.device.device_id, "architecture": "HAILO10H",
                       "fw_version": "5.2.0 (stand-in)", "temperature_celsius": None},
            "networks": {"status": "ok", "source": "device_manager",
                         "network_count": len(networks), "networks": networks},
            **{k: status[k] for k in ("uptime_seconds", "queue_depth", "total_lru_evictions",
                                      "runtime_broken_reason", "last_capacity_event_reason",
                                      "last_capacity_event_model", "last_capacity_event_at")},
        }

    def _load_model(self, request: dict[str, Any]) -> dict[str, Any]:
        path = request.get("model_path")
        kind = request.get("model_type", "vlm")
        params = request.get("model_params") or {}
        if not path:
            return {"error": "model_path required"}
        if not Path(path).exists() and kind != "clip":
            return {"error": f"Model file not found: {path}"}
        key = f"{kind}:{path}"
        entry = self.loaded_models.get(key)
        if entry is None:
            if self.device is None or self.vdevice is None:
                try:
                    self.device = self.hp.Device()
                    self._create_vdevice()
                except Exception as exc:
                    return {"error": "Device manager runtime unavailable. Details: "
                                     f"runtime context unavailable: {exc}"}
            try:
                if kind != "ocr":
                    raise ValueError(f"Unsupported model_type: {kind}")
                model = self.handler.load(self.vdevice, path, params)
            except Exception as exc:
                return {"error": f"Failed to load model: {exc}"}
            now = time.time()
            entry = {"model_type": kind, "model_path": path, "model": model,
                     "loaded_at": now, "last_used": now}
            self.loaded_models[key] = entry
            message = "Model loaded"
        else:
            message = "Model already loaded"
        reply = {"status": "ok", "model_path": path, "model_type": kind, "message": message}
        if kind == "ocr":
            reply["model_info"] = {
                "detection_input_shape": list(entry["model"].detection_input_shape)
            }
        return reply

    def _infer(self, request: dict[str, Any]) -> dict[str, Any]:
        path = request.get("model_path")
        kind = request.get("model_type", "vlm")
        input_data = request.get("input_data")
        if not path or input_data is None:
            return {"error": "model_path and input_data required"}
        try:
            key = f"{kind}:{path}"
            if key not in self.loaded_models:
                loaded = self._load_model({"model_path": path, "model_type": kind,
                                           "model_params": request.get("model_params") or {}})
                if loaded.get("error"):
                    return loaded
            entry = self.loaded_models[key]
            started = time.time()
            for i, (mode, exc) in enumerate(self._failures):
                if mode == input_data.get("mode"):
                    del self._failures[i]
                    raise exc
            result = self.handler.infer(entry["model"], input_data)
            entry["last_used"] = time.time()
            return {"status": "ok", "result": result,
                    "inference_time_ms": int((time.time() - started) * 1000)}
        except Exception as exc:
            return {"error": f"Inference failed: {exc}"}

    def _unload_model(self, request: dict[str, Any]) -> dict[str, Any]:
        path = request.get("model_path")
        kind = request.get("model_type", "vlm")
        if not path:
            return {"error": "model_path required"}
        entry = self.loaded_models.get(f"{kind}:{path}")
        if entry is None:
            return {"status": "ok", "message": "Model was not loaded"}
        try:
            self.handler.unload(entry["model"])
            del self.loaded_models[f"{kind}:{path}"]
            return {"status": "ok", "message": "Model unloaded"}
        except Exception as exc:
            return {"error": str(exc)}


def _summary(request: dict[str, Any]) -> dict[str, Any]:
    """What a test may want to know about a request, without its tensors."""
    data = request.get("input_data") if isinstance(request.get("input_data"), dict) else {}
    params = request.get("model_params") if isinstance(request.get("model_params"), dict) else {}
    return {
        "action": request.get("action"),
        "request_id": request.get("request_id"),
        "model_type": request.get("model_type"),
        "model_path": request.get("model_path"),
        "has_model_params": bool(params),
        "detection_hef_path": params.get("detection_hef_path"),
        "recognition_hefs": dict(params.get("recognition_hefs") or {}),
        "mode": data.get("mode"),
        "language": data.get("language"),
        "crops": len(data.get("crops") or []),
        "batch_size": data.get("batch_size"),
    }
