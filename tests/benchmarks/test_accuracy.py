"""Accuracy against ground truth: the service's reading of real labelled images must not
fall below recorded floors.

Ground truth is the judge (not agreement with another engine): each devdata folder with a
``gt.json`` is read through the in-process service with the default configuration and
scored with devdata's ``score.py`` exactly as ``benchmarks/accuracy.py`` scores it (word
F1 case-insensitive and CER; char F1 and CER without spaces for the page-level Chinese
folder). To keep the suite quick it reads a fixed subset, the first images of each folder
by name; the floors are for that subset. They were recorded from the default
configuration with a small margin for ONNX Runtime builds that round differently
(``python -m benchmarks.accuracy --ours in-process --limit N`` prints the same figures).
A change that costs accuracy fails here; a change that gains some should raise the floors.
"""

from __future__ import annotations

import sys
from typing import Final

import pytest

from tests.support.paths import REPO

pytestmark = [pytest.mark.devdata, pytest.mark.slow]

#: Images read per folder (the first ones by file name).
SUBSET: Final = {"icdar2015_dev": 15, "sroie_dev": 5, "funsd_dev": 3, "mtwi_dev": 24}
#: (lowest F1, highest error rate) per folder on that subset.
#: Measured (ONNX Runtime 1.32, x86-64): icdar 0.724 / 0.284, sroie 0.938 / 0.046, funsd
#: 0.880 / 0.082, mtwi 0.840 / 0.462; the margins are about one word (icdar: 55 words)
#: or about one percent of characters.
FLOORS: Final = {
    "icdar2015_dev": (0.70, 0.30),
    "sroie_dev": (0.925, 0.055),
    "funsd_dev": (0.87, 0.09),
    "mtwi_dev": (0.83, 0.47),
}


@pytest.fixture(scope="module")
def scores(devdata, devdata_score):
    """Every folder's subset through the service once (the expensive part)."""
    if str(REPO) not in sys.path:  # benchmarks/ is a folder of scripts, not installed
        sys.path.insert(0, str(REPO))
    from benchmarks import accuracy

    folders = [f for name, n in SUBSET.items()
               for f in accuracy.folders(devdata, [name], limit=n)]
    jobs = [(accuracy.key(f, p), p.read_bytes(), f.language) for f in folders for p in f.images]
    answers = accuracy.run_ours_in_process(jobs, accuracy.ours_config(), concurrency=2)
    assert set(answers) == {k for k, _, _ in jobs}
    return {f.name: (f, accuracy.headline(f, accuracy.score_folder(devdata_score, f, answers)))
            for f in folders}


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_accuracy_on_devdata_is_not_below_its_floor(scores, name):
    if name not in scores:
        pytest.skip(f"{name} is not in devdata")
    f, (f1, error) = scores[name]
    assert len(f.images) == SUBSET[name]
    min_f1, max_error = FLOORS[name]
    assert f1 >= min_f1, f"{name}: F1 {f1:.4f} below its floor {min_f1}"
    assert error <= max_error, f"{name}: error rate {error:.4f} above its ceiling {max_error}"
