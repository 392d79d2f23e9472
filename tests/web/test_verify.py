"""``hailo-ocr verify`` against a real server on the CPU backend: every check, the token,
and what it says to do; and the sample image it sends is read back exactly."""

from __future__ import annotations

import argparse
import grp
import os
import re

import attrs
import trio

from tests.support.server import fast, running_server
from web import verify
from web.service_unit import ServiceView
from web.settings import load_config


def args(url: str, token: str | None = None, **kw) -> argparse.Namespace:
    base = dict(config=None, unit="hailo-ocr.service", no_unit=True, root=None, url=url,
                token=token, wait=0.0)
    return argparse.Namespace(**{**base, **kw})


def run_verify(a: argparse.Namespace, capsys) -> tuple[int, str]:
    code = verify.run(a)
    return code, capsys.readouterr().out


async def test_all_checks_pass_with_the_token_and_fail_without(config, capsys):
    cfg = fast(config, server={"auth_token": "tok"})
    async with running_server(cfg) as server:
        code, out = await trio.to_thread.run_sync(run_verify, args(server.url, "tok"), capsys)
        assert code == 0, out
        assert "ok    extract  read 'HAILO OCR VERIFY 2468'" in out
        assert "ok    ready    ready" in out and "skip  device" in out
        # The models as the service placed them (GET /models): each with its device.
        assert re.search(r"ok +models +detection=\S+ on cpu, recognition_en=\S+ on cpu", out)
        code, out = await trio.to_thread.run_sync(run_verify, args(server.url, "nope"), capsys)
    assert code == 1
    # Refused where the token is first needed: /health/ready, or (where readiness is
    # public) /models and the extract.
    assert "the service wants a bearer token and this one was refused" in out
    assert "fix: pass --token TOKEN" in out and "ok    extract" not in out


async def test_nothing_listening_is_a_failure_with_the_fix(capsys):
    code, out = await trio.to_thread.run_sync(run_verify, args("http://127.0.0.1:9"), capsys)
    assert code == 1
    assert "fail  health" in out and "journalctl -u hailo-ocr" in out


def test_checks_are_a_list_to_extend(config, monkeypatch, capsys):
    seen = []

    def check_manager(ctx: verify.Context) -> verify.Check:
        seen.append(ctx.base_url)
        return verify.Check("manager", "warn", "not running", "sudo systemctl start it")

    monkeypatch.setattr(verify, "CHECKS", [check_manager])
    code, out = run_verify(args("http://127.0.0.1:9"), capsys)
    assert code == 0 and seen == ["http://127.0.0.1:9"]
    assert "warn  manager  not running" in out and "fix: sudo systemctl start it" in out


def test_the_npu_checks_say_what_is_missing(tmp_path, capsys):
    cfg = load_config(env={}, overrides={
        "backend": {"type": "hailo"}, "hailo_models": {"search_paths": [str(tmp_path)]}})
    ctx = verify.Context(view=ServiceView(cfg, None, True, "test"), base_url="http://x",
                         token=None, root=str(tmp_path / "root"))
    ctx.health = {"backend": "onnx"}
    models = verify.check_models(ctx)
    assert models.status == "warn" and "ocr_det.hef, ocr.hef not found" in models.detail
    assert models.fix == "sudo /opt/hailo-ocr/venv/bin/hailo-ocr models fetch --restart"
    device = verify.check_device(ctx)
    assert device.status == "warn" and "runs on the CPU" in device.detail
    ctx.health = {"backend": "hailo"}
    assert verify.check_device(ctx).status == "fail"  # NPU wanted, none there, not on CPU


def test_base_url_from_a_wildcard_host(config):
    view = ServiceView(attrs.evolve(config, server=attrs.evolve(
        config.server, host="0.0.0.0", port=11436)), None, False, "")
    assert verify.base_url(view) == "http://127.0.0.1:11436"
    view = ServiceView(attrs.evolve(config, server=attrs.evolve(config.server, host="::")),
                       None, False, "")
    assert verify.base_url(view) == "http://[::1]:11436"


# --- through hailo-device-manager (its protocol-faithful double, on the HailoRT stand-in) ----


def _manager_config(tmp_path, hailo_files, socket_path: str, backend: str = "auto"):
    from hailo_testing import write_config_file

    path = write_config_file(tmp_path / "hailo-ocr.yaml", hailo_files)
    path.write_text(path.read_text() + f"backend:\n  type: {backend}\n"
                    f"device_manager:\n  socket: {socket_path}\n")
    return path


async def test_through_the_manager_verify_checks_the_manager(
    tmp_path, hailo_files, device_manager, capsys
):
    path = _manager_config(tmp_path, hailo_files, device_manager.socket_path)
    cfg = fast(load_config(path, env={}))
    async with running_server(cfg) as server:
        code, out = await trio.to_thread.run_sync(
            run_verify, args(server.url, config=str(path)), capsys)
    assert code == 0, out
    assert "backend device-manager" in out
    assert (f"ok    manager  hailo-device-manager at {device_manager.socket_path}: device "
            "0000:01:00.0, 0 other job(s) queued, 1 model set(s) loaded, ours among them") in out
    assert "skip  device   hailo-device-manager holds it" in out


def test_the_manager_check_says_what_is_wrong(tmp_path, hailo_files, device_manager):
    from web.service_unit import ServiceSettings

    path = _manager_config(tmp_path, hailo_files, device_manager.socket_path, "device-manager")
    view = ServiceView(load_config(path, env={}), None, True, "test")
    ctx = verify.Context(view=view, base_url="http://x", token=None)
    check = verify.check_device_manager(ctx)
    assert check.status == "ok" and "ours" not in check.detail  # nothing loaded yet
    # The service's user may not use the socket (mode 0660, root's group).
    nobody = ServiceSettings("hailo-ocr.service", True, "active", "nobody", (), {})
    check = verify.check_device_manager(attrs.evolve(ctx, view=attrs.evolve(view,
                                                                             settings=nobody)))
    assert check.status == "fail" and "nobody may not use" in check.detail
    group = grp.getgrgid(os.stat(device_manager.socket_path).st_gid).gr_name
    assert check.fix == f"sudo usermod -aG {group} nobody && sudo systemctl restart hailo-ocr"
    # A manager that is not running.
    device_manager.stop()
    check = verify.check_device_manager(ctx)
    assert check.status == "fail" and "does not exist" in check.detail
    assert "sudo systemctl enable --now hailo-device-manager" in check.fix
    # backend auto on a host without the manager: not the path.
    view = ServiceView(load_config(_manager_config(tmp_path, hailo_files, "/nonexistent.sock"),
                                   env={}), None, True, "test")
    assert verify.check_device_manager(verify.Context(view=view, base_url="http://x",
                                                       token=None)).status == "skip"
