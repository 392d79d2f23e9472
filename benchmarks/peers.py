"""The peers hailo-ocr is measured against, called directly in this process.

* ``rapidocr``: RapidOCR 3.10 with its defaults (``RapidOCR()``: PP-OCRv6 small detection
  and recognition, the line classifier on), the pipeline whose models we ship;
* ``faster-paddle``: faster-paddle's ``OcrEngine(model_size="small")`` (the same PP-OCRv6
  small models, Rust pre- and post-processing, its own ONNX Runtime), with its other
  defaults (threads = physical cores, detection long side capped at 1600, each line
  recognised at its own width).

Both are benchmark-only baselines (the ``bench`` extra in pyproject.toml), never runtime
dependencies. Each engine takes the image's encoded bytes, as a client sends them, and
gives line items in ``score.py``'s format (``text``, 4-point ``poly``, ``confidence``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import attrs

RAPIDOCR: Final = "rapidocr"
FASTER_PADDLE: Final = "faster-paddle"
PEERS: Final = (RAPIDOCR, FASTER_PADDLE)


@attrs.frozen
class PeerResult:
    items: tuple[dict[str, Any], ...]
    latency_s: float


def _rapidocr() -> Callable[[bytes], PeerResult]:
    from rapidocr import RapidOCR

    engine = RapidOCR(params={"Global.log_level": "error"})

    def read(data: bytes) -> PeerResult:
        t0 = time.perf_counter()
        res = engine(data)
        latency = time.perf_counter() - t0
        boxes = [] if res.boxes is None else res.boxes.tolist()
        items = tuple(
            {"text": str(t), "poly": [[float(x), float(y)] for x, y in b],
             "confidence": float(s)}
            for t, b, s in zip(res.txts or (), boxes, res.scores or (), strict=False)
        )
        return PeerResult(items, latency)

    return read


def _faster_paddle() -> Callable[[bytes], PeerResult]:
    from faster_paddle import OcrEngine

    engine = OcrEngine(model_size="small")

    def read(data: bytes) -> PeerResult:
        t0 = time.perf_counter()
        res = engine.ocr(data)
        latency = time.perf_counter() - t0
        items = []
        for b in res["bounds"].values():  # axis-aligned boxes
            (x0, y0), (x1, y1) = b["topLeftCoord"], b["bottomRightCoord"]
            items.append({"text": b["text"], "confidence": float(b["confidence"]),
                          "poly": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]})
        return PeerResult(tuple(items), latency)

    return read


def open_peer(name: str) -> Callable[[bytes], PeerResult]:
    """A loaded engine: call it with an image's bytes."""
    makers = {RAPIDOCR: _rapidocr, FASTER_PADDLE: _faster_paddle}
    if name not in makers:
        raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    return makers[name]()
