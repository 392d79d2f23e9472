"""The whole configuration: composed from each layer's sections, loaded from YAML (or the
original service's JSON), the environment and CLI flags, and validated. This is the one
place that knows every section; each layer owns the attrs class of its own:

=================================================  =========================
sections                                           class lives in
=================================================  =========================
``ocr``, ``processing``                            ``ocr/config.py``
``tiling``                                         ``ocr/tiling.py``
``backend``, ``onnx_models``, ``hailo_models``,    ``npu/config.py``
``models``, ``device_manager``
``batching``                                       ``actors/config.py``
``server``, ``cache``                              ``web/config.py``
=================================================  =========================

Every key has a default, so an empty file (or none) is a working configuration: the
embedded CPU backend with English and Chinese. Unknown keys are rejected with a message
naming them and the keys that are allowed, because a misspelt key that is silently
ignored is the most expensive kind of configuration bug on a headless box. The one
exception is the original hailo-ocr's own keys, so its configuration file (YAML, or the
JSON its installer rendered) loads unchanged: :mod:`web.legacy_config` reads them as the
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

from actors.config import POLICIES, BatchingConfig
from npu.config import (
    BACKEND_TYPES,
    PLACEMENT_CHOICES,
    BackendConfig,
    DeviceManagerConfig,
    HailoModelsConfig,
    ModelsConfig,
    OnnxModelsConfig,
)
from ocr.config import ConfigError, OcrConfig, ProcessingConfig
from ocr.document import MAX_DPI, MIN_DPI
from ocr.languages import normalise_language, normalise_languages
from ocr.tiling import TilingParams

from .config import CacheConfig, ServerConfig
from .legacy_config import translate

log = logging.getLogger("hailo_ocr.config")


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
        if self.batching.policy not in POLICIES:
            problems.append(
                f"batching.policy must be {' or '.join(repr(p) for p in POLICIES)}"
            )
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
    if hint is str or origin is typing.Literal:  # a Literal's values are checked in validate
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

    The original hailo-ocr's keys are read as it meant them (:mod:`web.legacy_config`);
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
