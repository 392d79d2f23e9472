"""The deployment files: the example Pi configuration is a valid configuration, the unit's
command lines are ones the CLI accepts, and the unit carries its hardening."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import REPO

from ocr.config import load_config
from web.cli import build_parser

DEPLOY = REPO / "deploy"


def unit_settings(*paths: Path) -> dict[str, list[str]]:
    """Key -> values of systemd unit files read in order (drop-ins after the unit), with
    systemd's rule that an empty assignment clears the list."""
    out: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        lines = path.read_text().replace("\\\n", " ").splitlines()
        for line in lines:
            line = line.strip()
            if not line or line.startswith(("#", ";", "[")):
                continue
            key, _, value = line.partition("=")
            if value.strip():
                out[key.strip()].append(value.strip())
            else:
                out[key.strip()] = []
    return out


def serve_args(exec_start: str):
    argv = shlex.split(exec_start)
    assert argv[0] == "/opt/hailo-ocr/venv/bin/hailo-ocr"
    return build_parser().parse_args(argv[1:])


def test_pi_config_is_valid_and_safe():
    config = load_config(DEPLOY / "pi-config.yaml", env={})
    assert config.backend.type == "hailo"
    assert config.server.host == "0.0.0.0"
    assert config.server.auth_token, "listening beyond loopback needs a token"
    assert config.server.port == 11436
    hefs = [config.hailo_models.detection_hef, *config.hailo_models.recognition_hefs.values()]
    assert all(h.startswith("/var/lib/hailo-ocr/models/") for h in hefs)
    assert set(config.ocr.languages) <= set(config.hailo_models.recognition_hefs)
    assert "auth_token" in (DEPLOY / "install.sh").read_text()  # install.sh replaces it


def test_unit_runs_the_service_hardened():
    s = unit_settings(DEPLOY / "hailo-ocr.service")
    args = serve_args(s["ExecStart"][-1])
    assert args.command == "serve" and args.config == "/etc/hailo-ocr/config.yaml"
    assert s["User"] == ["hailo-ocr"]
    assert s["Restart"] == ["on-failure"]
    for key, want in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                      ("DevicePolicy", "closed"), ("ProtectHome", "yes")):
        assert s[key] == [want], key
    assert s["DeviceAllow"] == ["/dev/hailo0 rw"]
    assert "/var/lib/hailo-ocr" in " ".join(s["ReadWritePaths"])
    assert s["MemoryMax"] and s["CPUQuota"]
    assert s["CapabilityBoundingSet"] == []  # no capabilities at all


def test_cpu_drop_in_switches_the_backend():
    s = unit_settings(DEPLOY / "hailo-ocr.service", DEPLOY / "hailo-ocr.service.d" / "cpu.conf")
    assert len(s["ExecStart"]) == 1  # the drop-in cleared the unit's ExecStart first
    args = serve_args(s["ExecStart"][0])
    assert args.backend == "onnx" and args.config == "/etc/hailo-ocr/config.yaml"
    assert s["DeviceAllow"] == []
    assert s["NoNewPrivileges"] == ["yes"]  # the hardening stays


def test_install_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(DEPLOY / "install.sh")], check=True)
    text = (DEPLOY / "install.sh").read_text()
    for path in ("deploy/hailo-ocr.service", "deploy/pi-config.yaml",
                 "deploy/hailo-ocr.service.d/cpu.conf"):
        assert path in text and (REPO / path).is_file()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path):
    shutil.copy(DEPLOY / "hailo-ocr.service", tmp_path)
    shutil.copytree(DEPLOY / "hailo-ocr.service.d", tmp_path / "hailo-ocr.service.d")
    r = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "hailo-ocr.service")],
        capture_output=True, text=True, timeout=60,
        env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"},
    )
    # The only complaint allowed is that the venv is not installed on this machine.
    problems = [
        line for line in (r.stdout + r.stderr).splitlines()
        if line.strip() and "/opt/hailo-ocr/venv/bin/hailo-ocr" not in line
    ]
    assert not problems, problems
