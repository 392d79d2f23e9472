"""What going through hailo-device-manager costs the host, per call and per image.

``backend.type: device-manager`` sends every tensor to the daemon as base64 inside JSON
and gets the outputs back the same way (a 544x960x3 detection input is about 2 MB of
text, its probability map about 2.8 MB), where the direct Hailo backend binds the same
buffers to HailoRT without a copy. This script measures that difference on this machine,
with the manager played by the protocol-faithful test double
(``tests/support/fake_device_manager.py``)
in **its own process**, as the daemon is:

1. **Per image, real text** (``--images``, default a few devdata images): the in-process
   service on the direct Hailo backend (HailoRT stand-in, ``tests/hailo_standin``) and on
   the device-manager backend (the double, on its own stand-in), image by image in turn,
   c=1. Same text is checked; latency and device calls per image are reported. The
   stand-in's recogniser is the shipped PP-OCRv6 model with 18 710 classes, so its outputs
   are 150 times the size of the Pi's English ``ocr.hef`` (97 classes): this row is the
   large-vocabulary case (a Chinese HEF has 18 385).
2. **Per call, the Pi's shapes, instant device**: the double's OCR handler answers at once
   (after decoding the request and filling its buffers, as the daemon does) with outputs of
   ``ocr_det.hef`` / ``ocr.hef``'s shapes (544x960x1 map; 1x40x97 per crop). Per call:
   round-trip wall time, and CPU time of this process and of the manager's process
   (``/proc/<pid>/stat``). That CPU time is the added host time: the direct backend spends
   none of it.

The summary turns (2) into a per-image figure with the device calls per image of (1) and,
for a Pi 5, multiplies by a stated x86-to-Cortex-A76 per-core factor (``--pi-factor``;
an assumption, no Pi here) and notes what the daemon's own ``CPUQuota=20%`` allows.

Usage::

    python -m benchmarks.device_manager_cost            # a few minutes on 2 cores
    python -m benchmarks.device_manager_cost --calls 20 --images rapidocr_tests/en.jpg
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
for _p in (REPO / "tests" / "hailo_standin",):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from actors.messages import OcrRequest  # noqa: E402
from actors.service import open_ocr_service  # noqa: E402
from web.settings import Config, load_config  # noqa: E402

DEFAULT_IMAGES = ("rapidocr_tests/en.jpg", "rapidocr_tests/return_word_debug.jpg",
                  "sroie_dev/images/006.jpg", "funsd_dev/images")
PI_DET_OUT = (544, 960, 1)
PI_REC_OUT = (1, 40, 97)
TICK = os.sysconf("SC_CLK_TCK")


# --- the manager's process ----------------------------------------------------------------


def serve_manager(sock: str, instant: bool) -> None:
    """Run the double here until stdin closes (the benchmark's child process)."""
    from tests.support import fake_device_manager as fdm

    manager = fdm.FakeDeviceManager(sock, job_wait_ms=600_000)
    manager.start()
    if instant:
        manager.handler = _instant_handler(fdm, manager.handler)
    print("ready", flush=True)
    sys.stdin.read()
    manager.stop()


def _instant_handler(fdm: Any, real: Any) -> Any:
    """The double's OCR handler with the chip taken out: the request is decoded and the
    buffers filled as the daemon does, then outputs of the Pi's HEF shapes come back."""

    class Instant(type(real)):
        mode = None

        def infer(self, rt: Any, input_data: dict) -> Any:
            self.mode = input_data.get("mode")
            return super().infer(rt, input_data)

        def _run(self, model: Any, configured: Any, frames: list) -> list:
            rec = self.mode == "recognition"
            outs = []
            for frame in frames:
                x = np.empty(model.input().shape, dtype=np.uint8)
                x[:] = frame
                y = np.zeros(PI_REC_OUT if rec else PI_DET_OUT, dtype=np.float32)
                if rec:
                    y[..., 0] = 1.0  # a valid distribution: every step the blank
                outs.append(y)
            return outs

    return Instant(real.hp, real.wait_ms)


class ManagerProcess:
    def __init__(self, sock: str, instant: bool) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO / "tests" / "hailo_standin"), str(REPO)])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.device_manager_cost", "--serve-manager", sock]
            + (["--instant"] if instant else []),
            cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the manager did not start: {line!r}")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# --- configurations -----------------------------------------------------------------------


def configs(models_dir: Path, sock: str, *, english_97: bool) -> tuple[Config, Config]:
    """(direct Hailo backend, device-manager backend) on the same stand-in HEFs."""
    from hailo_testing import hailo_config, write_models

    files = write_models(models_dir)
    base = load_config(env={}, overrides={
        "server": {"request_timeout_s": 3600, "max_in_flight": 64},
        "backend": {"job_timeout_s": 600},
    })
    direct = hailo_config(base, files, timeout_ms=600_000)
    if english_97:  # ocr.hef's built-in 97-class list, as on the Pi
        direct = attrs.evolve(direct, hailo_models=attrs.evolve(
            direct.hailo_models, character_lists={}))
    manager = attrs.evolve(
        direct, backend=attrs.evolve(direct.backend, type="device-manager"),
        device_manager=attrs.evolve(direct.device_manager, socket=sock, timeout_s=600),
    )
    return direct, manager


def image_paths(devdata: Path, names: list[str]) -> list[Path]:
    out: list[Path] = []
    for name in names:
        p = devdata / name
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in (".jpg", ".png"))[:2])
        elif p.is_file():
            out.append(p)
    return out


# --- (1) per image -------------------------------------------------------------------------


async def per_image(direct: Config, manager: Config, paths: list[Path]) -> dict[str, Any]:
    rows = []
    async with open_ocr_service(direct) as d, open_ocr_service(manager) as m:
        for service in (d, m):  # one unmeasured image each
            await service.extract(OcrRequest(paths[0].read_bytes(), ("en",)))
        jobs0, batches0 = m.statistics().devices["npu"].jobs_run, m.statistics().batcher.batches
        for i, path in enumerate(paths):
            data = path.read_bytes()
            order = [("direct", d), ("manager", m)]
            if i % 2:
                order.reverse()
            row: dict[str, Any] = {"image": path.name}
            for name, service in order:
                t0 = time.perf_counter()
                r = await service.extract(OcrRequest(data, ("en",)))
                row[name] = time.perf_counter() - t0
                row[f"{name}_text"] = [reg.text for reg in r.regions]
            rows.append(row)
        calls = (m.statistics().devices["npu"].jobs_run - jobs0) / len(paths)
        rec = (m.statistics().batcher.batches - batches0) / len(paths)
    same = sum(r["direct_text"] == r["manager_text"] for r in rows)
    return {"rows": rows, "same": same, "rec_per_image": rec, "det_per_image": calls - rec}


# --- (2) per call ----------------------------------------------------------------------------


@attrs.frozen
class CallCost:
    what: str
    concurrency: int
    calls: int
    wall_ms: float  # median round trip
    ours_cpu_ms: float  # per call
    manager_cpu_ms: float


async def _timed_calls(backend: Any, model_id: str, batch: np.ndarray, n: int,
                       walls: list[float]) -> None:
    for _ in range(n):
        t0 = time.perf_counter()
        await backend.infer(model_id, batch)
        walls.append(time.perf_counter() - t0)


async def per_call(manager_cfg: Config, proc: ManagerProcess, calls: int) -> list[CallCost]:
    from npu.device_manager_backend import DeviceManagerBackend

    backend = DeviceManagerBackend(manager_cfg)
    info = await trio.to_thread.run_sync(backend.load)
    det = info.model("detection")
    rec = info.model("recognition_en")
    assert rec.output_shape == PI_REC_OUT[1:], rec.output_shape
    rng = np.random.default_rng(0)
    frames = {
        "detection, 1 frame 544x960": ("detection",
                                       rng.integers(0, 255, (1, det.height, det.width, 3),
                                                    dtype=np.uint8)),
        "recognition, 8 crops 48x320": ("recognition_en",
                                        rng.integers(0, 255, (8, rec.height, rec.width, 3),
                                                     dtype=np.uint8)),
    }
    out: list[CallCost] = []
    try:
        for what, (model_id, batch) in frames.items():
            for concurrency in (1, 2):
                for _ in range(2):  # warm-up
                    await backend.infer(model_id, batch)
                walls: list[float] = []
                cpu0, mcpu0 = time.process_time(), proc.cpu_s()
                async with trio.open_nursery() as nursery:
                    for _ in range(concurrency):
                        nursery.start_soon(_timed_calls, backend, model_id, batch,
                                           calls // concurrency, walls)
                n = len(walls)
                out.append(CallCost(
                    what, concurrency, n, statistics.median(walls) * 1000,
                    (time.process_time() - cpu0) / n * 1000, (proc.cpu_s() - mcpu0) / n * 1000,
                ))
    finally:
        await trio.to_thread.run_sync(backend.close)
    return out


# --- the report --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="*", default=list(DEFAULT_IMAGES),
                        help="paths below devdata (files, or folders: their first two images)")
    parser.add_argument("--calls", type=int, default=40, help="calls per per-call row")
    parser.add_argument("--pi-factor", type=float, default=2.5,
                        help="assumed x86-to-Cortex-A76 per-core slowdown for the Pi figure")
    parser.add_argument("--serve-manager", metavar="SOCKET", help=argparse.SUPPRESS)
    parser.add_argument("--instant", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_manager:
        serve_manager(args.serve_manager, args.instant)
        return

    env = os.environ.get("HAILO_OCR_DEVDATA")
    devdata = Path(env) if env else REPO.parent / "shared" / "devdata"
    paths = image_paths(devdata, args.images)
    if not paths:
        sys.exit(f"no images under {devdata} (set HAILO_OCR_DEVDATA)")
    work = Path(tempfile.mkdtemp(prefix="hdm-bench-", dir="/tmp"))
    started = time.perf_counter()

    sock = str(work / "real.sock")
    direct, manager = configs(work / "models", sock, english_97=False)
    proc = ManagerProcess(sock, instant=False)
    try:
        image = trio.run(per_image, direct, manager, paths)
    finally:
        proc.close()

    sock = str(work / "instant.sock")
    _, manager = configs(work / "models", sock, english_97=True)
    proc = ManagerProcess(sock, instant=True)
    try:
        costs = trio.run(per_call, manager, proc, args.calls)
    finally:
        proc.close()

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()}, "
          f"run took {time.perf_counter() - started:.0f} s\n")
    print("Per image, c=1, the stand-in's 18 710-class recogniser (large-vocabulary case)")
    print("| image | direct s | manager s | added ms | same text |")
    print("|---|---|---|---|---|")
    for r in image["rows"]:
        print(f"| {r['image']} | {r['direct']:.3f} | {r['manager']:.3f} | "
              f"{(r['manager'] - r['direct']) * 1000:.0f} | "
              f"{'yes' if r['direct_text'] == r['manager_text'] else 'NO'} |")
    med_d = statistics.median(r["direct"] for r in image["rows"])
    med_m = statistics.median(r["manager"] for r in image["rows"])
    print(f"| median | {med_d:.3f} | {med_m:.3f} | {(med_m - med_d) * 1000:.0f} | "
          f"{image['same']}/{len(image['rows'])} |\n")

    print("Per call, the Pi's shapes (ocr_det.hef 544x960 -> 544x960x1, ocr.hef 48x320 -> "
          "1x40x97), instant device")
    print("| call | c | calls | wall ms (median) | our CPU ms | manager CPU ms | host CPU ms |")
    print("|---|---|---|---|---|---|---|")
    for c in costs:
        print(f"| {c.what} | {c.concurrency} | {c.calls} | {c.wall_ms:.1f} | "
              f"{c.ours_cpu_ms:.1f} | {c.manager_cpu_ms:.1f} | "
              f"{c.ours_cpu_ms + c.manager_cpu_ms:.1f} |")

    c1 = {c.what.split(",")[0]: c for c in costs if c.concurrency == 1}
    n_det, n_rec = image["det_per_image"], image["rec_per_image"]
    det, rec = c1["detection"], c1["recognition"]
    ours = det.ours_cpu_ms * n_det + rec.ours_cpu_ms * n_rec
    theirs = det.manager_cpu_ms * n_det + rec.manager_cpu_ms * n_rec
    wall = det.wall_ms * n_det + rec.wall_ms * n_rec
    f = args.pi_factor
    print(f"\nSummary: per image {n_det:.1f} detection calls (tiles) and {n_rec:.1f} "
          f"recognition batches (measured in the per-image run)")
    print(f"| where | added host CPU ms/image (x86) | on a Pi 5 (x{f:.1f}, assumed) |")
    print("|---|---|---|")
    print(f"| this service | {ours:.1f} | {ours * f:.0f} |")
    print(f"| the manager | {theirs:.1f} | {theirs * f:.0f} |")
    print(f"| both | {ours + theirs:.1f} | {(ours + theirs) * f:.0f} |")
    print(f"| round trips (wall) | {wall:.1f} | {wall * f:.0f} |")
    quota_ips = 0.2 / (theirs * f / 1000) if theirs else float("inf")
    print(f"\nThe daemon's unit caps it at CPUQuota=20%: at {theirs * f:.0f} ms of its CPU per "
          f"image on a Pi, that alone allows about {quota_ips:.1f} images/s.")
    print(f"added_host_ms_per_image={ours + theirs:.1f} pi_estimate_ms={(ours + theirs) * f:.0f}")


if __name__ == "__main__":
    main()
