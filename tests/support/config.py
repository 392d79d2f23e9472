"""Configurations for tests."""

from __future__ import annotations

import attrs

from web.settings import Config


def with_changes(config: Config, **sections: dict) -> Config:
    """``config`` with some keys of some sections replaced."""
    changes = {name: attrs.evolve(getattr(config, name), **keys) for name, keys in sections.items()}
    return attrs.evolve(config, **changes)
