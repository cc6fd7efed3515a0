"""The one rule every registry here follows (datasets, zero-shot tasks): a name is registered once."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def register_unique(registry: dict[str, T], name: str, item: T, what: str) -> T:
    """Add `item` under `name` and return it; a second item under the same name is a ValueError naming `what`."""
    if name in registry:
        raise ValueError(f"{what} {name!r} is registered twice")
    registry[name] = item
    return item
