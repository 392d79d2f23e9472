"""hailo-ocr's test suite: its layout, its rules, and the fixtures every folder shares.

Layout. Tests mirror the source: ``tests/ocr``, ``tests/npu``, ``tests/actors``, ``tests/web``
and ``tests/benchmarks`` test the package of the same name, each module named after the
module it tests (``tests/ocr/test_recognition.py`` for ``ocr/recognition.py``).
``tests/system`` holds what runs real processes and outside programs: ``hailo-ocr serve``
and ``hailo-ocr read`` as subprocesses, signals, the real HAProxy, a real Chromium, the
installer on a pretend host. A test of one module may still start one server subprocess
where that module's behaviour needs it (``tests/web/test_server.py``'s SIGTERM test).

Helpers. ``tests/support`` is the one home of everything the tests share that is not a
test: images and encodings (``images``), servers and backends (``server``), fake devices
(``fakes``, ``actor_harness``), the reliability cases (``reliability``, also used by
``benchmarks/fuzz.py`` and ``soak.py``), rendered text and PDFs (``textgen``, ``pdfgen``),
the install sandbox (``sandbox``), the hailo-device-manager double
(``fake_device_manager``), configurations (``config``) and paths (``paths``). Import them
as ``from tests.support.X import ...``; never ``from conftest import``: what is shared and
not a fixture lives in ``tests/support``, what is a fixture is defined here and asked for
by name.

Finding the code. The checkout is on ``sys.path`` (``pythonpath = ["."]`` in
pyproject.toml), so ``ocr``, ``npu``, ``actors``, ``web``, ``benchmarks`` and ``tests`` all
import from the working tree; nothing is installed. Subprocess tests run
``python -m web.cli`` with ``cwd=REPO`` (``tests.support.paths.REPO``), so the child
imports the same tree.

The HailoRT stand-in. ``tests/hailo_standin`` is a labelled TEST DOUBLE of HailoRT's
``hailo_platform`` (same calls, shapes, statuses, failure modes). A test that needs it puts
``tests.support.paths.STANDIN`` on ``sys.path`` (or on a subprocess's ``PYTHONPATH``) and
asks for the ``hailo_standin`` fixture, which resets it and fails the test if a device is
left held or a completion callback raised. The stand-in's path is added when such a module
is imported, so in a whole run it is on ``sys.path`` from collection on.

Real images. ``devdata`` tests (``@pytest.mark.devdata``, or the ``devdata`` fixture) read
``../shared/devdata`` beside the checkout or ``$HAILO_OCR_DEVDATA``; without it they skip
and say why (the images are research-use and never copied into the project). Other skips
name what is missing: ``haproxy`` or root for the fleet test, Chromium for the browser
test, a CJK font for Chinese text rendered at test time, ``systemd-analyze``, x86 for the
denormal checks.

Slow tests. ``@pytest.mark.slow`` marks tests that take more than a few seconds (server
subprocesses, HAProxy, the browser, accuracy and benchmark cores). They still run in CI
(``.ci/run``, tox, the whole suite in about five minutes on two cores);
``-m "not slow"`` leaves them out while working.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.paths import DEVDATA, DEVDATA_REASON, STANDIN
from web.settings import Config, load_config


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


# -- the HailoRT stand-in (tests/hailo_standin), for tests/npu/test_hailo_*.py ----------
# Imported only inside these fixtures, so tests that do not ask for them never load it.


def _standin():
    import sys

    if str(STANDIN) not in sys.path:
        sys.path.insert(0, str(STANDIN))
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
