"""The service configuration: plain frozen attrs objects, loaded from YAML.

Every key has a default, so an empty file (or none) is a working configuration: the
embedded CPU backend with English and Chinese. Unknown keys are rejected with a message
naming them and the keys that are allowed, because a misspelt key that is silently
ignored is the most expensive kind of configuration bug on a headless box. The one
exception is the original hailo-ocr's own keys, so its configuration file (YAML, or the
JSON its installer rendered) loads unchanged: :mod:`ocr.legacy_config` reads them as the
original meant them, or ignores them with one WARNING each.

Precedence: defaults < file < ``HAILO_OCR_*`` environment variables < CLI flags.
"""

from __future__ import annotations

import json
import logging
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import yaml

from .document import MAX_DPI, MIN_DPI
from .errors import OcrInputError
from .languages import normalise_language, normalise_languages
from .legacy_config import translate
from .tiling import TilingParams

log = logging.getLogger("hailo_ocr.config")


class ConfigError(OcrInputError):
    code = "invalid_config"


#: What ``backend.type`` (and ``--backend``) accepts.
BACKEND_TYPES: Final = ("onnx", "hailo", "device-manager", "auto")


@attrs.frozen
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 11436
    #: Bearer token required on every route but /health; None = no authentication.
    auth_token: str | None = None
    #: Largest request body accepted (bytes); larger bodies get 413.
    #: (A 20 MiB image is about 27 MiB as base64 in JSON, hence the margin.)
    max_body_bytes: int = 32 * 1024 * 1024
    #: Requests admitted at once; more get 429 with Retry-After.
    max_in_flight: int = 32
    #: A request's deadline inside the service; past it the answer is 504.
    request_timeout_s: float = 30.0
    #: On SIGTERM/SIGINT, how long requests in flight may take to finish.
    shutdown_grace_s: float = 10.0
    #: On SIGTERM/SIGINT, first: how long ``/health/ready`` answers 503 ``draining`` while
    #: every request is still served, so a load balancer's health checks take the
    #: instance out of rotation before it refuses anything. The default is two check
    #: intervals of deploy/haproxy/haproxy.cfg (``inter 1s``): HAProxy marks a server down
    #: after ``fall 2`` failed checks, at most ``inter`` + ``fastinter`` = 1.25 s after the
    #: first 503, and the rest covers the checks' own latency. 0 = no drain.
    drain_delay_s: float = 2.0
    #: A request body that sends nothing for this long is answered 408 and its connection
    #: closed, so a stalled upload holds no socket, task or partial body for long.
    read_timeout_s: float = 20.0
    #: Root directory ``file://`` image paths may be read from; None = file:// disabled.
    file_root: str | None = None
    #: Websocket: most images one socket may have in flight at once.
    ws_max_in_flight: int = 8
    log_level: str = "info"


@attrs.frozen
class OcrConfig:
    #: Languages loaded (aliases such as ch_sim or en-US are read as en / zh). When
    #: default_language is not set, the first is the default, as in the original service.
    languages: tuple[str, ...] = ("en", "zh")
    default_language: str = "en"
    #: A request asking only for languages not loaded: "fallback" reads it in the default
    #: language and says so in the response's warnings (the original's behaviour);
    #: "reject" answers 422 unsupported_language.
    unknown_language: str = "fallback"
    #: DB pixel threshold: probability above which a pixel counts as text.
    det_threshold: float = 0.3
    #: DB box threshold: mean probability a box needs to be kept.
    det_box_threshold: float = 0.5
    unclip_ratio: float = 1.6
    #: Lines recognised with a lower confidence are dropped. Above PaddleOCR's 0.5: on
    #: ../shared/devdata the lines between 0.5 and 0.7 were mostly misread texture in
    #: photos and web images, rarely real text on documents (benchmarks/RESULTS.md, round 5).
    rec_threshold: float = 0.7
    #: Run the 0/180-degree line classifier (CPU backend only).
    use_angle_cls: bool = False
    #: Dynamic detection input: scale the short side up to this (limit_type min) or the
    #: long side down to it (max) ...
    det_limit_side_len: int = 704
    det_limit_type: str = "min"
    #: ... but never make the input's long side longer than this (ocr/detection.py).
    det_max_side_len: int = 1600
    #: Most pixels in the dynamic detection input; larger inputs are scaled down to it.
    #: Detection's working memory grows with its input's pixels (about 200 MB per million
    #: on the CPU), so this bounds the service's peak RSS; with the 1600 px long side only
    #: near-square inputs reach it.
    det_max_pixels: int = 2_200_000
    #: Most text regions read from one image (the rest are dropped, largest score first).
    max_regions: int = 1000


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
    #: HailoRT finds. A device node (/dev/hailo0) is read as None (ocr/legacy_config.py).
    device: str | None = None
    #: VDevice group id: processes with the same id share the NPU through its scheduler.
    group_id: str = "SHARED"
    #: Hailo-8 only: share the device through the multi-process service.
    multi_process_service: bool = False
    #: Bound on one wait for the device (wait_for_async_ready, job.wait), milliseconds.
    timeout_ms: int = 10000


#: Where a model may run (``models.placement`` values).
PLACEMENT_CHOICES = ("auto", "npu", "cpu")


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


@attrs.frozen
class ProcessingConfig:
    #: Largest image dimension, pixels, as the original service meant it: a larger image
    #: is scaled down to it (aspect kept) before detection; boxes are still given in the
    #: image's own pixels. 0 = no limit.
    max_image_size: int = 0
    #: Largest encoded image accepted, bytes (413 beyond).
    max_image_bytes: int = 20 * 1024 * 1024
    #: Largest decoded image accepted, pixels (checked from the header, before decoding).
    #: Also bounds each TIFF page and each image embedded in a PDF page.
    max_image_pixels: int = 40_000_000
    #: Most pages of a PDF or multi-page TIFF read in one request (413 beyond; a client
    #: chooses pages with the ``pages`` field).
    max_pages: int = 200
    #: Resolution PDF pages are rendered at when a request names none (``dpi``): the
    #: lowest at which no devdata scan set reads worse than at 300 (benchmarks/RESULTS.md).
    pdf_dpi: int = 200
    #: Most pixels of one rendered PDF page; a larger page is rendered at the lower
    #: resolution that fits. Bounds the memory of a page like max_image_pixels an image's.
    max_page_pixels: int = 12_000_000
    #: Longest one PDF page may take to render; past it that page fails on its own
    #: (``page_render_timeout``) and the others are read.
    page_render_timeout_s: float = 20.0


@attrs.frozen
class BatchingConfig:
    #: "adaptive": send a batch when it is full or as soon as the device has room for it
    #: (a lone request never waits while the device is idle; under load the crops that
    #: arrive while a batch runs fill the next). "window": send when full or when the
    #: oldest crop has waited window_ms. See benchmarks/batch_fill.py for the numbers.
    policy: str = "adaptive"
    #: Window policy: longest a crop waits for companions before its batch is sent, ms.
    window_ms: float = 8.0
    #: Crops queued in the batcher at once (all languages); beyond it callers wait.
    max_queued_crops: int = 4096
    #: Recognition batches sent to the device and not yet answered.
    max_batches_in_flight: int = 2


@attrs.frozen
class CacheConfig:
    enabled: bool = False
    max_entries: int = 256
    max_mb: float = 64.0
    ttl_s: float = 600.0


@attrs.frozen
class Config:
    server: ServerConfig = ServerConfig()
    ocr: OcrConfig = OcrConfig()
    backend: BackendConfig = BackendConfig()
    onnx_models: OnnxModelsConfig = OnnxModelsConfig()
    hailo_models: HailoModelsConfig = HailoModelsConfig()
    models: ModelsConfig = ModelsConfig()
    device_manager: DeviceManagerConfig = DeviceManagerConfig()
    processing: ProcessingConfig = ProcessingConfig()
    batching: BatchingConfig = BatchingConfig()
    #: Fixed-input (NPU) detectors: when an image is cut into tiles (ocr/tiling.py).
    tiling: TilingParams = TilingParams()
    cache: CacheConfig = CacheConfig()
    #: Directory of the YAML file this came from (for relative model paths); not a key.
    base_dir: str | None = attrs.field(default=None, metadata={"internal": True})

    def validate(self) -> Config:
        problems = []
        if self.backend.type not in BACKEND_TYPES:
            problems.append(
                f"backend.type must be one of {', '.join(BACKEND_TYPES)}, "
                f"not {self.backend.type!r}"
            )
        if self.device_manager.timeout_s <= 0:
            problems.append("device_manager.timeout_s must be more than 0")
        if not self.ocr.languages:
            problems.append("ocr.languages must name at least one language")
        if self.ocr.default_language not in self.ocr.languages:
            problems.append(
                f"ocr.default_language {self.ocr.default_language!r} is not in ocr.languages"
            )
        if self.ocr.unknown_language not in ("fallback", "reject"):
            problems.append("ocr.unknown_language must be 'fallback' or 'reject'")
        for model_id, choice in self.models.placement.items():
            if choice not in PLACEMENT_CHOICES:
                problems.append(
                    f"models.placement.{model_id} must be one of {', '.join(PLACEMENT_CHOICES)}, "
                    f"not {choice!r}"
                )
        for name in ("intra_op_threads", "intra_op_threads_with_npu"):
            if getattr(self.onnx_models, name) < 0:
                problems.append(f"onnx_models.{name} must be 0 (one per core) or more")
        if self.batching.policy not in ("adaptive", "window"):
            problems.append("batching.policy must be 'adaptive' or 'window'")
        t = self.tiling
        if not (t.min_gain >= 1.0 and 0.0 <= t.overlap < 0.5 and t.max_tiles >= 1
                and t.max_letterbox_scale > 0):
            problems.append(
                "tiling: min_gain must be >= 1, overlap in [0, 0.5), max_tiles >= 1 and "
                "max_letterbox_scale > 0"
            )
        if not 0 < self.server.port < 65536:
            problems.append("server.port must be between 1 and 65535")
        for name, value in (
            ("server.max_in_flight", self.server.max_in_flight),
            ("onnx_models.batch_size_rec", self.onnx_models.batch_size_rec),
            ("hailo_models.batch_size_rec", self.hailo_models.batch_size_rec),
            ("batching.max_queued_crops", self.batching.max_queued_crops),
            ("batching.max_batches_in_flight", self.batching.max_batches_in_flight),
            ("processing.max_image_pixels", self.processing.max_image_pixels),
            ("processing.max_image_bytes", self.processing.max_image_bytes),
        ):
            if value < 1:
                problems.append(f"{name} must be at least 1")
        if self.server.drain_delay_s < 0:
            problems.append("server.drain_delay_s must be 0 (no drain) or more")
        if self.server.read_timeout_s <= 0:
            problems.append("server.read_timeout_s must be more than 0")
        if self.processing.max_image_size != 0 and self.processing.max_image_size < 64:
            problems.append("processing.max_image_size must be 0 (no limit) or at least 64")
        p = self.processing
        if p.max_pages < 1 or p.max_page_pixels < 100_000 or p.page_render_timeout_s <= 0:
            problems.append(
                "processing: max_pages must be at least 1, max_page_pixels at least 100000 "
                "and page_render_timeout_s more than 0"
            )
        if not MIN_DPI <= p.pdf_dpi <= MAX_DPI:
            problems.append(f"processing.pdf_dpi must be between {MIN_DPI} and {MAX_DPI}")
        if self.ocr.det_max_pixels < 0:
            problems.append("ocr.det_max_pixels must be 0 (no bound) or more")
        if self.ocr.det_limit_type not in ("min", "max"):
            problems.append("ocr.det_limit_type must be 'min' or 'max'")
        if problems:
            raise ConfigError("; ".join(problems))
        return self


def _build(cls: type, data: Any, where: str) -> Any:
    """Build attrs class ``cls`` from a mapping, rejecting unknown keys by name."""
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'the configuration'} must be a mapping of keys")
    fields = {f.name: f for f in attrs.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) in {where or 'the top level'}: {', '.join(map(str, unknown))}; "
            f"allowed: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if attrs.has(hint):
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list")
        return tuple(_coerce(args[0], v, where) for v in value)
    if origin in (Mapping, dict) or hint is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number")
        try:
            return hint(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, not {value!r}") from None
    if hint is str:
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{where} must be a string")
        return str(value)
    return value


#: Environment variables for the common keys: HAILO_OCR_<NAME> -> (section, key).
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "HOST": ("server", "host"),
    "PORT": ("server", "port"),
    "TOKEN": ("server", "auth_token"),
    "FILE_ROOT": ("server", "file_root"),
    "MAX_IN_FLIGHT": ("server", "max_in_flight"),
    "REQUEST_TIMEOUT_S": ("server", "request_timeout_s"),
    "LOG_LEVEL": ("server", "log_level"),
    "LANGUAGES": ("ocr", "languages"),
    "BACKEND": ("backend", "type"),
    "DEVICE": ("hailo_models", "device"),
    "GROUP_ID": ("hailo_models", "group_id"),
    "MULTI_PROCESS_SERVICE": ("hailo_models", "multi_process_service"),
    "BATCH_WINDOW_MS": ("batching", "window_ms"),
    "BATCH_POLICY": ("batching", "policy"),
    "INTRA_OP_THREADS": ("onnx_models", "intra_op_threads"),
    "CACHE": ("cache", "enabled"),
}


#: Where the original hailo-ocr's systemd unit points it to its (JSON) configuration.
LEGACY_PATH_ENV: Final = "OCR_CONFIG_PATH"


def config_path(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> str | None:
    """The file to read: ``path`` (``--config``), else ``$HAILO_OCR_CONFIG``, else the
    original service's ``$OCR_CONFIG_PATH``; None = defaults only."""
    return str(path or env.get("HAILO_OCR_CONFIG") or env.get(LEGACY_PATH_ENV) or "") or None


def _read_file(p: Path) -> dict[str, Any]:
    """A YAML file, or the JSON the original's installer rendered (``*.json``)."""
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    try:
        loaded = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except ValueError as exc:
        raise ConfigError(f"config file {p} is not valid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections")
    return dict(loaded or {})


def _settle_languages(config: Config, default_given: bool) -> Config:
    """Language aliases read as the loaded models' codes (``ch_sim`` -> ``zh``); without
    an explicit ``ocr.default_language`` the first language is the default."""
    ocr = config.ocr
    languages = normalise_languages(ocr.languages)
    if default_given:
        default = normalise_language(ocr.default_language)
    else:
        default = languages[0] if languages else ocr.default_language
    return attrs.evolve(
        config, ocr=attrs.evolve(ocr, languages=languages, default_language=default)
    )


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Defaults, then the file (``path``, ``$HAILO_OCR_CONFIG`` or ``$OCR_CONFIG_PATH``),
    then the ``HAILO_OCR_*`` environment, then ``overrides`` (CLI flags), validated.

    The original hailo-ocr's keys are read as it meant them (:mod:`ocr.legacy_config`);
    each one ignored is logged as one WARNING naming it."""
    env = os.environ if env is None else env
    path = config_path(path, env)
    data: dict[str, Any] = {}
    base_dir = None
    if path:
        p = Path(path)
        data = _read_file(p)
        base_dir = str(p.resolve().parent)
    for name, (section, key) in ENV_OVERRIDES.items():
        value = env.get(f"HAILO_OCR_{name}")
        if value is not None and value != "":
            data.setdefault(section, {})
            if not isinstance(data[section], dict):
                raise ConfigError(f"{section} must be a mapping of keys")
            data[section] = {**data[section], key: value}
    for section, values in (overrides or {}).items():
        data[section] = {**(data.get(section) or {}), **values}
    translation = translate(
        data, default_search_paths=HailoModelsConfig().search_paths
    )
    for line in translation.warnings:
        log.warning("%s", line)
    for line in translation.notes:
        log.info("%s", line)
    data = translation.data
    ocr_data = data.get("ocr")
    default_given = isinstance(ocr_data, Mapping) and "default_language" in ocr_data
    config = _settle_languages(_build(Config, data, ""), default_given)
    return attrs.evolve(config, base_dir=base_dir).validate()


def config_to_dict(config: Config, *, redact: bool = False) -> dict[str, Any]:
    """The effective configuration as plain data (for ``hailo-ocr config --print``).

    ``redact`` replaces secrets (the bearer token) with ``"***"``, so the output can be
    pasted into a bug report.
    """

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        return v

    out = attrs.asdict(config, recurse=True, filter=lambda a, _: not a.metadata.get("internal"))
    if redact and out["server"].get("auth_token"):
        out["server"]["auth_token"] = "***"
    return {k: plain(v) for k, v in out.items()}
