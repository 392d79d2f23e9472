"""The same images read on two backends, and the words compared: the Hailo path (on the
HailoRT stand-in) must read like the CPU backend."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from actors.messages import OcrRequest
from actors.service import open_ocr_service
from web.settings import Config


def bag_f1(pred: Counter, ref: Counter) -> float:
    """F1 of two bags (of words, lines, ...)."""
    tp = sum((pred & ref).values())
    if not tp:
        return 0.0
    p, r = tp / sum(pred.values()), tp / sum(ref.values())
    return 2 * p * r / (p + r)


def english_only(config: Config) -> Config:
    """``config`` reading English only, as the stand-in's English HEFs do."""
    return attrs.evolve(
        config, ocr=attrs.evolve(config.ocr, languages=("en",), default_language="en")
    )


async def read_on_each(configs: Mapping[str, Config], paths: Sequence[Path]) -> dict:
    """``{backend kind: [OcrResult per path]}``: each configuration's service reads every
    image in English, one service at a time (they share the machine's cores)."""
    results: dict[str, list] = {}
    for kind, cfg in configs.items():
        async with open_ocr_service(cfg) as service:
            assert service.info.kind == kind
            results[kind] = [await service.extract(OcrRequest(p.read_bytes(), ("en",)))
                             for p in paths]
    return results
