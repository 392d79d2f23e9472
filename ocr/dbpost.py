"""DB (Differentiable Binarization) post-processing: probability map -> text quads.

probability map -> binary map (threshold, 2x2 dilation) -> contours -> minimum-area box ->
box score (mean probability inside it) -> filter by score and size -> unclip (grow the
shrunk kernel back by ``area * ratio / perimeter`` with pyclipper) -> minimum-area quad ->
clockwise points in original-image pixels.

The constants and the order of rounding follow PaddleOCR's ``DBPostProcess`` so that the
same map gives the same boxes as RapidOCR.
"""

from __future__ import annotations

import math

import attrs
import cv2
import numpy as np
import pyclipper

from .geometry import DetTransform, order_clockwise_many

_DILATION_KERNEL = np.ones((2, 2), dtype=np.uint8)


@attrs.frozen
class DbParams:
    thresh: float = 0.3  # pixel probability that counts as text
    box_thresh: float = 0.5  # mean probability a box needs to be kept
    unclip_ratio: float = 1.6
    max_candidates: int = 1000
    min_size: int = 3
    use_dilation: bool = True


def _no_quads() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 4, 2), dtype=np.float32), np.zeros((0,), dtype=np.float32)


def _mini_box(contour: np.ndarray) -> tuple[np.ndarray, float]:
    rect = cv2.minAreaRect(contour)
    pts = sorted(cv2.boxPoints(rect).tolist(), key=lambda p: p[0])
    i1, i4 = (0, 1) if pts[1][1] > pts[0][1] else (1, 0)
    i2, i3 = (2, 3) if pts[3][1] > pts[2][1] else (3, 2)
    box = np.array([pts[i1], pts[i2], pts[i3], pts[i4]], dtype=np.float32)
    return box, float(min(rect[1]))


def _box_score(prob: np.ndarray, box: np.ndarray) -> float:
    h, w = prob.shape
    # Bounds from Python floats: the same floor and clip as numpy's, without a numpy
    # call per scalar (a third of DB post-processing's time, one box at a time).
    pts = box.tolist()
    xs = [x for x, _ in pts]
    ys = [y for _, y in pts]
    xmin = min(max(math.floor(min(xs)), 0), w - 1)
    xmax = min(max(math.ceil(max(xs)), 0), w - 1)
    ymin = min(max(math.floor(min(ys)), 0), h - 1)
    ymax = min(max(math.ceil(max(ys)), 0), h - 1)
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    shifted = box - np.array([xmin, ymin], dtype=np.float32)
    cv2.fillPoly(mask, shifted.reshape(1, -1, 2).astype(np.int32), 1)
    return float(cv2.mean(prob[ymin : ymax + 1, xmin : xmax + 1], mask)[0])


def _unclip(box: np.ndarray, ratio: float) -> np.ndarray | None:
    area = abs(cv2.contourArea(box))
    length = cv2.arcLength(box.reshape(-1, 1, 2), True)
    if length <= 0:
        return None
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(box.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    expanded = offset.Execute(area * ratio / length)
    if len(expanded) != 1:  # empty, or split in two: not a single text region
        return None
    return np.array(expanded[0], dtype=np.float32).reshape(-1, 1, 2)


def db_boxes(
    prob: np.ndarray, transform: DetTransform, params: DbParams = DbParams()
) -> tuple[np.ndarray, np.ndarray]:
    """Find text quads in a ``(H, W)`` probability map.

    Returns ``(quads, scores)``: quads ``(N, 4, 2)`` float32 clockwise from top-left in
    original-image pixels, scores ``(N,)`` float32. Empty arrays when nothing is found.
    """
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2:
        raise ValueError(f"expected a 2-D probability map, got shape {prob.shape}")
    # A 0/1 map: findContours treats any non-zero pixel as set, so the bool map is
    # used as it is (no 0/255 copy).
    bitmap = (prob > params.thresh).view(np.uint8)
    if params.use_dilation:
        bitmap = cv2.dilate(bitmap, _DILATION_KERNEL)
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)

    boxes: list[np.ndarray] = []
    scores: list[float] = []
    for contour in contours[: params.max_candidates]:
        box, short_side = _mini_box(contour)
        if short_side < params.min_size:
            continue
        score = _box_score(prob, box)
        if score < params.box_thresh:
            continue
        grown = _unclip(box, params.unclip_ratio)
        if grown is None:
            continue
        box, short_side = _mini_box(grown)
        if short_side < params.min_size + 2:
            continue
        boxes.append(box)
        scores.append(score)
    if not boxes:
        return _no_quads()
    # The boxes kept so far, all at once: into source pixels (whole pixels, as PaddleOCR
    # rounds them), clockwise, clipped, the slivers dropped, then into the original image.
    src = transform.map_to_src(np.stack(boxes)).astype(np.int32).astype(np.float32)
    src = order_clockwise_many(src)
    src[..., 0] = np.clip(src[..., 0], 0, transform.src_w - 1).astype(np.int32)
    src[..., 1] = np.clip(src[..., 1], 0, transform.src_h - 1).astype(np.int32)
    # Whole-pixel corners: the edge lengths are exact, whatever the summation order.
    top = np.linalg.norm(src[:, 0] - src[:, 1], axis=1).astype(np.int64)
    left = np.linalg.norm(src[:, 0] - src[:, 3], axis=1).astype(np.int64)
    keep = (top > 3) & (left > 3)
    if not keep.any():
        return _no_quads()
    quads = transform.src_to_orig(src[keep]).astype(np.float32)
    return quads, np.asarray(scores, dtype=np.float32)[keep]
