"""Running RapidOCR and this service over the same real images, and comparing them.

Shared by ``tests/test_parity.py`` and ``benchmarks/parity_report.py`` so that the CI
gate and the numbers in the report come from one piece of code.

* RapidOCR runs exactly as a user would run it: ``RapidOCR()`` with its own defaults
  (PP-OCRv6 small detection and recognition, the line classifier on), given the file
  *path* (its path loader is the one that applies EXIF orientation).
* Our side runs through :func:`actors.service.open_ocr_service` with the default
  configuration, a few requests in flight at once, inside one ``trio.run``.
* Words are compared with ``score.py``'s own tokeniser (NFKC, whitespace split,
  punctuation stripped at both ends), so "word F1" means the same thing here and there.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import trio

#: The devdata folders and where their images are (ground truth sits beside ``images``).
FOLDERS = ("rapidocr_tests", "icdar2015_dev", "sroie_dev", "funsd_dev")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@attrs.frozen
class Item:
    """One recognised line: its text, confidence and quad (4 points, original pixels)."""

    text: str
    score: float
    poly: tuple[tuple[float, float], ...]


@attrs.frozen
class Folder:
    name: str
    images: tuple[Path, ...]
    gt_path: Path | None


def load_score_module(devdata: Path) -> ModuleType:
    """Import ``devdata/score.py`` by path (it is not a package and must not be copied)."""
    spec = importlib.util.spec_from_file_location("devdata_score", devdata / "score.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def folder(devdata: Path, name: str) -> Folder:
    base = devdata / name
    image_dir = base / "images" if (base / "images").is_dir() else base
    images = tuple(
        sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    )
    gt = base / "gt.json"
    return Folder(name, images, gt if gt.is_file() else None)


def all_folders(devdata: Path) -> list[Folder]:
    return [folder(devdata, name) for name in FOLDERS if (devdata / name).is_dir()]


def key(f: Folder, path: Path) -> str:
    return f"{f.name}/{path.name}"


# --------------------------------------------------------------------------- RapidOCR
def run_rapidocr(paths: Sequence[Path]) -> tuple[dict[Path, list[Item]], list[float]]:
    """RapidOCR's output for each image with its defaults, and its per-image seconds."""
    import logging

    from rapidocr import RapidOCR

    engine = RapidOCR()
    logging.getLogger("RapidOCR").setLevel(logging.WARNING)
    out: dict[Path, list[Item]] = {}
    seconds: list[float] = []
    for p in paths:
        t0 = time.perf_counter()
        res = engine(str(p))
        seconds.append(time.perf_counter() - t0)
        items: list[Item] = []
        if getattr(res, "txts", None) is not None and res.boxes is not None:
            for box, txt, sc in zip(res.boxes, res.txts, res.scores, strict=True):
                poly = tuple((float(x), float(y)) for x, y in box)
                items.append(Item(str(txt), float(sc), poly))
        out[p] = items
    return out, seconds


# --------------------------------------------------------------------------- ours
async def _run_ours_async(
    paths: Sequence[Path], config: Any, concurrency: int
) -> tuple[dict[Path, list[Item]], list[float]]:
    from actors.messages import OcrRequest
    from actors.service import open_ocr_service

    out: dict[Path, list[Item]] = {}
    seconds: list[float] = []
    limiter = trio.CapacityLimiter(concurrency)

    async with open_ocr_service(config) as service:

        async def one(p: Path) -> None:
            async with limiter:
                data = await trio.Path(p).read_bytes()
                t0 = time.perf_counter()
                result = await service.extract(OcrRequest(data, ("en",), id=p.name))
                seconds.append(time.perf_counter() - t0)
                out[p] = [Item(r.text, r.confidence, tuple(r.bbox)) for r in result.regions]

        async with trio.open_nursery() as nursery:
            for p in paths:
                nursery.start_soon(one, p)
    return out, seconds


def run_ours(
    paths: Sequence[Path], config: Any, concurrency: int = 3
) -> tuple[dict[Path, list[Item]], list[float]]:
    """Our service's output for each image (synchronous wrapper around one ``trio.run``)."""
    return trio.run(_run_ours_async, paths, config, concurrency)


# --------------------------------------------------------------------------- scoring
def words(items: Sequence[Item], score_mod: ModuleType) -> Counter[str]:
    """The bag of words of a set of lines, tokenised as ``score.py`` tokenises."""
    return Counter(w for it in items for w in score_mod.tokens(it.text))


def bag_f1(pred: Counter[str], ref: Counter[str]) -> float:
    """Multiset word F1 of ``pred`` against ``ref``; both empty counts as agreement (1.0)."""
    n_pred, n_ref = sum(pred.values()), sum(ref.values())
    if n_pred == 0 and n_ref == 0:
        return 1.0
    tp = sum((pred & ref).values())
    if tp == 0:
        return 0.0
    p, r = tp / n_pred, tp / n_ref
    return 2 * p * r / (p + r)


@attrs.frozen
class FolderParity:
    folder: str
    n_images: int
    f1: float  # micro-averaged word F1 of ours against RapidOCR's words
    per_image: dict[str, float]

    @property
    def min_image(self) -> tuple[str, float]:
        name = min(self.per_image, key=lambda k: self.per_image[k])
        return name, self.per_image[name]


def parity(
    f: Folder, ours: dict[Path, list[Item]], theirs: dict[Path, list[Item]],
    score_mod: ModuleType,
) -> FolderParity:
    tp = n_pred = n_ref = 0
    per_image: dict[str, float] = {}
    for p in f.images:
        a, b = words(ours[p], score_mod), words(theirs[p], score_mod)
        tp += sum((a & b).values())
        n_pred += sum(a.values())
        n_ref += sum(b.values())
        per_image[p.name] = bag_f1(a, b)
    if n_pred == 0 and n_ref == 0:
        f1 = 1.0
    else:
        f1 = 2 * tp / (n_pred + n_ref) if (n_pred + n_ref) else 0.0
    return FolderParity(f.name, len(f.images), f1, per_image)


def predictions_json(f: Folder, results: dict[Path, list[Item]], peer: str) -> dict:
    """Predictions in ``score.py``'s format (line-level items)."""
    return {
        "peer": peer,
        "dataset": f.name,
        "images": {
            p.name: {
                "items": [
                    {"text": it.text, "poly": [list(pt) for pt in it.poly], "level": "line"}
                    for it in results[p]
                ]
            }
            for p in f.images
        },
    }


def score_against_gt(f: Folder, results: dict[Path, list[Item]], score_mod: ModuleType) -> dict:
    """``score.py``'s summary (word F1, CER, ...) of ``results`` against the folder's GT."""
    assert f.gt_path is not None
    gt = json.loads(f.gt_path.read_text(encoding="utf-8"))
    return score_mod.score(gt, predictions_json(f, results, "x"))


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")
