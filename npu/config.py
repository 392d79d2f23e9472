"""The device sections of the configuration: ``backend``, ``onnx_models``,
``hailo_models``, ``models`` (placement) and ``device_manager``, and the view of the whole
configuration a backend and the placement read (:class:`NpuConfig`).

The whole file is composed and loaded at the top (:mod:`web.settings`); npu/ never imports
it, it names only the sections it reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Protocol

import attrs

from ocr.config import OcrConfig

#: What ``backend.type`` (and ``--backend``) accepts.
BACKEND_TYPES: Final = ("onnx", "hailo", "device-manager", "auto")


@attrs.frozen
class BackendConfig:
    #: "onnx" (CPU, embedded models, the default), "hailo" (NPU, HEF files, opened by this
    #: process), "device-manager" (the same HEFs run by the hailo-device-manager daemon,
    #: which holds the NPU for every service on the host), or "auto" (the manager when its
    #: socket exists, else the NPU when /dev/hailo0 exists, else the CPU).
    type: str = "onnx"
    #: Jobs the device may hold at once; 0 = the backend's own preference.
    max_jobs_in_flight: int = 0
    #: A single device call taking longer than this is a device fault. Generous by
    #: default because on the CPU a 2000x2000 detection takes over 15 s on two cores; on
    #: an NPU, where calls take milliseconds, a few seconds detects a hang sooner.
    job_timeout_s: float = 60.0
    #: Supervisor restart backoff after a device fault: initial and maximum delay.
    restart_backoff_s: float = 0.5
    restart_backoff_max_s: float = 30.0


@attrs.frozen
class OnnxModelsConfig:
    #: ONNX files; None = the PP-OCRv6 small models shipped in the rapidocr wheel.
    detection: str | None = None
    #: Per-language recognition model; a language without one uses the shipped model.
    recognition: Mapping[str, str] = attrs.field(factory=dict)
    classifier: str | None = None
    #: ONNX Runtime's CPU memory arena, one shared by every session, shrunk after every
    #: call. On by default: without it every tensor is fresh pages from malloc and
    #: detection is 15-35 % slower; the shrink gives a large detection's working set back
    #: after the call, so the arena does not keep the high-water mark
    #: (benchmarks/RESULTS.md, rows 11 and 20).
    memory_arena: bool = True
    #: ONNX Runtime threads per session when every model runs on the CPU; 0 = one per core.
    intra_op_threads: int = 0
    #: ONNX Runtime threads per session when some model runs on the NPU (``models.placement``).
    #: The CPU then also decodes images, prepares and post-processes detection, crops lines
    #: and drives the NPU; on a 4-core Pi, 2 leaves two cores for that work, so an NPU
    #: request is not held up behind a CPU recognition batch. 0 = one per core.
    intra_op_threads_with_npu: int = 2
    #: Crops per recognition call.
    batch_size_rec: int = 8
    #: Emulate a compiled NPU recognition model: every call carries exactly
    #: batch_size_rec frames of a fixed 48x320 input (wide lines are split, as on the NPU).
    #: For measuring batching on the CPU; the text then differs from RapidOCR's.
    fixed_batch: bool = False


@attrs.frozen
class HailoModelsConfig:
    detection_hef: str = "ocr_det.hef"
    recognition_hefs: Mapping[str, str] = attrs.field(factory=lambda: {"en": "ocr.hef"})
    #: Character list file per language; English's 97-class list is built in.
    character_lists: Mapping[str, str] = attrs.field(factory=dict)
    #: Directories searched for relative HEF paths, after the config file's own directory:
    #: where ``hailo-ocr models fetch`` puts them, where the original hailo-ocr's installer
    #: and hailo-apps' downloader (``hailo-download-resources``) put Hailo-10H HEFs.
    search_paths: tuple[str, ...] = (
        "/var/lib/hailo-ocr/models",
        "/var/lib/hailo-ocr/resources/models/hailo10h",
        "/usr/local/hailo/resources/models/hailo10h",
        "/usr/share/hailo-ocr/models",
    )
    batch_size_rec: int = 8
    batch_size_det: int = 1
    #: HailoRT device id (a PCIe address, e.g. "0000:01:00.0"); None = the Hailo device
    #: HailoRT finds. A device node (/dev/hailo0) is read as None (web/legacy_config.py).
    device: str | None = None
    #: VDevice group id: processes with the same id share the NPU through its scheduler.
    group_id: str = "SHARED"
    #: Hailo-8 only: share the device through the multi-process service.
    multi_process_service: bool = False
    #: Bound on one wait for the device (wait_for_async_ready, job.wait), milliseconds.
    timeout_ms: int = 10000


#: Where a model may run (``models.placement`` values).
PLACEMENT_CHOICES: Final = ("auto", "npu", "cpu")


@attrs.frozen
class ModelsConfig:
    #: Model id (``detection``, ``recognition_<language>``, ``classifier``) -> ``auto``,
    #: ``npu`` or ``cpu``. ``auto`` (any model not named): the NPU when the backend is an
    #: NPU one (hailo, device-manager) and the model's HEF is found, else the CPU. ``npu``:
    #: start only if the HEF is there. ``cpu``: the ONNX model. See npu/placement.py.
    placement: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class DeviceManagerConfig:
    """How to reach hailo-device-manager (``backend.type: device-manager``)."""

    #: Its Unix socket; None = ``$HAILO_DEVICE_SOCKET`` (the manager's own variable), else
    #: /run/hailo/device.sock.
    socket: str | None = None
    #: Longest wait for one reply. The manager runs every service's jobs one at a time, so
    #: ours can queue behind another service's (a VLM answer takes seconds): generous.
    timeout_s: float = 30.0


class NpuConfig(Protocol):
    """What the backends, the backend choice and the placement read of the configuration:
    their own sections, the languages (which recognition models to load) and the config
    file's directory (relative model paths). :class:`web.settings.Config` is one."""

    ocr: OcrConfig
    backend: BackendConfig
    onnx_models: OnnxModelsConfig
    hailo_models: HailoModelsConfig
    models: ModelsConfig
    device_manager: DeviceManagerConfig
    base_dir: str | None
