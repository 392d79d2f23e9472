"""The host-side stage functions of two checkouts, on the same inputs, in one process.

    python -m benchmarks.stage_compare --before CHECKOUT [--after CHECKOUT] [--store DIR]

For the tuning rows of ``benchmarks/RESULTS.md`` (host cost): each function of the NPU
path that a change touched, timed (process CPU, median of rounds that alternate old and
new, since the machine's load drifts) on real inputs: detection maps recorded by
``benchmarks/host_cost.py`` (``--store``), the devdata images, a receipt's base64, a
PP-OCRv6 recognition batch's shape. ``CHECKOUT`` is a git worktree of another commit.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .host_cost import DEFAULT_STORE
from .load import REPO, devdata_dir, table

MODULES = ("ocr.recognition", "ocr.dbpost", "ocr.detection", "ocr.decode", "ocr.geometry",
           "web.inputs")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def load_tree(tree: Path) -> dict[str, Any]:
    """The project's modules as ``tree`` has them (imported afresh)."""
    for name in [m for m in sys.modules if m.split(".")[0] in ("ocr", "web", "npu", "actors")]:
        del sys.modules[name]
    sys.path.insert(0, str(tree))
    try:
        return {name: importlib.import_module(name) for name in MODULES}
    finally:
        sys.path.remove(str(tree))


def cpu_ms(fn: Callable[[], Any], reps: int) -> float:
    fn()
    t = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - t) / reps * 1000


def compare(old: Callable[[], Any], new: Callable[[], Any], reps: int, per: int = 1,
            rounds: int = 5) -> tuple[float, float]:
    a, b = [], []
    for _ in range(rounds):
        a.append(cpu_ms(old, reps) / per)
        b.append(cpu_ms(new, reps) / per)
    return statistics.median(a), statistics.median(b)


def rows(old: dict[str, Any], new: dict[str, Any], store: Path, devdata: Path) -> list[list[Any]]:
    rng = np.random.default_rng(0)
    maps = [np.asarray(np.load(f)) for f in sorted((store / "det").glob("*.npy"))[:150]]
    probs = rng.random((8, 40, 18710), dtype=np.float32)
    charset = tuple(str(i) for i in range(18710))
    frame = rng.integers(0, 256, (544, 960, 3), dtype=np.uint8)
    crops = [rng.integers(0, 256, (48, int(w), 3), dtype=np.uint8)
             for w in rng.integers(20, 320, 8)]
    receipt = devdata / "sroie_dev" / "images" / "090.jpg"
    body = base64.b64encode(receipt.read_bytes())
    files = sorted(f for f in devdata.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    images = [f.read_bytes() for f in files]
    rgba = [f.read_bytes() for f in files if "transparent" in f.name or "ch_doc" in f.name]

    def db(mods: dict[str, Any]) -> Callable[[], Any]:
        t = mods["ocr.geometry"].DetTransform(
            map_w=960, map_h=544, src_w=960, src_h=544, pad_left=0.0, pad_top=0.0,
            ratio_w=1.0, ratio_h=1.0, orig_w=960, orig_h=544)
        return lambda: [mods["ocr.dbpost"].db_boxes(m, t) for m in maps]

    def decode(mods: dict[str, Any], data: Sequence[bytes]) -> Callable[[], Any]:
        return lambda: [mods["ocr.decode"].decode_image(d, max_pixels=10**8) for d in data]

    cases = [
        ("ctc_greedy_decode", "batch of 8 x 40 x 18 710",
         *(lambda m=m: m["ocr.recognition"].ctc_greedy_decode(probs, charset)
           for m in (old, new)), 10, 1),
        ("db_boxes", f"544 x 960 map ({len(maps)} recorded)", db(old), db(new), 1,
         max(1, len(maps))),
        ("to_nhwc_rgb_uint8", "544 x 960 frame",
         *(lambda m=m: m["ocr.detection"].to_nhwc_rgb_uint8(frame) for m in (old, new)), 50, 1),
        ("pack_fixed_rgb", "batch of 8 crops",
         *(lambda m=m: m["ocr.recognition"].pack_fixed_rgb(crops, 320) for m in (old, new)),
         200, 1),
        ("_b64decode", f"{len(body) // 1024} kB of base64 ({receipt.name})",
         *(lambda m=m: m["web.inputs"]._b64decode(body, 1 << 26) for m in (old, new)), 10, 1),
        ("decode_image", f"devdata image ({len(images)})", decode(old, images),
         decode(new, images), 1, len(images)),
        ("decode_image", f"RGBA PNG ({len(rgba)})", decode(old, rgba), decode(new, rgba), 3,
         max(1, len(rgba))),
    ]
    out = []
    for name, unit, f_old, f_new, reps, per in cases:
        a, b = compare(f_old, f_new, reps, per)
        out.append([name, unit, a, b, b / a if a else float("nan")])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, metavar="CHECKOUT")
    ap.add_argument("--after", type=Path, default=REPO, metavar="CHECKOUT")
    ap.add_argument("--store", type=Path, default=DEFAULT_STORE,
                    help="host_cost's recordings (detection maps)")
    args = ap.parse_args(argv)
    devdata = devdata_dir()
    if devdata is None:
        raise SystemExit("devdata not found (../shared/devdata or HAILO_OCR_DEVDATA)")
    old, new = load_tree(args.before), load_tree(args.after)
    print(f"before {args.before}, after {args.after}: process CPU ms, median of 5 rounds")
    print(table(["function", "per", "before ms", "after ms", "after / before"],
                rows(old, new, args.store, devdata)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
