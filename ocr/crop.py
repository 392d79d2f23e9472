"""Cutting text lines out of the image.

Each quad is warped to an axis-aligned rectangle (perspective transform, bicubic,
replicated border, as PaddleOCR does); a crop much taller than wide is a vertical line
and is turned a quarter so the recogniser reads it left to right.
"""

from __future__ import annotations

import cv2
import numpy as np

from .geometry import quad_size

#: A crop at least this many times taller than wide is rotated by 90 degrees.
VERTICAL_ASPECT = 1.5


def crop_quad(img: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Warp the quadrilateral ``quad`` (clockwise from top-left) out of ``img``."""
    quad = np.asarray(quad, dtype=np.float32).reshape(4, 2)
    width, height = quad_size(quad)
    width, height = max(width, 1), max(height, 1)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad, target)
    crop = cv2.warpPerspective(
        img, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    if crop.shape[0] / crop.shape[1] >= VERTICAL_ASPECT:
        crop = np.ascontiguousarray(np.rot90(crop))
    return crop


def rotate_180(crop: np.ndarray) -> np.ndarray:
    return cv2.rotate(crop, cv2.ROTATE_180)
