"""``hailo-ocr verify``: is the installed service working, and if not, what to do.

The checks run in order against the service the systemd unit runs (its configuration,
port and token, read as :mod:`web.service_unit` reads them), each answering ok, warn,
fail or skip with what it saw and, when not ok, the fix. They are plain functions in
:data:`CHECKS`; a new way of running the models (another backend, a device manager)
adds its own check to that list. With ``--wait S`` readiness is awaited first (the
installer's wait after a start), stopping early when the unit has failed or the token
is refused, which waiting cannot cure.

The extract check sends a PNG drawn here and now (:func:`sample_png`, black text on
white with OpenCV's built-in font), so the check needs no file and no data set.
"""

from __future__ import annotations

import difflib
import grp
import json
import os
import re
import stat
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, Final

import attrs
import cv2
import numpy as np

from npu import hailo_devices
from npu import manager_protocol as mp
from npu.backend_choice import DEVICE_MANAGER, NPU_BACKENDS, BackendChoice, choose_backend
from npu.device_manager_backend import ping
from npu.models import configured_hefs

from .hef_fetch import FETCH_COMMAND, load_manifest
from .service_unit import ServiceView, load_view

SAMPLE_LINES: Final = ("HAILO OCR", "VERIFY 2468")
HTTP_TIMEOUT_S: Final = 60.0
JOURNAL: Final = "journalctl -u hailo-ocr -n 50 --no-pager"


def sample_png() -> bytes:
    """A white image with :data:`SAMPLE_LINES` in black, as PNG."""
    img = np.full((220, 520, 3), 255, np.uint8)
    for i, line in enumerate(SAMPLE_LINES):
        cv2.putText(img, line, (30, 90 + 80 * i), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (0, 0, 0), 3,
                    cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


@attrs.frozen
class Check:
    name: str
    status: str  # "ok", "warn", "fail" or "skip"
    detail: str
    fix: str = ""


@attrs.define
class Context:
    """What the checks share: the service's view, its address, and what earlier checks saw."""

    view: ServiceView
    base_url: str
    token: str | None
    root: str = ""
    health: dict[str, Any] | None = None
    ready: bool = False

    @property
    def environment(self) -> dict[str, str] | None:
        """The unit's environment (None: this shell's, as ``serve`` would read it)."""
        return dict(self.view.settings.environment) if self.view.settings else None

    @property
    def choice(self) -> BackendChoice:
        """The backend the configuration picks on this host (``auto`` resolved)."""
        return choose_backend(self.view.config, environ=self.environment, root=self.root)

    @property
    def npu_wanted(self) -> bool:
        return self.choice.kind in NPU_BACKENDS

    @property
    def running_backend(self) -> str | None:
        return (self.health or {}).get("backend")

    def get(self, path: str, *, auth: bool = True, body: bytes | None = None,
            content_type: str = "") -> tuple[int, Any]:
        headers = {"Content-Type": content_type} if content_type else {}
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base_url + path, data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"null")
            except ValueError:
                return exc.code, None


def _unreachable(ctx: Context, exc: Exception) -> Check:
    return Check("health", "fail", f"nothing answers at {ctx.base_url} ({exc})",
                 f"sudo systemctl status hailo-ocr; {JOURNAL}")


def check_service(ctx: Context) -> Check:
    s = ctx.view.settings
    if s is None:
        return Check("service", "skip", "no systemd unit looked at (--config given, or none)")
    if s.active_state == "active":
        return Check("service", "ok", f"{s.unit} is active")
    return Check("service", "fail", f"{s.unit} is {s.active_state or 'not running'}",
                 f"sudo systemctl restart hailo-ocr; {JOURNAL}")


def check_health(ctx: Context) -> Check:
    try:
        status, body = ctx.get("/health", auth=False)
    except (OSError, ValueError) as exc:
        return _unreachable(ctx, exc)
    if status != 200 or not isinstance(body, dict):
        return Check("health", "fail", f"/health answered {status}", JOURNAL)
    ctx.health = body
    device = body.get("hailo_device") or "none"
    detail = (f"status {body.get('status')}, backend {body.get('backend')}, device {device}, "
              f"languages {', '.join(body.get('languages_supported') or [])}")
    return Check("health", "ok" if body.get("status") == "ok" else "warn", detail)


def check_ready(ctx: Context) -> Check:
    try:
        status, body = ctx.get("/health/ready")
    except (OSError, ValueError) as exc:
        return Check("ready", "fail", f"no answer ({exc})", JOURNAL)
    if status == 200:
        ctx.ready = True
        return Check("ready", "ok", "ready")
    if status == 401:
        return _refused("ready", ctx)
    reason = body.get("reason") if isinstance(body, dict) else None
    return Check("ready", "fail", f"not ready ({reason or status})", JOURNAL)


def _refused(name: str, ctx: Context) -> Check:
    return Check(name, "fail", "the service wants a bearer token and this one was refused or "
                 "missing", _token_fix(ctx))


def _token_fix(ctx: Context) -> str:
    s = ctx.view.settings
    if s is not None and s.unreadable:
        return f"run as root (sudo): {', '.join(s.unreadable)} is not readable by this user"
    return "pass --token TOKEN (server.auth_token, or HAILO_OCR_TOKEN in /etc/hailo-ocr/env)"


def check_models(ctx: Context) -> Check:
    loaded = ""
    if ctx.ready:
        status, body = ctx.get("/models")
        if status == 401:  # /health/ready may be public; /models never is with a token
            return _refused("models", ctx)
        if status == 200 and isinstance(body, dict):
            loaded = ", ".join(
                f"{m.get('id')}={m.get('name')}" + (f" on {m['device']}" if m.get("device") else "")
                for m in body.get("data", [])
            )
    if not ctx.npu_wanted:
        if not ctx.ready:
            return Check("models", "skip", "the service is not ready")
        return Check("models", "ok" if loaded else "fail", loaded or "no models listed",
                     "" if loaded else JOURNAL)
    hefs = configured_hefs(ctx.view.config, root=ctx.root)
    missing = [h for h in hefs if h.path is None]
    if missing:
        names = ", ".join(h.name for h in missing)
        return Check("models", "warn",
                     f"{names} not found (looked in {', '.join(missing[0].tried)}); their "
                     f"models run on the CPU until they are in place",
                     FETCH_COMMAND)
    detail = "; ".join(f"{h.name} at {h.path}" for h in hefs)
    if ctx.running_backend not in (None, *NPU_BACKENDS):
        return Check("models", "warn", f"{detail}, but the service runs on "
                     f"{ctx.running_backend}", f"sudo systemctl restart hailo-ocr; {JOURNAL}")
    unverified = _unrecorded(hefs)
    note = f" (no recorded digest for {unverified})" if unverified else ""
    return Check("models", "ok", f"{loaded or detail}{note}")


def _unrecorded(hefs) -> str:
    try:
        manifest = load_manifest()
    except (OSError, ValueError):
        return ""
    names = {h.path.name for h in hefs if h.path is not None}
    recorded = {n for arch in manifest.arches.values() for n, e in arch.items() if e.get("sha256")}
    return ", ".join(sorted(names - recorded))


def _letters(text: str) -> str:
    """Letters and digits only: the NPU's fixed-width recogniser may drop a space."""
    return "".join(re.findall(r"[A-Z0-9]", text.upper()))


def check_extract(ctx: Context) -> Check:
    if not ctx.ready:
        return Check("extract", "skip", "the service is not ready")
    png = sample_png()
    started = time.monotonic()
    status, body = ctx.get("/v1/ocr/extract", body=png, content_type="image/png")
    ms = (time.monotonic() - started) * 1000
    if status == 401:
        return _refused("extract", ctx)
    if status != 200 or not isinstance(body, dict):
        err = body.get("error") if isinstance(body, dict) else status
        return Check("extract", "fail", f"the sample image failed: {status} {err}", JOURNAL)
    text = " ".join(r.get("text", "") for r in body.get("regions", []))
    detail = f"read {text!r} in {ms:.0f} ms on {(body.get('hailo_info') or {}).get('backend')}"
    want, got = _letters(" ".join(SAMPLE_LINES)), _letters(text)
    if got == want:
        return Check("extract", "ok", detail)
    close = difflib.SequenceMatcher(None, want, got).ratio() >= 0.8
    return Check("extract", "warn" if close else "fail",
                 f"{detail}; expected {' / '.join(SAMPLE_LINES)!r}", JOURNAL)


def check_device(ctx: Context) -> Check:
    if not ctx.npu_wanted:
        return Check("device", "skip", "the CPU backend is configured")
    if DEVICE_MANAGER in (ctx.choice.kind, ctx.running_backend):
        return Check("device", "skip", f"{mp.UNIT} holds it (the manager check)")
    user = ctx.view.settings.user if ctx.view.settings else None
    try:
        presence = hailo_devices.probe(root=ctx.root, user=user)
    except KeyError:  # the service user does not exist (any more)
        presence = hailo_devices.probe(root=ctx.root)
    on_cpu = ctx.running_backend not in (None, *NPU_BACKENDS)
    if not presence.nodes:
        return Check("device", "warn" if on_cpu else "fail", "no Hailo device found" + (
            "; the service runs on the CPU" if on_cpu else ""),
            hailo_devices.no_device_message(presence))
    if presence.inaccessible:
        return Check("device", "fail", hailo_devices.access_message(presence),
                     f"sudo usermod -aG {presence.inaccessible[0].group} {presence.user} && "
                     "sudo systemctl restart hailo-ocr")
    names = ", ".join(f"{n.path} ({n.accelerator or 'Hailo'}, {n.mode} {n.owner}:{n.group})"
                      for n in presence.nodes)
    if on_cpu:
        return Check("device", "warn", f"{names}; but the service runs on the CPU",
                     f"sudo systemctl restart hailo-ocr; {JOURNAL}")
    in_use = (ctx.health or {}).get("hailo_device") or "?"
    return Check("device", "ok", f"{names}; the service uses {in_use}")


MANAGER_PING_TIMEOUT_S: Final = 5.0


def check_device_manager(ctx: Context) -> Check:
    """hailo-device-manager, when the service goes through it: its socket, this service's
    right to use it, and the daemon's own answer (device, queue, our models)."""
    choice = ctx.choice
    if choice.kind != DEVICE_MANAGER and ctx.running_backend != DEVICE_MANAGER:
        return Check("manager", "skip", f"not the path ({choice.reason})")
    path = mp.socket_path(ctx.view.config.device_manager.socket, ctx.environment)
    where = ctx.root + path
    restart = f"sudo systemctl restart {mp.UNIT}; journalctl -u {mp.UNIT} -n 50 --no-pager"
    try:
        st = os.stat(where)
    except OSError:
        return Check("manager", "fail", f"{mp.UNIT}'s socket {path} does not exist",
                     f"sudo systemctl enable --now {mp.UNIT}, or backend.type hailo")
    user = ctx.view.settings.user if ctx.view.settings else None
    try:
        name, uid, gids = hailo_devices.user_ids(user)
    except KeyError:
        name, uid, gids = hailo_devices.user_ids(None)
    if not hailo_devices.can_open_rw(st, uid, gids):
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        return Check("manager", "fail", f"{name} may not use {path} (mode "
                     f"{stat.filemode(st.st_mode)}, group {group})",
                     f"sudo usermod -aG {group} {name} && sudo systemctl restart hailo-ocr")
    try:
        status = ping(where, MANAGER_PING_TIMEOUT_S)
    except TimeoutError:
        return Check("manager", "warn", f"{mp.UNIT} did not answer a ping within "
                     f"{MANAGER_PING_TIMEOUT_S:g} s (another service's long job?)", restart)
    except (OSError, mp.ProtocolError) as exc:
        return Check("manager", "fail", f"{mp.UNIT} at {path} does not answer ({exc})",
                     restart)
    broken = status.get("runtime_broken_reason")
    if broken or "error" in status:
        return Check("manager", "fail", f"{mp.UNIT} has no usable device: "
                     f"{broken or status['error']}", restart)
    ours = {str(h.path)[len(ctx.root):] for h in configured_hefs(ctx.view.config, root=ctx.root)
            if h.role == "detection" and h.path is not None}
    held = [m for m in status.get("loaded_models") or []
            if m.get("model_type") == "ocr" and m.get("model_path") in ours]
    # The daemon counts the ping itself in its queue depth.
    others = max(0, int(status.get("queue_depth") or 0) - 1)
    detail = (f"{mp.UNIT} at {path}: device {status.get('device_id')}, "
              f"{others} other job(s) queued, "
              f"{len(status.get('loaded_models') or [])} model set(s) loaded")
    if held:
        return Check("manager", "ok", f"{detail}, ours among them")
    if ctx.running_backend == DEVICE_MANAGER:
        return Check("manager", "warn", f"{detail}, not ours (evicted for another service's "
                     "models? the next request loads them again)")
    return Check("manager", "ok", detail)


#: The checks, in order. Each takes the shared context and returns a :class:`Check`.
CHECKS: Final[list[Callable[[Context], Check]]] = [
    check_service, check_health, check_ready, check_models, check_extract,
    check_device_manager, check_device,
]


def wait_ready(ctx: Context, seconds: float, say: Callable[[str], None]) -> None:
    """Poll /health/ready (with the token) until it answers 200 or ``seconds`` pass; stop
    early when the unit has failed or the token is refused."""
    from .service_unit import read_service

    deadline = time.monotonic() + seconds
    announced = False
    while time.monotonic() < deadline:
        try:
            status, _ = ctx.get("/health/ready")
            if status in (200, 401):
                return
        except (OSError, ValueError):
            pass
        s = ctx.view.settings
        if s is not None:
            now = read_service(s.unit)
            if now is not None and now.active_state == "failed":
                return
        if not announced:
            say(f"waiting up to {seconds:.0f} s for {ctx.base_url}/health/ready ...")
            announced = True
        time.sleep(1.0)


def base_url(view: ServiceView) -> str:
    host = view.config.server.host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{view.config.server.port}"


def run(args: Any) -> int:
    """The ``verify`` command: 0 when nothing failed (warnings allowed), else 1."""
    view = load_view(args.config, unit=args.unit, use_unit=not args.no_unit)
    ctx = Context(view=view, base_url=(args.url or base_url(view)).rstrip("/"),
                  token=args.token or view.config.server.auth_token,
                  root=args.root.rstrip("/") if args.root else "")
    print(f"hailo-ocr verify: {ctx.base_url}, {view.source}")
    if args.wait:
        wait_ready(ctx, args.wait, print)
    results = [check(ctx) for check in CHECKS]
    width = max(len(r.name) for r in results)
    for r in results:
        print(f"  {r.status:<4}  {r.name:<{width}}  {r.detail}")
        if r.fix and r.status in ("warn", "fail"):
            print(f"        {'':<{width}}  fix: {r.fix}")
    failed = sum(r.status == "fail" for r in results)
    warned = sum(r.status == "warn" for r in results)
    if failed:
        print(f"{failed} check(s) failed", file=sys.stderr)
        return 1
    print("all checks passed" + (f" ({warned} warning(s))" if warned else ""))
    return 0


__all__ = ["CHECKS", "Check", "Context", "base_url", "run", "sample_png", "wait_ready"]
