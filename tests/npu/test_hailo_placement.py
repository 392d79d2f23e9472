"""Chinese on a Pi that has only the English HEFs, through the HailoRT stand-in.

The host is configured as a Pi usually is: ``backend.type: hailo``, English and Chinese,
and only ``ocr_det.hef`` and ``ocr.hef`` in the model directory. Placement then puts
detection and English recognition on the NPU (the stand-in) and Chinese recognition on
the CPU (the shipped ONNX model). The Chinese lines must read exactly as the CPU default
reads the same detected boxes: the crops the service cut are captured as it runs, and the
reference reads those very crops the CPU default's way (its backend and spec, the
pipeline's own resizing, padding and decoding). English is still read on the NPU, mixed
concurrent load keeps every result with its request, and /models, /health and /metrics
say where each model runs.
"""

from __future__ import annotations

import base64
import random
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
import trio

from tests.support import textgen
from tests.support.config import with_changes
from tests.support.paths import STANDIN

sys.path.insert(0, str(STANDIN))

from hailo_platform import _standin  # noqa: E402  (the stand-in)

import actors.orchestrator as orchestrator_module  # noqa: E402
from actors.batcher import _pack  # noqa: E402
from actors.messages import Done, LineRecognised, OcrRequest, OcrResult  # noqa: E402
from actors.service import OcrService, open_ocr_service  # noqa: E402
from npu.backend import recognition_id  # noqa: E402
from npu.onnx_backend import OnnxBackend  # noqa: E402
from ocr.recognition import ctc_greedy_decode  # noqa: E402
from web.app import create_app  # noqa: E402

pytestmark = pytest.mark.usefixtures("hailo_standin")

#: Chinese pictures of devdata: a document, a mixed-script sign and web banners (MTWI).
DEVDATA_CHINESE = (
    "rapidocr_tests/ch_en_num.jpg", "rapidocr_tests/ch_doc_server.png",
    "mtwi_dev/images/mtwi_001.jpg", "mtwi_dev/images/mtwi_011.jpg",
    "mtwi_dev/images/mtwi_027.jpg",
)


@pytest.fixture
def pi(config, hailo_files):
    """A Pi's configuration: the NPU backend, English and Chinese, and a model directory
    that holds only ocr_det.hef and ocr.hef (with the character list of the stand-in's
    English model)."""
    models = hailo_files.det.parent
    return with_changes(
        config,
        server={"request_timeout_s": 120.0},
        backend={"type": "hailo", "restart_backoff_s": 0.05, "restart_backoff_max_s": 0.2},
        hailo_models={
            "detection_hef": hailo_files.det.name,
            "recognition_hefs": {"en": hailo_files.rec.name},
            "character_lists": {"en": hailo_files.charset.name},
            "search_paths": (str(models),),
            "timeout_ms": 20000,
        },
    )


@pytest.fixture
def cjk_font() -> Path:
    fonts = textgen.cjk_fonts()
    if not fonts:
        pytest.skip("no CJK font installed (looked for " + ", ".join(textgen.CJK_FONTS)
                    + "); install fonts-noto-cjk to test Chinese")
    return fonts[0]


@pytest.fixture
def captured_crops(monkeypatch) -> list[list[np.ndarray]]:
    """The crops each request's detected boxes gave, exactly as the service cut them."""
    seen: list[list[np.ndarray]] = []
    original = orchestrator_module._bound_and_crop

    def spy(img, quads, scores, s):
        quads, crops = original(img, quads, scores, s)
        seen.append([c.copy() for c in crops])
        return quads, crops

    monkeypatch.setattr(orchestrator_module, "_bound_and_crop", spy)
    return seen


class CpuDefaultReader:
    """What the CPU default (``backend.type: onnx``, every core) reads from given crops:
    its own backend and spec, the orchestrator's resizing, the batcher's padding, CTC
    decoding. One crop a call: a dynamic-width line's text does not depend on its batch."""

    def __init__(self, config, language: str) -> None:
        self.model_id = recognition_id(language)
        self.backend = OnnxBackend(config, frozenset({self.model_id}))
        self.spec = self.backend.load().model(self.model_id)
        self.threshold = config.ocr.rec_threshold

    async def read(self, crops: list[np.ndarray]) -> dict[int, str]:
        """Index -> text of the lines the service would keep."""
        pieces, owners, widths = orchestrator_module._rec_inputs(crops, self.spec)
        assert widths is not None and owners == list(range(len(crops)))
        kept = {}
        for i, (piece, width) in enumerate(zip(pieces, widths, strict=True)):
            tensor, _ = _pack(self.spec, [piece], width)
            probs = await self.backend.infer(self.model_id, tensor)
            text, conf = ctc_greedy_decode(probs, self.spec.charset)[0]
            if text.strip() and conf >= self.threshold:
                kept[i] = text
        return kept

    def close(self) -> None:
        self.backend.close()


@asynccontextmanager
async def cpu_default_reader(config, language: str) -> AsyncIterator[CpuDefaultReader]:
    reader = await trio.to_thread.run_sync(CpuDefaultReader, config, language)
    try:
        yield reader
    finally:
        reader.close()


async def lines_by_index(
    svc: OcrService, image: bytes, language: str
) -> tuple[dict[int, str], OcrResult]:
    """Stream one request: index -> text of every line recognised (and kept), and the
    result (lines in reading order)."""
    send, recv = trio.open_memory_channel(1000)
    async with send:
        await svc.stream(OcrRequest(image, (language,)), send)
    events = [e async for e in recv]
    assert isinstance(events[-1], Done), events[-1]
    lines = {e.index: e.region.text for e in events if isinstance(e, LineRecognised)}
    return lines, events[-1].result


def chinese_page(font: Path, seed: int, n_lines: int = 4) -> tuple[tuple[str, ...], bytes]:
    rng = random.Random(seed)
    lines = [textgen.random_line(rng, textgen.CHINESE_WORDS, rng.randint(2, 4), sep="")
             for _ in range(n_lines)]
    sample = textgen.lines_image(lines, font, size=30)
    return sample.lines, textgen.encode(sample.image)


def english_page(seed: int, n_lines: int = 3) -> tuple[tuple[str, ...], bytes]:
    rng = random.Random(seed)
    fonts = textgen.latin_fonts()  # [] -> OpenCV's Hershey fonts
    lines = [textgen.random_line(rng, textgen.ENGLISH_WORDS, rng.randint(2, 4))
             for _ in range(n_lines)]
    sample = textgen.lines_image(lines, fonts[0] if fonts else None, size=30)
    return sample.lines, textgen.encode(sample.image)


def words(s: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9]+", s)


def squash(s: str) -> str:
    return "".join(s.split())


# --- Chinese on the CPU, English on the NPU ------------------------------------------------


async def test_chinese_reads_as_the_cpu_default_reads_the_same_boxes(
    pi, config, hailo_files, cjk_font, captured_crops
):
    pages = [chinese_page(cjk_font, seed) for seed in (1, 2)]
    async with open_ocr_service(pi) as svc, cpu_default_reader(config, "zh") as reference:
        assert {m: p.device for m, p in svc.models.models.items()} == {
            "detection": "npu", "recognition_en": "npu", "recognition_zh": "cpu",
        }
        npu_rec_jobs = _standin.jobs_run(str(hailo_files.rec))
        for truth, image in pages:
            got, result = await lines_by_index(svc, image, "zh")
            crops = captured_crops.pop()
            assert len(crops) == len(truth)
            assert got == await reference.read(crops)
            # ... and that is the text drawn, line for line.
            assert [squash(t) for t in result.lines] == [squash(t) for t in truth]
        # Not one Chinese line went to the NPU's English model; detection did run there.
        assert _standin.jobs_run(str(hailo_files.rec)) == npu_rec_jobs
        assert _standin.jobs_run(str(hailo_files.det)) >= len(pages)
        assert svc.device_statistics()["cpu"].jobs_run >= len(pages)


@pytest.mark.devdata
@pytest.mark.slow
async def test_chinese_devdata_images_read_as_the_cpu_default_reads_the_same_boxes(
    pi, config, devdata, captured_crops
):
    async with open_ocr_service(pi) as svc, cpu_default_reader(config, "zh") as reference:
        lines_read = 0
        for name in DEVDATA_CHINESE:
            got, _ = await lines_by_index(svc, (devdata / name).read_bytes(), "zh")
            crops = captured_crops.pop()
            assert got == await reference.read(crops), name
            lines_read += sum(1 for t in got.values() if any("\u4e00" <= c <= "\u9fff" for c in t))
    assert lines_read >= 15  # the pictures really have Chinese text, and it was read


async def test_english_is_still_read_on_the_npu(pi, hailo_files):
    truth, image = english_page(3)
    async with open_ocr_service(pi) as svc:
        before = _standin.jobs_run(str(hailo_files.rec))
        cpu_jobs = svc.device_statistics()["cpu"].jobs_run
        result = await svc.extract(OcrRequest(image, ("en",)))
        # Its words (the fixed-width recogniser may add a stray punctuation mark).
        assert words(result.text) == words(" ".join(truth)), result.text
        assert _standin.jobs_run(str(hailo_files.rec)) > before
        assert svc.device_statistics()["cpu"].jobs_run == cpu_jobs  # the CPU was not asked
        assert svc.info.kind == "hailo" and svc.info.device == "0000:01:00.0"


async def test_concurrent_english_and_chinese_equal_sequential(pi, cjk_font):
    """Both languages at once share detection on the NPU and split at recognition: each
    result is the one its image gets alone."""
    images = [(("zh",), chinese_page(cjk_font, 10 + k, n_lines=2)[1]) for k in range(3)]
    images += [(("en",), english_page(20 + k, n_lines=2)[1]) for k in range(3)]
    images = [images[i] for i in (0, 3, 1, 4, 2, 5)]  # alternate the languages
    async with open_ocr_service(pi) as svc:
        sequential = [(await svc.extract(OcrRequest(img, langs))).text for langs, img in images]
        concurrent: dict[int, str] = {}

        async def one(k, langs, img):
            concurrent[k] = (await svc.extract(OcrRequest(img, langs))).text

        async with trio.open_nursery() as nursery:
            for k, (langs, img) in enumerate(images):
                nursery.start_soon(one, k, langs, img)
    assert [concurrent[k] for k in range(len(images))] == sequential
    assert all(sequential)
    for (langs, _), text in zip(images, sequential, strict=True):
        has_cjk = any("\u4e00" <= c <= "\u9fff" for c in text)
        assert has_cjk == (langs == ("zh",)), text


# --- what an operator sees ------------------------------------------------------------------


def _sample(metrics_text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{want}}} not in /metrics")


async def test_models_health_and_metrics_say_where_each_model_runs(pi, hailo_files, cjk_font):
    app = create_app(pi)
    _, image = chinese_page(cjk_font, 5, n_lines=1)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        r = await client.post("/v1/ocr/extract", json={
            "image": base64.b64encode(image).decode(), "languages": ["zh"],
        })
        body = await r.get_json()
        assert r.status_code == 200 and body["text"], body
        assert body["hailo_info"]["detection_model"] == "ocr_det.hef"
        assert body["hailo_info"]["recognition_model"] == "PP-OCRv6_rec_small.onnx"

        models = {m["id"]: m for m in (await (await client.get("/models")).get_json())["data"]}
        assert {k: (m["device"], m["status"]) for k, m in models.items()} == {
            "detection": ("npu", "loaded"), "recognition_en": ("npu", "loaded"),
            "recognition_zh": ("cpu", "loaded"),
        }
        assert models["detection"]["file"] == str(hailo_files.det.resolve())
        assert models["recognition_en"]["file"] == str(hailo_files.rec.resolve())
        assert models["recognition_zh"]["file"].endswith("PP-OCRv6_rec_small.onnx")

        health = await (await client.get("/health")).get_json()
        assert health["backend"] == "hailo" and health["languages_supported"] == ["en", "zh"]
        assert health["devices"] == [
            {"device": "npu", "state": "ready", "models": ["detection", "recognition_en"],
             "restarts": 0},
            {"device": "cpu", "state": "ready", "models": ["recognition_zh"], "restarts": 0},
        ]

        text = (await (await client.get("/metrics")).get_data()).decode()
        assert _sample(text, "hailo_ocr_device_ready", device="npu") == 1
        assert _sample(text, "hailo_ocr_device_ready", device="cpu") == 1
        assert _sample(text, "hailo_ocr_device_jobs_total", device="npu", result="run") >= 1
        assert _sample(text, "hailo_ocr_device_jobs_total", device="cpu", result="run") >= 1
        assert _sample(text, "hailo_ocr_device_restarts_total", device="cpu") == 0
