"""The Python API. The CLI is a thin wrapper over these functions."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .check import InspectReport, inspect
from .conversion import Report, convert

if TYPE_CHECKING:  # pragma: no cover
    from .labeling import LabelReport, label
    from .rank import RankReport, duplicates, search, unique
    from .reviewing import ReviewReport, review_apply
    from .zeroshot import EvalReport, evaluate

__all__ = ["convert", "inspect", "label", "review_apply", "evaluate", "search", "unique", "duplicates",
           "Report", "InspectReport", "LabelReport", "ReviewReport", "EvalReport", "RankReport"]

# The CLIP commands pull in numpy (and, when run, torch): imported on first use.
_LAZY = {"label": "labeling", "LabelReport": "labeling", "review_apply": "reviewing", "ReviewReport": "reviewing",
         "evaluate": "zeroshot", "EvalReport": "zeroshot", "search": "rank", "unique": "rank",
         "duplicates": "rank", "RankReport": "rank"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __package__), name)
    raise AttributeError(name)
