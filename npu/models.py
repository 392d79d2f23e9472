"""Finding model files: the ONNX models shipped in the ``rapidocr`` wheel, and HEF files
on an NPU host (for the backend, and for ``hailo-ocr serve --cpu-fallback``,
``models fetch`` and ``verify``, which must agree with it on where a HEF is).

The shipped models are located through :mod:`importlib.resources`, so the service works
from any install layout (venv, system site-packages, zip) without hard-coded paths and
without ever downloading anything.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable
from pathlib import Path

import attrs

from .backend import DETECTION, recognition_id
from .config import NpuConfig
from .errors import ModelLoadError

SHIPPED_DETECTION = "PP-OCRv6_det_small.onnx"
SHIPPED_RECOGNITION = "PP-OCRv6_rec_small.onnx"
SHIPPED_CLASSIFIER = "ch_ppocr_mobile_v2.0_cls_mobile.onnx"


def shipped_model(name: str) -> Path:
    """Path of a model file inside the installed ``rapidocr`` package."""
    try:
        root = importlib.resources.files("rapidocr") / "models"
    except ModuleNotFoundError as exc:
        raise ModelLoadError(
            "the rapidocr package (which ships the PP-OCR models) is not installed; "
            "reinstall hailo-ocr with its dependencies"
        ) from exc
    path = Path(str(root / name))
    if not path.is_file():
        raise ModelLoadError(f"model {name} is not in the installed rapidocr package ({path})")
    return path


def find_model_file(
    name: str, base_dir: str | None, search_paths: Iterable[str], *, root: str = ""
) -> tuple[Path | None, tuple[str, ...]]:
    """Where :func:`resolve_model_path` finds ``name`` (or None), and every place tried.

    ``root`` reads the paths of a system mounted elsewhere (an SD-card image, a test
    sandbox): absolute names and search paths are looked up below it; ``base_dir`` is
    taken as given, since it comes from the configuration file's own (real) path."""
    p = Path(name).expanduser()
    if p.is_absolute():
        candidate = Path(root + str(p)) if root else p
        return (candidate if candidate.is_file() else None), (str(candidate),)
    tried = []
    places = [base_dir, *(root + d if root and d.startswith("/") else d for d in search_paths)]
    for d in [*places, "." if not root else None]:
        if not d:
            continue
        candidate = Path(d) / p
        tried.append(str(candidate))
        if candidate.is_file():
            return candidate.resolve(), tuple(tried)
    return None, tuple(tried)


def resolve_model_path(name: str, base_dir: str | None, search_paths: Iterable[str]) -> Path:
    """An absolute path as given; a relative one looked up in the config file's directory,
    then each search path, then the working directory. Raises with every place tried."""
    found, tried = find_model_file(name, base_dir, search_paths)
    if found is not None:
        return found
    if Path(name).expanduser().is_absolute():
        raise ModelLoadError(f"model file {tried[0]} does not exist")
    raise ModelLoadError(f"model file {name} not found; looked in: {', '.join(tried)}")


@attrs.frozen
class HefFile:
    """One compiled model the configuration asks for, and where it is (if anywhere)."""

    role: str  # "detection", "recognition_en", ...
    name: str  # as configured: "ocr_det.hef" or an absolute path
    path: Path | None
    tried: tuple[str, ...]


def configured_hefs(config: NpuConfig, *, root: str = "") -> list[HefFile]:
    """The HEF files the Hailo backend would load for ``config``: detection, and the
    recognition model of each of ``ocr.languages`` that has one (as the backend skips a
    language without one)."""
    hm = config.hailo_models
    wanted = [(DETECTION, hm.detection_hef)]
    wanted += [(recognition_id(lang), hm.recognition_hefs[lang])
               for lang in config.ocr.languages if lang in hm.recognition_hefs]
    out = []
    for role, name in wanted:
        path, tried = find_model_file(name, config.base_dir, hm.search_paths, root=root)
        out.append(HefFile(role, name, path, tried))
    return out
