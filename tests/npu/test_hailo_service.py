"""The whole service with ``backend.type: hailo``, on the HailoRT stand-in.

Real images go through the fixed-size compiled-model path (letterboxed detection, 48x320
recognition with wide lines split) and must read like the CPU backend; device faults end
as the actor tree promises; and the real server starts with ``--backend hailo``.
"""

from __future__ import annotations

import os
import sys
from collections import Counter

import attrs
import cv2
import httpx
import numpy as np
import pytest

from tests.support import textgen
from tests.support.images import encode
from tests.support.paths import REPO, STANDIN

sys.path.insert(0, str(STANDIN))

from hailo_platform import VDevice, _standin  # noqa: E402  (the stand-in)
from hailo_testing import hailo_config  # noqa: E402

from actors.messages import OcrRequest  # noqa: E402
from actors.service import open_ocr_service  # noqa: E402
from npu.errors import (  # noqa: E402
    DeviceBusy,
    DeviceFault,
    DeviceLost,
    DeviceNotFound,
    DeviceTimeout,
)
from tests.support.compare import bag_f1, english_only, read_on_each  # noqa: E402
from tests.support.server import serve_subprocess, wait_until  # noqa: E402

pytestmark = pytest.mark.usefixtures("hailo_standin")


@pytest.fixture
def hcfg(config, hailo_files):
    cfg = hailo_config(config, hailo_files, timeout_ms=20000)
    return attrs.evolve(
        cfg, backend=attrs.evolve(cfg.backend, restart_backoff_s=0.05, restart_backoff_max_s=0.2)
    )


def long_line_image(text: str) -> bytes:
    """One line of ``text`` in black on white, 40 px high letters."""
    scale, thick = 1.0, 2
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    img = np.full((h + 60, w + 60, 3), 255, np.uint8)
    cv2.putText(img, text, (30, h + 30), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick,
                cv2.LINE_AA)
    return encode(img)


# --- reading real images ---------------------------------------------------------------------


@pytest.mark.devdata
@pytest.mark.slow
async def test_hailo_path_reads_real_images_like_the_cpu_backend(devdata, devdata_score, config,
                                                                  hcfg):
    score = devdata_score
    images = [devdata / "rapidocr_tests" / "en.jpg", devdata / "sroie_dev" / "images" / "006.jpg"]
    results = await read_on_each({"hailo": hcfg, "onnx": english_only(config)}, images)
    bags = {kind: [Counter(w for reg in r.regions for w in score.tokens(reg.text)) for r in rs]
            for kind, rs in results.items()}
    pages = {kind: ["".join("".join(reg.text.split()) for reg in r.regions) for r in rs]
             for kind, rs in results.items()}
    hailo_all = sum(bags["hailo"], Counter())
    onnx_all = sum(bags["onnx"], Counter())
    assert sum(onnx_all.values()) > 150  # the images really have text
    f1 = bag_f1(hailo_all, onnx_all)
    assert f1 >= 0.95, f"word F1 between the Hailo path and the CPU backend is {f1:.3f}"
    # The English page reads the same, character for character, though its lines are split
    # in four. (Not always space for space: the NPU pads a short line with grey to its
    # fixed 320 columns, the CPU to the line's own width, and the recogniser reads the
    # space in the title "MovieShots Dataset" only with the short padding.)
    assert pages["hailo"][0] == pages["onnx"][0]


async def test_a_100_character_line_survives_the_fixed_width(hcfg):
    text = ("Invoice 2024-117 for garden tools, copper pipes and seven boxes of nails "
            "delivered to River Street 42")
    assert len(text) >= 100
    async with open_ocr_service(hcfg) as service:
        r = await service.extract(OcrRequest(long_line_image(text), ("en",)))
    got = Counter(r.text.split())
    want = Counter(text.split())
    assert len(r.regions) == 1, r.text
    assert bag_f1(got, want) >= 0.85, r.text
    assert len(r.text) >= 0.9 * len(text), r.text


async def test_the_verify_sample_reads_on_the_npu_path(hcfg):
    from web.verify import SAMPLE_LINES, sample_png

    async with open_ocr_service(hcfg) as service:
        r = await service.extract(OcrRequest(sample_png(), ("en",)))
    # As verify compares: letters and digits (the fixed-width recogniser reads
    # "VERIFY 2468" as one word).
    assert "".join(r.text.split()) == "".join("".join(SAMPLE_LINES).split()), r.text


async def test_start_up_without_a_device_says_so(hcfg, hailo_standin):
    hailo_standin.set_devices([])
    with pytest.raises(DeviceNotFound, match="no Hailo device found"):
        async with open_ocr_service(hcfg):
            pytest.fail("the service must not start")  # pragma: no cover


# --- sharing the NPU ----------------------------------------------------------------------------


async def test_start_up_on_a_device_held_by_another_group_explains_the_fix(hcfg):
    squatter = VDevice()  # another service on HailoRT's default group id, "UNIQUE"
    try:
        with pytest.raises(DeviceBusy) as info:
            async with open_ocr_service(hcfg):
                pytest.fail("the service must not start")  # pragma: no cover
    finally:
        squatter.release()
    msg = str(info.value)
    assert "group id 'SHARED'" in msg and "HAILO_OCR_GROUP_ID" in msg


async def test_a_shared_group_coexists_with_another_service(hcfg):
    params = VDevice.create_params()
    params.group_id = "SHARED"
    neighbour = VDevice(params)
    try:
        async with open_ocr_service(hcfg) as service:
            r = await service.extract(OcrRequest(long_line_image("HELLO"), ("en",)))
            assert r.text == "HELLO"
            assert _standin.held_by()["0000:01:00.0"] == ("SHARED", 2)
    finally:
        neighbour.release()


# --- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault, options, error",
    [
        ("lost", {}, DeviceLost),
        ("error", {"status": 8}, DeviceFault),
        ("hang", {}, DeviceTimeout),
    ],
)
async def test_device_faults_fail_the_request_and_the_service_recovers(
    hcfg, hailo_files, fault, options, error
):
    # A hung job is noticed after timeout_ms; the others need no short bound (and a busy
    # CI machine needs a long one).
    timeout_ms = 5000 if fault == "hang" else 20000
    cfg = attrs.evolve(hcfg, hailo_models=attrs.evolve(hcfg.hailo_models, timeout_ms=timeout_ms))
    image = long_line_image("MARKET")
    async with open_ocr_service(cfg) as service:
        assert (await service.extract(OcrRequest(image, ("en",)))).text == "MARKET"
        _standin.inject(str(hailo_files.rec), fault, **options)
        with pytest.raises(error) as info:
            await service.extract(OcrRequest(image, ("en",)))
        assert type(info.value) is error or fault == "error"
        stats = service.statistics().devices["npu"]
        assert stats.restarts == 1 and error.__name__ in (stats.last_fault or "")
        await wait_until(lambda: service.ready, within_s=30)
        assert (await service.extract(OcrRequest(image, ("en",)))).text == "MARKET"


# --- the real server ---------------------------------------------------------------------------


@pytest.mark.slow
def test_hailo_ocr_serve_with_the_hailo_backend(hailo_files, tmp_path):
    if not (REPO / "web" / "cli.py").is_file():
        pytest.skip("web/ is not there yet")
    config = tmp_path / "hailo-ocr.yaml"
    config.write_text(
        "ocr:\n  languages: [en, zh]\n  default_language: en\n"
        "hailo_models:\n"
        f"  detection_hef: {hailo_files.det.name}\n"
        f"  recognition_hefs: {{en: {hailo_files.rec.name}}}\n"
        f"  character_lists: {{en: {hailo_files.charset.name}}}\n"
        f"  search_paths: [{hailo_files.det.parent}]\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILO_OCR_")}
    env["PYTHONPATH"] = os.pathsep.join([str(STANDIN), str(REPO)])
    with serve_subprocess(["--backend", "hailo", "--config", str(config)], env=env,
                          cwd=tmp_path) as served:
        base = served.base
        health = httpx.get(f"{base}/health", timeout=5).json()
        assert health["backend"] == "hailo" and health["hailo_device"] == "0000:01:00.0"
        assert [(d["device"], d["state"]) for d in health["devices"]] == [
            ("npu", "ready"), ("cpu", "ready"),
        ]
        models = httpx.get(f"{base}/models", timeout=5).json()["data"]
        # No Chinese HEF: Chinese is read on the CPU beside the NPU.
        assert {(m["name"], m["device"]) for m in models} == {
            ("ocr_det.hef", "npu"), ("ocr.hef", "npu"), ("PP-OCRv6_rec_small.onnx", "cpu"),
        }
        r = httpx.post(
            f"{base}/v1/ocr/extract", timeout=60,
            files={"image": ("line.png", long_line_image("SILVER"), "image/png")},
            data={"languages": "en"},
        )
        body = r.json()
        assert r.status_code == 200 and body["success"] and body["text"] == "SILVER", body
        assert body["hailo_info"]["detection_model"] == "ocr_det.hef"
        fonts = textgen.cjk_fonts()
        if fonts:  # (without a CJK font the Chinese half is tested in test_hailo_placement)
            page = textgen.lines_image(["欢迎光临北京"], fonts[0], size=30)
            r = httpx.post(
                f"{base}/v1/ocr/extract", timeout=60,
                files={"image": ("zh.png", textgen.encode(page.image), "image/png")},
                data={"languages": "zh"},
            )
            body = r.json()
            assert r.status_code == 200 and body["text"] == "欢迎光临北京", body
            assert body["hailo_info"]["recognition_model"] == "PP-OCRv6_rec_small.onnx"
    log = served.log
    assert served.returncode == 0, log[-3000:]
    assert "HailoRT 5.2.0" in log and "loaded ocr_det.hef: input (544, 960, 3)" in log
    assert "placement: recognition_zh runs on the CPU (no HEF configured" in log
    assert "placement: detection runs on the NPU" in log
