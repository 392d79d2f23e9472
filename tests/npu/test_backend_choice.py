"""``backend.type`` and ``auto`` resolved (npu/backend_choice.py)."""

from __future__ import annotations

import attrs
import pytest

from npu.backend_choice import choose_backend
from ocr.config import ConfigError
from web.settings import load_config


def _auto(config, sock):
    return attrs.evolve(
        config, backend=attrs.evolve(config.backend, type="auto"),
        device_manager=attrs.evolve(config.device_manager, socket=str(sock)),
    )


def test_auto_prefers_the_manager_then_the_npu_then_the_cpu(config, tmp_path):
    root = str(tmp_path)  # a system mounted there
    sock, node = tmp_path / "run" / "device.sock", tmp_path / "dev" / "hailo0"
    cfg = _auto(config, "/run/device.sock")
    choice = choose_backend(cfg, root=root)
    assert choice.kind == "onnx" and "no Hailo NPU" in choice.reason
    node.parent.mkdir()
    node.touch()
    choice = choose_backend(cfg, root=root)
    assert choice.kind == "hailo"
    assert "no hailo-device-manager socket (/run/device.sock)" in choice.reason
    sock.parent.mkdir()
    sock.touch()
    choice = choose_backend(cfg, root=root)
    assert choice.kind == "device-manager" and "socket /run/device.sock exists" in choice.reason


def test_auto_finds_the_socket_the_daemon_is_told_to_use(config, tmp_path):
    sock = tmp_path / "elsewhere.sock"
    sock.touch()
    cfg = attrs.evolve(config, backend=attrs.evolve(config.backend, type="auto"))
    choice = choose_backend(cfg, environ={"HAILO_DEVICE_SOCKET": str(sock)})
    assert choice.kind == "device-manager"


@pytest.mark.parametrize("kind", ["onnx", "hailo", "device-manager"])
def test_a_named_backend_is_taken_as_named(config, kind):
    cfg = attrs.evolve(config, backend=attrs.evolve(config.backend, type=kind))
    assert choose_backend(cfg) == choose_backend(cfg, root="/nonexistent")
    assert choose_backend(cfg).kind == kind


def test_the_configuration_names_the_accepted_types():
    assert load_config(env={"HAILO_OCR_BACKEND": "device-manager"}).backend.type == "device-manager"
    with pytest.raises(ConfigError) as info:
        load_config(env={"HAILO_OCR_BACKEND": "npu"})
    assert "onnx, hailo, device-manager, auto" in str(info.value)
