"""The device-manager backend: the compiled models run by hailo-device-manager.

On the Raspberry Pis this service replaces, no service opens the NPU itself:
**hailo-device-manager** (``device_manager/`` of the original services repository) holds
the one VDevice and runs every service's models (vision, CLIP, whisper, depth, OCR), one
job at a time, for clients on a Unix socket (:mod:`npu.manager_protocol`). A service that
opened its own VDevice there would compete with the daemon for the device. This backend
is such a client: the same HEFs as :mod:`npu.hailo_backend`, loaded and run by the manager's
OCR handler (``model_type: "ocr"``).

**What stays ours.** Pre- and post-processing, tiling, and the recognition batches (the
batcher forms them; each ``infer`` sends exactly one model batch, and names its size, so
the manager's own batching has nothing to split or pad). The pipeline is told the same
fixed shapes, layout and pad values as with the direct backend (:mod:`npu.hef_specs`):
the detection input from the manager's load reply (``model_info.detection_input_shape``),
the recognition input from the HEF's own metadata (read with ``hailo_platform.HEF``, which
parses the file and opens no device; the manager's load reply does not report it), and the
outputs from one frame of padding run through each model at load, which also tells
whether a HEF ends in its softmax/sigmoid.

**Connections.** One Unix-socket connection per job the manager may hold for us
(``backend.max_jobs_in_flight``, 2 by default): the manager reads a connection's next
request only after answering the last, so two connections let it receive and parse one
request while it runs the other. Each carries one request at a time and its reply must
echo the request's ``request_id``; a reply for another id desynchronises nothing else
because the connection is then closed. All socket I/O is Trio's; base64 and JSON of a
tensor (about 2 MB of text for a 544x960 detection input) run in a worker thread. ``load``
and ``close`` are called in a Trio worker thread (as the NPU owner does) and do their I/O
on the Trio loop through ``trio.from_thread.run``.

**Faults.** Every wait is bounded by ``device_manager.timeout_s``. A reply that does not
come in time is :class:`~npu.errors.DeviceTimeout`; a closed or refused connection (the
manager stopped or restarted) is :class:`~npu.errors.DeviceLost`; both make the NPU owner
fail the jobs in flight, close this backend and load a new one with its backoff, which
reconnects and loads the models again. An ``error`` reply fails its job only
(:class:`~npu.errors.InferenceError`) unless it says the manager's device is gone. The
manager does not check a finished job's status (HailoRT reports it only to a callback),
so a job that failed on the NPU comes back with whatever its output buffer held: outputs
that should be probabilities and are not fail their job. ``close`` unloads the models
(``unload_model``) so that the NPU's memory goes back to the other services, and a reload
after a fault starts from a fresh runtime in the manager.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import attrs
import numpy as np
import trio

from . import manager_protocol as mp
from .backend import DETECTION, BackendInfo, ModelSpec, recognition_id
from .config import NpuConfig
from .errors import (
    BackendError,
    BackendUnavailable,
    DeviceFault,
    DeviceLost,
    DeviceTimeout,
    InferenceError,
    ModelLoadError,
)
from .hailo_charsets import charset_for
from .hailo_errors import classify
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
from .models import resolve_model_path

log = logging.getLogger("hailo_ocr.device_manager")

MODEL_TYPE: Final = "ocr"
DEFAULT_CONNECTIONS: Final = 2  # detection of one image overlaps recognition of another
UNLOAD_TIMEOUT_S: Final = 5.0  # shutdown does not wait longer for the manager
REFUSAL_READ_S: Final = 1.0  # for the manager's answer after it refused our request

_request_ids = itertools.count(1)

BINDINGS_HINT: Final = (
    "the device-manager backend reads each HEF's input shape with HailoRT's Python "
    "bindings (hailo_platform; this opens no device), which are not installed for this "
    "Python. They come with the packages hailo-device-manager itself needs: "
    "`sudo apt install hailo-h10-all` (or python3-h10-hailort). If hailo-ocr runs in a "
    "virtualenv, create it with --system-site-packages"
)


def _hef_input_shape(hp: Any, path: Path) -> tuple[int, ...]:
    """A HEF's per-frame input shape, from the file alone."""
    try:
        infos = hp.HEF(str(path)).get_input_vstream_infos()
    except Exception as exc:
        raise classify(exc, phase="load", what=f"reading {path}") from exc
    if len(infos) != 1:
        raise ModelLoadError(f"{path.name}: expected one input, the HEF has {len(infos)}")
    return tuple(int(d) for d in infos[0].shape)


@attrs.frozen
class _Plan:
    """What to ask the manager for, resolved before any I/O."""

    socket: str
    detection: Path
    serve_detection: bool  # False: loaded only because the manager's OCR handler needs it
    recognition: dict[str, Path]  # the languages this backend serves
    charsets: dict[str, tuple[str, ...]]
    rec_inputs: dict[str, tuple[int, ...]]
    #: Recognition HEFs loaded only because the manager's OCR handler needs one.
    extra_recognition: dict[str, Path] = attrs.Factory(dict)
    device_node: bool = False  # /dev/hailo0 exists

    def model_params(self, batch_size_rec: int) -> dict[str, Any]:
        hefs = {**self.extra_recognition, **self.recognition}
        return {
            "detection_hef_path": str(self.detection),
            "recognition_hefs": {lang: str(p) for lang, p in hefs.items()},
            "batch_sizes": {lang: batch_size_rec for lang in hefs},
        }


@attrs.define(eq=False)
class _Model:
    """One model as this backend serves it."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]  # per frame, as our pipeline wants it
    language: str | None = None  # recognition
    activation: str = "none"  # "softmax" / "sigmoid" when the HEF outputs raw scores


class _ConnectionClosed(Exception):
    """The manager closed its end while we waited for a reply."""


@attrs.define(eq=False)
class _Connection:
    """One connection to the manager, carrying one request at a time."""

    raw: socket.socket
    sock: Any  # trio.socket.SocketType over ``raw``
    reply_limit: int  # longest reply body accepted

    @classmethod
    async def open(cls, path: str, reply_limit: int) -> _Connection:
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock = trio.socket.from_stdlib_socket(raw)
        try:
            await sock.connect(path)
        except BaseException:
            raw.close()
            raise
        return cls(raw, sock, reply_limit)

    async def exchange(self, payload: bytes) -> bytearray:
        """Send one framed request; return the body of the one reply."""
        view = memoryview(payload)
        try:
            while view:
                sent = await self.sock.send(view)
                view = view[sent:]
        except OSError:
            # The manager refuses a message over its size limit after reading only the
            # length: it answers, closes, and our send fails. Its answer is still queued.
            with trio.move_on_after(REFUSAL_READ_S):
                try:
                    return await self._receive_reply()
                except (OSError, _ConnectionClosed):
                    pass
            raise
        return await self._receive_reply()

    async def _receive_reply(self) -> bytearray:
        header = await self._receive_exactly(mp.HEADER.size)
        return await self._receive_exactly(mp.body_length(bytes(header), self.reply_limit))

    async def _receive_exactly(self, n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = await self.sock.recv_into(view[got:], n - got)
            if k == 0:
                raise _ConnectionClosed(f"the connection closed after {got} of {n} bytes")
            got += k
        return buf

    def close(self) -> None:
        """Close without telling Trio: only ever called when no task waits on it."""
        self.raw.close()


def _encode(build: Callable[[], dict[str, Any]], request_id: str) -> bytes:
    return mp.frame({**build(), "request_id": request_id})


def _decode(
    body: bytearray, request_id: str, read: Callable[[dict[str, Any]], Any] | None
) -> tuple[dict[str, Any], Any]:
    """The reply, checked against its request, and what ``read`` makes of a success."""
    reply = mp.parse_reply(body)
    mp.check_reply_id(reply, request_id)
    if "error" in reply or read is None:
        return reply, None
    return reply, read(reply)


class DeviceManagerBackend:
    """Runs the compiled OCR models through hailo-device-manager."""

    def __init__(self, config: NpuConfig, model_ids: frozenset[str] | None = None) -> None:
        """Serve ``model_ids`` (:mod:`npu.placement` decides them), as the Hailo backend
        would. None: detection and every language of ``ocr.languages`` that has a HEF in
        ``hailo_models.recognition_hefs``."""
        self._config = config
        self._cfg = config.hailo_models
        self._timeout = float(config.device_manager.timeout_s)
        if model_ids is None:
            model_ids = frozenset(
                [DETECTION, *(recognition_id(lang) for lang in config.ocr.languages
                              if lang in config.hailo_models.recognition_hefs)]
            )
        self._model_ids = model_ids
        self._connections = config.backend.max_jobs_in_flight or DEFAULT_CONNECTIONS
        self._message_limit = mp.message_limit()
        self._plan: _Plan | None = None
        self._models: dict[str, _Model] = {}
        self._idle: list[_Connection] = []
        self._slots: trio.Semaphore | None = None
        self._loaded = False  # the manager holds our models
        self._closed = False

    # -- loading ----------------------------------------------------------------------
    def load(self) -> BackendInfo:
        """Resolve the files here (a worker thread), then talk to the manager on the Trio
        loop. Must be called in a Trio worker thread (``trio.to_thread.run_sync``)."""
        plan = self._make_plan()
        self._plan = plan
        try:
            return trio.from_thread.run(self._load, plan)
        except BaseException:
            self.close()
            raise

    def _make_plan(self) -> _Plan:
        cfg, base = self._cfg, self._config.base_dir
        path = mp.socket_path(self._config.device_manager.socket)
        if not os.path.exists(path):
            raise BackendUnavailable(
                f"{mp.UNIT}'s socket {path} does not exist: the {mp.UNIT} service is not "
                f"running on this host (`systemctl status {mp.UNIT}`). Start it, point "
                f"device_manager.socket (or HAILO_DEVICE_SOCKET) at its socket, or use "
                f"backend.type hailo to open the NPU directly where no manager runs"
            )
        languages = self._config.ocr.languages
        unknown = sorted(self._model_ids - {DETECTION, *map(recognition_id, languages)})
        if unknown:
            raise ModelLoadError(f"the device-manager backend has no HEF for {', '.join(unknown)}")
        serve_detection = DETECTION in self._model_ids
        try:
            det = resolve_model_path(cfg.detection_hef, base, cfg.search_paths)
        except ModelLoadError as exc:
            if serve_detection:
                raise
            raise ModelLoadError(
                f"{exc}. {mp.UNIT}'s OCR handler loads a detection HEF with every OCR model "
                f"set, so one is needed even with detection placed on the CPU"
            ) from exc
        recognition: dict[str, Path] = {}
        for lang in languages:
            if recognition_id(lang) not in self._model_ids:
                continue
            hef = cfg.recognition_hefs.get(lang)
            if hef is None:
                raise ModelLoadError(
                    f"no recognition HEF for language {lang!r} in hailo_models.recognition_hefs"
                )
            recognition[lang] = resolve_model_path(hef, base, cfg.search_paths)
        charsets = {
            lang: charset_for(lang, cfg.character_lists.get(lang), base, cfg.search_paths)
            for lang in recognition
        }
        rec_inputs = {
            lang: _hef_input_shape(import_hailort(BINDINGS_HINT), path)
            for lang, path in recognition.items()
        }
        extra: dict[str, Path] = {}
        if not recognition and not serve_detection:
            raise ModelLoadError(
                "no model to load on the NPU: none of ocr.languages "
                f"({', '.join(languages)}) has a HEF in hailo_models.recognition_hefs, and "
                "detection is not placed there"
            )
        if not recognition:
            # The manager's OCR handler refuses a model set without recognition.
            for lang, hef in cfg.recognition_hefs.items():
                try:
                    extra[lang] = resolve_model_path(hef, base, cfg.search_paths)
                    break
                except ModelLoadError:
                    continue
            if not extra:
                raise ModelLoadError(
                    f"{mp.UNIT}'s OCR handler loads at least one recognition HEF with every "
                    f"OCR model set, and none of hailo_models.recognition_hefs is found"
                )
        return _Plan(
            socket=path, detection=det, serve_detection=serve_detection,
            recognition=recognition, charsets=charsets, rec_inputs=rec_inputs,
            extra_recognition=extra, device_node=os.path.exists(DEVICE_NODE),
        )

    async def _load(self, plan: _Plan) -> BackendInfo:
        self._slots = trio.Semaphore(self._connections)
        ping, _ = await self._call(lambda: {"action": "ping"}, what="ping", phase="load")
        specs: list[ModelSpec] = []
        for attempt in (1, 2):
            reply, _ = await self._call(lambda: self._load_request(plan), what="load_model",
                                        phase="load")
            self._loaded = True
            info = reply.get("model_info") or {}
            det_shape = tuple(int(d) for d in info.get("detection_input_shape") or ())
            if not det_shape:
                raise ModelLoadError(
                    f"{mp.UNIT} did not report the detection input shape "
                    "(model_info.detection_input_shape) in its load_model reply"
                )
            log.info(
                "%s at %s: %s the OCR models (detection input %s)", mp.UNIT, plan.socket,
                "already held" if "already" in str(reply.get("message", "")) else "loaded",
                det_shape,
            )
            try:
                specs = await self._warm_up(plan, det_shape)
                break
            except InferenceError as exc:
                if attempt == 2 or "Unsupported language" not in str(exc):
                    raise
                # The manager keeps one OCR runtime per detection HEF path, loaded with
                # the parameters of whoever loaded it first: here not with our languages.
                log.warning("%s holds these models with other languages (%s); reloading "
                            "them with ours", mp.UNIT, exc)
                await self._call(lambda: self._unload_request(plan), what="unload_model",
                                 phase="load")
        self._warn_message_sizes(specs)
        # The node, as the direct backend and the original service report it; else the
        # id of the device the manager holds.
        device = DEVICE_NODE if plan.device_node else (ping.get("device_id") or None)
        return BackendInfo(
            kind="device-manager", device=device,
            runtime_version=f"{mp.UNIT} at {plan.socket}",
            models=tuple(specs), max_jobs_in_flight=self._connections,
        )

    def _warn_message_sizes(self, specs: list[ModelSpec]) -> None:
        """The daemon does not send a reply over its message limit (64 MiB unless
        ``HAILO_DEVICE_MAX_MESSAGE_BYTES`` says otherwise): a large-vocabulary
        recogniser's batch can exceed a lowered one, and every such batch would fail."""
        limit = self._message_limit
        for spec in specs:
            frame = 4 * 4 / 3 * math.prod(spec.output_shape or (0,))  # float32, as base64
            if spec.kind != "recognition" or frame * spec.batch_size <= limit:
                continue
            log.warning(
                "%s: a batch of %d comes back as about %.0f MB of JSON, over %s's message "
                "limit of %.0f MiB (%s): raise it, or set hailo_models.batch_size_rec to %d",
                spec.name, spec.batch_size, frame * spec.batch_size / 1e6, mp.UNIT,
                limit / 2**20, mp.MESSAGE_LIMIT_ENV, max(1, int(limit // frame)),
            )

    def _load_request(self, plan: _Plan) -> dict[str, Any]:
        return {
            "action": "load_model", "model_path": str(plan.detection), "model_type": MODEL_TYPE,
            "model_params": plan.model_params(self._cfg.batch_size_rec),
        }

    def _unload_request(self, plan: _Plan) -> dict[str, Any]:
        return {"action": "unload_model", "model_path": str(plan.detection),
                "model_type": MODEL_TYPE}

    async def _warm_up(self, plan: _Plan, det_shape: tuple[int, ...]) -> list[ModelSpec]:
        """One frame of padding through each model: output shapes, and whether each
        HEF outputs probabilities or raw scores."""
        self._models.clear()
        specs: list[ModelSpec] = []
        if plan.serve_detection:
            model = _Model(input_shape=det_shape, output_shape=())
            out = await self._run_detection(model, np.full(det_shape, DET_PAD_VALUE, np.uint8))
            spec = detection_spec(plan.detection.name, det_shape, out.shape, 1,
                                  path=str(plan.detection))
            model.output_shape = spec.output_shape or ()
            model.activation = "none" if looks_like_probabilities(out, rows=False) else "sigmoid"
            self._note_activation(plan.detection.name, model.activation)
            self._models[DETECTION] = model
            specs.append(spec)
        for lang, path in plan.recognition.items():
            shape = plan.rec_inputs[lang]
            model = _Model(input_shape=shape, output_shape=(), language=lang)
            frames = np.full((1, *shape), REC_PAD_VALUE, np.uint8)
            outs = await self._run_recognition(model, frames, recognition_id(lang))
            spec = recognition_spec(lang, path.name, shape, outs.shape[1:],
                                    self._cfg.batch_size_rec, plan.charsets[lang],
                                    path=str(path))
            model.output_shape = spec.output_shape or ()
            probs = outs[0].reshape(model.output_shape)
            model.activation = "none" if looks_like_probabilities(probs, rows=True) else "softmax"
            self._note_activation(path.name, model.activation)
            self._models[spec.id] = model
            specs.append(spec)
        return specs

    @staticmethod
    def _note_activation(name: str, activation: str) -> None:
        log.info("%s outputs %s", name, "probabilities" if activation == "none"
                 else f"raw scores: applying {activation} on the host")

    # -- talking to the manager -----------------------------------------------------------
    async def _checkout(self) -> _Connection:
        assert self._slots is not None and self._plan is not None
        await self._slots.acquire()
        try:
            conn = self._idle.pop() if self._idle else await _Connection.open(
                self._plan.socket, _reply_limit(self._message_limit))
        except BaseException:
            self._slots.release()
            raise
        return conn

    def _checkin(self, conn: _Connection, healthy: bool) -> None:
        assert self._slots is not None
        if healthy and not self._closed:
            self._idle.append(conn)
        else:
            conn.close()
        self._slots.release()

    async def _call(
        self, build: Callable[[], dict[str, Any]], *, what: str, phase: str,
        read: Callable[[dict[str, Any]], Any] | None = None,
    ) -> tuple[dict[str, Any], Any]:
        """One request and its reply, within the timeout; raises the typed error.

        ``build`` makes the request and ``read`` turns a successful reply into arrays;
        both run in a worker thread with the JSON and base64 work."""
        assert self._plan is not None
        request_id = f"hailo-ocr-{os.getpid()}-{next(_request_ids)}"
        payload = await trio.to_thread.run_sync(_encode, build, request_id)
        with trio.move_on_after(self._timeout) as scope:
            try:
                conn = await self._checkout()
            except OSError as exc:
                raise self._unreachable(exc, phase) from exc
            healthy = False
            try:
                body = await conn.exchange(payload)
                reply, value = await trio.to_thread.run_sync(_decode, body, request_id, read)
                # A reply to a framing error carries no id: the manager closes the
                # connection after it, so we do too.
                healthy = reply.get("request_id") == request_id
            except (OSError, _ConnectionClosed) as exc:
                raise DeviceLost(
                    f"{what}: {mp.UNIT} closed the connection ({exc}); it stopped or is "
                    f"restarting"
                ) from exc
            except mp.ProtocolError as exc:
                raise DeviceFault(f"{what}: {mp.UNIT} broke the protocol: {exc}") from exc
            except InferenceError:  # the reply's content failed its check: the job's fault
                healthy = True
                raise
            finally:
                self._checkin(conn, healthy)
        if scope.cancelled_caught:
            raise DeviceTimeout(
                f"{what}: no reply from {mp.UNIT} within {self._timeout:g} s "
                "(device_manager.timeout_s); it runs every service's jobs one at a time, "
                "so another service's long job delays ours"
            )
        if "error" in reply:
            raise mp.error_from_reply(str(reply["error"]), phase=phase, what=what)
        return reply, value

    def _unreachable(self, exc: OSError, phase: str) -> BackendError:
        assert self._plan is not None
        where = f"cannot connect to {mp.UNIT} at {self._plan.socket}"
        if isinstance(exc, PermissionError):
            return BackendUnavailable(
                f"{where}: permission denied. The socket belongs to the group the manager "
                f"gives it (HAILO_DEVICE_SOCKET_GROUP, else /dev/hailo0's group): add this "
                f"service's user to that group (SupplementaryGroups= in its unit)"
            )
        if phase == "load":
            return BackendUnavailable(
                f"{where} ({exc.strerror or exc}): is the {mp.UNIT} service running? "
                f"(`systemctl status {mp.UNIT}`)"
            )
        return DeviceLost(f"{where} ({exc.strerror or exc}): it stopped or is restarting")

    def _infer_request(self, input_data: dict[str, Any]) -> dict[str, Any]:
        # model_params on every call: the manager evicts least-recently-used models when
        # another service needs the NPU's memory, and reloads ours from these on demand.
        assert self._plan is not None
        request = self._load_request(self._plan)
        request.update(action="infer", input_data=input_data)
        return request

    async def _run_detection(self, model: _Model, frame: np.ndarray) -> np.ndarray:
        """One frame through detection: its map as the HEF gives it (e.g. H x W x 1)."""

        def build() -> dict[str, Any]:
            return self._infer_request({"mode": "detection", "image": mp.tensor(frame)})

        def read(reply: dict[str, Any]) -> np.ndarray:
            return _activated(mp.array_from(reply.get("result")), model, rows=False,
                              what="detection")

        _, out = await self._call(build, what="detection", phase="infer", read=read)
        return out

    async def _run_recognition(self, model: _Model, frames: np.ndarray, what: str) -> np.ndarray:
        """One model batch through recognition, named as such so the manager neither
        splits nor pads it: the frames' outputs stacked, each as the HEF gives it (e.g.
        N x 1 x T x C)."""
        n = len(frames)

        def build() -> dict[str, Any]:
            return self._infer_request({
                "mode": "recognition", "language": model.language,
                "crops": [mp.tensor(f) for f in frames], "batch_size": n,
            })

        def read(reply: dict[str, Any]) -> np.ndarray:
            result = reply.get("result")
            if not isinstance(result, list) or len(result) != n:
                count = len(result) if isinstance(result, list) else "no"
                raise mp.ProtocolError(f"{n} crops sent, {count} outputs back")
            outs = [_activated(mp.array_from(t), model, rows=True, what=what) for t in result]
            if len({o.shape for o in outs}) != 1:
                raise mp.ProtocolError(f"outputs of several shapes: {[o.shape for o in outs]}")
            return np.stack(outs)

        _, outs = await self._call(build, what=what, phase="infer", read=read)
        return outs

    # -- inference --------------------------------------------------------------------------
    async def infer(self, model_id: str, batch: np.ndarray) -> np.ndarray:
        model = self._models.get(model_id)
        if model is None or self._closed:
            raise InferenceError(f"model {model_id} is not loaded")
        batch = np.asarray(batch)
        if batch.dtype != np.uint8 or batch.shape[1:] != model.input_shape:
            raise InferenceError(
                f"{model_id} takes uint8 frames of {model.input_shape}, got {batch.dtype} "
                f"{batch.shape[1:]}"
            )
        n = batch.shape[0]
        if model_id == DETECTION:
            # The manager's OCR handler runs one detection frame per request.
            maps = [await self._run_detection(model, batch[i]) for i in range(n)]
            if n == 1:
                return maps[0].reshape(1, *model.output_shape)
            return np.stack(maps).reshape(n, *model.output_shape)
        outs = await self._run_recognition(model, batch, model_id)
        return outs.reshape(n, *model.output_shape)

    # -- closing ----------------------------------------------------------------------------
    def close(self) -> None:
        """Unload the models (bounded by a few seconds) and close the connections.
        Called in a Trio worker thread; elsewhere it can only close the sockets."""
        if self._closed:
            return
        self._closed = True
        try:
            trio.from_thread.run(self._aclose)
        except (RuntimeError, trio.RunFinishedError):
            for conn in self._idle:
                conn.close()
            self._idle.clear()
            if self._loaded:
                log.warning("the OCR models stay loaded in %s: closed outside Trio", mp.UNIT)

    async def _aclose(self) -> None:
        for conn in self._idle:
            conn.sock.close()
        self._idle.clear()
        plan = self._plan
        if not self._loaded or plan is None:
            return
        self._loaded = False
        with trio.move_on_after(min(UNLOAD_TIMEOUT_S, self._timeout)) as scope:
            conn = None
            try:
                conn = await _Connection.open(plan.socket, _reply_limit(self._message_limit))
                body = await conn.exchange(
                    _encode(lambda: self._unload_request(plan), "hailo-ocr-unload")
                )
                reply = mp.parse_reply(body)
            except (OSError, _ConnectionClosed, mp.ProtocolError) as exc:
                log.info("could not unload the OCR models from %s: %s", mp.UNIT, exc)
                return
            finally:
                if conn is not None:
                    conn.sock.close()
            if "error" in reply:
                log.warning("%s refused to unload the OCR models: %s", mp.UNIT, reply["error"])
            else:
                log.info("unloaded the OCR models from %s", mp.UNIT)
        if scope.cancelled_caught:
            log.warning("%s did not confirm the unload within %.0f s", mp.UNIT,
                        min(UNLOAD_TIMEOUT_S, self._timeout))


def ping(path: str, timeout: float) -> dict[str, Any]:
    """One blocking ``ping`` of the manager at ``path``: its status reply (device id,
    loaded models, queue depth, ...), for ``hailo-ocr verify``. Raises :class:`OSError`
    (no socket, refused, not permitted, no answer in time) or
    :class:`~npu.manager_protocol.ProtocolError`."""
    request_id = "hailo-ocr-verify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(mp.frame({"action": "ping", "request_id": request_id}))
        header = sock.recv(mp.HEADER.size, socket.MSG_WAITALL)
        if len(header) != mp.HEADER.size:
            raise mp.ProtocolError("the manager closed the connection without a reply")
        n = mp.body_length(header, _reply_limit(mp.message_limit()))
        body = sock.recv(n, socket.MSG_WAITALL)
        if len(body) != n:
            raise mp.ProtocolError(f"the reply ended after {len(body)} of {n} bytes")
    reply = mp.parse_reply(body)
    mp.check_reply_id(reply, request_id)
    return reply


def _reply_limit(message_limit: int) -> int:
    """The longest reply accepted: the daemon's limit as our environment says it, and
    never less than its default, in case only the daemon's unit raised it."""
    return max(message_limit, mp.DEFAULT_MESSAGE_LIMIT)


def _activated(out: np.ndarray, model: _Model, *, rows: bool, what: str) -> np.ndarray:
    """One output as probabilities. Refused when a model that outputs probabilities sent
    something else: the manager returns a failed job's output buffer as it was."""
    if out.dtype != np.float32:
        raise mp.ProtocolError(f"{what}: output of type {out.dtype}, not float32")
    if model.activation == "none":
        ok = looks_like_probabilities(out, rows=rows) if model.output_shape else True
        ok = ok and bool(np.isfinite(out).all())
    else:
        ok = bool(np.isfinite(out).all())
    if not ok:
        raise InferenceError(
            f"{what}: {mp.UNIT} returned values that are not probabilities (the job "
            "probably failed on the NPU; the manager does not check a job's status)"
        )
    if model.activation == "sigmoid":
        return sigmoid(out.copy())  # the reply's buffer is read-only
    if model.activation == "softmax":
        return softmax(out.copy())
    return out


__all__ = ["DeviceManagerBackend", "ping"]
