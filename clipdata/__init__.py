"""clipdata: image datasets in and out of the CLIP classification layout.

Importing the package is cheap: the API functions load their modules on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["convert", "inspect", "label", "review_apply", "evaluate", "search", "unique", "duplicates",
           "ClipdataError", "__version__"]

from .errors import ClipdataError

if TYPE_CHECKING:  # pragma: no cover
    from .api import convert, duplicates, evaluate, inspect, label, review_apply, search, unique


def __getattr__(name: str) -> Any:
    if name in __all__[:8]:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'clipdata' has no attribute {name!r}")
