"""Finding model files: the ONNX models shipped in the ``rapidocr`` wheel, and HEF files
on an NPU host.

The shipped models are located through :mod:`importlib.resources`, so the service works
from any install layout (venv, system site-packages, zip) without hard-coded paths and
without ever downloading anything.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable
from pathlib import Path

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


def resolve_model_path(name: str, base_dir: str | None, search_paths: Iterable[str]) -> Path:
    """An absolute path as given; a relative one looked up in the config file's directory,
    then each search path, then the working directory. Raises with every place tried."""
    p = Path(name).expanduser()
    if p.is_absolute():
        if p.is_file():
            return p
        raise ModelLoadError(f"model file {p} does not exist")
    tried = []
    for d in [base_dir, *search_paths, "."]:
        if not d:
            continue
        candidate = Path(d) / p
        tried.append(str(candidate))
        if candidate.is_file():
            return candidate.resolve()
    raise ModelLoadError(f"model file {name} not found; looked in: {', '.join(tried)}")
