"""Recognition pre-processing and CTC decoding.

Crops are resized to the model's height keeping their aspect ratio, then packed into a
batch: for dynamic-width models each line is padded to a width that depends on that line
alone (:func:`pad_width`), and a batch holds only lines of one padded width; compiled NPU
models take the model's fixed width. Line crops wider than a fixed model can take are split
into overlapping pieces first (:func:`split_wide_crop`) and the texts joined again
(:func:`join_pieces`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import cv2
import numpy as np

#: Index of the CTC blank class in PaddleOCR recognition models.
BLANK: Final = 0
#: A dynamic-width recogniser's padding: each line to its own width, rounded up to a
#: multiple of this, and never below REC_MIN_WIDTH (see :func:`pad_width`).
REC_WIDTH_STEP: Final = 16
REC_MIN_WIDTH: Final = 96
#: PP-OCR recognition input rows, and its nominal width: the width of a compiled (NPU)
#: model's input, and the width a dynamic batch is padded to at least.
REC_HEIGHT: Final = 48
REC_NOMINAL_WIDTH: Final = 320


def build_charset(dictionary: Sequence[str]) -> tuple[str, ...]:
    """The class list of a PaddleOCR CTC head: blank, the dictionary, then a space."""
    return ("", *dictionary, " ")


def resize_for_rec(
    crop: np.ndarray, height: int = REC_HEIGHT, max_width: int | None = None
) -> np.ndarray:
    """Scale ``crop`` to ``height`` rows keeping its aspect ratio (width rounded up).

    ``max_width`` caps the width (a fixed-width model); the crop is then squeezed, which
    is why wide lines are split before they get here.
    """
    h, w = crop.shape[:2]
    # ratio first, then scale: the same float rounding as PaddleOCR's resize_norm_img
    new_w = max(1, int(math.ceil(height * (w / float(max(h, 1))))))
    if max_width is not None:
        new_w = min(new_w, max_width)
    return cv2.resize(crop, (new_w, height))


def pad_width(width: int, step: int = REC_WIDTH_STEP, min_width: int = REC_MIN_WIDTH) -> int:
    """The width a line resized to ``width`` columns is padded to for a dynamic-width
    recogniser: its own width rounded up to a multiple of ``step``, at least ``min_width``.

    The recogniser's output depends on how much zero padding follows a line (the same crop
    padded to 640 or 960 columns gives character probabilities up to 0.24 apart), so the
    padded width must be a function of the line alone: then a line's text never depends
    on which other lines or requests share its batch. PaddleOCR (and RapidOCR) instead pad
    a line to the widest of a group of six neighbours by aspect ratio, and to at least 320
    columns; on ../shared/devdata a line's own width reads as well against the ground truth
    (better on receipts) and costs about half the columns (benchmarks/RESULTS.md, round 5).
    The step lets lines of nearly equal width share a batch; the floor keeps short words
    (one to three characters) from being read with no context at all.
    """
    return max(min_width, int(math.ceil(width / step)) * step)


def batch_width(resized: Sequence[np.ndarray], nominal_width: int) -> int:
    """Width a dynamic batch is padded to: its widest crop, never less than nominal."""
    return max([nominal_width, *(c.shape[1] for c in resized)])


def pack_dynamic(resized: Sequence[np.ndarray], width: int) -> np.ndarray:
    """NCHW float32 in [-1, 1], zero (mid-grey) padded on the right to ``width``."""
    height = resized[0].shape[0]
    batch = np.zeros((len(resized), 3, height, width), dtype=np.float32)
    for i, crop in enumerate(resized):
        w = min(crop.shape[1], width)
        batch[i, :, :, :w] = crop[:, :w].transpose(2, 0, 1).astype(np.float32) * (2.0 / 255.0) - 1.0
    return batch


def pack_fixed_rgb(
    resized: Sequence[np.ndarray], width: int, *, pad_value: int = 128, slots: int | None = None
) -> np.ndarray:
    """NHWC uint8 RGB frames of exactly ``width``, padded with ``pad_value`` (Hailo's 128).

    ``slots`` > ``len(resized)`` appends blank frames, for backends whose batch size is
    fixed and that cannot take a shorter list.
    """
    height = resized[0].shape[0]
    n = max(len(resized), slots or 0)
    batch = np.full((n, height, width, 3), pad_value, dtype=np.uint8)
    for i, crop in enumerate(resized):
        w = min(crop.shape[1], width)
        # OpenCV swaps the channels in one vectorised pass; numpy's reversed-stride
        # copy (crop[..., ::-1]) goes element by element, several times slower.
        batch[i, :, :w] = cv2.cvtColor(np.ascontiguousarray(crop[:, :w]), cv2.COLOR_BGR2RGB)
    return batch


def ctc_greedy_decode(
    probs: np.ndarray, charset: Sequence[str]
) -> list[tuple[str, float]]:
    """Greedy CTC decoding of ``(N, T, C)`` class probabilities.

    Takes the best class per time step, merges repeats, drops blanks. The confidence is the
    mean probability of the characters kept (0.0 for an empty line), as PaddleOCR reports it.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"expected (N, T, C) probabilities, got shape {probs.shape}")
    if probs.shape[2] != len(charset):
        raise ValueError(
            f"the model outputs {probs.shape[2]} classes but the character list has {len(charset)}"
        )
    best = probs.argmax(axis=2)
    # The best class's probability read at its index, not found again by a second pass
    # over all classes: with PP-OCRv6's 18 710 classes a batch of 8 is 24 MB, and each
    # pass over it is a large share of the host's cost per image on the NPU path.
    best_p = np.take_along_axis(probs, best[..., None], axis=2)[..., 0]
    results: list[tuple[str, float]] = []
    for idx, p in zip(best, best_p, strict=True):
        keep = np.ones(len(idx), dtype=bool)
        keep[1:] = idx[1:] != idx[:-1]
        keep &= idx != BLANK
        chars = idx[keep]
        text = "".join(charset[c] for c in chars)
        conf = float(np.mean(p[keep])) if chars.size else 0.0
        results.append((text, conf))
    return results


def _word_gaps(crop: np.ndarray) -> list[tuple[int, int]]:
    """Column ranges ``[a, b)`` that hold no ink and are wide enough to be the space
    between two words (about a quarter of the text height; gaps between letters are
    narrower). Ink is any pixel far from the crop's median grey, so dark-on-light and
    light-on-dark text both work."""
    grey = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    background = float(np.median(grey))
    ink = (np.abs(grey.astype(np.float32) - background) > 48).mean(axis=0)
    blank = np.r_[False, ink <= 0.01, False]
    edges = np.flatnonzero(np.diff(blank.astype(np.int8)))
    min_gap = max(2, int(round(crop.shape[0] * 0.22)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)
            if b - a >= min_gap]


def split_wide_crop(
    crop: np.ndarray, height: int, max_width: int, overlap: int = 16
) -> list[np.ndarray]:
    """Cut a line crop into pieces that each fit ``max_width`` once scaled to ``height``.

    A cut goes into the gap between two words where there is one, and the next piece
    starts at the gap before, so it repeats the piece's last word whole:
    :func:`join_pieces` recognises the repeated word, and the space between the words
    survives. Where there is no word gap (CJK lines, dense text) pieces overlap by
    ``overlap`` model pixels so a character cut at one boundary is whole in the next.
    """
    h, w = crop.shape[:2]
    scaled_w = height * w / max(h, 1)
    if scaled_w <= max_width:
        return [crop]
    scale = h / height  # source pixels per model pixel
    window = max_width * scale  # the widest piece, in source pixels
    centres = [(a + b) // 2 for a, b in _word_gaps(crop)]
    pieces: list[np.ndarray] = []
    start = 0
    while w - start > window:
        fits = [c for c in centres if start + 0.5 * window <= c <= start + window]
        if fits:
            cut = fits[-1]
            before = [c for c in centres if start + 0.1 * window < c < cut]
            nxt = before[-1] if before else max(start + 1, int(cut - overlap * scale))
        else:
            cut = int(math.ceil(start + window))
            nxt = max(start + 1, int(start + (max_width - overlap) * scale))
        pieces.append(crop[:, start:cut])
        start = nxt
    pieces.append(crop[:, start:])
    return pieces


def join_pieces(texts: Sequence[tuple[str, float]]) -> tuple[str, float]:
    """Join the texts of overlapping pieces, dropping the longest repeated seam."""
    if not texts:
        return "", 0.0
    out, total = texts[0][0], [texts[0][1]]
    for text, conf in texts[1:]:
        total.append(conf)
        best = 0
        for k in range(min(len(out), len(text), 24), 0, -1):
            if out.endswith(text[:k]):
                best = k
                break
        out += text[best:]
    return out, float(np.mean(total))
