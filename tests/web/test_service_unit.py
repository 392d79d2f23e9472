"""Reading the installed unit as systemd would start it (``systemctl show`` + env files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from web import service_unit
from web.service_unit import load_view, parse_env_file, read_service


def test_env_file_as_systemd_reads_it():
    text = ("# comment\n; also\n\nHAILO_OCR_TOKEN=\"abc def\"\nHAILO_OCR_PORT=1\n"
            "HAILO_OCR_PORT=2\nnot an assignment\n")
    assert parse_env_file(text) == {"HAILO_OCR_TOKEN": "abc def", "HAILO_OCR_PORT": "2"}


@pytest.fixture
def unit(tmp_path, monkeypatch):
    """A systemctl that answers ``show`` as systemd does for an installed hailo-ocr."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("server:\n  host: 0.0.0.0\n  port: 11436\n")
    env = tmp_path / "env"
    env.write_text("HAILO_OCR_TOKEN=s3cret\nHAILO_OCR_PORT=12345\n")
    secret = tmp_path / "unreadable"
    show = "\n".join([
        "LoadState=loaded",
        "ActiveState=active",
        "User=hailo-ocr",
        "ExecStart={ path=/opt/hailo-ocr/venv/bin/hailo-ocr ; argv[]=/opt/hailo-ocr/venv/bin/"
        "hailo-ocr serve --cpu-fallback --host 127.0.0.2 ; ignore_errors=no ; start_time=[n/a]"
        " ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }",
        f'Environment=PYTHONUNBUFFERED=1 "HAILO_OCR_CONFIG={cfg}" HAILO_OCR_BACKEND=hailo',
        f"EnvironmentFiles={env} (ignore_errors=yes)",
        f"EnvironmentFiles={tmp_path}/absent (ignore_errors=yes)",
        f"EnvironmentFiles={secret} (ignore_errors=yes)",
    ])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "show.txt").write_text(show + "\n")
    script = bin_dir / "systemctl"
    script.write_text(f"#!/bin/sh\ncat {bin_dir}/show.txt\n")
    script.chmod(0o755)
    secret.mkdir()  # reading a directory fails like a file this user may not read
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("HAILO_OCR_PORT", "1")  # the shell's environment is not the service's
    return cfg


def test_the_unit_gives_the_config_environment_and_flags(unit):
    s = read_service()
    assert s.user == "hailo-ocr" and s.active_state == "active"
    assert s.argv[1:] == ("serve", "--cpu-fallback", "--host", "127.0.0.2")
    assert s.environment["HAILO_OCR_TOKEN"] == "s3cret"
    assert s.unreadable == (str(Path(unit).parent / "unreadable"),)
    view = load_view(None)
    assert view.cpu_fallback and view.config.backend.type == "hailo"
    assert (view.config.server.host, view.config.server.port) == ("127.0.0.2", 12345)
    assert view.config.server.auth_token == "s3cret"
    assert str(unit) in view.source


def test_without_the_unit_the_shell_decides(unit, tmp_path, monkeypatch):
    (tmp_path / "bin" / "show.txt").write_text("LoadState=not-found\n")
    assert read_service() is None
    view = load_view(None)
    assert view.settings is None and view.config.server.port == 1
    monkeypatch.setattr(service_unit.shutil, "which", lambda name: None)  # no systemd at all
    assert read_service() is None
