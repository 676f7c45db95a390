"""Training objectives: what a training step optimises (the extension point for new kinds of training).

Each objective is one module here exposing ``OBJECTIVE`` (an :class:`tunewise.objectives.base.Objective`); the
config's ``objective`` picks one by name (tunewise/config.py lists the names). What is trained (full, LoRA, QLoRA...)
is the method registry's business (tunewise/lm/adapters.py) and combines with any objective."""

from __future__ import annotations

import importlib

from tunewise.config import OBJECTIVES
from tunewise.objectives.base import Objective


def get_objective(name: str) -> Objective:
    """The objective called ``name`` (sft, dpo, orpo, kto)."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; use one of {', '.join(OBJECTIVES)}")
    return importlib.import_module(f"tunewise.objectives.{name}").OBJECTIVE


__all__ = ["OBJECTIVES", "Objective", "get_objective"]
