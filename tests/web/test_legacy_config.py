"""The original hailo-ocr's configuration loads as it is (issue 12, points 8-10;
web/legacy_config.py and web/settings.py).

``ORIGINAL_CONFIG`` has the keys and values of the original service's ``config.yaml``
(``gregm123456/raspberry_pi_hailo_ai_services``, ``system_services/hailo-ocr``); its
installer rendered that file to ``/etc/xdg/hailo-ocr/hailo-ocr.json`` and its unit pointed
the server there with ``OCR_CONFIG_PATH``. Both must load, every key honoured with its
original meaning or ignored with exactly one WARNING line naming it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import attrs
import httpx
import pytest
import trio
import yaml

from ocr.config import ConfigError
from tests.support import textgen
from tests.support.images import b64, text_image
from tests.support.paths import REPO
from tests.support.server import wait_listening, words_of
from web.settings import config_to_dict, load_config

ORIGINAL_CONFIG = """\
server:
  host: 0.0.0.0
  port: 11436
ocr:
  languages:
    - en
  enable_recognition: true
  det_threshold: 0.3
  rec_threshold: 0.5
hailo_models:
  detection_hef: "ocr_det.hef"
  recognition_hefs:
    en: "ocr.hef"
    zh: "ocr_chinese.hef"
  batch_size_det: 1
  batch_size_rec: 8
  priority: 0
  device: "/dev/hailo0"
processing:
  max_image_size: 4096
  jpeg_quality: 90
  enable_caching: false
  cache_ttl_seconds: 3600
  max_cache_size_mb: 500
resource_limits:
  memory_max: "2.5G"
  cpu_quota: "75%"
"""

#: The original's keys this service has no use for: each gets one WARNING naming it.
IGNORED = ["ocr.enable_recognition", "hailo_models.priority", "processing.jpeg_quality",
           "resource_limits.memory_max", "resource_limits.cpu_quota"]


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name == "hailo_ocr.config"]


def _assert_one_warning_per_ignored_key(lines: list[str]) -> None:
    for key in IGNORED:
        naming = [line for line in lines if key in line]
        assert len(naming) == 1, (key, lines)
    assert len(lines) == len(IGNORED), lines


@pytest.fixture
def original_yaml(tmp_path) -> Path:
    path = tmp_path / "hailo-ocr.yaml"
    path.write_text(ORIGINAL_CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def original_json(tmp_path) -> Path:
    """What the original installer rendered: the YAML dumped as JSON."""
    path = tmp_path / "xdg" / "hailo-ocr.json"
    path.parent.mkdir()
    path.write_text(json.dumps(yaml.safe_load(ORIGINAL_CONFIG), indent=2), encoding="utf-8")
    return path


def test_the_original_config_yaml_loads_with_its_meaning(original_yaml, caplog):
    caplog.set_level(logging.INFO, logger="hailo_ocr.config")
    c = load_config(original_yaml, env={})
    assert (c.server.host, c.server.port) == ("0.0.0.0", 11436)
    # Its ocr.languages was the request default; it served every recognition_hefs language.
    assert c.ocr.languages == ("en", "zh") and c.ocr.default_language == "en"
    assert (c.ocr.det_threshold, c.ocr.rec_threshold) == (0.3, 0.5)
    h = c.hailo_models
    assert h.detection_hef == "ocr_det.hef"
    assert dict(h.recognition_hefs) == {"en": "ocr.hef", "zh": "ocr_chinese.hef"}
    assert (h.batch_size_det, h.batch_size_rec) == (1, 8)
    assert h.device is None  # /dev/hailo0 is a device node, not a HailoRT device id
    assert c.processing.max_image_size == 4096  # pixels a side, as the original meant it
    assert c.processing.max_image_bytes == 20 * 2**20  # the byte limit keeps its default
    assert (c.cache.enabled, c.cache.ttl_s, c.cache.max_mb) == (False, 3600.0, 500.0)
    _assert_one_warning_per_ignored_key(_warnings(caplog))
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("processing.cache_ttl_seconds" in m and "cache.ttl_s" in m for m in infos)
    assert any("/dev/hailo0" in m for m in infos)
    assert any("recognition_hefs.zh" in m and "served" in m for m in infos)


def test_only_the_originals_file_loads_every_hef_language(tmp_path):
    """A file of this service loads what ``ocr.languages`` says; the original's keys mark a
    file as the original's, whose HEF languages are served (aliases not doubled)."""
    ours = "ocr:\n  languages: [en]\nhailo_models:\n  recognition_hefs: {en: ocr.hef, zh: z.hef}\n"
    assert _load_text(tmp_path, ours).ocr.languages == ("en",)
    theirs = ours + "processing:\n  jpeg_quality: 90\n"
    assert _load_text(tmp_path, theirs).ocr.languages == ("en", "zh")
    aliased = theirs.replace("languages: [en]", "languages: [ch_sim]")
    c = _load_text(tmp_path, aliased)
    assert (c.ocr.languages, c.ocr.default_language) == (("zh", "en"), "zh")


def test_its_rendered_json_loads_from_ocr_config_path(original_yaml, original_json, caplog):
    caplog.set_level(logging.WARNING, logger="hailo_ocr.config")
    from_json = load_config(env={"OCR_CONFIG_PATH": str(original_json)})
    _assert_one_warning_per_ignored_key(_warnings(caplog))
    from_yaml = load_config(original_yaml, env={})
    assert config_to_dict(from_json) == config_to_dict(from_yaml)
    assert from_json.base_dir == str(original_json.parent)  # relative HEFs found beside it


def test_hailo_ocr_config_and_the_flag_win_over_ocr_config_path(tmp_path, original_json):
    mine = tmp_path / "mine.yaml"
    mine.write_text("server:\n  port: 12000\n")
    flag = tmp_path / "flag.yaml"
    flag.write_text("server:\n  port: 12001\n")
    legacy = {"OCR_CONFIG_PATH": str(original_json)}
    assert load_config(env=legacy).server.port == 11436
    assert load_config(env={**legacy, "HAILO_OCR_CONFIG": str(mine)}).server.port == 12000
    assert load_config(flag, env={**legacy, "HAILO_OCR_CONFIG": str(mine)}).server.port == 12001
    # As in the original, a path that names no file stops the service with the reason.
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(env={"OCR_CONFIG_PATH": str(tmp_path / "missing.json")})
    broken = tmp_path / "broken.json"
    broken.write_text('{"server": ')
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(env={"OCR_CONFIG_PATH": str(broken)})


def _load_text(tmp_path, text: str, **env: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path, env=env)


def test_legacy_keys_are_never_refused_but_typos_in_new_keys_are(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="hailo_ocr.config")
    # The original's README configuration has the spell-corrector keys too.
    c = _load_text(tmp_path, "ocr:\n  use_corrector: true\n  dictionary_path: d.txt\n"
                             "resource_limits: {}\nprocessing:\n  jpeg_quality: 10\n")
    assert c.ocr.languages == ("en", "zh")
    lines = _warnings(caplog)
    for key in ("ocr.use_corrector", "ocr.dictionary_path", "resource_limits",
                "processing.jpeg_quality"):
        assert sum(key in line for line in lines) == 1, (key, lines)
    for typo, name in [("ocr:\n  languagez: [en]\n", "languagez"),
                       ("processing:\n  max_image_byte: 10\n", "max_image_byte"),
                       ("resource_limit:\n  memory_max: 1G\n", "resource_limit"),
                       ("cache:\n  enable: true\n", "enable")]:
        with pytest.raises(ConfigError, match=name):
            _load_text(tmp_path, typo)


def test_the_original_cache_keys_are_the_cache_section(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="hailo_ocr.config")
    c = _load_text(tmp_path, "processing:\n  enable_caching: true\n  cache_ttl_seconds: 60\n"
                             "  max_cache_size_mb: 10\n")
    assert (c.cache.enabled, c.cache.ttl_s, c.cache.max_mb) == (True, 60.0, 10.0)
    assert _warnings(caplog) == []
    # 0 meant unlimited: the cache stays bounded, and the operator is told.
    c = _load_text(tmp_path, "processing:\n  max_cache_size_mb: 0\n")
    assert c.cache.max_mb == 64.0
    assert sum("processing.max_cache_size_mb" in m for m in _warnings(caplog)) == 1
    caplog.clear()
    # The new key wins over the old one; the old one is named.
    c = _load_text(tmp_path, "processing:\n  enable_caching: true\ncache:\n  enabled: false\n")
    assert c.cache.enabled is False
    assert sum("processing.enable_caching" in m for m in _warnings(caplog)) == 1


def test_models_root_is_searched_first(tmp_path):
    c = _load_text(tmp_path, "hailo_models:\n  models_root: /srv/hefs\n")
    assert c.hailo_models.search_paths[0] == "/srv/hefs"
    assert c.hailo_models.search_paths[1:] == load_config(env={}).hailo_models.search_paths
    c = _load_text(tmp_path, "hailo_models:\n  models_root: /srv/hefs\n  search_paths: [/a]\n")
    assert c.hailo_models.search_paths == ("/srv/hefs", "/a")
    # Where the original's installer put its HEFs is searched by default.
    assert "/var/lib/hailo-ocr/resources/models/hailo10h" in load_config(
        env={}).hailo_models.search_paths


@pytest.mark.parametrize("value,expected", [
    ("/dev/hailo0", None), ("/dev/hailo1", None), (" /dev/hailo0 ", None),
    ("0000:01:00.0", "0000:01:00.0"), (None, None),
])
def test_a_device_node_means_the_hailo_device(tmp_path, value, expected):
    text = "hailo_models:\n  device: " + json.dumps(value) + "\n"
    assert _load_text(tmp_path, text).hailo_models.device == expected
    if value is not None:  # the environment variable too
        assert load_config(env={"HAILO_OCR_DEVICE": value}).hailo_models.device == expected


def test_language_aliases_in_the_configuration(tmp_path):
    c = _load_text(tmp_path, "ocr:\n  languages: [en, ch_sim, ch_tra]\n")
    assert c.ocr.languages == ("en", "zh") and c.ocr.default_language == "en"
    # The first language is the default when none is named (the original's meaning) ...
    c = _load_text(tmp_path, "ocr:\n  languages: [ch_sim, en]\n")
    assert c.ocr.languages == ("zh", "en") and c.ocr.default_language == "zh"
    assert load_config(env={"HAILO_OCR_LANGUAGES": "zh"}).ocr.default_language == "zh"
    # ... and an explicit one still decides.
    c = _load_text(tmp_path, "ocr:\n  languages: [zh, en]\n  default_language: english\n")
    assert c.ocr.default_language == "en"
    with pytest.raises(ConfigError, match="unknown_language"):
        _load_text(tmp_path, "ocr:\n  unknown_language: ignore\n")
    with pytest.raises(ConfigError, match="max_image_size"):
        _load_text(tmp_path, "processing:\n  max_image_size: 10\n")


# -- the Hailo backend with the original's device key (on the HailoRT stand-in) -----------


async def test_the_original_device_key_opens_the_npu(tmp_path, hailo_standin, hailo_files):
    """``device: /dev/hailo0`` handed to HailoRT as a device id stops the service at start
    (the stand-in refuses it as HailoRT does: an unknown device id, status 2); read as the
    original meant it, the service starts and reads."""
    from actors.messages import OcrRequest
    from actors.service import backend_factories, open_ocr_service
    from npu.hailo_backend import HailoBackend

    path = tmp_path / "hailo-ocr.yaml"
    # The original's file, on the stand-in's HEFs (same names as the original's) and with
    # the stand-in recogniser's character list, which the original's ocr.hef has built in.
    text = ORIGINAL_CONFIG.replace(
        'hailo_models:\n', f"hailo_models:\n  models_root: {hailo_files.det.parent}\n"
        f"  character_lists: {{en: {hailo_files.charset}}}\n")
    path.write_text(text + "backend:\n  type: hailo\n")
    config = load_config(path, env={})
    assert config.hailo_models.device is None

    raw = attrs.evolve(config, hailo_models=attrs.evolve(config.hailo_models,
                                                         device="/dev/hailo0"))
    from npu.placement import plan_placement

    factories = {**backend_factories(raw, plan_placement(raw)),
                 "npu": lambda ids: HailoBackend(raw, ids)}
    with pytest.raises(Exception, match="does not know the device id"):
        async with open_ocr_service(raw, factories):
            pass

    async with open_ocr_service(config) as service:
        # English on the NPU; the original's zh (its HEF absent here) on the CPU.
        assert service.info.kind == "hailo" and service.languages == ("en", "zh")
        result = await service.extract(OcrRequest(text_image(["SILVER"]), ("en",)))
    assert words_of(result.text) == ["SILVER"]


def test_the_originals_hefs_place_each_model(tmp_path):
    """The original named a Chinese HEF (``ocr_chinese.hef``) that a Pi rarely has. With
    ``zh`` turned on and no placement keys (the original had none), every model is
    ``auto``: English and detection on the NPU, Chinese on the CPU until its HEF is there."""
    from npu.placement import plan_placement

    for name in ("ocr_det.hef", "ocr.hef"):
        (tmp_path / name).write_bytes(b"HEF")
    path = tmp_path / "hailo-ocr.yaml"
    path.write_text(
        ORIGINAL_CONFIG.replace("    - en\n", "    - en\n    - zh\n")
        .replace("hailo_models:\n", f"hailo_models:\n  models_root: {tmp_path}\n")
        + "backend:\n  type: hailo\n"
    )
    config = load_config(path, env={})
    placement = plan_placement(config)
    assert {m.model_id: m.device for m in placement.models} == {
        "detection": "npu", "recognition_en": "npu", "recognition_zh": "cpu",
    }
    (zh,) = (m for m in placement.models if m.model_id == "recognition_zh")
    assert zh.fallback and "ocr_chinese.hef" in zh.reason
    assert placement.cpu_threads == config.onnx_models.intra_op_threads_with_npu
    (tmp_path / "ocr_chinese.hef").write_bytes(b"HEF")
    assert plan_placement(config).device_of("recognition_zh") == "npu"


# -- the real server, started the way the original's unit started it ----------------------


@pytest.mark.slow
async def test_the_service_starts_on_the_original_json_config(tmp_path, original_json):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILO_OCR_")}
    env.update(PYTHONPATH=str(REPO), OCR_CONFIG_PATH=str(original_json))
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "web.cli", "serve", "--host", "127.0.0.1", "--port", "0"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        url = await wait_listening(proc, log_path)
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            health = (await http.get("/health")).json()
            assert health["status"] == "ok" and health["languages_supported"] == ["en", "zh"]
            r = await http.post("/v1/ocr/extract", json={
                "image": b64(text_image(["HELLO"])), "languages": ["en"]})
            assert r.status_code == 200 and r.json()["text"] == "HELLO"
            fonts = textgen.cjk_fonts()
            if fonts:  # its recognition_hefs named zh: Chinese is read, not read as English
                page = textgen.encode(textgen.lines_image(["中文识别服务"], fonts[0], 40).image)
                r = await http.post("/v1/ocr/extract", json={
                    "image": b64(page), "languages": ["ch_sim"]})
                body = r.json()
                assert r.status_code == 200 and body["language"] == "zh", body
                assert body["text"] == "中文识别服务", body
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await proc.wait()
    log = log_path.read_text()
    assert proc.returncode == 0, log[-3000:]
    warning_lines = [line for line in log.splitlines() if " WARNING " in line]
    for key in IGNORED:
        assert sum(key in line for line in warning_lines) == 1, (key, warning_lines)
