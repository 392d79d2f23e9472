"""Load benchmark: hailo-ocr against RapidOCR and faster-paddle, same images, same run.

    python -m benchmarks.load            # full run (about 15-25 min on 2 busy cores)
    python -m benchmarks.load --quick    # 10 images, concurrency 1/4/8 (a few minutes)

What runs, in this order (the phases are interleaved so that drift in the machine's load,
which is large on a shared box, hits every system alike):

1. ``hailo-ocr serve`` (defaults, CPU backend, English and Chinese loaded) and one wrapper
   per peer (``benchmarks/peer_server.py``: RapidOCR, faster-paddle) are spawned on free
   loopback ports; the time from spawn to ``GET /health/ready`` answering 200 is recorded
   for each.
2. Concurrency 1, paired: each image in turn goes to each peer called directly in this
   process, to hailo-ocr over HTTP and to each wrapper over HTTP (the order rotates per
   image). The answers also feed the accuracy table, and the service's recognition-slot
   counter read around each request gives each image's region count.
3. Concurrency 2, 4, 8, 16: ``--count`` requests per level (default: one per image), sent
   by that many client threads with keep-alive connections, to hailo-ocr, then to each
   wrapper. Images/s = count / wall time of the level.
4. Batch fill: a second hailo-ocr emulating the NPU's compiled recogniser (fixed batch of 8,
   fixed 48x320 input: ``onnx_models.fixed_batch: true``) at concurrency 8, against the
   fill the same server gives each request alone (the images sent one at a time first).

Service counters (recognition slots filled and run, device calls) come from the service's
``GET /metrics``; peak RSS is the server process's ``VmHWM``. Percentiles are nearest-rank
(with 33 samples p99 is the slowest request). The summary table is printed last; ``--json``
keeps every number. ``--url`` benchmarks an already running hailo-ocr instead (then the
start-up time, RSS (unless ``--server-pid``) and the fill phase are not measured).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import http.client
import importlib.util
import json
import logging
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script, or imported by tests
    sys.path.insert(0, str(REPO))

from benchmarks.peers import FASTER_PADDLE, PEERS, RAPIDOCR, PeerResult, open_peer  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
DEFAULT_LEVELS = (1, 2, 4, 8, 16)
QUICK_LEVELS = (1, 4, 8)
EXTRACT = "/v1/ocr/extract"
#: The bench server's request deadline: long enough that a slow level on a busy machine
#: measures throughput instead of counting 504s (the wrapper has no deadline at all).
BENCH_REQUEST_TIMEOUT_S = 300.0

log = logging.getLogger("benchmarks.load")


# ----------------------------------------------------------------------------- images
def devdata_dir() -> Path | None:
    """``$HAILO_OCR_DEVDATA`` or ``../shared/devdata`` beside the checkout."""
    env = os.environ.get("HAILO_OCR_DEVDATA")
    for c in ([Path(env)] if env else []) + [REPO.parent / "shared" / "devdata"]:
        if (c / "score.py").is_file():
            return c
    return None


@attrs.frozen
class Image:
    """One benchmark image: ``key`` is ``folder/file`` (unique across folders)."""

    key: str
    path: Path
    data: bytes = attrs.field(repr=False)
    #: Name in the folder's gt.json and that file's path, when the folder has ground truth.
    gt_file: Path | None = None
    #: The language asked for: the folder's ground-truth language (``zh`` for mtwi_dev).
    language: str = "en"

    @property
    def folder(self) -> str:
        return self.key.split("/", 1)[0]


def image_files(paths: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise SystemExit(f"no such image or folder: {p}")
    return out


def load_images(paths: Sequence[Path], limit_per_folder: int | None = None) -> list[Image]:
    """Read the images (never copied anywhere: bytes stay in memory). A folder whose
    parent holds a ``gt.json`` (devdata layout ``set/images/*.jpg``) or that holds one
    itself is marked as having ground truth."""
    images: list[Image] = []
    for p in paths:
        files = image_files([p])
        if limit_per_folder is not None and p.is_dir():
            files = files[:limit_per_folder]
        languages: dict[Path, str] = {}
        for f in files:
            gt = next((g for g in (f.parent / "gt.json", f.parent.parent / "gt.json")
                       if g.is_file()), None)
            if gt is not None and gt not in languages:
                languages[gt] = json.loads(gt.read_text(encoding="utf-8")).get("lang", "en")
            folder = f.parent.parent if f.parent.name == "images" else f.parent
            images.append(Image(f"{folder.name}/{f.name}", f, f.read_bytes(), gt,
                                languages.get(gt, "en") if gt else "en"))
    if not images:
        raise SystemExit("no images found")
    return images


#: The default image set: the first DEFAULT_PER_FOLDER images of every devdata folder.
DEFAULT_FOLDERS = ("icdar2015_dev/images", "sroie_dev/images", "funsd_dev/images",
                   "mtwi_dev/images", "rapidocr_tests")
DEFAULT_PER_FOLDER = 8
QUICK_PER_FOLDER = 2


def default_image_dirs() -> list[Path]:
    d = devdata_dir()
    if d is None:
        raise SystemExit(
            "no image set: ../shared/devdata is not beside the checkout and HAILO_OCR_DEVDATA "
            "is not set; pass --images DIR_OR_FILE ..."
        )
    return [d / f for f in DEFAULT_FOLDERS if (d / f).is_dir()]


def request_body(image: Image, languages: Sequence[str] | None = None) -> bytes:
    langs = list(languages) if languages is not None else [image.language]
    return json.dumps(
        {"image": base64.b64encode(image.data).decode("ascii"), "languages": langs}
    ).encode()


# ----------------------------------------------------------------------------- HTTP
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@attrs.frozen
class Target:
    host: str
    port: int

    @classmethod
    def from_url(cls, url: str) -> Target:
        u = urlsplit(url if "://" in url else f"http://{url}")
        return cls(u.hostname or "127.0.0.1", u.port or 80)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def connect(self, timeout: float = BENCH_REQUEST_TIMEOUT_S + 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        conn = self.connect(timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


@attrs.frozen
class Reply:
    index: int
    image: str
    status: int  # 0 = no HTTP answer (connection error)
    latency_s: float
    body: dict[str, Any] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.body is not None and self.body.get("success") is True


def post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", EXTRACT, body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def timed_post(
    target: Target, conn: http.client.HTTPConnection | None, index: int, image: Image,
    body: bytes,
) -> tuple[Reply, http.client.HTTPConnection | None]:
    """One request on a keep-alive connection (reopened after a failure). The clock
    covers sending the body, the service's work and reading the answer, as a client sees."""
    reused = conn is not None
    conn = conn or target.connect()
    t0 = time.perf_counter()
    try:
        try:
            status, raw = post(conn, body)
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            if not reused:
                raise
            # The server closed an idle keep-alive connection (Hypercorn does after 5 s,
            # which the paired c=1 pass easily exceeds): reconnect and send again, as any
            # HTTP client library does, and time only the attempt that was answered.
            conn.close()
            conn = target.connect()
            t0 = time.perf_counter()
            status, raw = post(conn, body)
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        return Reply(index, image.key, 0, time.perf_counter() - t0, None, repr(exc)), None
    latency = time.perf_counter() - t0
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    error = None if status == 200 else (parsed or {}).get("code", f"http_{status}")
    return Reply(index, image.key, status, latency, parsed, error), conn


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


# ----------------------------------------------------------------------------- counters
def read_counters(target: Target) -> dict[str, float] | None:
    """The service's own counters: recognition slots filled and run, device calls.

    Read from ``/health``'s ``statistics`` field when it has one, else from Prometheus'
    ``/metrics``. None when the target exposes neither (e.g. the RapidOCR wrapper)."""
    try:
        status, raw = target.get("/health")
        if status == 200:
            stats = json.loads(raw).get("statistics")
            if isinstance(stats, dict) and "batcher" in stats:
                b, d = stats["batcher"], stats.get("device", {})
                return {"slots_filled": float(b["slots_filled"]),
                        "slots_run": float(b["slots_run"]),
                        "device_calls": float(d.get("jobs_run", math.nan))}
        status, raw = target.get("/metrics")
    except (OSError, http.client.HTTPException, ValueError, KeyError):
        return None
    if status != 200:
        return None
    values: dict[str, float] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            values[name] = float(value)

    def pick(*names: str) -> float | None:
        return next((values[n] for n in names if n in values), None)

    filled = pick("hailo_ocr_rec_slots_filled_total", "hailo_ocr_rec_slots_filled")
    run = pick("hailo_ocr_rec_slots_run_total", "hailo_ocr_rec_slots_run")
    # Device calls run, summed over the devices (one series per device owner).
    runs = [v for k, v in values.items()
            if k.startswith("hailo_ocr_device_jobs_total{") and 'result="run"' in k]
    calls = sum(runs) if runs else None
    if filled is None or run is None:
        return None
    return {"slots_filled": filled, "slots_run": run,
            "device_calls": math.nan if calls is None else calls}


def counter_delta(
    before: dict[str, float] | None, after: dict[str, float] | None
) -> dict[str, float] | None:
    if before is None or after is None:
        return None
    return {k: after[k] - before[k] for k in after}


# ----------------------------------------------------------------------------- servers
def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (``VmHWM``), MiB; None if it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class ServerProcess:
    """A server spawned for the run: its readiness time, peak RSS, and a clean stop."""

    def __init__(self, name: str, cmd: list[str], port: int, log_path: Path) -> None:
        self.name = name
        self.cmd = cmd
        self.target = Target("127.0.0.1", port)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s: float | None = None

    def start(self, timeout: float = 120.0) -> ServerProcess:
        log_file = self.log_path.open("wb")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                     cwd=REPO, start_new_session=True)
        log_file.close()
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before it was ready; "
                    f"log: {self.log_path}\n{self.log_path.read_text()[-2000:]}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _ = self.target.get("/health/ready", timeout=2.0)
                if status == 200:
                    self.ready_s = time.perf_counter() - t0
                    return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready within {timeout:g} s; log: {self.log_path}")

    def peak_rss_mb(self) -> float | None:
        return None if self.proc is None else peak_rss_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def hailo_ocr_command(config_path: Path, port: int) -> list[str]:
    exe = shutil.which("hailo-ocr")
    base = [exe] if exe else [sys.executable, "-c", "from web.cli import main; main()"]
    return [*base, "serve", "--config", str(config_path), "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning"]


def write_config(directory: Path, name: str, sections: dict[str, dict[str, Any]]) -> Path:
    """A YAML config for a bench server: the defaults plus ``sections`` (and a long
    request deadline, see BENCH_REQUEST_TIMEOUT_S)."""
    data = {"server": {"request_timeout_s": BENCH_REQUEST_TIMEOUT_S}}
    for section, keys in sections.items():
        data[section] = {**data.get(section, {}), **keys}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ----------------------------------------------------------------------------- load levels
@attrs.frozen
class LevelResult:
    system: str
    concurrency: int
    count: int
    wall_s: float
    replies: tuple[Reply, ...] = attrs.field(repr=False)
    counters: dict[str, float] | None = None

    @property
    def latencies(self) -> list[float]:
        return [r.latency_s for r in self.replies if r.ok]

    @property
    def errors(self) -> int:
        return sum(1 for r in self.replies if not r.ok)

    @property
    def images_per_s(self) -> float:
        ok = len(self.latencies)
        return ok / self.wall_s if self.wall_s > 0 else 0.0

    def pct(self, q: float) -> float:
        lat = self.latencies
        return percentile(lat, q) if lat else math.nan

    @property
    def fill(self) -> float:
        c = self.counters
        return c["slots_filled"] / c["slots_run"] if c and c["slots_run"] else math.nan

    @property
    def device_calls_per_image(self) -> float:
        c = self.counters
        ok = len(self.latencies)
        return c["device_calls"] / ok if c and ok else math.nan

    def summary(self) -> dict[str, Any]:
        return {
            "system": self.system, "concurrency": self.concurrency, "count": self.count,
            "wall_s": self.wall_s, "images_per_s": self.images_per_s, "p50_s": self.pct(50),
            "p90_s": self.pct(90), "p99_s": self.pct(99), "errors": self.errors,
            "error_codes": sorted({r.error or "" for r in self.replies if not r.ok}),
            "fill": self.fill, "device_calls_per_image": self.device_calls_per_image,
            "counters": self.counters,
        }


def run_level(
    system: str, target: Target, images: Sequence[Image], bodies: Sequence[bytes],
    concurrency: int, count: int, *, counters: bool = True,
) -> LevelResult:
    """Send ``count`` requests (image ``i % len(images)``) from ``concurrency`` threads,
    each with its own keep-alive connection, and time the level from the moment every
    thread is ready to the last answer."""
    lock = threading.Lock()
    next_index = iter(range(count))
    replies: list[Reply] = []
    start = threading.Barrier(concurrency + 1)

    def worker() -> None:
        conn: http.client.HTTPConnection | None = target.connect()
        start.wait()
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            k = i % len(images)
            reply, conn = timed_post(target, conn, i, images[k], bodies[k])
            with lock:
                replies.append(reply)
        if conn is not None:
            conn.close()

    before = read_counters(target) if counters else None
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = read_counters(target) if counters else None
    replies.sort(key=lambda r: r.index)
    return LevelResult(system, concurrency, count, wall, tuple(replies),
                       counter_delta(before, after))


def warm_up(target: Target, images: Sequence[Image], bodies: Sequence[bytes], n: int = 2) -> None:
    """A couple of unmeasured requests: first-call costs (allocator growth, lazy imports)
    are start-up, not load."""
    conn = None
    for k in range(min(n, len(images))):
        _, conn = timed_post(target, conn, -1, images[k], bodies[k])
    if conn is not None:
        conn.close()


# ----------------------------------------------------------------------------- c=1, paired
OURS = "hailo-ocr"


def http_name(peer: str) -> str:
    """The name of a peer's threaded HTTP wrapper in the tables."""
    return f"{peer}-http"


def direct_name(peer: str) -> str:
    return f"{peer}-direct"


@attrs.define
class PairedRun:
    """Concurrency 1: per image, each direct call and each HTTP system, interleaved."""

    #: peer -> image key -> its answer (the first, if an image is sent more than once)
    direct: dict[str, dict[str, PeerResult]] = attrs.field(factory=dict)
    direct_latency: dict[str, list[tuple[str, float]]] = attrs.field(factory=dict)
    http: dict[str, list[Reply]] = attrs.field(factory=dict)
    http_wall: dict[str, float] = attrs.field(factory=dict)
    regions: dict[str, int] = attrs.field(factory=dict)  # crops recognised per image
    counters: dict[str, dict[str, float] | None] = attrs.field(factory=dict)


def run_paired(
    images: Sequence[Image], bodies: Sequence[bytes],
    direct: dict[str, Callable[[bytes], PeerResult]], targets: dict[str, Target], count: int,
    *, region_counts_from: str | None,
) -> PairedRun:
    run = PairedRun()
    conns: dict[str, http.client.HTTPConnection | None] = {name: None for name in targets}
    before = {name: read_counters(t) for name, t in targets.items()}
    for name in targets:
        run.http[name] = []
        run.http_wall[name] = 0.0
    for name in direct:
        run.direct[name] = {}
        run.direct_latency[name] = []
    steps: list[tuple[str, str]] = ([("direct", n) for n in direct]
                                    + [("http", n) for n in targets])
    for i in range(count):
        k = i % len(images)
        img = images[k]
        rot = i % len(steps)
        for kind, step in steps[rot:] + steps[:rot]:
            if kind == "direct":
                res = direct[step](img.data)
                run.direct_latency[step].append((img.key, res.latency_s))
                run.direct[step].setdefault(img.key, res)
                continue
            target = targets[step]
            c0 = read_counters(target) if step == region_counts_from else None
            reply, conns[step] = timed_post(target, conns[step], i, img, bodies[k])
            run.http[step].append(reply)
            run.http_wall[step] += reply.latency_s
            if c0 is not None:
                delta = counter_delta(c0, read_counters(target))
                if delta is not None and reply.ok:
                    run.regions.setdefault(img.key, int(delta["slots_filled"]))
    for name, conn in conns.items():
        if conn is not None:
            conn.close()
        run.counters[name] = counter_delta(before[name], read_counters(targets[name]))
    return run


def paired_level(run: PairedRun, system: str, count: int) -> LevelResult:
    c = run.counters.get(system)
    if c is not None:  # the region-count reads add no device calls; nothing to correct
        c = dict(c)
    return LevelResult(system, 1, count, run.http_wall[system], tuple(run.http[system]), c)


# ----------------------------------------------------------------------------- accuracy
def load_score_module(devdata: Path | None) -> Any | None:
    """``devdata/score.py``, imported by path (it is not part of the project)."""
    if devdata is None or not (devdata / "score.py").is_file():
        return None
    spec = importlib.util.spec_from_file_location("devdata_score", devdata / "score.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def service_items(reply: Reply) -> list[dict[str, Any]]:
    if not reply.ok or reply.body is None:
        return []
    regions = reply.body.get("regions", [])
    return [{"text": r.get("text", ""), "poly": r.get("bbox")} for r in regions]


def accuracy(
    score_mod: Any, images: Sequence[Image], run: PairedRun, systems: Sequence[str],
) -> list[dict[str, Any]]:
    """Each system's accuracy at c=1, per folder: against the folder's ground truth where it
    has one (word F1 case-insensitive and CER; char F1 and CER without spaces for Chinese
    page-level truth, as ``benchmarks/accuracy.py`` reports them), and for every image
    against RapidOCR's own output (agreement, not accuracy)."""
    from benchmarks.accuracy import headline_for

    rows: list[dict[str, Any]] = []
    first: dict[str, dict[str, Reply]] = {
        s: {r.image: r for r in reversed(run.http[s])} for s in systems
    }
    preds: dict[str, dict[str, list[dict[str, Any]]]] = {
        s: {img.key: service_items(first[s][img.key]) for img in images if img.key in first[s]}
        for s in systems
    }
    for peer, answers in run.direct.items():
        preds[direct_name(peer)] = {k: list(r.items) for k, r in answers.items()}
    by_gt: dict[Path, list[Image]] = {}
    for img in images:
        if img.gt_file is not None:
            by_gt.setdefault(img.gt_file, []).append(img)
    for gt_file, imgs in by_gt.items():
        gt_all = json.loads(gt_file.read_text(encoding="utf-8"))
        names = {img.key: img.path.name for img in imgs if img.path.name in gt_all["images"]}
        if not names:
            continue
        gt = {**gt_all, "images": {n: gt_all["images"][n] for n in names.values()}}
        metric = "char" if gt_all.get("lang") == "zh" else "word"
        for s, p in preds.items():
            pred = {"images": {names[k]: {"items": [dict(it, level="line") for it in v]}
                               for k, v in p.items() if k in names}}
            f1, err = headline_for(metric, score_mod.score(gt, pred))
            rows.append({"system": s, "reference": f"{imgs[0].folder} GT", "images": len(names),
                         "metric": "char F1 / CER nospace" if metric == "char"
                         else "word F1 ci / CER ci", "f1": f1, "error": err})
    rapid = run.direct.get(RAPIDOCR)
    if rapid:
        ref = {"dataset": "rapidocr-direct", "level": "line", "lang": "en", "images": {
            key: [{"text": it["text"], "poly": it["poly"], "ignore": False} for it in r.items]
            for key, r in rapid.items()}}
        for s, p in preds.items():
            if s == direct_name(RAPIDOCR):
                continue
            f1, err = headline_for("word", score_mod.score(
                ref, {"images": {k: {"items": v} for k, v in p.items()}}))
            rows.append({"system": s, "reference": "RapidOCR direct", "images": len(ref["images"]),
                         "metric": "word F1 ci / CER ci", "f1": f1, "error": err})
    return rows


# ----------------------------------------------------------------------------- tables
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            if math.isnan(v):
                return "-"
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return "-" if v is None else str(v)

    cells = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |"
            for r in cells]
    return "\n".join([line, sep, *body])


def ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_at_end": load}


def machine_line(seconds: float) -> str:
    """The line a report starts with: the machine, its load, and how long the run took."""
    m = machine()
    return (f"\nmachine: {m['nproc']} x {m['cpu']}, Python {m['python']}, "
            f"load average at end {m['loadavg_at_end']}; run took {seconds:.0f} s")


# ----------------------------------------------------------------------------- the run
@attrs.define
class Report:
    images: list[str]
    levels: dict[str, list[LevelResult]] = attrs.field(factory=dict)
    #: peer -> [(image key, seconds)] of its direct calls in the c=1 pass
    direct_latency: dict[str, list[tuple[str, float]]] = attrs.field(factory=dict)
    ready_s: dict[str, float | None] = attrs.field(factory=dict)
    peak_rss_mb: dict[str, float | None] = attrs.field(factory=dict)
    fill_fixed8: LevelResult | None = None
    fill_alone: float = math.nan
    regions: dict[str, int] = attrs.field(factory=dict)
    accuracy: list[dict[str, Any]] = attrs.field(factory=list)
    seconds: float = 0.0

    def level(self, system: str, concurrency: int) -> LevelResult | None:
        return next((r for r in self.levels.get(system, []) if r.concurrency == concurrency), None)

    @property
    def folders(self) -> list[str]:
        return list(dict.fromkeys(k.split("/", 1)[0] for k in self.images))

    def c1_p50(self, system: str, folder: str | None = None) -> float:
        """Median c=1 latency of an HTTP system or a direct peer (``peer-direct``), over
        every image or one folder's."""
        if system.endswith("-direct"):
            lat = [t for k, t in self.direct_latency.get(system[: -len("-direct")], [])
                   if folder is None or k.startswith(folder + "/")]
        else:
            lv = self.level(system, 1)
            lat = [r.latency_s for r in (lv.replies if lv else ()) if r.ok
                   and (folder is None or r.image.startswith(folder + "/"))]
        return statistics.median(lat) if lat else math.nan

    @property
    def direct_p50_s(self) -> dict[str, float]:
        return {p: self.c1_p50(direct_name(p)) for p in self.direct_latency}

    def to_json(self) -> dict[str, Any]:
        c1 = [OURS, *(s for s in self.levels if s != OURS),
              *(direct_name(p) for p in self.direct_latency)]
        return {
            "images": self.images, "machine": machine(), "seconds": self.seconds,
            "levels": {s: [r.summary() for r in rs] for s, rs in self.levels.items()},
            "direct_p50_s": self.direct_p50_s,
            "c1_p50_by_folder": {f: {s: self.c1_p50(s, f) for s in c1} for f in self.folders},
            "ready_s": self.ready_s, "peak_rss_mb": self.peak_rss_mb,
            "fill_fixed8": self.fill_fixed8.summary() if self.fill_fixed8 else None,
            "fill_alone": self.fill_alone, "regions": self.regions, "accuracy": self.accuracy,
            "targets": targets(self),
        }


def targets(rep: Report) -> list[dict[str, Any]]:
    """Issue 15's targets against faster-paddle (per folder at c=1), then issue 6's against
    RapidOCR, batch fill, memory and start-up."""
    rows = []

    def add(name: str, value: float, limit: str, met: bool | None) -> None:
        rows.append({"target": name, "measured": value, "limit": limit,
                     "met": None if met is None or math.isnan(value) else met})

    p8 = rep.level(OURS, 8)
    fp_direct = direct_name(FASTER_PADDLE)
    if FASTER_PADDLE in rep.direct_latency:
        r = ratio(rep.c1_p50(OURS), rep.c1_p50(fp_direct))
        add("c=1 p50 / faster-paddle direct p50, all images", r, "<= 0.90", r <= 0.90)
        for f in rep.folders:
            r = ratio(rep.c1_p50(OURS, f), rep.c1_p50(fp_direct, f))
            add(f"  {f}", r, "<= 0.90", r <= 0.90)
    w8 = rep.level(http_name(FASTER_PADDLE), 8)
    if w8:
        r = ratio(p8.images_per_s if p8 else None, w8.images_per_s)
        add("c=8 images/s / faster-paddle-HTTP images/s", r, ">= 1.30", r >= 1.30)
    if RAPIDOCR in rep.direct_latency:
        r = ratio(rep.c1_p50(OURS), rep.c1_p50(direct_name(RAPIDOCR)))
        add("c=1 p50 latency / RapidOCR direct p50", r, "<= 1.10", r <= 1.10)
    w8 = rep.level(http_name(RAPIDOCR), 8)
    if w8:
        r = ratio(p8.images_per_s if p8 else None, w8.images_per_s)
        add("c=8 images/s / RapidOCR-HTTP images/s", r, ">= 1.30", r >= 1.30)
        r = ratio(p8.pct(99) if p8 else None, w8.pct(99))
        add("c=8 p99 / RapidOCR-HTTP p99", r, "<= 1.00", r <= 1.0)
    f = rep.fill_fixed8.fill if rep.fill_fixed8 else math.nan
    add(f"c=8 rec batch fill, fixed batch 8 (alone: {rep.fill_alone:.3f})", f, ">= 0.85",
        f >= 0.85)
    rss = rep.peak_rss_mb.get(OURS)
    add("peak RSS MiB, en+zh loaded", math.nan if rss is None else rss, "<= 700",
        None if rss is None else rss <= 700)
    ready = rep.ready_s.get(OURS)
    add("start to ready, s", math.nan if ready is None else ready, "<= 5.0",
        None if ready is None else ready <= 5.0)
    return rows


def print_report(rep: Report, out: Callable[[str], None] = print) -> None:
    if rep.accuracy:
        out("\nAccuracy at c=1 (score.py, micro-averaged over each folder's images here)")
        out(table(["system", "reference", "images", "metric", "F1", "error rate"],
                  [[a["system"], a["reference"], a["images"], a["metric"], a["f1"], a["error"]]
                   for a in rep.accuracy]))
    out("\nServers")
    out(table(["server", "start->ready s", "peak RSS MiB"],
              [[s, rep.ready_s.get(s), rep.peak_rss_mb.get(s)] for s in rep.ready_s]))
    if rep.fill_fixed8:
        f = rep.fill_fixed8
        out("\nRecognition batch fill at c=8, fixed batch 8 (onnx_models.fixed_batch: true)")
        out(table(["policy", "fill", "images/s", "p50 s", "p99 s", "device calls/img", "errors"],
                  [["hailo-ocr cross-request batcher", f.fill, f.images_per_s, f.pct(50),
                    f.pct(99), f.device_calls_per_image, f.errors],
                   ["each request alone (c=1, same server)", rep.fill_alone, None, None, None, None,
                    None]]))
    wrappers = [s for s in rep.levels if s != OURS]
    c1 = [OURS, *(direct_name(p) for p in rep.direct_latency), *wrappers]
    fp_direct = direct_name(FASTER_PADDLE)
    out("\nc=1 median latency per folder, s (HTTP systems paired with the direct calls)")
    rows = []
    for folder in [*rep.folders, None]:
        n = sum(1 for k in rep.images if folder is None or k.startswith(folder + "/"))
        rows.append([folder or "all", n, *(rep.c1_p50(s, folder) for s in c1),
                     ratio(rep.c1_p50(OURS, folder), rep.c1_p50(fp_direct, folder))])
    out(table(["folder", "n", *c1, "ours / faster-paddle direct"], rows))
    out(f"\nLoad ({len(rep.images)} images)")
    rows = []
    for c in sorted({r.concurrency for rs in rep.levels.values() for r in rs}):
        p = rep.level(OURS, c)
        row: list[Any] = [c]
        row += [p.images_per_s, p.pct(50), p.pct(90), p.pct(99), p.errors] if p else [None] * 5
        for w in wrappers:
            lv = rep.level(w, c)
            row += [lv.images_per_s, lv.pct(50), lv.pct(99), lv.errors] if lv else [None] * 4
        row += [p.fill if p else None, p.device_calls_per_image if p else None]
        for w in wrappers:
            lv = rep.level(w, c)
            row.append(ratio(p.images_per_s if p else None, lv.images_per_s if lv else None))
        rows.append(row)
    headers = ["c", "ours img/s", "p50 s", "p90 s", "p99 s", "err"]
    for w in wrappers:
        headers += [f"{w} img/s", "p50 s", "p99 s", "err"]
    headers += ["fill", "calls/img", *(f"img/s / {w}" for w in wrappers)]
    out(table(headers, rows))
    out("\nTargets")
    out(table(["target", "measured", "limit", "met"],
              [[t["target"], t["measured"], t["limit"],
                {True: "yes", False: "NO", None: "n/a"}[t["met"]]] for t in targets(rep)]))


def run_benchmark(
    images: Sequence[Image], *, levels: Sequence[int], count: int,
    peers: Sequence[str] = PEERS, fill: bool = True, url: str | None = None,
    server_pid: int | None = None, extra_config: dict[str, dict[str, Any]] | None = None,
    workdir: Path | None = None,
    progress: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> Report:
    """The whole run (see the module docstring); returns every number. ``peers``: the
    baselines to run, each called directly and behind its HTTP wrapper."""
    t_start = time.perf_counter()
    bodies = [request_body(img) for img in images]
    rep = Report([img.key for img in images])
    servers: list[ServerProcess] = []
    with contextlib.ExitStack() as stack:
        tmp = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        stack.callback(lambda: [s.stop() for s in servers])
        targets_: dict[str, Target] = {}
        if url:
            targets_[OURS] = Target.from_url(url)
            rep.ready_s[OURS] = None
        else:
            cfg = write_config(tmp, OURS, extra_config or {})
            port = free_port()
            srv = ServerProcess(OURS, hailo_ocr_command(cfg, port), port, tmp / f"{OURS}.log")
            progress(f"starting hailo-ocr on :{port}")
            servers.append(srv.start())
            targets_[OURS] = srv.target
            rep.ready_s[OURS] = srv.ready_s
        for peer in peers:
            name = http_name(peer)
            port = free_port()
            srv = ServerProcess(
                name, [sys.executable, str(REPO / "benchmarks" / "peer_server.py"),
                       "--engine", peer, "--port", str(port)],
                port, tmp / f"{name}.log",
            )
            progress(f"starting the {peer} wrapper on :{port}")
            servers.append(srv.start())
            targets_[name] = srv.target
            rep.ready_s[name] = srv.ready_s
        for t in targets_.values():
            warm_up(t, images, bodies)

        direct = {peer: open_peer(peer) for peer in peers}
        for engine in direct.values():
            engine(images[0].data)  # warm-up
        if 1 in levels:
            n1 = max(count, len(images))
            progress(f"c=1 paired pass: {n1} images x {len(targets_) + len(direct)} systems")
            paired = run_paired(images, bodies, direct, targets_, n1, region_counts_from=OURS)
            rep.regions = paired.regions
            rep.direct_latency = paired.direct_latency
            for name in targets_:
                rep.levels.setdefault(name, []).append(paired_level(paired, name, n1))
            score_mod = load_score_module(devdata_dir())
            if score_mod is not None:
                rep.accuracy = accuracy(score_mod, images, paired, list(targets_))
        del direct
        gc.collect()

        for c in levels:
            if c == 1:
                continue
            for name, t in targets_.items():
                progress(f"c={c}: {count} requests to {name}")
                rep.levels.setdefault(name, []).append(
                    run_level(name, t, images, bodies, c, count, counters=name == OURS))

        for srv in servers:
            rep.peak_rss_mb[srv.name] = srv.peak_rss_mb()
        if url and server_pid:
            rep.peak_rss_mb[OURS] = peak_rss_mb(server_pid)
        for srv in servers:
            srv.stop()

        if fill and not url:
            rec_batch = 8
            cfg = write_config(tmp, "hailo-ocr-fixed8", {
                **(extra_config or {}),
                "onnx_models": {**(extra_config or {}).get("onnx_models", {}),
                                "fixed_batch": True, "batch_size_rec": rec_batch}})
            port = free_port()
            srv = ServerProcess("hailo-ocr fixed-batch 8", hailo_ocr_command(cfg, port), port,
                                tmp / "hailo-ocr-fixed8.log")
            progress("batch fill: hailo-ocr with a fixed batch of 8, c=8")
            servers.append(srv.start())
            warm_up(srv.target, images, bodies)
            # Each request alone: one at a time, so no batch ever mixes two requests.
            rep.fill_alone = run_level("hailo-ocr fixed8 alone", srv.target, images, bodies,
                                       1, len(images)).fill
            fill_count = max(count, len(images))
            rep.fill_fixed8 = run_level("hailo-ocr fixed8", srv.target, images, bodies, 8,
                                        fill_count)
            srv.stop()
    rep.seconds = time.perf_counter() - t_start
    return rep


def parse_levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError("levels are comma-separated integers") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("levels must be positive")
    return levels


def parse_set(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``section.key=value`` (value parsed as YAML) into config sections."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set wants section.key=value, not {item!r}")
        out.setdefault(section, {})[name] = yaml.safe_load(value)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", nargs="+", type=Path,
                    help="image files or folders (default: the first "
                    f"{DEFAULT_PER_FOLDER} images of each devdata folder)")
    ap.add_argument("--per-folder", type=int,
                    help=f"images per default folder (default {DEFAULT_PER_FOLDER}, "
                    f"--quick {QUICK_PER_FOLDER})")
    ap.add_argument("--levels", type=parse_levels, help="concurrency levels (default 1,2,4,8,16)")
    ap.add_argument("--count", type=int, help="requests per level (default: one per image)")
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_PER_FOLDER} images per devdata folder, levels 1,4,8")
    ap.add_argument("--peers", nargs="*", choices=PEERS, default=list(PEERS),
                    help="baselines, each direct and behind its HTTP wrapper (default: all)")
    ap.add_argument("--no-baseline", action="store_true", help="no baselines (--peers with none)")
    ap.add_argument("--no-fill", action="store_true", help="skip the fixed-batch fill phase")
    ap.add_argument("--url",
                    help="benchmark a running hailo-ocr at this URL instead of starting one")
    ap.add_argument("--server-pid", type=int, help="with --url: read that process's peak RSS")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="configuration for the started hailo-ocr (repeatable)")
    ap.add_argument("--json", type=Path, help="write every number here")
    args = ap.parse_args(argv)

    per_folder = args.per_folder or (QUICK_PER_FOLDER if args.quick else DEFAULT_PER_FOLDER)
    if args.images:
        images = load_images(args.images, limit_per_folder=args.per_folder)
    else:
        images = load_images(default_image_dirs(), limit_per_folder=per_folder)
    levels = args.levels or (QUICK_LEVELS if args.quick else DEFAULT_LEVELS)
    count = args.count or len(images)
    rep = run_benchmark(
        images, levels=levels, count=count, peers=[] if args.no_baseline else args.peers,
        fill=not args.no_fill, url=args.url, server_pid=args.server_pid,
        extra_config=parse_set(args.set),
    )
    if args.json:
        args.json.write_text(json.dumps(rep.to_json(), indent=1, default=str))
    print(machine_line(rep.seconds))
    print_report(rep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
