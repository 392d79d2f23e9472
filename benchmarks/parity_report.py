#!/usr/bin/env python3
"""Per-folder parity figures: this service against RapidOCR on the same models.

    python benchmarks/parity_report.py                      # all of ../shared/devdata
    python benchmarks/parity_report.py --devdata PATH --cls both --json out.json
    python benchmarks/parity_report.py --time ../shared/devdata/sroie_dev/images/066.jpg

For each devdata folder it prints the number of images, our word F1 against RapidOCR's
words (micro over the folder) and the lowest per-image F1, and, for folders with ground
truth, word F1 and CER (``score.py``) for us and for RapidOCR. RapidOCR runs with its
defaults (``RapidOCR()``, line classifier on); we run with the classifier on (the
like-for-like setting the CI parity test uses) and/or off (our default), see ``--cls``.

``--time IMAGE`` instead times one image through the service: the median of 5 requests
after the models are loaded and warmed up.

The comparison code is shared with tests/test_parity.py (tests/parity_support.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import attrs
import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import parity_support as ps  # noqa: E402

from ocr.config import load_config  # noqa: E402


def _config(use_cls: bool):
    config = load_config(env={})
    return attrs.evolve(
        config,
        ocr=attrs.evolve(config.ocr, use_angle_cls=use_cls),
        server=attrs.evolve(config.server, request_timeout_s=600.0),
    )


def time_one(image: Path, runs: int = 5, use_cls: bool = False) -> list[float]:
    """Seconds per request for ``image``, ``runs`` times in a row, models already loaded."""
    from actors.messages import OcrRequest
    from actors.service import open_ocr_service

    data = image.read_bytes()

    async def main() -> list[float]:
        out = []
        async with open_ocr_service(_config(use_cls)) as service:
            await service.extract(OcrRequest(data, ("en",)))  # warm-up, not counted
            for _ in range(runs):
                t0 = time.perf_counter()
                await service.extract(OcrRequest(data, ("en",)))
                out.append(time.perf_counter() - t0)
        return out

    return trio.run(main)


def report(devdata: Path, cls_modes: list[bool], concurrency: int) -> dict:
    folders = ps.all_folders(devdata)
    paths = [p for f in folders for p in f.images]
    score = ps.load_score_module(devdata)
    t0 = time.perf_counter()
    theirs, their_s = ps.run_rapidocr(paths)
    print(f"RapidOCR: {len(paths)} images in {time.perf_counter() - t0:.1f} s "
          f"(median {statistics.median(their_s):.3f} s/image)", flush=True)
    out: dict = {"images": len(paths), "rapidocr_median_s": statistics.median(their_s),
                 "runs": {}}
    for use_cls in cls_modes:
        label = "ours, cls on" if use_cls else "ours, cls off (default)"
        t0 = time.perf_counter()
        ours, our_s = ps.run_ours(paths, _config(use_cls), concurrency=concurrency)
        print(f"\n== {label}: {len(paths)} images in {time.perf_counter() - t0:.1f} s, "
              f"{concurrency} in flight", flush=True)
        print(f"{'folder':16} {'n':>3} {'F1 vs R':>8} {'min img':>8}  {'worst image':28}"
              f" {'GT F1 ours':>10} {'GT F1 R':>8} {'CER ours':>9} {'CER R':>7}")
        rows = {}
        for f in folders:
            par = ps.parity(f, ours, theirs, score)
            worst, worst_f1 = par.min_image
            row = {"n_images": par.n_images, "f1_vs_rapidocr": par.f1,
                   "min_image_f1": worst_f1, "worst_image": worst,
                   "images_below_1": {k: v for k, v in par.per_image.items() if v < 1}}
            line = (f"{f.name:16} {par.n_images:3d} {par.f1:8.4f} {worst_f1:8.3f}  "
                    f"{(worst if worst_f1 < 1 else '-')[:28]:28}")
            if f.gt_path is not None:
                so = ps.score_against_gt(f, ours, score)
                sr = ps.score_against_gt(f, theirs, score)
                row.update(gt_word_f1_ours=so["word_f1"], gt_word_f1_rapidocr=sr["word_f1"],
                           gt_cer_ours=so["cer"], gt_cer_rapidocr=sr["cer"])
                line += (f" {so['word_f1']:10.4f} {sr['word_f1']:8.4f} {so['cer']:9.4f}"
                         f" {sr['cer']:7.4f}")
            print(line)
            rows[f.name] = row
        out["runs"]["cls_on" if use_cls else "cls_off"] = {
            "folders": rows, "median_s": statistics.median(our_s)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devdata", type=Path, default=REPO.parent / "shared" / "devdata")
    ap.add_argument("--cls", choices=("on", "off", "both"), default="both")
    ap.add_argument("--concurrency", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--time", type=Path, metavar="IMAGE", help="time one image instead")
    a = ap.parse_args()
    if a.time:
        secs = time_one(a.time)
        print(f"{a.time.name}: median {statistics.median(secs) * 1000:.0f} ms over "
              f"{len(secs)} runs ({', '.join(f'{s * 1000:.0f}' for s in secs)} ms)")
        return 0
    if not (a.devdata / "score.py").is_file():
        print(f"no devdata at {a.devdata} (see tests/conftest.py)", file=sys.stderr)
        return 2
    modes = {"on": [True], "off": [False], "both": [True, False]}[a.cls]
    out = report(a.devdata, modes, a.concurrency)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
