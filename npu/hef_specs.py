"""What a compiled (HEF) OCR model looks like to the pipeline, whoever runs it.

Both NPU paths, HailoRT in this process (:mod:`npu.hailo_backend`) and the
hailo-device-manager daemon (:mod:`npu.device_manager_backend`), run the same HEFs, so they
must describe them to the orchestrator and the batcher identically: fixed input sizes,
raw uint8 RGB frames (the chip normalises), Hailo's pad values, and probabilities out.
The shapes come from the model; nothing here assumes 544x960 or 48x320.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np

from .backend import DETECTION, ModelSpec, recognition_id
from .errors import BackendUnavailable, ModelLoadError
from .hailo_charsets import check_classes

DET_PAD_VALUE: Final = 114  # Hailo's letterbox grey for ocr_det.hef
REC_PAD_VALUE: Final = 128  # Hailo's right padding for ocr.hef crops
DEVICE_NODE: Final = "/dev/hailo0"


def import_hailort(hint: str) -> Any:
    """HailoRT's Python bindings, imported only when a backend loads (the project imports
    and the CPU backend runs without them); :class:`BackendUnavailable` saying ``hint``."""
    try:
        import hailo_platform
    except ImportError as exc:
        raise BackendUnavailable(f"{hint} (import error: {exc})") from exc
    return hailo_platform


def _check_rgb_input(name: str, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3 or input_shape[2] != 3:
        raise ModelLoadError(f"{name}: expected an HxWx3 RGB input, the HEF has {input_shape}")


def detection_spec(
    name: str, input_shape: tuple[int, ...], output_shape: tuple[int, ...], batch_size: int,
    *, path: str | None = None,
) -> ModelSpec:
    """The spec of a detection HEF with per-frame ``input_shape`` (H, W, 3) and a
    one-channel probability map as output (any layout of ``output_shape``'s unit axes);
    ``path``: the file, as /models shows it."""
    _check_rgb_input(name, input_shape)
    det_map = tuple(d for d in output_shape if d != 1)
    if len(det_map) != 2:
        raise ModelLoadError(
            f"{name}: expected a one-channel probability map, the HEF outputs {output_shape}"
        )
    return ModelSpec(
        id=DETECTION, kind="detection", name=name, policy="fixed", layout="nhwc_uint8_rgb",
        height=input_shape[0], width=input_shape[1], batch_size=batch_size, fixed_batch=False,
        output_shape=det_map, pad_value=DET_PAD_VALUE, path=path,
    )


def recognition_spec(
    language: str, name: str, input_shape: tuple[int, ...], output_shape: tuple[int, ...],
    batch_size: int, charset: tuple[str, ...], *, path: str | None = None,
) -> ModelSpec:
    """The spec of a recognition HEF for ``language``: per-frame ``input_shape``
    (H, W, 3), ``output_shape`` ending in the classes, which must match ``charset``."""
    _check_rgb_input(name, input_shape)
    classes = output_shape[-1]
    check_classes(charset, classes, name, language)
    return ModelSpec(
        id=recognition_id(language), kind="recognition", name=name, policy="fixed",
        layout="nhwc_uint8_rgb", height=input_shape[0], width=input_shape[1],
        batch_size=batch_size, fixed_batch=False, language=language, charset=charset,
        output_shape=(math.prod(output_shape[:-1]), classes), pad_value=REC_PAD_VALUE,
        path=path,
    )


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in place."""
    x = x - x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))``, in place (``x`` is the call's own output buffer)."""
    np.negative(x, out=x)
    np.exp(x, out=x)
    x += 1.0
    np.reciprocal(x, out=x)
    return x


def looks_like_probabilities(out: np.ndarray, *, rows: bool) -> bool:
    """True when ``out`` holds probabilities (rows summing to 1 for a class output).

    Run on one frame of padding at load: a HEF may end in its softmax/sigmoid or leave it
    to the host, and nothing in the file says which."""
    if out.size == 0 or not np.isfinite(out).all():
        return False
    if out.min() < -0.02 or out.max() > 1.02:
        return False
    if not rows:
        return True
    sums = out.reshape(-1, out.shape[-1]).sum(axis=1)
    # Float outputs are dequantised from 8 or 16 bits: allow the rounding.
    return float(np.median(np.abs(sums - 1.0))) < 0.1
