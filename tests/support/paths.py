"""Where things are, for tests and the helpers: the checkout, the HailoRT stand-in, devdata."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

#: The checkout: subprocess tests run ``python -m web.cli`` from here.
REPO: Final = Path(__file__).resolve().parents[2]

#: The HailoRT stand-in (a labelled test double of ``hailo_platform``): on ``sys.path``,
#: or on a subprocess's ``PYTHONPATH``, ``import hailo_platform`` finds it.
STANDIN: Final = REPO / "tests" / "hailo_standin"


def devdata_dir() -> Path | None:
    """``../shared/devdata`` beside the checkout (or ``$HAILO_OCR_DEVDATA``), if present."""
    env = os.environ.get("HAILO_OCR_DEVDATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "devdata")
    for c in candidates:
        if (c / "score.py").is_file():
            return c
    return None


DEVDATA: Final = devdata_dir()
DEVDATA_REASON: Final = (
    "the real-image tests need ../shared/devdata (research-use images that are never copied "
    "into the project); it is beside the checkout on developer machines and in CI, "
    "or set HAILO_OCR_DEVDATA to its path"
)
