"""``hailo-ocr models fetch``: the recorded sources, the checks before a file is put in
place, and what is kept. Downloads go to a local HTTP server or a file:// mirror."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.sandbox import ResourceServer
from web import hef_fetch
from web.cli import main
from web.settings import load_config

DET, REC = b"compiled detector " * 300, b"compiled recogniser " * 200


def manifest_file(tmp_path: Path, base_url: str, *, det_sha: str | None = None,
                  det_size: int | None = None) -> Path:
    data = {"base_url": base_url, "arches": {"hailo10h": {
        "ocr_det.hef": {"path": "hefs/h10/ocr_det.hef", "size": det_size, "sha256": det_sha},
        "ocr.hef": {"path": "hefs/h10/ocr.hef", "size": None, "sha256": None},
    }}}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def server():
    s = ResourceServer({"/hefs/h10/ocr_det.hef": DET, "/hefs/h10/ocr.hef": REC})
    yield s
    s.close()


def cfg_in(tmp_path: Path, models: Path, extra: str = ""):
    path = tmp_path / "config.yaml"
    path.write_text(f"hailo_models:\n  search_paths: [{models}]\n{extra}")
    return load_config(path, env={})


def test_shipped_manifest_records_hailo_apps_sources():
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml")
                              .read_text())
    assert "hef_manifest.json" in pyproject["tool"]["setuptools"]["package-data"]["web"]
    m = hef_fetch.load_manifest()
    assert m.base_url == "https://hailo-csdata.s3.eu-west-2.amazonaws.com/resources"
    for arch, folder in (("hailo10h", "h10"), ("hailo8", "h8"), ("hailo8l", "h8l")):
        for name in ("ocr_det.hef", "ocr.hef"):
            src = m.source(arch, name)
            assert src.url == f"{m.base_url}/hefs/{folder}/{name}"
            # Either both recorded or neither (web/hef_manifest.json says why).
            assert (src.size is None) == (src.sha256 is None)


def test_missing_files_are_fetched_and_present_ones_kept(tmp_path, server):
    models, dest = tmp_path / "found", tmp_path / "dest"
    models.mkdir()
    (models / "ocr.hef").write_bytes(b"the user's own")
    config = cfg_in(tmp_path, models)
    manifest = hef_fetch.load_manifest(str(manifest_file(tmp_path, server.url)))
    out = hef_fetch.fetch(config, arch="hailo10h", dest=dest, manifest=manifest,
                          say=lambda _: None)
    assert [(o.name, o.state) for o in out] == [("ocr_det.hef", "fetched"), ("ocr.hef", "present")]
    assert (dest / "ocr_det.hef").read_bytes() == DET
    assert (models / "ocr.hef").read_bytes() == b"the user's own"
    assert server.requests == ["/hefs/h10/ocr_det.hef"]
    assert "not verified beyond its length" in out[0].detail  # no recorded digest
    assert hashlib.sha256(DET).hexdigest() in out[0].detail  # printed, to be recorded


def test_recorded_digest_is_checked_before_the_file_is_put_in_place(tmp_path, server):
    config = cfg_in(tmp_path, tmp_path / "none")
    dest = tmp_path / "dest"
    good = hashlib.sha256(DET).hexdigest()
    for sha, size, state in ((good, len(DET), "fetched"), ("0" * 64, None, "failed"),
                             (None, len(DET) + 1, "failed")):
        manifest = hef_fetch.load_manifest(str(manifest_file(
            tmp_path, server.url, det_sha=sha, det_size=size)))
        (dest / "ocr_det.hef").unlink(missing_ok=True)
        out = hef_fetch.fetch(config, arch="hailo10h", dest=dest, manifest=manifest,
                              say=lambda _: None)
        assert out[0].state == state, out[0]
        assert (dest / "ocr_det.hef").exists() == (state == "fetched")
        assert [p.name for p in dest.iterdir() if p.name.startswith(".")] == []  # no .part
    assert "matches the recorded size and SHA-256" in hef_fetch.fetch(
        config, arch="hailo10h", dest=tmp_path / "d2", say=lambda _: None,
        manifest=hef_fetch.load_manifest(str(manifest_file(tmp_path, server.url, det_sha=good))),
    )[0].detail


def test_a_present_file_that_differs_from_the_record_is_replaced_only_in_dest(tmp_path, server):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "ocr_det.hef").write_bytes(b"truncated")
    config = cfg_in(tmp_path, dest)
    good = hashlib.sha256(DET).hexdigest()
    manifest = hef_fetch.load_manifest(str(manifest_file(tmp_path, server.url, det_sha=good)))
    out = hef_fetch.fetch(config, arch="hailo10h", dest=dest, manifest=manifest,
                          say=lambda _: None)
    assert out[0].state == "fetched" and (dest / "ocr_det.hef").read_bytes() == DET
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "ocr_det.hef").write_bytes(b"something else")
    out = hef_fetch.fetch(cfg_in(tmp_path, elsewhere), arch="hailo10h", dest=tmp_path / "d3",
                          manifest=manifest, say=lambda _: None)
    assert out[0].state == "failed" and "not the file" in out[0].detail
    assert (elsewhere / "ocr_det.hef").read_bytes() == b"something else"


def test_a_short_download_or_a_404_leaves_nothing(tmp_path):
    s = ResourceServer({"/hefs/h10/ocr_det.hef": DET}, short=frozenset({"/hefs/h10/ocr_det.hef"}))
    try:
        manifest = hef_fetch.load_manifest(str(manifest_file(tmp_path, s.url)))
        out = hef_fetch.fetch(cfg_in(tmp_path, tmp_path / "x"), arch="hailo10h",
                              dest=tmp_path / "dest", manifest=manifest, say=lambda _: None)
    finally:
        s.close()
    assert [o.state for o in out] == ["failed", "failed"]
    assert "HTTP 404" in out[1].detail
    assert not (tmp_path / "dest").exists() or list((tmp_path / "dest").iterdir()) == []


def test_a_file_mirror_and_an_absolute_configured_path(tmp_path):
    mirror = tmp_path / "usb" / "resources" / "hefs" / "h10"
    mirror.mkdir(parents=True)
    (mirror / "ocr_det.hef").write_bytes(DET)
    (mirror / "ocr.hef").write_bytes(REC)
    config = cfg_in(tmp_path, tmp_path / "none", f"  detection_hef: {tmp_path}/abs/ocr_det.hef\n")
    out = hef_fetch.fetch(config, arch="hailo10h", dest=tmp_path / "dest",
                          manifest=hef_fetch.load_manifest(), say=lambda _: None,
                          base_url=(tmp_path / "usb" / "resources").as_uri())
    assert [o.state for o in out] == ["fetched", "fetched"]
    assert (tmp_path / "abs" / "ocr_det.hef").read_bytes() == DET  # where the config says
    assert (tmp_path / "dest" / "ocr.hef").read_bytes() == REC


def test_arch_from_the_driver(tmp_path, monkeypatch):
    assert hef_fetch.detect_arch(str(tmp_path))[0] == "hailo10h"  # none present: the target
    dev = tmp_path / "sys/class/hailo_chardev/hailo0"
    dev.mkdir(parents=True)
    (dev / "accelerator_type").write_text("1\n")
    assert hef_fetch.detect_arch(str(tmp_path)) == ("hailo10h", "a Hailo-10H is present")
    (dev / "accelerator_type").write_text("0\n")  # a Hailo-8 or 8L: sysfs cannot tell which
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    arch, why = hef_fetch.detect_arch(str(tmp_path))
    assert arch is None and "--arch hailo8 or --arch hailo8l" in why
    (tmp_path / "bin").mkdir()
    cli = tmp_path / "bin" / "hailortcli"  # what `hailortcli fw-control identify` prints
    cli.write_text("#!/bin/sh\necho 'Device Architecture: HAILO8L'\n")
    cli.chmod(0o755)
    assert hef_fetch.detect_arch(str(tmp_path))[0] == "hailo8l"


def test_cli_check_and_fetch(tmp_path, server, capsys):
    models = tmp_path / "models"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"hailo_models:\n  search_paths: [{models}]\n")
    base = ["models", "fetch", "--config", str(cfg), "--arch", "hailo10h", "--dest", str(models)]
    assert main([*base, "--check"]) == 1
    assert "missing (not fetched: --check)" in capsys.readouterr().out
    assert server.requests == []
    assert main([*base, "--base-url", server.url]) == 0
    out = capsys.readouterr().out
    assert "ocr_det.hef: fetched" in out and "ocr.hef: fetched" in out
    assert main([*base, "--check"]) == 0
    assert "ocr_det.hef: present" in capsys.readouterr().out
