"""Host-side cost per image on the NPU path, through the real server over HTTP.

    python -m benchmarks.host_cost            # every devdata folder (about 3 min)
    python -m benchmarks.host_cost --quick    # a quarter of that, instant device (< 3 min)

On a Pi 5 with a Hailo-10H the NPU runs the models and everything else (HTTP, JSON and
base64, decode, letterbox, DB post-processing, crops, packing, CTC decoding, reading
order) runs on the Pi's CPU, so host work per image decides throughput. This measures it
with the Hailo model shapes and no NPU: the server (``benchmarks/host_server.py``) runs on
the replay device (``benchmarks/replay_device.py``), which answers every device job with
outputs recorded from the real ONNX models.

1. **Record**: the server, its device computing every job with ONNX Runtime on the CPU,
   reads each image once; the answers are the reference. Recordings are kept in
   ``--store`` (content-addressed: only frames not yet there are computed).
2. **Instant device** (jobs answered at once): each image alone at c=1, the server's CPU
   time read around each request (``/bench/stats``, less the cost of reading it, less
   the replay device's own work): *host ms per image*. Then c=1, 4, 8, 16: images/s and
   CPU per image. The per-stage profile is the c=1 pass.
3. **Modelled Hailo-10H** (``replay_device.HAILO10H``: one job at a time, Model Zoo
   figures): images/s at c=1, 4, 8, 16 against what the modelled NPU alone allows
   (images / its busy time in the same level).

Every answer of steps 2 and 3 is compared with the reference (text, each region's text,
confidence and box): the replayed text is real and checked. The last line reads
``host_ms_per_image=<median> c8_images_per_s=<instant device, c=8>``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from .load import (
    REPO,
    Image,
    ServerProcess,
    Target,
    devdata_dir,
    free_port,
    image_files,
    load_images,
    machine,
    percentile,
    request_body,
    run_level,
    table,
    timed_post,
    write_config,
)

#: devdata folders (receipts, scene photos, forms, RapidOCR's tests, Chinese web images)
#: and the language each is read in.
FOLDERS: Final = (
    ("sroie_dev/images", "en"),
    ("icdar2015_dev/images", "en"),
    ("funsd_dev/images", "en"),
    ("rapidocr_tests", "en"),
    ("mtwi_dev/images", "zh"),
)
FULL_MTWI: Final = 30  # of 104: the folder would otherwise be two thirds of the run
#: --quick takes a quarter of each folder's share (rounded up): the same mix of light and
#: heavy images as the full run (23 images), so its figures compare with the full run's.
QUICK_DIVISOR: Final = 4
LEVELS: Final = (1, 4, 8, 16)
STATS: Final = "/bench/stats"
DEFAULT_STORE: Final = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / (
    "hailo-ocr/replay"
)

#: Targets of issue 16 (2-core x86 machine, instant device).
TARGET_HOST_MS: Final = 40.0
TARGET_C8_IMAGES_S: Final = 30.0
TARGET_NPU_SHARE: Final = 0.9


@attrs.frozen
class BenchImage:
    image: Image
    folder: str  # the devdata folder
    language: str
    body: bytes = attrs.field(repr=False)

    @property
    def key(self) -> str:
        return self.image.key


def bench_images(root: Path, per_folder: int | None = None, *,
                 quick: bool = False) -> list[BenchImage]:
    """The devdata images of the run: ``per_folder`` from each folder, or each folder's
    full share (all, :data:`FULL_MTWI` of mtwi), or a quarter of it (``quick``)."""
    out: list[BenchImage] = []
    for folder, lang in FOLDERS:
        path = root / folder
        if not path.is_dir():
            continue
        limit = per_folder
        if limit is None:
            full = len(image_files([path]))
            full = min(full, FULL_MTWI) if folder.startswith("mtwi") else full
            limit = math.ceil(full / QUICK_DIVISOR) if quick else full
        for img in load_images([path], limit_per_folder=limit):
            out.append(BenchImage(img, folder.split("/")[0], lang, request_body(img, (lang,))))
    if not out:
        raise SystemExit(f"no devdata images under {root}")
    return out


# ----------------------------------------------------------------------------- answers
def answer_of(body: dict[str, Any] | None) -> Any:
    """What must match the reference: the text and every region."""
    if body is None:
        return None
    return (body.get("text"), [(r.get("text"), r.get("confidence"), r.get("bbox"))
                               for r in body.get("regions", [])])


@attrs.define
class Check:
    """Answers compared with the reference."""

    same: int = 0
    different: list[str] = attrs.field(factory=list)
    failed: list[str] = attrs.field(factory=list)

    def add(self, key: str, status: int, body: dict[str, Any] | None, ref: Any) -> None:
        if status != 200 or body is None or not body.get("success"):
            self.failed.append(f"{key}: {status} {(body or {}).get('code')}")
        elif answer_of(body) != ref:
            self.different.append(key)
        else:
            self.same += 1

    @property
    def ok(self) -> bool:
        return not self.different and not self.failed


# ----------------------------------------------------------------------------- server
def get_stats(target: Target) -> dict[str, Any]:
    status, raw = target.get(STATS)
    if status != 200:
        raise RuntimeError(f"{STATS} answered {status}")
    return json.loads(raw)


def device_cpu(stats: dict[str, Any]) -> float:
    return float(stats["device"]["own_cpu_s"]) if stats.get("device") else 0.0


#: Starts ``benchmarks.host_server`` from the checkout given as the first argument, so
#: that a second tree (``--before``) is measured with its own code in the same run.
_BOOT: Final = (
    "import os, runpy, sys; os.chdir(sys.argv[1]); sys.path[0] = os.getcwd(); "
    "sys.argv = sys.argv[:1] + sys.argv[2:]; "
    "runpy.run_module('benchmarks.host_server', run_name='__main__')"
)


def start_server(
    tmp: Path, name: str, store: Path, *, latency: str, record: bool = False,
    tree: Path = REPO, cpus: str | None = None,
) -> ServerProcess:
    cfg = write_config(tmp, name, {"server": {"max_in_flight": 64}})
    port = free_port()
    cmd = [sys.executable, "-c", _BOOT, str(tree), "--store", str(store),
           "--latency", latency, "--config", str(cfg), "--port", str(port)]
    if cpus is not None:  # e.g. one core: the host's work as one Pi core would queue it
        cmd = ["taskset", "-c", cpus, *cmd]
    if record:
        cmd.append("--record")
    return ServerProcess(name, cmd, port, tmp / f"{name}.log").start()


# ----------------------------------------------------------------------------- phases
@attrs.frozen
class Sequential:
    """Each image alone, CPU read around it."""

    host_ms: dict[str, float]  # per image: server CPU less reading it, less the device
    device_ms: dict[str, float]
    image_stages_ms: dict[str, dict[str, float]]  # per image, per stage
    stages_ms: dict[str, float]  # per stage, per image (the whole pass)
    process_ms: float  # server CPU per image over the pass, device and reads excluded
    read_cost_ms: float
    trio_other_ms: float  # per image: the Trio thread's CPU outside the timed stages


def _stage_delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    return {s: b["stages"][s]["cpu_s"] - a["stages"][s]["cpu_s"] for s in b["stages"]}


def run_sequential(targets: dict[str, Target], images: Sequence[BenchImage],
                   refs: dict[str, Any], checks: dict[str, Check]) -> dict[str, Sequential]:
    """Each image alone on each target in turn (the order alternating image by image, so
    that drifting machine load hits every target alike)."""
    names = list(targets)
    read_cost, first = {}, {}
    for name, target in targets.items():
        # The CPU a pair of stats reads costs the server, with nothing in between.
        calib = []
        for _ in range(7):
            a, b = get_stats(target), get_stats(target)
            calib.append(b["process_cpu_s"] - a["process_cpu_s"])
        read_cost[name] = statistics.median(calib)
        first[name] = get_stats(target)
    host: dict[str, dict[str, float]] = {n: {} for n in names}
    dev: dict[str, dict[str, float]] = {n: {} for n in names}
    per_stage: dict[str, dict[str, dict[str, float]]] = {n: {} for n in names}
    conns: dict[str, Any] = dict.fromkeys(names)
    for i, bi in enumerate(images):
        for name in names[i % len(names):] + names[: i % len(names)]:
            target = targets[name]
            a = get_stats(target)
            reply, conns[name] = timed_post(target, conns[name], 0, bi.image, bi.body)
            b = get_stats(target)
            checks[name].add(bi.key, reply.status, reply.body, refs.get(bi.key))
            d = device_cpu(b) - device_cpu(a)
            dev[name][bi.key] = d * 1000
            per_stage[name][bi.key] = {k: v * 1000 for k, v in _stage_delta(a, b).items()}
            host[name][bi.key] = (b["process_cpu_s"] - a["process_cpu_s"] - read_cost[name]
                                  - d) * 1000
    out = {}
    n = len(images)
    for name, target in targets.items():
        last = get_stats(target)
        if conns[name] is not None:
            conns[name].close()
        f, rc = first[name], read_cost[name]
        stages = {s: v * 1000 / n for s, v in _stage_delta(f, last).items()}
        process = (last["process_cpu_s"] - f["process_cpu_s"] - (2 * n + 1) * rc
                   - (device_cpu(last) - device_cpu(f))) * 1000 / n
        # The stats reads are HTTP requests the Trio thread serves: their cost comes off.
        trio = ((last["trio_thread_cpu_s"] - f["trio_thread_cpu_s"])
                - (last["stages_on_trio_thread_s"] - f["stages_on_trio_thread_s"])
                - (2 * n + 1) * rc) * 1000 / n
        out[name] = Sequential(host[name], dev[name], per_stage[name], stages, process,
                               rc * 1000, trio)
    return out


@attrs.frozen
class Level:
    device: str
    concurrency: int
    requests: int
    ok: int
    wall_s: float
    cpu_ms_per_image: float  # server CPU, the replay device's own work excluded
    device_cpu_ms_per_image: float
    npu_busy_s: float  # modelled device time of the level
    p50_s: float
    p99_s: float

    @property
    def images_per_s(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def npu_images_per_s(self) -> float:
        """What the modelled NPU alone allows: images / its busy time."""
        return self.ok / self.npu_busy_s if self.npu_busy_s > 0 else math.inf


def run_levels(target: Target, device: str, images: Sequence[BenchImage], refs: dict[str, Any],
               levels: Sequence[int], count: Callable[[int], int], check: Check,
               progress: Callable[[str], None]) -> list[Level]:
    out = []
    for c in levels:
        n = count(c)
        progress(f"{device}: c={c}, {n} requests")
        a = get_stats(target)
        res = run_level(device, target, [b.image for b in images], [b.body for b in images],
                        c, n, counters=False)
        b = get_stats(target)
        for r in res.replies:
            check.add(r.image, r.status, r.body, refs.get(r.image))
        ok = len(res.latencies)
        dev = device_cpu(b) - device_cpu(a)
        cpu = b["process_cpu_s"] - a["process_cpu_s"] - dev
        busy = float(b["device"]["busy_s"]) - float(a["device"]["busy_s"])
        out.append(Level(device, c, n, ok, res.wall_s, cpu * 1000 / max(ok, 1),
                         dev * 1000 / max(ok, 1), busy, res.pct(50), res.pct(99)))
    return out


def record(target: Target, images: Sequence[BenchImage]) -> tuple[dict[str, Any], dict]:
    refs: dict[str, Any] = {}
    conn = None
    for bi in images:
        reply, conn = timed_post(target, conn, 0, bi.image, bi.body)
        if not reply.ok:
            raise RuntimeError(f"recording {bi.key} failed: {reply.status} {reply.error}")
        refs[bi.key] = answer_of(reply.body)
    if conn is not None:
        conn.close()
    return refs, get_stats(target)["device"]


# ----------------------------------------------------------------------------- report
@attrs.define
class Report:
    images: list[BenchImage]
    recorded_frames: int = 0
    seq: Sequential | None = None
    instant: list[Level] = attrs.field(factory=list)
    modelled: list[Level] = attrs.field(factory=list)
    check: Check = attrs.field(factory=Check)
    load_before: tuple[float, ...] = ()
    load_after: tuple[float, ...] = ()
    seconds: float = 0.0
    #: The same measurements of another checkout (``--before``), in the same run.
    before: Report | None = None
    before_tree: str | None = None

    @property
    def host_ms_median(self) -> float:
        return statistics.median(self.seq.host_ms.values()) if self.seq else math.nan

    def level(self, levels: list[Level], c: int) -> Level | None:
        return next((lv for lv in levels if lv.concurrency == c), None)


def _folder_rows(rep: Report) -> list[list[Any]]:
    assert rep.seq is not None
    rows = []
    by_folder: dict[str, list[float]] = {}
    for bi in rep.images:
        by_folder.setdefault(bi.folder, []).append(rep.seq.host_ms[bi.key])
    for folder, ms in by_folder.items():
        rows.append([folder, len(ms), statistics.median(ms), percentile(ms, 90), max(ms)])
    all_ms = list(rep.seq.host_ms.values())
    rows.append(["all", len(all_ms), statistics.median(all_ms), percentile(all_ms, 90),
                 max(all_ms)])
    return rows


def print_report(rep: Report, out: Callable[[str], None] = print) -> None:
    seq = rep.seq
    if seq is not None:
        out("\nHost CPU per image, instant device, each image alone (ms; server CPU less "
            f"the stats reads ({seq.read_cost_ms:.2f} ms a pair) and the replay device's "
            "own work)")
        out(table(["folder", "images", "median", "p90", "max"], _folder_rows(rep)))
        total = seq.process_ms
        staged = sum(seq.stages_ms.values())
        rows = [[s, v, v / total if total else math.nan] for s, v in seq.stages_ms.items()]
        rest = total - staged
        rows.append(["HTTP and framework on the Trio thread", seq.trio_other_ms,
                     seq.trio_other_ms / total if total else math.nan])
        rows.append(["thread hand-offs, untimed work in workers", rest - seq.trio_other_ms,
                     (rest - seq.trio_other_ms) / total if total else math.nan])
        rows.append(["total (server CPU per image)", total, 1.0])
        dev = statistics.mean(seq.device_ms.values()) if seq.device_ms else math.nan
        folders = sorted({bi.folder for bi in rep.images})

        def folder_mean(f: str, value: Callable[[str], float]) -> float:
            return statistics.mean(value(bi.key) for bi in rep.images if bi.folder == f)

        for row in rows[:-3]:
            row += [folder_mean(f, lambda k, st=row[0]: seq.image_stages_ms[k][st])
                    for f in folders]
        rows[-3] += [None] * len(folders)
        rows[-2] += [None] * len(folders)
        rows[-1] += [folder_mean(f, lambda k: seq.host_ms[k]) for f in folders]
        out(f"\nStage profile, instant device, c=1 ({len(rep.images)} images; replay "
            f"device's own work, not included: {dev:.2f} ms per image; folder columns: "
            "mean ms per image)")
        out(table(["stage", "CPU ms per image", "share", *folders], rows))
    for name, levels in (("instant device", rep.instant),
                         ("modelled Hailo-10H (replay_device.HAILO10H)", rep.modelled)):
        if not levels:
            continue
        out(f"\nThroughput over HTTP, {name}")
        out(table(["c", "requests", "images/s", "p50 s", "p99 s", "CPU ms/img",
                   "device CPU ms/img", "NPU-alone images/s", "share of NPU"],
                  [[lv.concurrency, lv.requests, lv.images_per_s, lv.p50_s, lv.p99_s,
                    lv.cpu_ms_per_image, lv.device_cpu_ms_per_image,
                    lv.npu_images_per_s if lv.npu_busy_s else None,
                    lv.images_per_s / lv.npu_images_per_s if lv.npu_busy_s else None]
                   for lv in levels]))
    if rep.before is not None:
        out(f"\nBefore ({rep.before_tree}) and after (this checkout), the same run")
        out(table(["measure", "before", "after", "after / before"], comparison(rep)))
    c = rep.check
    if rep.before is not None:
        b = rep.before.check
        out(f"\nBefore: {b.same} answers identical to the recording run, "
            f"{len(b.different)} different, {len(b.failed)} failed")
    out(f"\nAnswers against the recording run (ONNX on the CPU, {rep.recorded_frames} frames "
        f"computed this run): {c.same} identical, {len(c.different)} different, "
        f"{len(c.failed)} failed")
    for line in (c.different + c.failed)[:10]:
        out(f"  {line}")
    out("\nTargets (2-core x86; instant device unless said)")
    out(table(["target", "measured", "limit", "met"], targets(rep)))


def comparison(rep: Report) -> list[list[Any]]:
    """Rows of before / after: host ms, each stage, CPU and images/s per level."""
    b = rep.before
    assert b is not None
    rows: list[list[Any]] = []

    def add(name: str, before: float, after: float) -> None:
        rows.append([name, before, after, after / before if before else math.nan])

    add("median host CPU ms per image (c=1)", b.host_ms_median, rep.host_ms_median)
    if b.seq and rep.seq:
        for folder in sorted({bi.folder for bi in rep.images}):
            keys = [bi.key for bi in rep.images if bi.folder == folder]
            add(f"  median, {folder}", statistics.median(b.seq.host_ms[k] for k in keys),
                statistics.median(rep.seq.host_ms[k] for k in keys))
        add("server CPU ms per image, c=1 pass", b.seq.process_ms, rep.seq.process_ms)
        for stage, v in rep.seq.stages_ms.items():
            add(f"  {stage}", b.seq.stages_ms.get(stage, math.nan), v)
        add("  HTTP and framework on the Trio thread", b.seq.trio_other_ms,
            rep.seq.trio_other_ms)
    for label, mine, theirs in (("instant", rep.instant, b.instant),
                                ("hailo10h", rep.modelled, b.modelled)):
        for lv in mine:
            other = b.level(theirs, lv.concurrency)
            if other is None:
                continue
            add(f"{label} c={lv.concurrency} images/s", other.images_per_s, lv.images_per_s)
            add(f"{label} c={lv.concurrency} CPU ms per image", other.cpu_ms_per_image,
                lv.cpu_ms_per_image)
    return rows


def targets(rep: Report) -> list[list[Any]]:
    rows: list[list[Any]] = []

    def add(name: str, value: float, limit: str, met: bool | None) -> None:
        rows.append([name, value, limit,
                     "n/a" if met is None or math.isnan(value) else ("yes" if met else "NO")])

    ms = rep.host_ms_median
    add("median host CPU ms per image (c=1)", ms, f"<= {TARGET_HOST_MS:g}", ms <= TARGET_HOST_MS)
    i8 = rep.level(rep.instant, 8)
    v = i8.images_per_s if i8 else math.nan
    add("c=8 images/s over HTTP", v, f">= {TARGET_C8_IMAGES_S:g}", v >= TARGET_C8_IMAGES_S)
    m8 = rep.level(rep.modelled, 8)
    share = m8.images_per_s / m8.npu_images_per_s if m8 and m8.npu_busy_s else math.nan
    add("modelled Hailo-10H c=8: images/s / NPU alone", share, f">= {TARGET_NPU_SHARE:g}",
        share >= TARGET_NPU_SHARE if not math.isnan(share) else None)
    add("answers identical to the recording run", float(rep.check.same),
        "all", rep.check.ok)
    return rows


def summary_line(rep: Report) -> str:
    i8 = rep.level(rep.instant, 8)
    c8 = i8.images_per_s if i8 else math.nan
    return f"host_ms_per_image={rep.host_ms_median:.1f} c8_images_per_s={c8:.1f}"


# ----------------------------------------------------------------------------- the run
def run(images: Sequence[BenchImage], *, store: Path, levels: Sequence[int] = LEVELS,
        modelled: bool = True, count: Callable[[int], int] | None = None,
        workdir: Path | None = None, before: Path | None = None, cpus: str | None = None,
        progress: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
        ) -> Report:
    """The whole run (see the module docstring). ``before``: another checkout measured
    the same way, image by image and level by level in turn with this one."""
    t0 = time.perf_counter()
    rep = Report(list(images), load_before=os.getloadavg())
    reports = {"after": rep}
    trees = {"after": REPO}
    if before is not None:
        rep.before = reports["before"] = Report(list(images))
        rep.before_tree = str(before)
        trees["before"] = before
    count = count or (lambda c: max(len(images), 4 * c))
    with contextlib.ExitStack() as stack:
        tmp = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hc-")))
        progress(f"recording: {len(images)} images, ONNX on the CPU (store {store})")
        srv = stack.enter_context(_running(tmp, "record", store, latency="instant",
                                           record=True))
        refs, dev = record(srv.target, images)
        rep.recorded_frames = int(dev["recorded"])
        srv.stop()  # the recording is saved as the device closes

        for device in ("instant", "hailo10h") if modelled else ("instant",):
            servers = {name: stack.enter_context(_running(
                tmp, f"{device}-{name}", store, latency=device, tree=tree, cpus=cpus))
                for name, tree in trees.items()}
            targets_ = {name: srv.target for name, srv in servers.items()}
            for target in targets_.values():
                for bi in images[:2]:  # warm-up: first-call costs are start-up, not load
                    timed_post(target, None, 0, bi.image, bi.body)
            checks = {name: r.check for name, r in reports.items()}
            if device == "instant":
                progress(f"instant device: each image alone ({', '.join(trees)})")
                for name, seq in run_sequential(targets_, images, refs, checks).items():
                    reports[name].seq = seq
            names = list(targets_)
            for k, c in enumerate(levels):
                for name in names[k % len(names):] + names[: k % len(names)]:
                    lv = run_levels(targets_[name], device, images, refs, [c], count,
                                    checks[name], lambda m, n=name: progress(f"{n}: {m}"))
                    getattr(reports[name], "instant" if device == "instant"
                            else "modelled").extend(lv)
            for srv in servers.values():
                srv.stop()
    rep.load_after = os.getloadavg()
    rep.seconds = time.perf_counter() - t0
    return rep


@contextlib.contextmanager
def _running(tmp: Path, name: str, store: Path, **kwargs: Any) -> Any:
    srv = start_server(tmp, name, store, **kwargs)
    try:
        yield srv
    finally:
        srv.stop()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"1/{QUICK_DIVISOR} of each folder's images, instant device only")
    ap.add_argument("--per-folder", type=int, help="images per devdata folder")
    ap.add_argument("--store", type=Path, default=DEFAULT_STORE,
                    help=f"where recordings are kept (default {DEFAULT_STORE})")
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)))
    ap.add_argument("--no-modelled", action="store_true", help="skip the modelled Hailo-10H")
    ap.add_argument("--before", type=Path, metavar="CHECKOUT",
                    help="also measure this checkout (a git worktree of an earlier commit), "
                    "in turn with this one, for before / after figures from the same run")
    ap.add_argument("--server-cpus", metavar="LIST",
                    help="run the measured servers on these CPUs only (taskset -c LIST)")
    ap.add_argument("--json", type=Path, help="write every number here")
    args = ap.parse_args(argv)

    root = devdata_dir()
    if root is None:
        raise SystemExit("devdata not found: put it at ../shared/devdata or set "
                         "HAILO_OCR_DEVDATA")
    images = bench_images(root, args.per_folder, quick=args.quick)
    levels = tuple(int(x) for x in args.levels.split(",") if x.strip())
    rep = run(images, store=args.store, levels=levels,
              modelled=not (args.quick or args.no_modelled), before=args.before,
              cpus=args.server_cpus)
    if args.json:
        numbers = attrs.asdict(rep, filter=lambda a, v: a.name not in ("body", "data"))
        args.json.write_text(json.dumps(numbers, default=str, indent=1))
    m = machine()
    pinned = f"; servers on CPUs {args.server_cpus}" if args.server_cpus else ""
    print(f"\nmachine: {m['nproc']} x {m['cpu']}{pinned}, Python {m['python']}; load average "
          f"before {tuple(round(x, 2) for x in rep.load_before)}, after "
          f"{tuple(round(x, 2) for x in rep.load_after)}; {len(images)} images; run took "
          f"{rep.seconds:.0f} s")
    print_report(rep)
    print(summary_line(rep))
    ok = rep.check.ok and (rep.before is None or rep.before.check.ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
