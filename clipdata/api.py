"""The Python API. The CLI is a thin wrapper over these functions."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .check import InspectReport, inspect
from .conversion import Report, convert

if TYPE_CHECKING:  # pragma: no cover
    from .labeling import LabelReport, label
    from .reviewing import ReviewReport, review_apply

__all__ = ["convert", "inspect", "label", "review_apply", "Report", "InspectReport", "LabelReport", "ReviewReport"]


def __getattr__(name: str) -> Any:
    """label and review pull in numpy (and, when run, torch): imported on first use."""
    if name in ("label", "LabelReport"):
        from . import labeling as module
        return getattr(module, name)
    if name in ("review_apply", "ReviewReport"):
        from . import reviewing as module
        return getattr(module, name)
    raise AttributeError(name)
