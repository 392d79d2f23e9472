"""The original hailo-ocr's configuration keys, read as it meant them.

This service replaces the original ``gregm123456/raspberry_pi_hailo_ai_services``
``system_services/hailo-ocr``, whose users have its ``config.yaml`` (and the JSON the
installer rendered from it, ``/etc/xdg/hailo-ocr/hailo-ocr.json``). That file must keep
loading, so every key it had is either honoured with its original meaning or ignored with
one WARNING that names it; a key of the original is never a refusal. Keys the original
never had are still refused by name (:mod:`web.settings`), so a typo in a new key is caught.

Most of the original's keys are this service's keys with the same meaning
(``server.host/port``, ``ocr.languages``, ``ocr.det_threshold``, ``ocr.rec_threshold``,
``hailo_models.detection_hef/recognition_hefs/batch_size_det/batch_size_rec``,
``processing.max_image_size``) and need nothing here. This module handles the rest, on
the raw mapping before it is built into a :class:`~web.settings.Config`:

- renamed: ``processing.enable_caching`` / ``cache_ttl_seconds`` / ``max_cache_size_mb``
  are ``cache.enabled`` / ``ttl_s`` / ``max_mb``; ``hailo_models.models_root`` is the
  first of ``hailo_models.search_paths``;
- reinterpreted: ``hailo_models.device: /dev/hailoN`` names a device *node*, which
  HailoRT does not take as a device id; the original never selected a device with it
  either, so it means "the Hailo device" (null);
- widened: the original served every language of ``hailo_models.recognition_hefs``
  (``ocr.languages`` was only the request default), so a file recognised as the original's
  loads those languages too, after its own ``ocr.languages``. A Pi whose original config
  names ``zh: ocr_chinese.hef`` it never had reads Chinese on the CPU (placement ``auto``);
- ignored, with a WARNING each: the keys in :data:`IGNORED` and :data:`IGNORED_SECTIONS`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from ocr.languages import normalise_language

#: Keys of the original that change nothing here, and why (the WARNING says it).
IGNORED: Final[Mapping[tuple[str, str], str]] = {
    ("ocr", "enable_recognition"): "recognition always runs",
    ("ocr", "use_corrector"): "there is no spell corrector: the text is returned as read",
    ("ocr", "dictionary_path"): "there is no spell corrector: the text is returned as read",
    ("hailo_models", "priority"): (
        "the NPU is shared through HailoRT's scheduler (hailo_models.group_id), "
        "which has no per-service priority"
    ),
    ("processing", "jpeg_quality"): "images are never re-encoded",
}

#: Sections of the original that change nothing here: every key in them is ignored.
IGNORED_SECTIONS: Final[Mapping[str, str]] = {
    "resource_limits": (
        "systemd enforces resource limits: set MemoryMax= / CPUQuota= with "
        "'systemctl edit hailo-ocr'"
    ),
}

#: Keys of the original that are keys of this service under another name.
RENAMED: Final[Mapping[tuple[str, str], tuple[str, str]]] = {
    ("processing", "enable_caching"): ("cache", "enabled"),
    ("processing", "cache_ttl_seconds"): ("cache", "ttl_s"),
    ("processing", "max_cache_size_mb"): ("cache", "max_mb"),
}

_DEVICE_NODE: Final = re.compile(r"^/dev/hailo\d+$")


@attrs.frozen
class Translation:
    """The mapping to build, and what to tell the operator about it."""

    data: dict[str, Any]
    #: One line per ignored key, each naming it: logged as WARNING.
    warnings: tuple[str, ...] = ()
    #: One line per key read under another name or meaning: logged as INFO.
    notes: tuple[str, ...] = ()


def is_device_node(value: Any) -> bool:
    """True for ``/dev/hailo0``, ``/dev/hailo1``, ...: a device node, not a HailoRT id."""
    return isinstance(value, str) and bool(_DEVICE_NODE.match(value.strip()))


def _section(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    """``data[name]`` as a mapping to edit, or None (absent, or not a mapping: the
    configuration builder refuses that with its own message)."""
    value = data.get(name)
    return value if isinstance(value, dict) else None


def translate(
    data: Mapping[str, Any], *, default_search_paths: Sequence[str] = ()
) -> Translation:
    """Rewrite the original's keys in ``data`` (a configuration mapping, not modified)
    into this service's. ``default_search_paths`` is what ``hailo_models.models_root``
    is put in front of when the file sets no ``search_paths`` of its own."""
    out: dict[str, Any] = copy.deepcopy(dict(data))
    warnings: list[str] = []
    notes: list[str] = []

    for name, why in IGNORED_SECTIONS.items():
        if name not in out:
            continue
        section = out.pop(name)
        keys = list(section) if isinstance(section, Mapping) and section else [None]
        for key in keys:
            full = f"{name}.{key}" if key is not None else name
            warnings.append(f"{full} (from the original hailo-ocr) is ignored: {why}")

    for (name, key), why in IGNORED.items():
        section = _section(out, name)
        if section is not None and key in section:
            del section[key]
            warnings.append(f"{name}.{key} (from the original hailo-ocr) is ignored: {why}")

    for (name, key), (new_name, new_key) in RENAMED.items():
        section = _section(out, name)
        if section is None or key not in section:
            continue
        value = section.pop(key)
        target = out.setdefault(new_name, {})
        if not isinstance(target, dict):
            continue  # the builder refuses the malformed section by name
        if new_key in target:
            warnings.append(
                f"{name}.{key} (from the original hailo-ocr) is ignored: "
                f"{new_name}.{new_key} is set"
            )
        elif (name, key) == ("processing", "max_cache_size_mb") and value in (0, "0"):
            warnings.append(
                f"{name}.{key}: 0 (unlimited) is ignored: the cache stays bounded by "
                f"cache.max_mb and cache.max_entries"
            )
        else:
            target[new_key] = value
            notes.append(f"{name}.{key} (from the original hailo-ocr) is read as "
                         f"{new_name}.{new_key}")

    hailo = _section(out, "hailo_models")
    if hailo is not None:
        if "models_root" in hailo:
            root = hailo.pop("models_root")
            given = hailo.get("search_paths")
            if isinstance(given, str):
                given = [p.strip() for p in given.split(",") if p.strip()]
            rest = list(given) if isinstance(given, list | tuple) else list(default_search_paths)
            hailo["search_paths"] = [root, *[p for p in rest if p != root]]
            notes.append(
                "hailo_models.models_root (from the original hailo-ocr) is searched first "
                "for relative HEF names (hailo_models.search_paths)"
            )
        if is_device_node(hailo.get("device")):
            notes.append(
                f"hailo_models.device {hailo['device'].strip()!r} names a device node: the "
                "service uses the Hailo device HailoRT finds (a HailoRT device id is a PCIe "
                "address such as 0000:01:00.0)"
            )
            hailo["device"] = None

    if warnings or notes:  # some key only the original had: the file is the original's
        notes.extend(_serve_every_hef_language(out))
    return Translation(out, tuple(warnings), tuple(notes))


def _serve_every_hef_language(out: dict[str, Any]) -> list[str]:
    """Add the languages of ``hailo_models.recognition_hefs`` to ``ocr.languages`` (in
    ``out``, in place) as the original served them; a note for each one added."""
    hailo, ocr = _section(out, "hailo_models"), _section(out, "ocr")
    hefs = hailo.get("recognition_hefs") if hailo is not None else None
    if not isinstance(hefs, Mapping) or ocr is None:
        return []
    given = ocr.get("languages")
    if isinstance(given, str):
        given = [given]
    if not isinstance(given, list | tuple) or not given:
        return []  # the defaults, or a malformed value the builder refuses by name
    have = {normalise_language(str(lang)) for lang in given}
    added = [
        lang for lang in hefs if isinstance(lang, str) and normalise_language(lang) not in have
    ]
    ocr["languages"] = [*given, *added]
    return [
        f"hailo_models.recognition_hefs.{lang} (from the original hailo-ocr) is served: "
        f"language {lang!r} is loaded beside ocr.languages, on the NPU when its HEF is "
        "found, otherwise on the CPU"
        for lang in added
    ]
