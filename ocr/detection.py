"""Detection pre-processing for both input policies a backend can declare.

* *dynamic* (CPU, ONNX Runtime): the network takes any size that is a multiple of 32.
  Very wide or very short images are padded below and above (as PaddleOCR does); then the
  image is scaled so its short side reaches ``limit_side_len`` (never down), but its long
  side never past ``max_side_len`` and its area never past ``max_pixels``
  (:func:`dynamic_net_size`). Text lines are cropped from the original image whatever the
  detection input's size, so the detector only has to *find* text at this resolution.
* *fixed* (NPU): a compiled model has one input size. The image is letterboxed into it,
  centred, keeping its aspect ratio, as Hailo's own OCR example does (tall or wide images
  are cut into tiles at the dynamic path's scale first, ``ocr/tiling.py``).

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
    """The detection input's size for a dynamic-shape detector.

    The defaults were chosen against the ground truth of ../shared/devdata, with the
    detector's speed (proportional to the input's pixels) in view
    (benchmarks/RESULTS.md): RapidOCR's 736 px short side and 2000 px long side
    read no better on receipts, forms, scene photos or web images than 704 and 1600, and
    cost 1.4-1.5 times the pixels on tall receipts; a single line 78 px high became a
    2.2 Mpx input (1600 x 352 now).
    """

    limit_side_len: int = 704
    limit_type: str = "min"  # "min": scale the short side up to the limit; "max": cap the long side
    #: The longest side of the detection input (larger inputs are scaled down to it).
    max_side_len: int = 1600
    width_height_ratio: float = 8.0  # wider than this gets vertical padding (-1 disables)
    min_height: int = 30
    #: Most pixels in the network input (0 = no bound beyond ``max_side_len`` squared).
    max_pixels: int = 0


def _round32(v: float) -> int:
    return max(32, int(round(v / 32) * 32))


def _vertical_padding(h: int, w: int, p: DynamicDetParams) -> int:
    """Rows of black added above and below an ``h`` x ``w`` image before detection: very
    wide images (a single line) and very short ones are padded to a more square shape, as
    PaddleOCR pads them (the detector finds a lone line poorly at its edge)."""
    too_wide = p.width_height_ratio != -1 and w / h > p.width_height_ratio
    if h <= p.min_height or too_wide:
        new_h = max(int(w / p.width_height_ratio), p.min_height) * 2
        return int(abs(new_h - h) / 2)
    return 0


def _net_size(h: int, w: int, p: DynamicDetParams) -> tuple[int, int]:
    """The detection input's ``(height, width)`` for a (padded) ``h`` x ``w`` image."""
    if p.limit_type == "max":
        r = p.limit_side_len / max(h, w) if max(h, w) > p.limit_side_len else 1.0
    else:
        r = p.limit_side_len / min(h, w) if min(h, w) < p.limit_side_len else 1.0
    # The long side is capped after the short side was scaled up: a tall receipt or a long
    # thin line is not blown up past what the detector needs, and a tall thin image (5000
    # x 1 pixels, a few hundred bytes as a PNG) cannot become a 45 632 x 736 input.
    if max(h, w) * r > p.max_side_len:
        r = p.max_side_len / max(h, w)
    # ``max_pixels`` bounds it further: detection's activations (hence the service's peak
    # memory) are proportional to the input's pixels (benchmarks/RESULTS.md, peak RSS).
    if p.max_pixels > 0 and h * r * w * r > p.max_pixels:
        r *= (p.max_pixels / (h * r * w * r)) ** 0.5
    return _round32(int(h * r)), _round32(int(w * r))


def dynamic_sizing(h: int, w: int, p: DynamicDetParams) -> tuple[int, int, int]:
    """How :func:`prepare_dynamic` sizes an ``h`` x ``w`` image, from the sizes alone:
    the rows of padding above (and below) it, and the network input's height and width."""
    pad = _vertical_padding(h, w, p)
    net_h, net_w = _net_size(h + 2 * pad, w, p)
    return pad, net_h, net_w


def dynamic_scale(h: int, w: int, p: DynamicDetParams) -> float:
    """The horizontal scale :func:`prepare_dynamic` feeds an ``h`` x ``w`` image at
    (network width / image width)."""
    return dynamic_sizing(h, w, p)[2] / w


def prepare_dynamic(img: np.ndarray, params: DynamicDetParams) -> tuple[np.ndarray, DetTransform]:
    """Pad and resize ``img`` for a dynamic-shape DB network; see the module docstring."""
    orig_h, orig_w = img.shape[:2]
    pad, net_h, net_w = dynamic_sizing(orig_h, orig_w, params)
    src = img
    if pad:
        src = cv2.copyMakeBorder(img, pad, pad, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    src_h, src_w = src.shape[:2]
    net = cv2.resize(src, (net_w, net_h))
    return net, DetTransform(
        map_w=net_w, map_h=net_h, src_w=src_w, src_h=src_h, pad_left=0.0, pad_top=float(pad),
        ratio_w=1.0, ratio_h=1.0, orig_w=orig_w, orig_h=orig_h,
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
