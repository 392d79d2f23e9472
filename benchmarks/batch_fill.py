"""Recognition batch fill and single-client latency of the two batching policies.

Runs the in-process service (``actors.service.open_ocr_service``, ONNX backend on the CPU)
with a fixed recognition batch of 8 (``onnx_models.fixed_batch=true``,
``batch_size_rec=8``, so every device call carries 8 frames and the unused ones are
padding), on real images from ``../shared/devdata`` (never copied into the project):

* **fill**: a fixed workload (the first ``--sroie`` SROIE receipts and ``--rapid`` RapidOCR
  test images) shared round-robin among 1, 4 and 8 concurrent clients, each sending its
  images one after another. Fill = crops recognised / batch slots run.
* **latency**: one client, images sent one at a time, per policy variant (adaptive, and
  window at 8 and 20 ms); variants take turns image by image so that drift in machine
  load hits them alike. The batcher's own queue wait isolates what the policy costs.

Usage::

    python benchmarks/batch_fill.py                 # the full table (minutes on a CPU)
    python benchmarks/batch_fill.py --sroie 2 --rapid 2 --rounds 1   # a quick look
    python benchmarks/batch_fill.py --backend hailo  # the NPU case, HailoRT stand-in

``--backend hailo`` runs the Hailo backend on the HailoRT stand-in (``tests/hailo_standin``:
the same PP-OCRv6 ONNX models behind HailoRT's API, with Hailo's fixed 48x320 recognition
input and a batch of 8), the true NPU case: no width grouping applies, so this is the fill
a Hailo device gets. Every fill table also gives *each request alone*: the fill a batcher
that never mixes requests reaches on the same images, sum n_i / sum ceil(n_i / 8) * 8 with
n_i each image's crop count (counted one request at a time).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from actors.batcher import BatcherStatistics  # noqa: E402
from actors.messages import OcrRequest  # noqa: E402
from actors.service import OcrService, open_ocr_service  # noqa: E402
from web.settings import Config, load_config  # noqa: E402

RAPID_FILL = ("ch_en_num.jpg", "check_return_word_len.jpeg", "return_word_debug.jpg",
              "white_font_color_transparent.png")
RAPID_LATENCY = ("ch_doc_server.png", "return_word_debug.jpg", "test_without_det.jpg")


def devdata_dir() -> Path:
    env = os.environ.get("HAILO_OCR_DEVDATA")
    path = Path(env) if env else REPO.parent / "shared" / "devdata"
    if not (path / "score.py").is_file():
        sys.exit(f"devdata not found at {path} (set HAILO_OCR_DEVDATA)")
    return path


def make_config(policy: str, window_ms: float, backend: str = "onnx") -> Config:
    config = load_config(env={}, overrides={
        "onnx_models": {"fixed_batch": True, "batch_size_rec": 8},
        "hailo_models": {"batch_size_rec": 8},
        "batching": {"policy": policy, "window_ms": window_ms},
        "server": {"request_timeout_s": 3600, "max_in_flight": 64},
        "backend": {"job_timeout_s": 600},
    })
    if backend == "hailo":
        config = _standin_config(config)
    return config


_standin_files: list[Any] = []


def _standin_config(config: Config) -> Config:
    """``config`` on the HailoRT stand-in (descriptor "HEFs" written once per run into a
    temporary directory; the stand-in is a test helper, so it is imported from tests/)."""
    import tempfile

    standin = REPO / "tests" / "hailo_standin"
    if str(standin) not in sys.path:
        sys.path.insert(0, str(standin))
    from hailo_testing import hailo_config, write_models

    if not _standin_files:
        _standin_files.append(write_models(Path(tempfile.mkdtemp(prefix="hailo-standin-"))))
    return hailo_config(config, _standin_files[0], timeout_ms=600_000)


async def alone_fill(svc: OcrService, images: list[bytes], batch: int) -> float:
    """The fill of batching each request on its own: each image's crop count n_i, one
    request at a time, gives sum n_i / sum ceil(n_i / batch) * batch."""
    counts = []
    for data in images:
        before = svc.statistics().batcher.slots_filled
        await svc.extract(OcrRequest(data, ("en",)))
        counts.append(svc.statistics().batcher.slots_filled - before)
    slots = sum(math.ceil(n / batch) * batch for n in counts)
    return sum(counts) / slots if slots else 0.0


@attrs.frozen
class Delta:
    """Batcher counters over one run."""

    batches: int
    filled: int
    run: int
    padded: int
    wait_total_s: float
    waited: int

    @classmethod
    def between(cls, a: BatcherStatistics, b: BatcherStatistics) -> Delta:
        return cls(
            b.batches - a.batches, b.slots_filled - a.slots_filled, b.slots_run - a.slots_run,
            b.slots_padded - a.slots_padded, b.queue_wait_total_s - a.queue_wait_total_s,
            b.crops_waited - a.crops_waited,
        )

    @property
    def fill(self) -> float:
        return self.filled / self.run if self.run else 0.0

    @property
    def mean_wait_ms(self) -> float:
        return 1000 * self.wait_total_s / self.waited if self.waited else 0.0


async def fill_run(svc: OcrService, images: list[bytes], clients: int) -> tuple[Delta, float]:
    before = svc.statistics().batcher
    shares = [images[k::clients] for k in range(clients)]

    async def client(share: list[bytes]) -> None:
        for data in share:
            await svc.extract(OcrRequest(data, ("en",)))

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for share in shares:
            if share:
                nursery.start_soon(client, share)
    wall = time.perf_counter() - start
    return Delta.between(before, svc.statistics().batcher), wall


async def main(args: argparse.Namespace) -> None:
    dd = devdata_dir()
    sroie = sorted((dd / "sroie_dev" / "images").iterdir())[: args.sroie]
    rapid = [dd / "rapidocr_tests" / n for n in RAPID_FILL[: args.rapid]]
    fill_images = [p.read_bytes() for p in [*sroie, *rapid]]
    print(f"fill workload: {', '.join(p.name for p in [*sroie, *rapid])}")
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}\n")

    print(f"backend: {args.backend}"
          + (" (HailoRT stand-in, fixed 48x320 recognition input)" if args.backend == "hailo"
             else " (CPU, onnx_models.fixed_batch: true)") + ", recognition batch 8\n")

    variants = [("adaptive", 8.0), ("window", 8.0), ("window", 20.0)]
    print("| policy | clients | requests | batches | fill | padded slots | "
          "mean queue wait ms | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    alone: float | None = None
    for policy, window in variants[: 2 if not args.all_windows else 3]:
        async with open_ocr_service(make_config(policy, window, args.backend)) as svc:
            if alone is None:
                alone = await alone_fill(svc, fill_images, 8)
                print(f"| each request alone (computed) | - | {len(fill_images)} | - | "
                      f"{alone:.3f} | - | - | - |", flush=True)
            for clients in args.clients:
                d, wall = await fill_run(svc, fill_images, clients)
                name = policy if policy == "adaptive" else f"window {window:g} ms"
                print(f"| {name} | {clients} | {len(fill_images)} | {d.batches} | "
                      f"{d.fill:.3f} | {d.padded} | {d.mean_wait_ms:.1f} | {wall:.1f} |",
                      flush=True)

    lat_images = [(n, (dd / "rapidocr_tests" / n).read_bytes()) for n in RAPID_LATENCY]
    totals: dict[str, list[float]] = {}
    recs: dict[str, list[float]] = {}
    deltas: dict[str, Delta] = {}
    async with AsyncExitStack() as stack:
        services = {}
        for policy, window in variants:
            name = policy if policy == "adaptive" else f"window {window:g} ms"
            services[name] = await stack.enter_async_context(
                open_ocr_service(make_config(policy, window, args.backend))
            )
        befores = {name: svc.statistics().batcher for name, svc in services.items()}
        for _ in range(args.rounds):
            for _img, data in lat_images:
                for name, svc in services.items():
                    result = await svc.extract(OcrRequest(data, ("en",)))
                    totals.setdefault(name, []).append(result.timings.total_ms)
                    recs.setdefault(name, []).append(result.timings.recognition_ms)
        for name, svc in services.items():
            deltas[name] = Delta.between(befores[name], svc.statistics().batcher)

    print(f"\nsingle client, {args.rounds} round(s) of {', '.join(n for n, _ in lat_images)}")
    print("| policy | requests | median total ms | median recognition ms | "
          "mean queue wait ms | fill |")
    print("|---|---|---|---|---|---|")
    for name in services:
        print(f"| {name} | {len(totals[name])} | {statistics.median(totals[name]):.0f} | "
              f"{statistics.median(recs[name]):.0f} | {deltas[name].mean_wait_ms:.2f} | "
              f"{deltas[name].fill:.3f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sroie", type=int, default=4, help="SROIE receipts in the workload")
    parser.add_argument("--rapid", type=int, default=4, help="RapidOCR images in the workload")
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds")
    parser.add_argument("--backend", choices=("onnx", "hailo"), default="onnx",
                        help="hailo: the Hailo backend on the HailoRT stand-in (tests/)")
    parser.add_argument("--all-windows", action="store_true",
                        help="also measure fill with the 20 ms window")
    trio.run(main, parser.parse_args())
