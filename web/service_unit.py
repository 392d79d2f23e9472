"""What the installed systemd unit gives the service: its command line and environment.

``hailo-ocr verify`` and ``hailo-ocr models fetch`` must look at the configuration the
*service* runs with, not at whatever the shell that runs them has: the unit chooses the
file (``HAILO_OCR_CONFIG``, or ``--config`` on its command line), the backend, and may
set the port or the bearer token in an environment file. systemd is asked for the unit's
settings after every drop-in is applied (``systemctl show``), and the environment files
are read as systemd reads them, later files and later lines winning. Root can read the
token file (mode 0600); another user gets what is readable and a note of what was not.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from .settings import Config, load_config

UNIT: Final = "hailo-ocr.service"
SHOW_PROPERTIES: Final = ("LoadState", "ActiveState", "User", "ExecStart", "Environment",
                          "EnvironmentFiles")


@attrs.frozen
class ServiceSettings:
    """The unit as systemd would start it."""

    unit: str
    loaded: bool  # systemd knows the unit
    active_state: str  # "active", "failed", "inactive", ... ("" when unknown)
    user: str | None
    argv: tuple[str, ...]  # ExecStart's command line
    environment: Mapping[str, str]  # Environment= and the environment files, merged
    unreadable: tuple[str, ...] = ()  # environment files this user could not read


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd reads an EnvironmentFile: ``#``/``;`` comments,
    optional surrounding quotes, later lines winning."""
    out = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _show(text: str) -> dict[str, list[str]]:
    props: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props.setdefault(key, []).append(value)
    return props


def _argv(exec_start: str) -> tuple[str, ...]:
    """``{ path=... ; argv[]=/opt/.../hailo-ocr serve --x ; ignore_errors=no ; ... }``."""
    for part in exec_start.strip("{} ").split(" ; "):
        if part.startswith("argv[]="):
            return tuple(shlex.split(part[len("argv[]="):]))
    return ()


def read_service(unit: str = UNIT) -> ServiceSettings | None:
    """The unit's settings, or None when systemd (or the unit) is not there."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    args = [systemctl, "show", unit, *(f"--property={p}" for p in SHOW_PROPERTIES)]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    props = _show(done.stdout)
    if done.returncode != 0 or props.get("LoadState", [""])[0] != "loaded":
        return None
    env: dict[str, str] = {}
    for value in props.get("Environment", []):
        for item in shlex.split(value):
            key, _, val = item.partition("=")
            env[key] = val
    unreadable = []
    for value in props.get("EnvironmentFiles", []):
        path = value.rsplit(" (ignore_errors=", 1)[0].strip()
        if not path:
            continue
        try:
            env.update(parse_env_file(Path(path).read_text(encoding="utf-8")))
        except FileNotFoundError:
            continue  # "-" files may be absent
        except OSError:
            unreadable.append(path)
    exec_start = props.get("ExecStart", [""])[-1]
    return ServiceSettings(
        unit=unit, loaded=True, active_state=props.get("ActiveState", [""])[0],
        user=(props.get("User", [""])[0] or None), argv=_argv(exec_start), environment=env,
        unreadable=tuple(unreadable),
    )


def service_args(settings: ServiceSettings) -> Any:
    """The unit's ``hailo-ocr serve`` options (config, host, port, backend, ...), parsed
    by the CLI's own parser; None when ExecStart is not a ``serve`` command."""
    from .cli import build_parser

    argv = list(settings.argv)
    if "serve" not in argv:
        return None
    try:
        return build_parser().parse_args(argv[argv.index("serve"):])
    except SystemExit:
        return None


@attrs.frozen
class ServiceView:
    """The configuration a tool should look at, and where it came from."""

    config: Config
    settings: ServiceSettings | None  # None: not from an installed unit
    cpu_fallback: bool  # the service may run on the CPU when the NPU's parts are missing
    source: str  # for messages: "unit hailo-ocr.service (config ...)" or "--config ..."


def load_view(config_path: str | None, *, unit: str = UNIT, use_unit: bool = True) -> ServiceView:
    """``--config`` if given (with this shell's environment, as ``serve`` would read it);
    else the installed unit's configuration and environment; else the defaults."""
    if config_path:
        return ServiceView(load_config(config_path), None, False, f"--config {config_path}")
    settings = read_service(unit) if use_unit else None
    if settings is None:
        return ServiceView(load_config(None), None, False, "this shell's environment")
    args = service_args(settings)
    overrides: dict[str, dict[str, Any]] = {}
    if args is not None:
        server = {"host": args.host, "port": args.port}
        server = {k: v for k, v in server.items() if v}
        if server:
            overrides["server"] = server
        if args.backend:
            overrides["backend"] = {"type": args.backend}
    path = args.config if args is not None else None
    config = load_config(path, env=dict(settings.environment), overrides=overrides)
    where = path or settings.environment.get("HAILO_OCR_CONFIG") or "built-in defaults"
    return ServiceView(
        config, settings, bool(args is not None and getattr(args, "cpu_fallback", False)),
        f"unit {unit} (config {where})",
    )


__all__ = [
    "UNIT", "ServiceSettings", "ServiceView", "load_view", "parse_env_file", "read_service",
    "service_args",
]
