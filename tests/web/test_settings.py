"""The whole configuration (web/settings.py) is composed of each layer's own sections, as
ARCHITECTURE.md's table says, and a configuration error is the operator's, not a
client's."""

from __future__ import annotations

import attrs
import pytest

from actors.config import POLICIES
from ocr.config import ConfigError
from ocr.errors import OcrInputError
from web.settings import Config, load_config

#: Section -> the module its class lives in (ARCHITECTURE.md, "Configuration").
SECTION_HOMES = {
    "server": "web.config",
    "cache": "web.config",
    "ocr": "ocr.config",
    "processing": "ocr.config",
    "tiling": "ocr.tiling",
    "backend": "npu.config",
    "onnx_models": "npu.config",
    "hailo_models": "npu.config",
    "models": "npu.config",
    "device_manager": "npu.config",
    "batching": "actors.config",
}


def test_each_section_is_its_layers_class():
    keys = {f.name for f in attrs.fields(Config) if not f.metadata.get("internal")}
    assert keys == set(SECTION_HOMES)
    config = load_config(env={})
    for section, home in SECTION_HOMES.items():
        assert type(getattr(config, section)).__module__ == home, section


def test_a_config_error_is_not_a_bad_request():
    assert not issubclass(ConfigError, OcrInputError)
    with pytest.raises(ConfigError) as info:
        load_config(env={"HAILO_OCR_BATCH_POLICY": "eager"})
    assert str(info.value) == "batching.policy must be 'adaptive' or 'window'"
    assert info.value.code == "invalid_config"


@pytest.mark.parametrize("policy", POLICIES)
def test_every_batching_policy_loads(policy):
    assert load_config(env={"HAILO_OCR_BATCH_POLICY": policy}).batching.policy == policy
