"""The host-cost benchmark's core still works: it records two real images through the
real server (subprocess, ONNX on the CPU), replays them through the real server with the
Hailo shapes on the instant and the modelled device, and reports coherent numbers. Not a
performance test (benchmarks/RESULTS.md has the real runs)."""

from __future__ import annotations

import re

import pytest

from benchmarks import host_cost as hc

pytestmark = [pytest.mark.devdata, pytest.mark.slow]


def test_host_cost_records_replays_and_checks_every_answer(devdata, tmp_path):
    images = [b for b in hc.bench_images(devdata, per_folder=1)
              if b.folder in ("icdar2015_dev", "mtwi_dev")]
    assert [b.language for b in images] == ["en", "zh"]
    rep = hc.run(images, store=tmp_path / "store", levels=(1, 2), count=lambda c: 2 * c,
                 workdir=tmp_path, progress=lambda s: None)

    # Every replayed answer equals the recording run's, and something was read.
    assert rep.check.ok, (rep.check.different, rep.check.failed)
    assert rep.check.same == len(images) + 2 * (2 + 4)  # sequential pass + two devices
    assert rep.recorded_frames > 0
    assert rep.seq is not None
    assert all(ms > 0 for ms in rep.seq.host_ms.values())
    # The profile's stages are parts of the total, each measured.
    stages = rep.seq.stages_ms
    assert stages["decode"] > 0 and stages["DB post"] > 0 and stages["CTC decode"] > 0
    assert sum(stages.values()) < rep.seq.process_ms * 1.2
    # The modelled NPU runs one job at a time: nothing goes faster than it allows.
    for lv in rep.modelled:
        assert lv.npu_busy_s > 0
        assert lv.images_per_s <= lv.npu_images_per_s * 1.05
    assert all(lv.npu_busy_s == 0 for lv in rep.instant)

    lines: list[str] = []
    hc.print_report(rep, lines.append)
    assert any("HTTP and framework on the Trio thread" in line for line in lines)
    assert re.fullmatch(r"host_ms_per_image=[0-9.]+ c8_images_per_s=nan", hc.summary_line(rep))

    # A second run finds everything recorded: nothing is computed again.
    again = hc.run(images[:1], store=tmp_path / "store", levels=(1,), modelled=False,
                   workdir=tmp_path, progress=lambda s: None)
    assert again.recorded_frames == 0 and again.check.ok
