"""Data: load any supported format, validate and clean (every rejected row kept with its reason), deduplicate,
split, augment and measure. ``prepare_data`` does it all; ``load_split`` reads a prepared split back."""

from __future__ import annotations

from typing import Any

__all__ = ["DataError", "DataReport", "Example", "load_split", "prepare_data"]

_WHERE = {"DataError": "errors", "DataReport": "stats", "Example": "example", "load_split": "prepare", "prepare_data": "prepare"}


def __getattr__(name: str) -> Any:  # lazy, so importing tunewise.example stays cheap and cycle-free
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"tunewise.data.{_WHERE[name]}"), name)
    raise AttributeError(name)
