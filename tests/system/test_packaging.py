"""The wheel carries every package of the service: ``pyproject.toml`` lists them by name, so
a new subpackage left out of it works from the checkout and fails once installed."""

from __future__ import annotations

import tomllib

from tests.support.paths import REPO


def test_every_package_of_the_service_is_in_the_wheel():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("ocr", "npu", "actors", "web")
        for init in (REPO / top).rglob("__init__.py")
    }
    assert found == listed
