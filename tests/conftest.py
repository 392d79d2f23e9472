"""Shared fixtures: the real-image folder, configurations, and a running service."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest

from ocr.config import Config, load_config
from tests.support.paths import REPO, STANDIN


def devdata_dir() -> Path | None:
    """``../shared/devdata`` beside the checkout (or ``$HAILO_OCR_DEVDATA``), if present."""
    env = os.environ.get("HAILO_OCR_DEVDATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "devdata")
    for c in candidates:
        if (c / "score.py").is_file():
            return c
    return None


DEVDATA = devdata_dir()
DEVDATA_REASON = (
    "the real-image tests need ../shared/devdata (research-use images that are never copied "
    "into the project); it is beside the checkout on developer machines and in CI, "
    "or set HAILO_OCR_DEVDATA to its path"
)


@pytest.fixture(scope="session")
def devdata() -> Path:
    if DEVDATA is None:
        pytest.skip(DEVDATA_REASON)
    return DEVDATA


@pytest.fixture(scope="session")
def devdata_if_present() -> Path | None:
    """The real-image folder, or None: for tests that add a few real images where they
    can and run on synthetic ones alone elsewhere."""
    return DEVDATA


@pytest.fixture(scope="session")
def devdata_score(devdata):
    """devdata's ``score.py`` (its tokeniser and scorer), imported by path: it is not part
    of the project and is never copied into it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("devdata_score", devdata / "score.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_report_header(config):
    return f"devdata: {DEVDATA if DEVDATA else 'not found: ' + DEVDATA_REASON}"


@pytest.fixture
def config() -> Config:
    """The default configuration, unaffected by the developer's environment."""
    return load_config(env={})


def with_changes(config: Config, **sections: dict) -> Config:
    """``config`` with some keys of some sections replaced."""
    changes = {name: attrs.evolve(getattr(config, name), **keys) for name, keys in sections.items()}
    return attrs.evolve(config, **changes)


# -- the HailoRT stand-in (tests/hailo_standin), for tests/npu/test_hailo_*.py -----------------
# Imported only inside these fixtures, so tests that do not ask for them never load it.

HAILO_STANDIN = STANDIN


def _standin():
    import sys

    if str(HAILO_STANDIN) not in sys.path:
        sys.path.insert(0, str(HAILO_STANDIN))
    from hailo_platform import _standin as standin

    return standin


@pytest.fixture
def hailo_standin():
    """The stand-in's shared state (devices, fault injection) reset around the test;
    nothing may still hold the pretend device when the test ends, and no completion
    callback may have raised (real HailoRT would have aborted the process)."""
    standin = _standin()
    standin.reset()
    yield standin
    held = standin.held_by()
    raised = list(standin.callback_failures)
    standin.reset()
    assert not raised, f"a HailoRT completion callback raised: {raised!r}"
    assert all(v is None for v in held.values()), held


@pytest.fixture(scope="session")
def hailo_model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hailo_models")


@pytest.fixture
def hailo_files(hailo_model_dir):
    """Stand-in "HEFs" (descriptors running the shipped ONNX models) and a charset."""
    _standin()
    from hailo_testing import write_models

    return write_models(hailo_model_dir)


@pytest.fixture
def device_manager(hailo_standin):
    """A running TEST DOUBLE of hailo-device-manager (tests/support/fake_device_manager.py) on the
    stand-in, at a short socket path (a Unix socket's path is limited to 107 bytes);
    stopped, its socket gone, before the stand-in checks that the device is free."""
    import shutil
    import tempfile

    from tests.support.fake_device_manager import FakeDeviceManager

    directory = tempfile.mkdtemp(prefix="hdm-", dir="/tmp")
    # The real daemon waits 1000 ms for a job; the stand-in computes on a shared CPU.
    manager = FakeDeviceManager(Path(directory) / "device.sock", job_wait_ms=30000)
    manager.start()
    try:
        yield manager
    finally:
        manager.stop()
        shutil.rmtree(directory, ignore_errors=True)
