"""Accuracy against ground truth, per devdata folder: hailo-ocr, RapidOCR and faster-paddle.

    python -m benchmarks.accuracy                       # every folder, ours over HTTP
    python -m benchmarks.accuracy --folders sroie_dev funsd_dev --limit 5
    python -m benchmarks.accuracy --ours in-process --set ocr.unclip_ratio=1.5
    python -m benchmarks.accuracy --peers-cache /tmp/peers.json --json out.json

Three systems read every image of ``../shared/devdata`` (or ``$HAILO_OCR_DEVDATA``):

* **ours**: by default ``hailo-ocr serve`` started on a free loopback port (the default
  configuration plus ``--set``; ``--url`` uses a running one instead), one request at a
  time over HTTP, so the latency is what a client sees; ``--ours in-process`` runs the
  same pipeline through :func:`actors.service.open_ocr_service` in this process instead
  (quicker for comparing settings; no HTTP in its latency);
* **rapidocr** and **faster-paddle** (``benchmarks/peers.py``: the same PP-OCRv6 small
  models, each with its own defaults), called directly in this process.

Each image goes to the three in turn, the order rotating per image, so drift in the
machine's load hits all three alike. Every system gets the image's bytes, as a client sends
them. The images stay in memory: nothing is copied anywhere.

Scored with devdata's ``score.py`` (imported by path): word F1 case-insensitive and CER
for the word- and line-level folders, char F1 and CER without spaces for ``mtwi_dev``
(page-level Chinese ground truth, where words and reading order mean little);
``rapidocr_tests`` has no ground truth, so its row is the agreement of each system's words
with RapidOCR's. The summary checks the accuracy and latency targets of issue 15.

``--peers-cache FILE`` keeps the two peers' answers and latencies in FILE (written when
missing, read when present): their output does not change while one tunes ours (their
latencies are then those of the run that wrote it, not paired with ours).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import load  # noqa: E402
from benchmarks.peers import FASTER_PADDLE, PEERS, RAPIDOCR, open_peer  # noqa: E402

#: The folders, in report order: (name, headline metric, language asked for).
FOLDERS: Final = (
    ("icdar2015_dev", "word", "en"),
    ("sroie_dev", "word", "en"),
    ("funsd_dev", "word", "en"),
    ("mtwi_dev", "char", "zh"),
    ("rapidocr_tests", "agree", "en"),
)
OURS: Final = "hailo-ocr"
SYSTEMS: Final = (OURS, *PEERS)

#: Issue 15's targets.
MIN_GAIN_OVER_RAPIDOCR: Final = 0.02
MAX_LATENCY_RATIO: Final = 0.9


@attrs.frozen
class Folder:
    name: str
    metric: str  # "word", "char" or "agree" (no ground truth: agreement with RapidOCR)
    language: str
    images: tuple[Path, ...]
    gt: dict[str, Any] | None = attrs.field(eq=False, repr=False)


@attrs.frozen
class Answer:
    """One system's reading of one image: line items in score.py's format, and seconds."""

    items: tuple[dict[str, Any], ...]
    latency_s: float


def folders(devdata: Path, names: Sequence[str] | None = None,
            limit: int | None = None) -> list[Folder]:
    """The devdata folders present (all, or ``names``), at most ``limit`` images each
    (the first ones by file name)."""
    out = []
    for name, metric, lang in FOLDERS:
        if names and name not in names:
            continue
        base = devdata / name
        if not base.is_dir():
            continue
        image_dir = base / "images" if (base / "images").is_dir() else base
        images = sorted(p for p in image_dir.iterdir()
                        if p.suffix.lower() in load.IMAGE_SUFFIXES)
        gt_path = base / "gt.json"
        gt = json.loads(gt_path.read_text(encoding="utf-8")) if gt_path.is_file() else None
        out.append(Folder(name, metric if gt is not None else "agree", lang,
                          tuple(images[:limit] if limit else images), gt))
    return out


def key(f: Folder, path: Path) -> str:
    return f"{f.name}/{path.name}"


def quad(items_poly: Any) -> list[list[float]]:
    return [[float(x), float(y)] for x, y in items_poly]


# ----------------------------------------------------------------------------- ours
class OursHttp:
    """hailo-ocr over HTTP, one request at a time on a keep-alive connection."""

    def __init__(self, target: load.Target) -> None:
        self.target = target
        self.conn: Any = None

    def __call__(self, data: bytes, language: str) -> Answer:
        img = load.Image("x", Path("x"), data)
        reply, self.conn = load.timed_post(self.target, self.conn, 0, img,
                                           load.request_body(img, (language,)))
        if not reply.ok:
            raise RuntimeError(f"hailo-ocr answered {reply.status}: {reply.error}")
        items = tuple({"text": it["text"], "poly": quad(it["poly"])}
                      for it in load.service_items(reply))
        return Answer(items, reply.latency_s)


def _peer_caller(name: str) -> Callable[[bytes, str], Answer]:
    engine = open_peer(name)

    def call(data: bytes, language: str) -> Answer:
        res = engine(data)
        return Answer(res.items, res.latency_s)

    return call


@contextlib.contextmanager
def ours_server(settings: dict[str, dict[str, Any]]) -> Iterator[OursHttp]:
    """``hailo-ocr serve`` on a free port with the defaults plus ``settings``."""
    with tempfile.TemporaryDirectory(prefix="accuracy-") as tmp:
        cfg = load.write_config(Path(tmp), "hailo-ocr", settings)
        port = load.free_port()
        srv = load.ServerProcess(OURS, load.hailo_ocr_command(cfg, port), port,
                                 Path(tmp) / "hailo-ocr.log")
        srv.start()
        try:
            yield OursHttp(srv.target)
        finally:
            srv.stop()


def ours_config(settings: dict[str, dict[str, Any]] | None = None) -> Any:
    """The default configuration (no environment) with ``settings`` applied, and a long
    request deadline (a slow shared machine is not what is measured)."""
    from web.settings import load_config

    data: dict[str, dict[str, Any]] = {"server": {"request_timeout_s": 600.0}}
    for section, keys in (settings or {}).items():
        data[section] = {**data.get(section, {}), **keys}
    return load_config(env={}, overrides=data)


def run_ours_in_process(
    jobs: Sequence[tuple[str, bytes, str]], config: Any, concurrency: int = 1,
) -> dict[str, Answer]:
    """Our pipeline in this process (one ``trio.run``), ``concurrency`` requests in flight.
    ``jobs``: (key, image bytes, language)."""
    import trio

    from actors.messages import OcrRequest
    from actors.service import open_ocr_service

    out: dict[str, Answer] = {}

    async def main() -> None:
        limiter = trio.CapacityLimiter(concurrency)
        async with open_ocr_service(config) as service:

            async def one(k: str, data: bytes, lang: str) -> None:
                async with limiter:
                    t0 = time.perf_counter()
                    res = await service.extract(OcrRequest(data, (lang,), id=k))
                    items = tuple({"text": r.text, "poly": quad(r.bbox)} for r in res.regions)
                    out[k] = Answer(items, time.perf_counter() - t0)

            async with trio.open_nursery() as nursery:
                for k, data, lang in jobs:
                    nursery.start_soon(one, k, data, lang)

    trio.run(main)
    return out


# ----------------------------------------------------------------------------- scoring
def score_folder(score_mod: Any, f: Folder, answers: dict[str, Answer],
                 reference: dict[str, Answer] | None = None) -> dict[str, Any]:
    """``score.py``'s summary of ``answers`` (keyed ``folder/file``) for one folder, against
    its ground truth, or for a folder without one against ``reference`` (RapidOCR)."""
    if f.gt is not None:
        names = {p.name for p in f.images}
        gt = {**f.gt, "images": {n: v for n, v in f.gt["images"].items() if n in names}}
    else:
        assert reference is not None, f"{f.name} has no ground truth and no reference"
        gt = {"dataset": f.name, "level": "line", "lang": f.language, "images": {
            p.name: [{"text": it["text"], "poly": it["poly"], "ignore": False}
                     for it in reference[key(f, p)].items] for p in f.images}}
    pred = {"images": {p.name: {"items": [dict(it, level="line")
                                          for it in answers[key(f, p)].items]}
                       for p in f.images if key(f, p) in answers}}
    return score_mod.score(gt, pred)


def headline_for(metric: str, res: dict[str, Any]) -> tuple[float, float]:
    """The main figures of a ``score.py`` summary: (F1, error rate). Words
    (case-insensitive) and CER for word or line ground truth (``metric`` "word", or
    "agree" against RapidOCR's output); characters and CER without spaces for page-level
    Chinese ("char"), where words and reading order mean little."""
    if metric == "char":
        return res["char_f1"], res["cer_nospace"]
    return res["word_f1_ci"], res["cer_ci"]


def headline(f: Folder, res: dict[str, Any]) -> tuple[float, float]:
    return headline_for(f.metric, res)


def metric_names(f: Folder) -> tuple[str, str]:
    return {"word": ("word F1 ci", "CER ci"), "char": ("char F1", "CER nospace"),
            "agree": ("word F1 ci vs RapidOCR", "CER ci vs RapidOCR")}[f.metric]


# ----------------------------------------------------------------------------- the run
@attrs.define
class Report:
    folders: list[Folder]
    answers: dict[str, dict[str, Answer]] = attrs.field(factory=dict)
    scores: dict[str, dict[str, dict[str, Any]]] = attrs.field(factory=dict)
    ours_mode: str = "http"
    seconds: float = 0.0

    def latency(self, system: str, f: Folder) -> float:
        lat = [self.answers[system][key(f, p)].latency_s for p in f.images
               if key(f, p) in self.answers.get(system, {})]
        return statistics.median(lat) if lat else math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": load.machine(), "seconds": self.seconds, "ours": self.ours_mode,
            "folders": {f.name: {
                "images": len(f.images), "metric": f.metric,
                "scores": {s: self.scores[s][f.name] for s in self.scores
                           if f.name in self.scores[s]},
                "latency_p50_s": {s: self.latency(s, f) for s in self.answers},
            } for f in self.folders},
            "targets": targets(self),
            "per_image": {s: {k: {"latency_s": a.latency_s, "items": list(a.items)}
                              for k, a in ans.items()} for s, ans in self.answers.items()},
        }


def load_peers_cache(path: Path | None) -> dict[str, dict[str, Answer]]:
    if path is None or not path.is_file():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {s: {k: Answer(tuple(v["items"]), v["latency_s"]) for k, v in ans.items()}
            for s, ans in raw.items()}


def save_peers_cache(path: Path, answers: dict[str, dict[str, Answer]]) -> None:
    raw = {s: {k: {"items": list(a.items), "latency_s": a.latency_s} for k, a in ans.items()}
           for s, ans in answers.items() if s in PEERS}
    path.write_text(json.dumps(raw, ensure_ascii=False))


def run(
    devdata: Path, fs: list[Folder], *, ours: str = "http", peers: Sequence[str] = PEERS,
    settings: dict[str, dict[str, Any]] | None = None, peers_cache: Path | None = None,
    concurrency: int = 1, url: str | None = None,
    progress: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> Report:
    t_start = time.perf_counter()
    rep = Report(fs, ours_mode=ours)
    jobs = [(key(f, p), p.read_bytes(), f.language) for f in fs for p in f.images]
    cached = load_peers_cache(peers_cache)
    todo = {s for s in peers if any(k not in cached.get(s, {}) for k, _, _ in jobs)}
    callers: dict[str, Callable[[bytes, str], Answer]] = {
        s: _peer_caller(s) for s in peers if s in todo}
    for s in peers:
        rep.answers[s] = {k: a for k, a in cached.get(s, {}).items()
                          if k in {j[0] for j in jobs}}
    rep.answers[OURS] = {}
    with contextlib.ExitStack() as stack:
        if ours == "http" and url:
            callers[OURS] = OursHttp(load.Target.from_url(url))
        elif ours == "http":
            callers[OURS] = stack.enter_context(ours_server(settings or {}))
        for c in callers.values():  # warm-up, not counted
            c(jobs[0][1], jobs[0][2])
        steps = list(callers)
        if callers:
            progress(f"{len(jobs)} images, {' / '.join(steps)} in turn")
        for i, (k, data, lang) in enumerate(jobs):
            rot = i % len(steps) if steps else 0
            for s in steps[rot:] + steps[:rot]:
                if s != OURS and k in rep.answers[s]:
                    continue
                rep.answers[s][k] = callers[s](data, lang)
            if i % 20 == 19:
                progress(f"  {i + 1}/{len(jobs)}")
    if peers_cache is not None and todo:
        save_peers_cache(peers_cache, rep.answers)
    if ours == "in-process":
        progress(f"{len(jobs)} images through the service in this process")
        rep.answers[OURS] = run_ours_in_process(jobs, ours_config(settings), concurrency)
    score_mod = load.load_score_module(devdata)
    for s, ans in rep.answers.items():
        rep.scores[s] = {}
        for f in fs:
            ref = rep.answers.get(RAPIDOCR)
            if f.gt is None and (ref is None or s == RAPIDOCR):
                continue
            rep.scores[s][f.name] = score_folder(score_mod, f, ans, ref)
    rep.seconds = time.perf_counter() - t_start
    return rep


def targets(rep: Report) -> list[dict[str, Any]]:
    """Issue 15's targets: F1 >= faster-paddle's on every folder with ground truth, mean
    F1 >= RapidOCR's + 0.02, c=1 latency <= 0.9 x faster-paddle's direct call per folder."""
    rows: list[dict[str, Any]] = []
    gt_folders = [f for f in rep.folders if f.gt is not None]
    sc = rep.scores

    def f1(system: str, f: Folder) -> float:
        res = sc.get(system, {}).get(f.name)
        return headline(f, res)[0] if res else math.nan

    for f in gt_folders:
        ours, fp = f1(OURS, f), f1(FASTER_PADDLE, f)
        rows.append({"target": f"{f.name}: {metric_names(f)[0]} - faster-paddle's",
                     "measured": ours - fp, "limit": ">= 0",
                     "met": None if math.isnan(ours - fp) else ours - fp >= 0})
    if gt_folders:
        gain = statistics.mean(f1(OURS, f) - f1(RAPIDOCR, f) for f in gt_folders)
        rows.append({"target": "mean F1 - RapidOCR's (folders with ground truth)",
                     "measured": gain, "limit": f">= {MIN_GAIN_OVER_RAPIDOCR}",
                     "met": None if math.isnan(gain) else gain >= MIN_GAIN_OVER_RAPIDOCR})
    if rep.ours_mode == "http":
        for f in rep.folders:
            r = load.ratio(rep.latency(OURS, f), rep.latency(FASTER_PADDLE, f))
            rows.append({"target": f"{f.name}: c=1 p50, ours over HTTP / faster-paddle direct",
                         "measured": r, "limit": f"<= {MAX_LATENCY_RATIO}",
                         "met": None if math.isnan(r) else r <= MAX_LATENCY_RATIO})
    return rows


def print_report(rep: Report, out: Callable[[str], None] = print) -> None:
    systems = [s for s in SYSTEMS if s in rep.answers]
    rows = []
    for f in rep.folders:
        fname, ename = metric_names(f)
        row: list[Any] = [f.name, len(f.images), fname]
        for s in systems:
            res = rep.scores.get(s, {}).get(f.name)
            row.append(headline(f, res)[0] if res else None)
        row.append(ename)
        for s in systems:
            res = rep.scores.get(s, {}).get(f.name)
            row.append(headline(f, res)[1] if res else None)
        rows.append(row)
    out("\nAccuracy (score.py, micro-averaged over each folder)")
    out(load.table(["folder", "n", "F1", *systems, "error rate", *systems], rows))
    gt_folders = [f for f in rep.folders if f.gt is not None]
    if gt_folders:
        means = [statistics.mean(headline(f, rep.scores[s][f.name])[0] for f in gt_folders)
                 if all(f.name in rep.scores.get(s, {}) for f in gt_folders) else None
                 for s in systems]
        out(load.table(["mean F1 over folders with ground truth", *systems],
                       [[f"{len(gt_folders)} folders", *means]]))
    out(f"\nLatency per image, median s (ours: {rep.ours_mode}; peers: direct calls)")
    lat_rows = []
    for f in rep.folders:
        lat = [rep.latency(s, f) for s in systems]
        lat_rows.append([f.name, *lat, load.ratio(rep.latency(OURS, f),
                                                  rep.latency(FASTER_PADDLE, f))])
    out(load.table(["folder", *systems, "ours / faster-paddle"], lat_rows))
    out("\nTargets (issue 15)")
    out(load.table(["target", "measured", "limit", "met"],
                   [[t["target"], t["measured"], t["limit"],
                     {True: "yes", False: "NO", None: "n/a"}[t["met"]]] for t in targets(rep)]))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devdata", type=Path, default=load.devdata_dir())
    ap.add_argument("--folders", nargs="+", choices=[f[0] for f in FOLDERS])
    ap.add_argument("--limit", type=int, help="at most this many images per folder")
    ap.add_argument("--ours", choices=("http", "in-process"), default="http")
    ap.add_argument("--url", help="with --ours http: a running hailo-ocr instead of starting one "
                    "(e.g. another checkout's, for a before/after pair)")
    ap.add_argument("--concurrency", type=int, default=1,
                    help="requests in flight with --ours in-process (accuracy only)")
    ap.add_argument("--peers", nargs="*", choices=PEERS, default=list(PEERS),
                    help="which peers to run (default both)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="our configuration (repeatable), e.g. --set ocr.unclip_ratio=1.5")
    ap.add_argument("--peers-cache", type=Path, help="reuse/keep the peers' answers here")
    ap.add_argument("--json", type=Path, help="write every number (and every answer) here")
    a = ap.parse_args(argv)
    if a.devdata is None or not (a.devdata / "score.py").is_file():
        print("no devdata: put it at ../shared/devdata or set HAILO_OCR_DEVDATA",
              file=sys.stderr)
        return 2
    fs = folders(a.devdata, a.folders, a.limit)
    rep = run(a.devdata, fs, ours=a.ours, peers=a.peers, settings=load.parse_set(a.set),
              peers_cache=a.peers_cache, concurrency=a.concurrency, url=a.url)
    if a.json:
        a.json.write_text(json.dumps(rep.to_json(), indent=1, ensure_ascii=False) + "\n")
    print(load.machine_line(rep.seconds))
    print_report(rep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
