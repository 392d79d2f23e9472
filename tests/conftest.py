"""Shared fixtures: the real-image folder, configurations, and a running service."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest

from ocr.config import Config, load_config

REPO = Path(__file__).resolve().parent.parent


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
