"""PDF input: the rendering resolution that keeps accuracy, and a 10-page scan's throughput
beside the same pages sent as single images.

Every PDF is made here, at run time, from devdata's scans (never copied: the bytes live in
memory) with the project's own test writer (``tests/support/pdfgen.py``):

* **Scans** (``--dpi``): each FUNSD form and SROIE receipt becomes a one-page PDF whose
  page is that image at the resolution it was scanned at (FUNSD: its letter page, about
  90 dpi; SROIE: an 80 mm till roll, 150-300 dpi), embedded as it is (a JPEG's own bytes,
  a PNG losslessly). Each is read at several rendering resolutions (``pdf_text: ocr``)
  and scored against the ground truth (``devdata/score.py``, boxes mapped back to the
  image's pixels), beside the image itself sent as an image.
* **Print** (``--dpi``): pages of Helvetica text at 6, 8, 10 and 12 points (a real text
  layer, read with ``pdf_text: ocr``: rendered and read as a scan would be), character
  error rate against the text drawn, at the same resolutions.
* **Throughput** (``--throughput``): the ten scans as one 10-page PDF, sent to a
  ``hailo-ocr serve`` over HTTP by 1 and by 4 clients at once: pages/s, beside the ten
  images sent one request each at the same concurrency: images/s.

    python -m benchmarks.pdf_pages                    # both parts (run under the heavy lock)
    python -m benchmarks.pdf_pages --dpi --dpis 72,100,150,200,300
    python -m benchmarks.pdf_pages --throughput --rounds 3
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import random
import sys
import tempfile
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from benchmarks.load import (
    REPO,
    Image,
    ServerProcess,
    devdata_dir,
    free_port,
    hailo_ocr_command,
    load_score_module,
    machine,
    run_level,
    table,
    warm_up,
    write_config,
)

sys.path.insert(0, str(REPO))

from actors.messages import OcrRequest  # noqa: E402
from actors.service import open_ocr_service  # noqa: E402
from ocr.document import DocumentOptions  # noqa: E402
from tests.support import (
    pdfgen,  # noqa: E402
    textgen,  # noqa: E402
)
from web.settings import load_config  # noqa: E402

DEFAULT_DPIS = (72, 100, 150, 200, 300)
TEXT_SIZES = (6, 8, 10, 12)
#: An SROIE receipt is printed on an 80 mm roll: its scan's resolution follows from its
#: width in pixels. A FUNSD form is a US Letter page (8.5 x 11 in).
RECEIPT_WIDTH_IN = 80 / 25.4
LETTER_HEIGHT_IN = 11.0


# -- the scans ----------------------------------------------------------------------------


def native_dpi(folder: str, width: int, height: int) -> float:
    """The resolution a devdata scan was made at, from its paper's size."""
    if folder.startswith("sroie"):
        return width / RECEIPT_WIDTH_IN
    return height / LETTER_HEIGHT_IN


def scan_set(devdata: Path, per_folder: int) -> list[tuple[str, Path, bytes, float]]:
    """(folder, path, bytes, native dpi) of the first scans of funsd_dev and sroie_dev."""
    from PIL import Image as PILImage

    out = []
    for folder in ("funsd_dev", "sroie_dev"):
        files = sorted((devdata / folder / "images").iterdir())[:per_folder]
        for f in files:
            data = f.read_bytes()
            with PILImage.open(f) as im:
                w, h = im.size
            out.append((folder, f, data, native_dpi(folder, w, h)))
    return out


def scan_pdf(data: bytes, dpi: float) -> bytes:
    return pdfgen.make_pdf([pdfgen.scanned_file_page(data, dpi)])


def _items(body_regions: Sequence[Any], scale: float) -> list[dict[str, Any]]:
    return [{"text": r.text, "poly": [[x * scale, y * scale] for x, y in r.bbox]}
            for r in body_regions]


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


async def dpi_sweep(devdata: Path, dpis: Sequence[int], per_folder: int,
                    concurrency: int) -> dict[str, Any]:
    """Accuracy and time per page of every scan and print page at every resolution."""
    from rapidfuzz.distance import Levenshtein

    score = load_score_module(devdata)
    scans = scan_set(devdata, per_folder)
    rng = random.Random(17)
    prints = {size: [textgen.random_line(rng, textgen.ENGLISH_WORDS, 6) for _ in range(14)]
              for size in TEXT_SIZES}
    config = load_config(env={})
    jobs: list[tuple[str, Any, bytes, DocumentOptions]] = []
    for folder, path, data, dpi in scans:
        jobs.append((folder, ("image", path.name), data, DocumentOptions()))
        pdf = scan_pdf(data, dpi)
        for d in dpis:
            jobs.append((folder, (d, path.name), pdf, DocumentOptions(dpi=d, pdf_text="ocr")))
    for size, lines in prints.items():
        pdf = pdfgen.make_pdf([pdfgen.text_page(lines, size)])
        for d in dpis:
            jobs.append((f"print{size}", (d, size), pdf, DocumentOptions(dpi=d, pdf_text="ocr")))

    results: dict[tuple[str, Any], tuple[Any, float]] = {}
    async with open_ocr_service(config) as service:
        limiter = trio.CapacityLimiter(concurrency)

        async def one(folder: str, key: Any, data: bytes, options: DocumentOptions) -> None:
            async with limiter:
                t0 = time.perf_counter()
                r = await service.extract(OcrRequest(data, ("en",), options=options))
                results[(folder, key)] = (r, time.perf_counter() - t0)

        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(one, *job)

    rows: dict[str, dict[str, Any]] = {}
    native = {path.name: dpi for _, path, _, dpi in scans}
    for label in ("image", *dpis):
        row: dict[str, Any] = {"dpi": label}
        seconds = []
        for folder in ("funsd_dev", "sroie_dev"):
            gt_all = json.loads((devdata / folder / "gt.json").read_text(encoding="utf-8"))
            names = [p.name for f, p, _, _ in scans if f == folder]
            pred = {}
            for name in names:
                r, s = results[(folder, (label, name))]
                seconds.append(s)
                # The page was rendered at `label` dpi; GT boxes are in the scan's pixels.
                scale = 1.0 if label == "image" else native[name] / r.pages[0].dpi
                pred[name] = {"items": _items(r.regions, scale)}
            gt = {**gt_all, "images": {n: gt_all["images"][n] for n in names}}
            res = score.score(gt, {"images": pred})
            row[folder] = (res["word_f1"], res["cer"])
        if label != "image":
            for size, lines in prints.items():
                r, s = results[(f"print{size}", (label, size))]
                truth = _norm(" ".join(lines))
                row[f"print{size}"] = Levenshtein.distance(_norm(r.text), truth) / len(truth)
        row["s_per_page"] = sum(seconds) / len(seconds)
        rows[str(label)] = row
    return {"native_dpi": native, "rows": rows}


def print_sweep(sweep: dict[str, Any]) -> None:
    print("Native resolution of each scan (dpi): " + ", ".join(
        f"{n} {d:.0f}" for n, d in sweep["native_dpi"].items()))
    headers = ["render dpi", "FUNSD word F1", "FUNSD CER", "SROIE word F1", "SROIE CER",
               *(f"{s} pt CER" for s in TEXT_SIZES), "s/page (c=2)"]
    out = []
    for label, row in sweep["rows"].items():
        out.append([
            "image itself" if label == "image" else label,
            row["funsd_dev"][0], row["funsd_dev"][1], row["sroie_dev"][0], row["sroie_dev"][1],
            *(row.get(f"print{s}", math.nan) for s in TEXT_SIZES), row["s_per_page"],
        ])
    print(table(headers, out))


# -- throughput ---------------------------------------------------------------------------


def throughput(devdata: Path, rounds: int, sections: dict[str, dict[str, Any]]
               ) -> dict[str, Any]:
    """pages/s of the 10-page scan and images/s of its pages alone, at c=1 and c=4, on
    one server (the levels alternate so a drifting machine load hits both alike)."""
    scans = scan_set(devdata, 5)
    pdf = pdfgen.make_pdf([pdfgen.scanned_file_page(data, dpi) for _, _, data, dpi in scans])
    n_pages = len(scans)
    images = [Image(f"{f}/{p.name}", p, data) for f, p, data, _ in scans]
    bodies = [json.dumps({"image": base64.b64encode(i.data).decode(), "languages": ["en"]}
                         ).encode() for i in images]
    doc = Image("scan.pdf", Path("scan.pdf"), pdf)
    doc_body = json.dumps({"image": base64.b64encode(pdf).decode(), "languages": ["en"]}
                          ).encode()
    out: dict[str, Any] = {"pages": n_pages, "pdf_bytes": len(pdf), "levels": []}
    with tempfile.TemporaryDirectory(prefix="pdf_bench_") as tmp:
        port = free_port()
        cfg = write_config(Path(tmp), "server", sections)
        server = ServerProcess("hailo-ocr", hailo_ocr_command(cfg, port), port,
                               Path(tmp) / "server.log").start()
        try:
            warm_up(server.target, [doc], [doc_body], 1)
            warm_up(server.target, images, bodies, 2)
            for c in (1, 4):
                for _ in range(rounds):
                    lv = run_level("pdf", server.target, [doc], [doc_body], c, c)
                    ok = sum(1 for r in lv.replies if r.ok)
                    pages_ok = sum(
                        sum(1 for p in r.body["pages"] if p["success"])
                        for r in lv.replies if r.ok)
                    out["levels"].append({
                        "kind": "10-page PDF", "c": c, "requests": ok, "errors": lv.errors,
                        "wall_s": lv.wall_s, "per_s": pages_ok / lv.wall_s,
                        "p50_s": lv.pct(50)})
                    lv = run_level("images", server.target, images, bodies, c, n_pages * c)
                    out["levels"].append({
                        "kind": "single images", "c": c, "requests": len(lv.latencies),
                        "errors": lv.errors, "wall_s": lv.wall_s, "per_s": lv.images_per_s,
                        "p50_s": lv.pct(50)})
            out["peak_rss_mb"] = server.peak_rss_mb()
        finally:
            server.stop()
    return out


def print_throughput(t: dict[str, Any]) -> None:
    print(f"Throughput: a {t['pages']}-page scan ({t['pdf_bytes'] / 1e6:.1f} MB PDF) against its "
          f"pages sent as single images; peak RSS {t.get('peak_rss_mb') or math.nan:.0f} MiB")
    rows = [[lv["kind"], lv["c"], lv["requests"], lv["errors"], lv["wall_s"], lv["per_s"],
             lv["p50_s"]] for lv in t["levels"]]
    print(table(["input", "c", "requests", "errors", "wall s", "pages/s", "p50 s"], rows))
    for c in (1, 4):
        pdf = [lv["per_s"] for lv in t["levels"] if lv["c"] == c and lv["kind"] != "single images"]
        img = [lv["per_s"] for lv in t["levels"] if lv["c"] == c and lv["kind"] == "single images"]
        if pdf and img:
            print(f"c={c}: PDF {sum(pdf) / len(pdf):.3f} pages/s, single images "
                  f"{sum(img) / len(img):.3f} images/s, ratio "
                  f"{sum(pdf) / len(pdf) / (sum(img) / len(img)):.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dpi", action="store_true", help="only the resolution sweep")
    p.add_argument("--throughput", action="store_true", help="only the throughput part")
    p.add_argument("--dpis", default=",".join(map(str, DEFAULT_DPIS)),
                   help="rendering resolutions to sweep (default %(default)s)")
    p.add_argument("--per-folder", type=int, default=8,
                   help="scans from each of funsd_dev and sroie_dev in the sweep (default 8)")
    p.add_argument("--rounds", type=int, default=2, help="throughput rounds per level")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="configuration of the throughput server (repeatable)")
    p.add_argument("--json", type=Path, help="write every number here")
    args = p.parse_args(argv)
    devdata = devdata_dir()
    if devdata is None:
        raise SystemExit("needs ../shared/devdata (or HAILO_OCR_DEVDATA)")
    both = not (args.dpi or args.throughput)
    report: dict[str, Any] = {}
    t0 = time.perf_counter()
    if args.dpi or both:
        dpis = tuple(int(d) for d in args.dpis.split(","))
        report["sweep"] = trio.run(dpi_sweep, devdata, dpis, args.per_folder, 2)
        print_sweep(report["sweep"])
    if args.throughput or both:
        from benchmarks.load import parse_set

        report["throughput"] = throughput(devdata, args.rounds, parse_set(args.set))
        print_throughput(report["throughput"])
    report["machine"] = machine()
    print(f"machine: {report['machine']['nproc']} x {report['machine']['cpu']}, load average "
          f"at end {report['machine']['loadavg_at_end']}; run took "
          f"{time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
