"""Where each model runs (npu/placement.py): a pure function of the configuration and of
the HEF files on disk, checked here against real files in a temporary model directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from npu.errors import ModelLoadError
from npu.placement import CPU, NPU, plan_placement, wanted_model_ids
from ocr.config import ConfigError
from tests.support.config import with_changes
from web.settings import load_config


@pytest.fixture
def models_dir(tmp_path) -> Path:
    """A Pi's model directory holding only Hailo's two PaddleOCR HEFs."""
    d = tmp_path / "models"
    d.mkdir()
    for name in ("ocr_det.hef", "ocr.hef"):
        (d / name).write_bytes(b"HEF")
    return d


@pytest.fixture
def pi(config, models_dir):
    """backend.type hailo, English and Chinese, HEFs looked up in the model directory."""
    return with_changes(
        config, backend={"type": "hailo"},
        hailo_models={"search_paths": (str(models_dir),)},
    )


def devices(placement) -> dict[str, str]:
    return {m.model_id: m.device for m in placement.models}


def test_cpu_default_puts_everything_on_the_cpu_with_all_cores(config):
    placement = plan_placement(config)
    assert devices(placement) == {"detection": CPU, "recognition_en": CPU, "recognition_zh": CPU}
    assert placement.devices == (CPU,)
    assert placement.cpu_threads == 0  # onnx_models.intra_op_threads: one per core
    assert all(m.reason == "backend.type is onnx" for m in placement.models)


def test_a_pi_with_only_the_english_hefs_reads_chinese_on_the_cpu(pi, models_dir):
    placement = plan_placement(pi)
    assert devices(placement) == {
        "detection": NPU, "recognition_en": NPU, "recognition_zh": CPU,
    }
    assert placement.devices == (NPU, CPU)
    assert placement.model_ids(NPU) == {"detection", "recognition_en"}
    assert placement.model_ids(CPU) == {"recognition_zh"}
    by_id = {m.model_id: m for m in placement.models}
    assert by_id["detection"].hef == str(models_dir / "ocr_det.hef")
    assert str(models_dir / "ocr.hef") in by_id["recognition_en"].reason
    assert by_id["recognition_zh"].reason == "no HEF configured in hailo_models.recognition_hefs.zh"
    assert not by_id["recognition_zh"].fallback  # nothing was missing: zh has no HEF at all
    assert placement.cpu_threads == 2  # sharing the host with the NPU's pipeline work


def test_a_configured_hef_that_is_missing_falls_back_to_the_cpu_and_says_where_it_looked(
    pi, models_dir
):
    (models_dir / "ocr_det.hef").unlink()
    placement = plan_placement(pi)
    det = placement.models[0]
    assert (det.model_id, det.device, det.fallback) == ("detection", CPU, True)
    assert "ocr_det.hef not found; looked in:" in det.reason and str(models_dir) in det.reason
    assert placement.device_of("recognition_en") == NPU


def test_npu_means_start_only_with_the_hef(pi, models_dir):
    npu_zh = with_changes(pi, models={"placement": {"recognition_zh": "npu"}})
    with pytest.raises(ModelLoadError, match="recognition_zh is npu, but .*recognition_hefs.zh"):
        plan_placement(npu_zh)
    (models_dir / "ocr.hef").unlink()
    npu_en = with_changes(pi, models={"placement": {"recognition_en": "npu"}})
    with pytest.raises(ModelLoadError, match="recognition_en is npu, but model file ocr.hef not"):
        plan_placement(npu_en)


def test_cpu_keeps_a_model_off_the_npu_whatever_hefs_there_are(pi):
    placement = plan_placement(with_changes(pi, models={"placement": {"recognition_en": "cpu"}}))
    assert devices(placement)["recognition_en"] == CPU
    assert placement.models[1].reason == "models.placement.recognition_en is cpu"


def test_the_classifier_always_runs_on_the_cpu(pi):
    with_cls = with_changes(pi, ocr={"use_angle_cls": True})
    assert devices(plan_placement(with_cls))["classifier"] == CPU
    with pytest.raises(ConfigError, match="classifier has no compiled model"):
        plan_placement(with_changes(with_cls, models={"placement": {"classifier": "npu"}}))


def test_a_hailo_host_with_no_hef_at_all_refuses_to_start(pi, models_dir):
    for f in models_dir.iterdir():
        f.unlink()
    with pytest.raises(ModelLoadError, match="no model can run on the NPU.*backend.type: onnx"):
        plan_placement(pi)


def test_contradictions_are_configuration_errors(config, pi):
    with pytest.raises(ConfigError, match="puts detection on the NPU, but the backend is onnx"):
        plan_placement(with_changes(config, models={"placement": {"detection": "npu"}}))
    with pytest.raises(ConfigError, match="unknown model id.*recognition_fr.*recognition_zh"):
        plan_placement(with_changes(pi, models={"placement": {"recognition_fr": "cpu"}}))


def test_placement_is_read_from_yaml_and_checked(tmp_path, models_dir):
    good = tmp_path / "pi.yaml"
    good.write_text(
        "backend: {type: hailo}\n"
        f"hailo_models: {{search_paths: [{models_dir}]}}\n"
        "models:\n  placement: {detection: auto, recognition_en: cpu, recognition_zh: cpu}\n"
        "onnx_models: {intra_op_threads_with_npu: 3}\n",
        encoding="utf-8",
    )
    placement = plan_placement(load_config(good, env={}))
    assert devices(placement) == {
        "detection": NPU, "recognition_en": CPU, "recognition_zh": CPU,
    }
    assert placement.cpu_threads == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: {placement: {detection: gpu}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="models.placement.detection must be one of auto, npu"):
        load_config(bad, env={})


def test_relative_hefs_are_found_next_to_the_config_file_first(tmp_path, models_dir):
    beside = tmp_path / "ocr_det.hef"
    beside.write_bytes(b"HEF")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        f"backend: {{type: hailo}}\nhailo_models: {{search_paths: [{models_dir}]}}\n",
        encoding="utf-8",
    )
    placement = plan_placement(load_config(cfg_file, env={}))
    assert placement.models[0].hef == str(beside.resolve())


def test_wanted_models_follow_the_languages(config):
    cfg = with_changes(config, ocr={"languages": ("zh",), "default_language": "zh"})
    assert wanted_model_ids(cfg) == ("detection", "recognition_zh")
