"""Pure geometry helpers on quadrilaterals: point order, size, and coordinate maps.

A *quad* is a ``(4, 2)`` float32 array of ``(x, y)`` points, clockwise from top-left
(image coordinates, y down), which is the order the API promises in ``bbox``.
"""

from __future__ import annotations

import attrs
import numpy as np


def order_clockwise(pts: np.ndarray) -> np.ndarray:
    """Return the four points as top-left, top-right, bottom-right, bottom-left.

    The two left-most points are the left edge (top one first), the two right-most the
    right edge: the same rule PaddleOCR uses, so boxes line up with RapidOCR's.
    """
    pts = np.asarray(pts, dtype=np.float32).reshape(4, 2)
    by_x = pts[np.argsort(pts[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)


def order_clockwise_many(quads: np.ndarray) -> np.ndarray:
    """:func:`order_clockwise` of every quad of an ``(N, 4, 2)`` array, in one pass."""
    quads = np.asarray(quads, dtype=np.float32).reshape(-1, 4, 2)
    by_x = np.take_along_axis(
        quads, np.argsort(quads[:, :, 0], axis=1, kind="stable")[..., None], axis=1
    )
    left, right = by_x[:, :2], by_x[:, 2:]
    left = np.take_along_axis(
        left, np.argsort(left[:, :, 1], axis=1, kind="stable")[..., None], axis=1
    )
    right = np.take_along_axis(
        right, np.argsort(right[:, :, 1], axis=1, kind="stable")[..., None], axis=1
    )
    return np.stack([left[:, 0], right[:, 0], right[:, 1], left[:, 1]], axis=1)


def quad_size(quad: np.ndarray) -> tuple[int, int]:
    """Width and height of a quad as PaddleOCR measures them (longest opposite edges)."""
    width = max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3]))
    height = max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2]))
    return int(width), int(height)


@attrs.frozen
class DetTransform:
    """How points on the detection map go back to original-image pixels.

    Two steps, as in PaddleOCR: the map (``map_w`` x ``map_h``, the network's input size)
    is scaled to the *source* image the network saw before its own resize (``src_w`` x
    ``src_h``, rounded to whole pixels there), then the source's padding is removed and
    its scale undone (``ratio``) to land in the original image.
    """

    map_w: int
    map_h: int
    src_w: int
    src_h: int
    pad_left: float
    pad_top: float
    ratio_w: float
    ratio_h: float
    orig_w: int
    orig_h: int

    def map_to_src(self, pts: np.ndarray) -> np.ndarray:
        out = np.empty_like(pts, dtype=np.float32)
        out[..., 0] = np.clip(np.round(pts[..., 0] / self.map_w * self.src_w), 0, self.src_w)
        out[..., 1] = np.clip(np.round(pts[..., 1] / self.map_h * self.src_h), 0, self.src_h)
        return out

    def src_to_orig(self, pts: np.ndarray) -> np.ndarray:
        out = np.empty_like(pts, dtype=np.float32)
        out[..., 0] = np.clip((pts[..., 0] - self.pad_left) * self.ratio_w, 0, self.orig_w)
        out[..., 1] = np.clip((pts[..., 1] - self.pad_top) * self.ratio_h, 0, self.orig_h)
        return out
