"""Optional 0/180-degree text direction classification (PaddleOCR's line classifier).

PaddleOCR turns each line the classifier calls upside down. On ../shared/devdata that
turned more good lines over than it righted (word F1 on forms -0.021, receipts -0.004,
photos -0.011, web images -0.005: short lines and CJK characters fool it), while every
upside-down text it righted was a whole image turned over. So the service asks it about
the image: when most of an image's lines are upside down, all of them are read turned,
otherwise none is (:func:`page_upside_down`; benchmarks/RESULTS.md, round 5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import cv2
import numpy as np

#: The line classifier's input: lines scaled to 48 rows, padded to 192 columns.
CLS_HEIGHT: Final = 48
CLS_WIDTH: Final = 192


def pack_cls(crops: Sequence[np.ndarray]) -> np.ndarray:
    """NCHW float32 in [-1, 1], each crop scaled to 48 rows, at most 192 wide, zero-padded."""
    batch = np.zeros((len(crops), 3, CLS_HEIGHT, CLS_WIDTH), dtype=np.float32)
    for i, crop in enumerate(crops):
        h, w = crop.shape[:2]
        new_w = min(CLS_WIDTH, int(math.ceil(CLS_HEIGHT * w / float(max(h, 1)))))
        resized = cv2.resize(crop, (max(new_w, 1), CLS_HEIGHT)).astype(np.float32)
        batch[i, :, :, : resized.shape[1]] = resized.transpose(2, 0, 1) * (2.0 / 255.0) - 1.0
    return batch


def upside_down(probs: np.ndarray, threshold: float = 0.9) -> list[bool]:
    """Which crops the classifier says are turned 180 degrees, with confidence over threshold."""
    probs = np.asarray(probs)
    best = probs.argmax(axis=1)
    return [bool(b == 1 and probs[i, 1] > threshold) for i, b in enumerate(best)]


def page_upside_down(probs: np.ndarray, threshold: float = 0.9) -> bool:
    """True when more than half of an image's lines are upside down (see the module
    docstring): then every line is read turned by 180 degrees."""
    flips = upside_down(probs, threshold)
    return 2 * sum(flips) > len(flips)
