"""``hailo-ocr models fetch``: put the compiled models (HEF files) the service needs in place.

The files are the ones hailo-apps' resource downloader fetches for its ``paddle_ocr``
group, which is how the original hailo-ocr got them: the sources are recorded in
``hef_manifest.json`` (one file: URL path, size and SHA-256 per architecture). A file the
configuration already finds (in ``hailo_models.search_paths``, e.g. the original's
``/var/lib/hailo-ocr/resources/models/hailo10h``) is kept; a missing one is downloaded into
``/var/lib/hailo-ocr/models``, written to a temporary file first, checked (the server's
Content-Length; the recorded size and SHA-256 when recorded) and only then renamed into
place, so a failed or interrupted download never leaves a truncated HEF behind.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.resources
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from npu import hailo_devices
from npu.models import configured_hefs

from .settings import Config

DEFAULT_DEST: Final = "/var/lib/hailo-ocr/models"
ARCHES: Final = ("hailo10h", "hailo8", "hailo8l")
CHUNK: Final = 1 << 20
FETCH_COMMAND: Final = "sudo /opt/hailo-ocr/venv/bin/hailo-ocr models fetch --restart"


class FetchError(Exception):
    pass


@attrs.frozen
class Source:
    url: str
    size: int | None
    sha256: str | None


@attrs.frozen
class Manifest:
    base_url: str
    arches: Mapping[str, Mapping[str, Mapping[str, Any]]]
    path: str  # where it was read from, for messages

    def source(self, arch: str, filename: str, base_url: str | None = None) -> Source | None:
        entry = self.arches.get(arch, {}).get(filename)
        if entry is None:
            return None
        base = (base_url or self.base_url).rstrip("/")
        return Source(f"{base}/{entry['path']}", entry.get("size"), entry.get("sha256"))


def load_manifest(path: str | None = None) -> Manifest:
    if path:
        text, where = Path(path).read_text(encoding="utf-8"), path
    else:
        res = importlib.resources.files("web") / "hef_manifest.json"
        text, where = res.read_text(encoding="utf-8"), "web/hef_manifest.json"
    data = json.loads(text)
    return Manifest(data["base_url"], data["arches"], where)


def detect_arch(root: str = "") -> tuple[str | None, str]:
    """The NPU's model architecture from the driver (sysfs), or None and why not."""
    nodes = hailo_devices.list_nodes(root=root)
    kinds = {n.accelerator for n in nodes}
    if "Hailo-10H" in kinds:
        return "hailo10h", "a Hailo-10H is present"
    if "Hailo-8/8L" in kinds:
        arch = _hailo8_variant()
        if arch:
            return arch, f"a {arch} is present"
        return None, "a Hailo-8 or 8L is present; say which: --arch hailo8 or --arch hailo8l"
    return "hailo10h", "no Hailo device found; fetching for the Hailo-10H (AI HAT+ 2)"


def _hailo8_variant() -> str | None:
    cli = shutil.which("hailortcli")
    if cli is None:
        return None
    try:
        out = subprocess.run([cli, "fw-control", "identify"], capture_output=True, text=True,
                             timeout=20, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        if "Device Architecture" in line:
            value = line.split(":", 1)[-1].strip().lower()
            return value if value in ("hailo8", "hailo8l") else None
    return None


def file_digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _mismatch(source: Source, size: int, sha: str) -> str | None:
    if source.size is not None and size != source.size:
        return f"size {size}, the recorded size is {source.size}"
    if source.sha256 is not None and sha != source.sha256.lower():
        return f"SHA-256 {sha}, the recorded one is {source.sha256}"
    return None


def download(source: Source, target: Path, *, timeout: float) -> tuple[int, str]:
    """``source`` into ``target`` through a temporary file; (size, sha256)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.part")
    h = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(source.url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            with open(part, "wb") as out:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
        if length is not None and int(length) != size:
            raise FetchError(f"{source.url}: got {size} bytes of {length}")
        sha = h.hexdigest()
        wrong = _mismatch(source, size, sha)
        if wrong:
            raise FetchError(f"{source.url}: {wrong}; not installed")
        os.chmod(part, 0o644)
        os.replace(part, target)
        return size, sha
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{source.url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"cannot reach {source.url}: {exc.reason}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise FetchError(f"{source.url}: {exc!r}") from None
    finally:
        part.unlink(missing_ok=True)


@attrs.frozen
class Outcome:
    name: str
    state: str  # "present", "fetched" or "failed"
    path: str
    detail: str


def fetch(
    config: Config, *, arch: str, dest: Path, manifest: Manifest, base_url: str | None = None,
    root: str = "", timeout: float = 60.0, say: Callable[[str], None] = print,
    check_only: bool = False,
) -> list[Outcome]:
    """Every HEF ``config`` needs: kept where the configuration finds it, else fetched
    (with ``check_only``, reported missing)."""
    outcomes = []
    for hef in configured_hefs(config, root=root):
        filename = Path(hef.name).name
        source = manifest.source(arch, filename, base_url)
        absolute = Path(hef.name).expanduser().is_absolute()
        target = Path(root + hef.name) if absolute else dest / hef.name
        if hef.path is not None:
            size, sha = file_digest(hef.path)
            wrong = _mismatch(source, size, sha) if source else None
            if wrong is None:
                outcomes.append(Outcome(filename, "present", str(hef.path),
                                        f"size {size}, sha256 {sha}"))
                continue
            if hef.path.resolve() != target.resolve():
                outcomes.append(Outcome(filename, "failed", str(hef.path), (
                    f"{wrong}: it is not the file {manifest.path} records for {arch}; "
                    "remove it, or record its digest there if it is the right one")))
                continue
            say(f"{filename}: {hef.path} has {wrong}: fetching it again")
        if source is None:
            outcomes.append(Outcome(filename, "failed", str(target), (
                f"{manifest.path} has no source for {filename} on {arch}; copy the file to "
                f"{target}")))
            continue
        if check_only:
            outcomes.append(Outcome(filename, "failed", str(target),
                                    f"missing (not fetched: --check); source {source.url}"))
            continue
        say(f"{filename}: fetching {source.url}")
        try:
            size, sha = download(source, target, timeout=timeout)
        except FetchError as exc:
            outcomes.append(Outcome(filename, "failed", str(target), str(exc)))
            continue
        checked = ("matches the recorded size and SHA-256" if source.sha256 else
                   f"no recorded digest in {manifest.path}: not verified beyond its length")
        outcomes.append(Outcome(filename, "fetched", str(target),
                                f"size {size}, sha256 {sha}; {checked}"))
    return outcomes


def run(args: Any) -> int:
    """The ``models fetch`` command."""
    from .service_unit import load_view

    root = args.root.rstrip("/") if args.root else ""
    view = load_view(args.config, unit=args.unit, use_unit=not args.no_unit)
    arch = args.arch
    if arch is None:
        arch, why = detect_arch(root)
        print(f"architecture: {arch or 'unknown'} ({why})")
        if arch is None:
            return 2
    manifest = load_manifest(args.manifest)
    dest = Path(args.dest) if args.dest else Path(root + DEFAULT_DEST)
    print(f"configuration: {view.source}")
    outcomes = fetch(view.config, arch=arch, dest=dest, manifest=manifest,
                     base_url=args.base_url, root=root, timeout=args.timeout,
                     check_only=args.check)
    for o in outcomes:
        print(f"{o.name}: {o.state} {o.path} ({o.detail})")
    failed = [o for o in outcomes if o.state == "failed"]
    if failed:
        print(f"hailo-ocr: {len(failed)} model file(s) missing; the service runs on the CPU "
              f"until they are in place", file=sys.stderr)
        return 1
    if args.restart and any(o.state == "fetched" for o in outcomes):
        return _restart(args.unit)
    return 0


def _restart(unit: str) -> int:
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        print("no systemctl here: restart the service yourself", file=sys.stderr)
        return 1
    done = subprocess.run([systemctl, "try-restart", unit], check=False, timeout=120)
    if done.returncode == 0:
        print(f"restarted {unit}: it loads the new models now (check: hailo-ocr verify)")
    return 0 if done.returncode == 0 else 1


__all__ = [
    "ARCHES", "DEFAULT_DEST", "FETCH_COMMAND", "FetchError", "Manifest", "Outcome", "Source",
    "detect_arch", "download", "fetch", "file_digest", "load_manifest", "run",
]
