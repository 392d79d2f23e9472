"""The load benchmark's core still works: it starts ``hailo-ocr serve`` as a subprocess,
drives it at concurrency 1 and 2 with two real images, and reads the service's own
counters. Not a performance test: it asserts that the numbers exist and are coherent,
not how large they are (benchmarks/README.md has the real runs)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.support.paths import REPO

pytestmark = [pytest.mark.devdata, pytest.mark.slow]


def _load_module():
    if str(REPO) not in sys.path:  # benchmarks/ is a folder of scripts, not installed
        sys.path.insert(0, str(REPO))
    path = REPO / "benchmarks" / "load.py"
    spec = importlib.util.spec_from_file_location("benchmarks.load", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("benchmarks.load", module)
    spec.loader.exec_module(module)
    return module


def test_percentiles():
    load = _load_module()
    values = [float(v) for v in range(1, 101)]
    assert load.percentile(values, 50) == 50.0
    assert load.percentile(values, 99) == 99.0
    assert load.percentile([2.0], 90) == 2.0


def test_load_core_against_a_subprocess_server(devdata, tmp_path):
    load = _load_module()
    images = load.load_images(
        [devdata / "rapidocr_tests" / "ch_en_num.jpg", devdata / "rapidocr_tests" / "en.jpg"]
    )
    rep = load.run_benchmark(
        images, levels=(1, 2), count=2, peers=[], fill=False, workdir=tmp_path,
        progress=lambda s: None,
    )
    assert rep.ready_s["hailo-ocr"] is not None and rep.ready_s["hailo-ocr"] > 0
    rss = rep.peak_rss_mb["hailo-ocr"]
    assert rss is not None and 50 < rss < 4000
    levels = {r.concurrency: r for r in rep.levels["hailo-ocr"]}
    assert set(levels) == {1, 2}
    for level in levels.values():
        assert level.errors == 0, [r.error for r in level.replies]
        assert len(level.replies) == 2
        assert level.images_per_s > 0
        assert level.pct(50) <= level.pct(90) <= level.pct(99)
        # Counters come from the service itself: a detection call per image at least,
        # and recognition slots that were both filled and run.
        assert level.device_calls_per_image >= 1
        assert 0 < level.fill <= 1
    # Region counts were read per image from the service's counters, and both images
    # have text.
    assert set(rep.regions) == {img.key for img in images}
    assert all(n > 0 for n in rep.regions.values())
    assert any("Movie" in r.body["text"] for r in levels[1].replies)
    # The summary prints and ends with the targets table.
    lines: list[str] = []
    load.print_report(rep, lines.append)
    assert lines[-2] == "\nTargets" or "Targets" in lines[-2]
    assert "start to ready" in lines[-1]


@pytest.mark.parametrize("peer", ["rapidocr", "faster-paddle"])
def test_a_peer_direct_and_behind_its_wrapper(devdata, tmp_path, peer):
    """Each baseline runs called directly and behind benchmarks/peer_server.py, is timed
    per folder at c=1 and scored against the ground truth."""
    if peer == "faster-paddle":
        pytest.importorskip("faster_paddle", reason="faster-paddle is the `bench` extra "
                            "(pip install -e '.[bench]'); a benchmark baseline only")
    load = _load_module()
    images = load.load_images([devdata / "sroie_dev" / "images"], limit_per_folder=1)
    rep = load.run_benchmark(images, levels=(1,), count=1, peers=[peer], fill=False,
                             workdir=tmp_path, progress=lambda s: None)
    wrapper = rep.level(f"{peer}-http", 1)
    assert wrapper is not None and wrapper.errors == 0, [r.error for r in wrapper.replies]
    assert rep.level("hailo-ocr", 1).errors == 0
    assert rep.c1_p50(f"{peer}-direct", "sroie_dev") > 0
    f1 = {(a["system"], a["reference"]): a["f1"] for a in rep.accuracy}
    for system in ("hailo-ocr", f"{peer}-http", f"{peer}-direct"):
        assert f1[(system, "sroie_dev GT")] > 0.5, f1  # a receipt, read
    lines: list[str] = []
    load.print_report(rep, lines.append)
    assert any("ours / faster-paddle direct" in line for line in lines)
