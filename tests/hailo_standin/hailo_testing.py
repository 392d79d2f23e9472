"""Helpers for tests that run the Hailo backend on the HailoRT stand-in.

Importable once ``tests/hailo_standin`` is on ``sys.path`` (``tests/npu/test_hailo_*.py`` put
it there). Writes descriptor files (the stand-in's "HEFs") that run the PP-OCRv6 ONNX
models shipped in the rapidocr wheel, the character list taken from the recognition
model's own metadata, and a configuration pointing the service at them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from npu.models import SHIPPED_DETECTION, SHIPPED_RECOGNITION, shipped_model
from web.settings import Config

#: The input size of Hailo's ocr_det.hef / ocr.hef.
DET_SHAPE = (544, 960, 3)
REC_SHAPE = (48, 320, 3)


def write_descriptor(path: Path, kind: str, input_shape, **extra: Any) -> Path:
    onnx = shipped_model(SHIPPED_DETECTION if kind == "detection" else SHIPPED_RECOGNITION)
    data = {"standin_hef": 1, "name": path.stem, "kind": kind, "onnx": str(onnx),
            "input_shape": list(input_shape), **extra}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_charset(path: Path) -> Path:
    """The recognition model's dictionary (its ONNX metadata), one character a line."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(shipped_model(SHIPPED_RECOGNITION)), providers=["CPUExecutionProvider"]
    )
    chars = session.get_modelmeta().custom_metadata_map["character"].splitlines()
    path.write_text("\n".join(chars) + "\n", encoding="utf-8")
    return path


@attrs.frozen
class HailoFiles:
    det: Path
    rec: Path
    charset: Path


def write_models(directory: Path, *, det: dict | None = None, rec: dict | None = None,
                 det_shape=DET_SHAPE, rec_shape=REC_SHAPE) -> HailoFiles:
    directory.mkdir(parents=True, exist_ok=True)
    charset = directory / "ppocr_dict.txt"
    if not charset.exists():
        write_charset(charset)
    return HailoFiles(
        det=write_descriptor(directory / "ocr_det.hef", "detection", det_shape, **(det or {})),
        rec=write_descriptor(directory / "ocr.hef", "recognition", rec_shape, **(rec or {})),
        charset=charset,
    )


def hailo_config(config: Config, files: HailoFiles, **hailo: Any) -> Config:
    """``config`` with the Hailo backend on ``files`` (English only)."""
    models = attrs.evolve(
        config.hailo_models, detection_hef=str(files.det),
        recognition_hefs={"en": str(files.rec)}, character_lists={"en": str(files.charset)},
        **hailo,
    )
    return attrs.evolve(
        config,
        backend=attrs.evolve(config.backend, type="hailo"),
        hailo_models=models,
        ocr=attrs.evolve(config.ocr, languages=("en",), default_language="en"),
    )


def write_config_file(path: Path, files: HailoFiles) -> Path:
    """A YAML configuration naming ``files`` (English only), for a server subprocess."""
    path.write_text(
        "ocr:\n  languages: [en]\n  default_language: en\n"
        "hailo_models:\n"
        f"  detection_hef: {files.det.name}\n"
        f"  recognition_hefs: {{en: {files.rec.name}}}\n"
        f"  character_lists: {{en: {files.charset.name}}}\n"
        f"  search_paths: [{files.det.parent}]\n",
        encoding="utf-8",
    )
    return path
