"""Messages between actors and the events a request emits. All frozen attrs values;
arrays are carried by reference (never compared, never copied)."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import trio


def _array_field() -> Any:
    return attrs.field(eq=False, repr=lambda a: f"<array {getattr(a, 'shape', '?')}>")


# --- NPU owner ------------------------------------------------------------------------


@attrs.frozen
class InferJob:
    """One device call. ``reply`` (capacity 1) receives an ``outcome.Outcome``."""

    model_id: str
    batch: np.ndarray = _array_field()
    reply: trio.MemorySendChannel = attrs.field(eq=False, repr=False)
    submitted_at: float = 0.0


# --- Recognition batcher ----------------------------------------------------------------


@attrs.frozen
class RecSubmission:
    """Crops of one request for one language. ``reply`` has room for every result, so
    the batcher never waits on a slow caller."""

    language: str
    crops: tuple[np.ndarray, ...] = attrs.field(eq=False, repr=lambda c: f"<{len(c)} crops>")
    reply: trio.MemorySendChannel = attrs.field(eq=False, repr=False)
    #: For a dynamic-width recogniser: the width each crop must be padded to (see
    #: ``ocr.recognition.group_widths``); the batcher then batches only crops of equal
    #: width, so a line's text never depends on what else is in flight. None: any width.
    widths: tuple[int, ...] | None = None


@attrs.frozen
class RecResult:
    """The text of crop ``index`` of a submission, or the error that stopped it."""

    index: int
    text: str = ""
    confidence: float = 0.0
    error: BaseException | None = None


# --- Results and progress events ---------------------------------------------------------


@attrs.frozen
class Region:
    text: str
    confidence: float
    bbox: tuple[tuple[float, float], ...]  # 4 points, clockwise from top-left
    type: str = "text"


@attrs.frozen
class Timings:
    decode_ms: float = 0.0
    detection_ms: float = 0.0
    recognition_ms: float = 0.0
    total_ms: float = 0.0


@attrs.frozen
class OcrResult:
    text: str
    regions: tuple[Region, ...]
    languages_detected: tuple[str, ...]
    language: str  # the recognition model's language used
    timings: Timings
    image_size: tuple[int, int]  # (width, height)


@attrs.frozen
class OcrRequest:
    image: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    languages: tuple[str, ...] = ()
    id: str | None = None


@attrs.frozen
class Accepted:
    id: str | None


@attrs.frozen
class Detected:
    id: str | None
    bboxes: tuple[tuple[tuple[float, float], ...], ...]


@attrs.frozen
class LineRecognised:
    id: str | None
    index: int
    region: Region


@attrs.frozen
class Done:
    id: str | None
    result: OcrResult


@attrs.frozen
class Failed:
    id: str | None
    error: BaseException


Event = Accepted | Detected | LineRecognised | Done | Failed
