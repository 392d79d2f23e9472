"""Detection pre-processing for both input policies a backend can declare.

* *dynamic* (CPU, ONNX Runtime): the network takes any size that is a multiple of 32.
  We reproduce RapidOCR's steps exactly (bound the longest side, pad very wide or very
  short images vertically, then scale so the shortest side reaches ``limit_side_len``)
  because parity with RapidOCR on the same model depends on feeding the same pixels.
* *fixed* (NPU): a compiled model has one input size. The image is letterboxed into it,
  centred, keeping its aspect ratio, as Hailo's own OCR example does.

Both return the image to feed (``uint8`` BGR, HWC) and the :class:`DetTransform` that maps
detected boxes back to the original image.
"""

from __future__ import annotations

import attrs
import cv2
import numpy as np

from .geometry import DetTransform


@attrs.frozen
class DynamicDetParams:
    limit_side_len: int = 736
    limit_type: str = "min"  # "min": scale the short side up to the limit; "max": cap the long side
    max_side_len: int = 2000
    min_side_len: int = 30
    width_height_ratio: float = 8.0  # wider than this gets vertical padding (-1 disables)
    min_height: int = 30
    #: Most pixels in the network input (0 = no bound beyond ``max_side_len`` squared).
    max_pixels: int = 0


def _round32(v: float) -> int:
    return max(32, int(round(v / 32) * 32))


def _bound_sides(img: np.ndarray, p: DynamicDetParams) -> tuple[np.ndarray, float, float]:
    """RapidOCR's ``resize_image_within_bounds``, made safe for extreme aspect ratios."""
    h, w = img.shape[:2]
    ratio_h = ratio_w = 1.0
    if max(h, w) > p.max_side_len:
        r = p.max_side_len / max(h, w)
        rh, rw = _round32(int(h * r)), _round32(int(w * r))
        img = cv2.resize(img, (rw, rh))
        ratio_h, ratio_w = h / rh, w / rw
    h2, w2 = img.shape[:2]
    if min(h2, w2) < p.min_side_len:
        r = p.min_side_len / min(h2, w2)
        rh, rw = _round32(int(h2 * r)), _round32(int(w2 * r))
        img = cv2.resize(img, (rw, rh))
        ratio_h, ratio_w = h / rh, w / rw
    return img, ratio_h, ratio_w


def _vertical_padding(img: np.ndarray, p: DynamicDetParams) -> tuple[np.ndarray, int]:
    h, w = img.shape[:2]
    too_wide = p.width_height_ratio != -1 and w / h > p.width_height_ratio
    if h <= p.min_height or too_wide:
        new_h = max(int(w / p.width_height_ratio), p.min_height) * 2
        pad = int(abs(new_h - h) / 2)
        img = cv2.copyMakeBorder(img, pad, pad, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        return img, pad
    return img, 0


def _net_size(h: int, w: int, p: DynamicDetParams) -> tuple[int, int]:
    if p.limit_type == "max":
        r = p.limit_side_len / max(h, w) if max(h, w) > p.limit_side_len else 1.0
    else:
        r = p.limit_side_len / min(h, w) if min(h, w) < p.limit_side_len else 1.0
    # Scaling the short side up (limit_type "min") has no bound of its own: a tall thin
    # image (5000 x 1 pixels, a few hundred bytes as a PNG) would become a 45 632 x 736
    # network input, minutes of CPU and gigabytes of activations. Wide images are padded
    # above (``_vertical_padding``); tall ones are capped here instead: the network input
    # never holds more pixels than a square image at ``max_side_len`` does. Images of
    # ordinary shape never reach the cap, so parity with RapidOCR is unaffected.
    cap = float(max(p.max_side_len, p.limit_side_len)) ** 2
    # ``max_pixels`` bounds it further: detection's activations (hence the service's peak
    # memory) are proportional to the input's pixels (benchmarks/RESULTS.md, peak RSS).
    if p.max_pixels > 0:
        cap = min(cap, float(p.max_pixels))
    if h * r * w * r > cap:
        r *= (cap / (h * r * w * r)) ** 0.5
    return _round32(int(h * r)), _round32(int(w * r))


def prepare_dynamic(img: np.ndarray, params: DynamicDetParams) -> tuple[np.ndarray, DetTransform]:
    """Resize (and pad) ``img`` for a dynamic-shape DB network; see the module docstring."""
    orig_h, orig_w = img.shape[:2]
    bounded, ratio_h, ratio_w = _bound_sides(img, params)
    src, pad_top = _vertical_padding(bounded, params)
    src_h, src_w = src.shape[:2]
    net_h, net_w = _net_size(src_h, src_w, params)
    net = cv2.resize(src, (net_w, net_h))
    return net, DetTransform(
        map_w=net_w, map_h=net_h, src_w=src_w, src_h=src_h, pad_left=0.0,
        pad_top=float(pad_top), ratio_w=ratio_w, ratio_h=ratio_h, orig_w=orig_w, orig_h=orig_h,
    )


def prepare_fixed(
    img: np.ndarray, height: int, width: int, *, pad_value: int = 114
) -> tuple[np.ndarray, DetTransform]:
    """Letterbox ``img`` into ``height`` x ``width``, centred, aspect ratio kept."""
    orig_h, orig_w = img.shape[:2]
    scale = min(height / orig_h, width / orig_w)
    new_w = max(1, min(width, int(round(orig_w * scale))))
    new_h = max(1, min(height, int(round(orig_h * scale))))
    resized = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_CUBIC)
    top = (height - new_h) // 2
    left = (width - new_w) // 2
    canvas = np.full((height, width, 3), pad_value, dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas, DetTransform(
        map_w=width, map_h=height, src_w=width, src_h=height, pad_left=float(left),
        pad_top=float(top), ratio_w=orig_w / new_w, ratio_h=orig_h / new_h,
        orig_w=orig_w, orig_h=orig_h,
    )


def to_nchw_normalised(images: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Stack HWC ``uint8`` images into NCHW float32 scaled to [-1, 1] (PaddleOCR's mean/std 0.5)."""
    batch = np.stack(images) if isinstance(images, list) else images[None]
    n, h, w, c = batch.shape
    # Written channel by channel into the NCHW result: no float HWC copy on the way, which
    # would double the 12 bytes a pixel this costs (26 MB for a 2.2 Mpx detection input).
    out = np.empty((n, c, h, w), dtype=np.float32)
    for ch in range(c):
        out[:, ch] = batch[..., ch]
    out *= np.float32(2.0 / 255.0)
    out -= np.float32(1.0)
    return out


def to_nhwc_rgb_uint8(images: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Stack HWC BGR ``uint8`` images into the raw RGB NHWC frames an NPU model takes."""
    frames = images if isinstance(images, list) else [images]
    h, w = frames[0].shape[:2]
    # Each frame converted straight into its place in the batch: one pass over the
    # pixels (a stack and a reversed-channel copy were two).
    out = np.empty((len(frames), h, w, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=out[i])
    return out
