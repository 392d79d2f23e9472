"""The deployment: the unit files are valid, and deploy/install.sh and deploy/uninstall.sh
do what the README says on a pretend host.

The pretend host (tests/support/sandbox.py) is a root directory plus fake ``systemctl``,
user tools and ``python3 -m venv`` that record every call; its ``systemctl`` really starts
the installed unit's command with the unit's environment, so the installed service runs
(on the CPU: no NPU here) and the installer's own readiness wait and ``hailo-ocr verify``
run against it, token and all. The HEF downloads go to a local HTTP server that records
what was asked of it (or to a closed port, for an offline Pi).
"""

from __future__ import annotations

import grp
import json
import os
import shlex
import shutil
import socket
import stat
import subprocess
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from npu.backend_choice import NPU_BACKENDS, BackendChoice
from npu.placement import plan_placement
from ocr.config import ConfigError
from tests.support.paths import REPO
from tests.support.sandbox import ResourceServer, SandboxHost
from web.cli import build_parser
from web.settings import load_config

DEPLOY = REPO / "deploy"
UNIT = "hailo-ocr.service"
MUTATING = {"restart", "start", "stop", "enable", "disable", "daemon-reload", "try-restart"}


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


# --- the files ------------------------------------------------------------------------------


def test_pi_config_is_valid_and_open_like_the_original():
    config = load_config(DEPLOY / "pi-config.yaml", env={})
    assert config.backend.type == "auto"  # the manager where it runs, else the NPU
    assert config.server.host == "0.0.0.0" and config.server.port == 11436
    assert config.server.auth_token is None  # install.sh --token turns it on
    hm = config.hailo_models
    assert (hm.detection_hef, hm.recognition_hefs["en"]) == ("ocr_det.hef", "ocr.hef")
    assert "/var/lib/hailo-ocr/resources/models/hailo10h" in hm.search_paths  # the original's
    assert hm.group_id == "SHARED"
    # On a Pi (auto picks one of the NPU backends there) with the HEFs found: English on
    # the NPU, Chinese on the CPU beside it, whichever NPU backend runs them.
    for kind in NPU_BACKENDS:
        placement = plan_placement(config, find=Path, backend=BackendChoice(kind, "on a Pi"))
        assert {m.model_id: m.device for m in placement.models} == {
            "detection": "npu", "recognition_en": "npu", "recognition_zh": "cpu",
        }
        assert placement.cpu_threads == 2


def test_unit_runs_the_service_hardened():
    s = unit_settings(DEPLOY / UNIT)
    args = serve_args(s["ExecStart"][-1])
    assert args.command == "serve" and args.cpu_fallback and args.config is None
    assert "HAILO_OCR_CONFIG=/etc/hailo-ocr/config.yaml" in s["Environment"]
    # hailo-device-manager's settings first (its socket), ours last: they win.
    assert s["EnvironmentFile"] == ["-/etc/hailo/device-manager.env", "-/etc/hailo-ocr/env"]
    assert s["User"] == ["hailo-ocr"]
    assert s["Restart"] == ["on-failure"]
    for key, want in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                      ("DevicePolicy", "closed"), ("ProtectHome", "yes"), ("PrivateTmp", "yes")):
        assert s[key] == [want], key
    assert s["DeviceAllow"] == ["/dev/hailo0 rw"]
    assert "/var/lib/hailo-ocr" in " ".join(s["ReadWritePaths"])
    assert s["MemoryMax"] and s["CPUQuota"]
    assert s["CapabilityBoundingSet"] == []  # no capabilities at all
    # Beside hailo-device-manager: after it, and its socket's location from its own file.
    assert "hailo-device-manager.service" in s["After"]
    assert "AF_UNIX" in s["RestrictAddressFamilies"][0]


def test_cpu_drop_in_switches_the_backend():
    s = unit_settings(DEPLOY / UNIT, DEPLOY / "hailo-ocr.service.d" / "cpu.conf")
    assert s["Environment"][-1] == "HAILO_OCR_BACKEND=onnx"
    config = load_config(DEPLOY / "pi-config.yaml", env={"HAILO_OCR_BACKEND": "onnx"})
    assert config.backend.type == "onnx"  # the environment beats the file
    assert s["DeviceAllow"] == []
    assert s["NoNewPrivileges"] == ["yes"]  # the hardening stays


def test_hailo8_drop_in_shares_tmp_with_the_multi_process_service():
    s = unit_settings(DEPLOY / UNIT, DEPLOY / "hailo-ocr.service.d" / "hailo8.conf")
    assert s["PrivateTmp"][-1] == "no"  # HailoRT 4.23's service socket: /tmp/hailort_uds.sock
    assert "hailort.service" in s["Wants"] and "hailort.service" in s["After"]
    env = dict(v.split("=", 1) for v in s["Environment"])
    config = load_config(DEPLOY / "pi-config.yaml", env=env)
    assert config.hailo_models.multi_process_service is True


def test_scripts_are_valid_bash():
    for script in ("install.sh", "uninstall.sh", "verify.sh"):
        subprocess.run(["bash", "-n", str(DEPLOY / script)], check=True)
    text = (DEPLOY / "install.sh").read_text()
    for path in ("deploy/hailo-ocr.service", "deploy/pi-config.yaml"):
        assert path in text and (REPO / path).is_file()
    for dropin in ("cpu.conf", "hailo8.conf"):
        assert f"dropin {dropin}" in text and (DEPLOY / "hailo-ocr.service.d" / dropin).is_file()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path):
    shutil.copy(DEPLOY / UNIT, tmp_path)
    shutil.copytree(DEPLOY / "hailo-ocr.service.d", tmp_path / "hailo-ocr.service.d")
    r = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / UNIT)],
        capture_output=True, text=True, timeout=60,
        env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"},
    )
    # The only complaint allowed is that the venv is not installed on this machine.
    problems = [
        line for line in (r.stdout + r.stderr).splitlines()
        if line.strip() and "/opt/hailo-ocr/venv/bin/hailo-ocr" not in line
    ]
    assert not problems, problems


# --- the pretend host ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HEFS = {"/hefs/h10/ocr_det.hef": b"HEF ocr_det " * 1000, "/hefs/h10/ocr.hef": b"HEF ocr " * 700}


@pytest.fixture
def models():
    server = ResourceServer(dict(HEFS))
    yield server
    server.close()


@pytest.fixture
def host(tmp_path):
    h = SandboxHost(tmp_path, REPO)
    yield h
    h.stop_services()


def listen_here(h: SandboxHost, where: str = "/etc/hailo-ocr/env") -> int:
    """The service's address in the sandbox: loopback and a free port, set the way an
    operator would (an environment file, or a drop-in of their own)."""
    port = free_port()
    path = h.path(where)
    path.parent.mkdir(parents=True, exist_ok=True)
    if where.endswith(".conf"):
        path.write_text(f"[Service]\nEnvironment=HAILO_OCR_HOST=127.0.0.1 HAILO_OCR_PORT={port}\n")
    else:
        path.write_text(f"HAILO_OCR_HOST=127.0.0.1\nHAILO_OCR_PORT={port}\n")
    return port


def http_get(port: int, path: str, token: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def systemctl_calls(calls: list[dict]) -> list[list[str]]:
    return [c["argv"][1:] for c in calls if c["argv"][0] == "systemctl"]


def tools_called(calls: list[dict]) -> set[str]:
    return {c["argv"][0] for c in calls}


def assert_ok(r: subprocess.CompletedProcess, h: SandboxHost) -> None:
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n--- service log:\n{h.service_log()}"


def assert_second_run_changes_nothing(h: SandboxHost, *args: str) -> subprocess.CompletedProcess:
    before, mark = h.snapshot(), h.mark()
    pid = h.units()[UNIT]["pid"]
    r = h.run("install.sh", *args)
    assert_ok(r, h)
    calls = h.calls(mark)
    assert h.snapshot() == before
    mutating = [c for c in systemctl_calls(calls) if c[0] in MUTATING]
    assert mutating == [], mutating
    assert not tools_called(calls) & {"pip", "venv", "useradd", "groupadd", "usermod"}
    assert h.units()[UNIT]["pid"] == pid  # the service kept running
    return r


def test_install_with_token_then_again_then_uninstall_and_purge(host, models):
    port = listen_here(host)
    r = host.run("install.sh", "--token", "--models-url", models.url)
    assert_ok(r, host)

    # What it installed.
    assert "hailo-ocr" in host.users()
    assert host.path("/etc/systemd/system/hailo-ocr.service").read_text() == \
        (DEPLOY / UNIT).read_text()
    dropins = host.path("/etc/systemd/system/hailo-ocr.service.d")
    assert sorted(p.name for p in dropins.iterdir()) == ["00-install.conf"]
    generated = unit_settings(dropins / "00-install.conf")
    assert generated["Environment"] == ["HAILO_OCR_CONFIG=/etc/hailo-ocr/config.yaml",
                                        "HAILO_OCR_BACKEND=auto"]
    assert host.path("/etc/hailo-ocr/config.yaml").read_text() == \
        (DEPLOY / "pi-config.yaml").read_text()
    env_file = host.path("/etc/hailo-ocr/env")
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    token = dict(line.split("=", 1) for line in env_file.read_text().splitlines())[
        "HAILO_OCR_TOKEN"]
    assert f"Bearer token (also in /etc/hailo-ocr/env): {token}" in r.stdout
    # The models, fetched the way hailo-apps' downloader does (group paddle_ocr, hailo10h).
    assert models.requests == ["/hefs/h10/ocr_det.hef", "/hefs/h10/ocr.hef"]
    for name in ("ocr_det", "ocr"):
        hef = host.path(f"/var/lib/hailo-ocr/models/{name}.hef")
        assert hef.read_bytes() == HEFS[f"/hefs/h10/{name}.hef"]
        assert oct(hef.stat().st_mode & 0o777) == "0o644"
    steps = [c[0] for c in systemctl_calls(host.calls()) if c[0] in MUTATING]
    assert steps == ["daemon-reload", "enable", "restart"]

    # It runs, wants the token, and the installer's readiness wait passed with it.
    assert http_get(port, "/models")[0] == 401
    assert http_get(port, "/health/ready", token) == (200, {"ready": True})
    assert "all checks passed" in r.stdout and "ok    ready    ready" in r.stdout
    # No device here: the NPU install serves on the CPU and says why.
    assert http_get(port, "/health")[1]["backend"] == "onnx"
    assert "backend onnx (backend auto: no Hailo NPU (/dev/hailo0)" in host.service_log()

    # verify.sh, as the original had it: passes with the token from the unit's env file.
    v = host.run("verify.sh")
    assert v.returncode == 0, v.stdout + v.stderr
    assert "extract  read 'HAILO OCR VERIFY 2468'" in v.stdout

    r2 = assert_second_run_changes_nothing(host, "--token", "--models-url", models.url)
    assert "a bearer token is already set: keeping it" in r2.stdout
    assert models.requests == ["/hefs/h10/ocr_det.hef", "/hefs/h10/ocr.hef"]  # none again

    u = host.run("uninstall.sh")
    assert u.returncode == 0, u.stdout + u.stderr
    assert host.units()[UNIT] == {"pid": None, "enabled": False}
    assert not host.path("/etc/systemd/system/hailo-ocr.service").exists()
    assert not host.path("/etc/systemd/system/hailo-ocr.service.d").exists()
    assert not host.path("/opt/hailo-ocr").exists()
    for kept in ("/etc/hailo-ocr/config.yaml", "/etc/hailo-ocr/env",
                 "/var/lib/hailo-ocr/models/ocr.hef"):
        assert host.path(kept).is_file(), kept
    assert "hailo-ocr" in host.users()

    p = host.run("uninstall.sh", "--purge")
    assert p.returncode == 0, p.stdout + p.stderr
    for gone in ("/etc/hailo-ocr", "/var/lib/hailo-ocr", "/var/log/hailo-ocr"):
        assert not host.path(gone).exists(), gone
    assert "hailo-ocr" not in host.users()


# The original hailo-ocr's layout, reproduced from its install.sh, hailo-ocr.service and
# config.yaml (gregm123456/raspberry_pi_hailo_ai_services, system_services/hailo-ocr).
ORIGINAL_UNIT = """[Unit]
Description=Hailo OCR (PaddleOCR on Hailo-10H)
After=network-online.target

[Service]
Type=simple
User=hailo-ocr
Group=hailo-ocr
WorkingDirectory=/var/lib/hailo-ocr
StateDirectory=hailo-ocr
Environment=XDG_CONFIG_HOME=/etc/xdg
Environment=PYTHONUNBUFFERED=1
Environment=OCR_CONFIG_PATH=/etc/xdg/hailo-ocr/hailo-ocr.json
ExecStart=/opt/hailo-ocr/venv/bin/python3 /opt/hailo-ocr/hailo_ocr_server.py
Restart=always
MemoryMax=2.5G
CPUQuota=75%

[Install]
WantedBy=multi-user.target
"""
ORIGINAL_CONFIG = {
    "server": {"host": "0.0.0.0", "port": 11436},
    "ocr": {"languages": ["en"], "enable_recognition": True, "det_threshold": 0.3,
            "rec_threshold": 0.5},
    "hailo_models": {"detection_hef": "ocr_det.hef",
                     "recognition_hefs": {"en": "ocr.hef", "zh": "ocr_chinese.hef"},
                     "batch_size_det": 1, "batch_size_rec": 8, "priority": 0,
                     "device": "/dev/hailo0"},
    "processing": {"max_image_size": 4096, "jpeg_quality": 90, "enable_caching": False,
                   "cache_ttl_seconds": 3600, "max_cache_size_mb": 500},
    "resource_limits": {"memory_max": "2.5G", "cpu_quota": "75%"},
}


def reproduce_original(h: SandboxHost, config: dict | str = ORIGINAL_CONFIG) -> None:
    """The original installed and running: its unit, server, venv (with hailo-apps' own
    "hailo-ocr" script), configuration (YAML and rendered JSON), models and user."""
    h.path("/etc/systemd/system").mkdir(parents=True)
    h.path("/etc/systemd/system/hailo-ocr.service").write_text(ORIGINAL_UNIT)
    opt = h.path("/opt/hailo-ocr")
    (opt / "vendor/hailo-apps").mkdir(parents=True)
    (opt / "hailo_ocr_server.py").write_text("# the original service\n")
    (opt / "device_client.py").write_text("# the original's device manager client\n")
    (opt / "venv/bin").mkdir(parents=True)
    (opt / "venv/pyvenv.cfg").write_text("include-system-site-packages = true\n")
    python3 = opt / "venv/bin/python3"  # stands for the original server: it just runs
    python3.write_text("#!/bin/sh\nexec sleep 600\n")
    python3.chmod(0o755)
    (opt / "venv/bin/hailo-ocr").write_text("# hailo-apps' paddle_ocr pipeline app\n")
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    h.path("/etc/hailo").mkdir(parents=True)
    h.path("/etc/hailo/hailo-ocr.yaml").write_text(text)
    h.path("/etc/xdg/hailo-ocr").mkdir(parents=True)
    rendered = json.dumps(config if isinstance(config, dict) else {}, indent=2)
    h.path("/etc/xdg/hailo-ocr/hailo-ocr.json").write_text(rendered)
    models = h.path("/var/lib/hailo-ocr/resources/models/hailo10h")
    models.mkdir(parents=True)
    for name in ("ocr_det", "ocr"):
        (models / f"{name}.hef").write_bytes(HEFS[f"/hefs/h10/{name}.hef"])
    with open(h.state / "group", "a") as f:
        f.write("hailo-ocr:x:990:\n")
    with open(h.state / "passwd", "a") as f:
        f.write("hailo-ocr:x:990:990::/var/lib/hailo-ocr:/usr/sbin/nologin\n")
    subprocess.run(["systemctl", "enable", UNIT], env=h.env, check=True)
    subprocess.run(["systemctl", "start", UNIT], env=h.env, check=True)


#: The keys of the original's config.yaml that this version read before compat's legacy
#: loader (issue 12, points 8-10): what the install mechanics are checked with meanwhile.
ORIGINAL_CONFIG_READ_TODAY = {
    "server": ORIGINAL_CONFIG["server"],
    "ocr": {k: ORIGINAL_CONFIG["ocr"][k] for k in ("languages", "det_threshold", "rec_threshold")},
    "hailo_models": {k: v for k, v in ORIGINAL_CONFIG["hailo_models"].items()
                     if k not in ("priority", "device")},
}


def _loads(data: dict) -> bool:
    try:
        load_config(overrides=data, env={})
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize("original_config", [
    pytest.param(ORIGINAL_CONFIG, id="verbatim", marks=pytest.mark.xfail(
        not _loads(ORIGINAL_CONFIG), strict=True,
        reason="this version does not read the original's legacy keys (resource_limits, "
        "priority, device: /dev/hailo0, ...: issue 12); the installer then puts the original "
        "back (test_a_config_this_version_cannot_read_puts_the_original_back)")),
    pytest.param(ORIGINAL_CONFIG_READ_TODAY, id="keys-read-today"),
])
def test_upgrade_over_the_original_keeps_its_config_and_models(host, models, original_config):
    reproduce_original(host, original_config)
    original_pid = host.units()[UNIT]["pid"]
    kept = {p: host.path(p).read_bytes() for p in (
        "/etc/hailo/hailo-ocr.yaml", "/etc/xdg/hailo-ocr/hailo-ocr.json",
        "/var/lib/hailo-ocr/resources/models/hailo10h/ocr_det.hef",
        "/var/lib/hailo-ocr/resources/models/hailo10h/ocr.hef",
        "/opt/hailo-ocr/hailo_ocr_server.py")}
    port = listen_here(host, "/etc/systemd/system/hailo-ocr.service.d/override.conf")

    r = host.run("install.sh", "--models-url", models.url)
    assert_ok(r, host)
    assert "found the original hailo-ocr: upgrading it in place" in r.stdout
    calls = host.calls()
    argv = [c["argv"] for c in calls]
    stop = argv.index(["systemctl", "stop", UNIT])
    venv = next(i for i, a in enumerate(argv) if a[0] == "venv")
    assert stop < venv  # the old service stopped before its venv was replaced
    assert not os.path.exists(f"/proc/{original_pid}") or _zombie_or_gone(original_pid)
    for path, content in kept.items():
        assert host.path(path).read_bytes() == content, path
    assert models.requests == []  # the original's HEFs are found, not fetched again
    assert not host.path("/etc/hailo-ocr/config.yaml").exists()
    generated = unit_settings(host.path("/etc/systemd/system/hailo-ocr.service.d/00-install.conf"))
    assert "HAILO_OCR_CONFIG=/etc/hailo/hailo-ocr.yaml" in generated["Environment"]
    assert host.path("/etc/systemd/system/hailo-ocr.service.d/override.conf").exists()
    assert "web.cli" in host.path("/opt/hailo-ocr/venv/bin/hailo-ocr").read_text()
    assert not host.path("/opt/hailo-ocr/venv.original").exists()
    # The original's clients send no token: none is required after the upgrade either.
    assert http_get(port, "/health/ready") == (200, {"ready": True})
    assert http_get(port, "/models")[0] == 200

    assert_second_run_changes_nothing(host, "--models-url", models.url)

    u = host.run("uninstall.sh")
    assert u.returncode == 0, u.stdout + u.stderr
    for path in ("/etc/hailo/hailo-ocr.yaml", "/etc/xdg/hailo-ocr/hailo-ocr.json",
                 "/var/lib/hailo-ocr/resources/models/hailo10h/ocr.hef",
                 "/etc/systemd/system/hailo-ocr.service.d/override.conf",  # the user's own
                 "/opt/hailo-ocr/hailo_ocr_server.py"):
        assert host.path(path).exists(), path
    assert not host.path("/opt/hailo-ocr/venv").exists()


def _zombie_or_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def test_a_config_this_version_cannot_read_puts_the_original_back(host):
    reproduce_original(host, config="server: [not, a, mapping]\n")
    r = host.run("install.sh", "--no-models")
    assert r.returncode == 1
    assert "cannot read /etc/hailo/hailo-ocr.yaml" in r.stderr
    assert "putting the original hailo-ocr back" in r.stderr
    assert host.path("/opt/hailo-ocr/venv/bin/python3").read_text().endswith("sleep 600\n")
    assert not host.path("/opt/hailo-ocr/.installed").exists()
    assert host.path("/etc/systemd/system/hailo-ocr.service").read_text() == ORIGINAL_UNIT
    pid = host.units()[UNIT]["pid"]
    assert pid and not _zombie_or_gone(pid)  # the original runs again


def fit_device(h: SandboxHost, accelerator_type: str) -> str:
    """A Hailo device as the driver shows it, its node in a group other than root."""
    sysfs = h.path("/sys/class/hailo_chardev/hailo0")
    sysfs.mkdir(parents=True)
    (sysfs / "accelerator_type").write_text(f"{accelerator_type}\n")
    (sysfs / "board_location").write_text("0000:01:00.0\n")
    node = h.path("/dev/hailo0")
    node.parent.mkdir(parents=True)
    node.write_bytes(b"")
    node.chmod(0o660)
    return in_a_group(h, node)


def in_a_group(h: SandboxHost, path: Path) -> str:
    """``path`` in a group other than root's (when the test may chown), that group known to
    the sandbox's user tools too; its name."""
    if os.geteuid() == 0:
        os.chown(path, -1, grp.getgrnam("daemon").gr_gid)
    group = grp.getgrgid(path.stat().st_gid).gr_name
    if group not in (line.split(":")[0] for line in (h.state / "group").read_text().splitlines()):
        with open(h.state / "group", "a") as f:
            f.write(f"{group}:x:{path.stat().st_gid}:\n")
    return group


def test_offline_install_serves_on_the_cpu_then_fetch_then_cpu_only(host, models):
    group = fit_device(host, "1")  # a Hailo-10H
    port = listen_here(host)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: offline
    r = host.run("install.sh", "--models-url", closed)
    assert_ok(r, host)
    assert ["usermod", "-aG", group, "hailo-ocr"] in [c["argv"] for c in host.calls()]
    assert "hailo-ocr" in host.group_members(group)
    assert "sudo /opt/hailo-ocr/venv/bin/hailo-ocr models fetch --restart" in r.stdout
    assert "cannot reach" in r.stdout
    assert list(host.path("/var/lib/hailo-ocr/models").iterdir()) == []  # no partial files
    assert http_get(port, "/health")[1]["backend"] == "onnx"
    assert "models     warn" not in r.stdout and "warn  models" in r.stdout

    # Later, online: the command it printed (pointed at the sandbox) fetches and restarts.
    pid = host.units()[UNIT]["pid"]
    fetch = subprocess.run(
        [str(host.path("/opt/hailo-ocr/venv/bin/hailo-ocr")), "models", "fetch", "--restart",
         "--root", str(host.root), "--base-url", models.url],
        env=host.env, capture_output=True, text=True, timeout=120, check=False)
    assert fetch.returncode == 0, fetch.stdout + fetch.stderr
    assert models.requests == ["/hefs/h10/ocr_det.hef", "/hefs/h10/ocr.hef"]
    assert ["systemctl", "try-restart", UNIT] in [c["argv"] for c in host.calls()]
    assert host.units()[UNIT]["pid"] != pid

    # The same host switched to the CPU backend.
    mark = host.mark()
    c = host.run("install.sh", "--cpu")
    assert_ok(c, host)
    dropins = host.path("/etc/systemd/system/hailo-ocr.service.d")
    assert sorted(p.name for p in dropins.iterdir()) == ["00-install.conf", "cpu.conf"]
    assert "HAILO_OCR_BACKEND" not in (dropins / "00-install.conf").read_text()
    venv_calls = [a["argv"] for a in host.calls(mark) if a["argv"][0] == "venv"]
    assert venv_calls and "--system-site-packages" not in venv_calls[0]
    assert "skip  device" in c.stdout and http_get(port, "/health")[1]["backend"] == "onnx"


@pytest.mark.parametrize("hailort", ["metadata", "module only"])
def test_hailo8_host_gets_its_drop_in_and_hailorts_numpy_pin(host, hailort):
    fit_device(host, "0")  # a Hailo-8 or 8L
    if hailort == "metadata":  # HailoRT 4.23's wheel metadata, as pip installs it
        dist = host.state / "site" / "hailort-4.23.0.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: hailort\nVersion: 4.23.0\n"
            "Requires-Dist: numpy<2\nRequires-Dist: netaddr\n")
    else:  # a package without metadata: only hailo_platform.__version__ says which
        module = host.state / "site" / "hailo_platform"
        module.mkdir(parents=True)
        (module / "__init__.py").write_text(
            '"""TEST DOUBLE: only the version attribute of HailoRT 4.23\'s hailo_platform."""\n'
            '__version__ = "4.23.0"\n')
    listen_here(host)
    r = host.run("install.sh", "--no-models")
    assert_ok(r, host)
    dropins = host.path("/etc/systemd/system/hailo-ocr.service.d")
    assert sorted(p.name for p in dropins.iterdir()) == ["00-install.conf", "hailo8.conf"]
    pip = [c for c in host.calls() if c["argv"][0] == "pip" and "-c" in c["argv"]]
    assert [c["constraints"] for c in pip] == ["numpy<2\n"]
    assert "HailoRT's Python bindings require numpy<2" in r.stdout
    assert "models fetch --restart" in r.stdout  # --no-models: said how to get them


def test_beside_hailo_device_manager_the_user_joins_its_sockets_group(host, models):
    # The daemon's socket (mode 0660, in /dev/hailo0's group unless told otherwise); the
    # daemon itself is not running here, so the installer's verify says so.
    sock = host.path("/run/hailo/device.sock")
    sock.parent.mkdir(parents=True)
    os.mknod(sock, stat.S_IFSOCK | 0o660)
    group = in_a_group(host, sock)
    listen_here(host)
    r = host.run("install.sh", "--models-url", models.url)
    assert ["usermod", "-aG", group, "hailo-ocr"] in [c["argv"] for c in host.calls()]
    assert "hailo-ocr" in host.group_members(group)
    assert "which may use hailo-device-manager's socket /run/hailo/device.sock" in r.stdout
    # verify looks at the manager (backend auto takes it where its socket is) and says what
    # to do; the service itself runs on the CPU here, where no manager exists.
    assert "fail  manager  hailo-device-manager at /run/hailo/device.sock does not answer" in \
        r.stdout, r.stdout
    assert "fix: sudo systemctl restart hailo-device-manager" in r.stdout
    assert r.returncode == 1
