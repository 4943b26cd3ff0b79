"""clipdata: image datasets in and out of the CLIP classification layout.

The public API is one lazy table: importing the package is cheap (no numpy, no torch), and
each function's module loads on first use. Every command has its function here; the CLI only
wraps them.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import ClipdataError

if TYPE_CHECKING:  # pragma: no cover
    from .commands.audit import AuditReport, audit
    from .commands.backend import review_backend
    from .commands.check import CheckReport, check
    from .commands.convert import ConvertOptions, Report, convert
    from .commands.embed import EmbedReport, embed
    from .commands.evaluate import EvalReport, evaluate
    from .commands.inspect import InspectReport, inspect
    from .commands.label import LabelReport, label
    from .commands.models import ModelsReport, models
    from .commands.prompts import PromptsReport, prompts
    from .commands.rank import RankReport, duplicates, search, unique
    from .commands.review import ReviewReport, review_apply
    from .commands.serve import review_serve
    from .embedding.engine import ModelSpec
    from .embedding.spec import EngineSpec

# name -> the module that defines it (relative to this package)
_API = {
    "convert": "commands.convert", "ConvertOptions": "commands.convert", "Report": "commands.convert",
    "inspect": "commands.inspect", "InspectReport": "commands.inspect",
    "label": "commands.label", "LabelReport": "commands.label",
    "review_apply": "commands.review", "ReviewReport": "commands.review",
    "review_serve": "commands.serve", "review_backend": "commands.backend",
    "evaluate": "commands.evaluate", "EvalReport": "commands.evaluate",
    "prompts": "commands.prompts", "PromptsReport": "commands.prompts", "audit": "commands.audit", "AuditReport": "commands.audit",
    "search": "commands.rank", "unique": "commands.rank", "duplicates": "commands.rank", "RankReport": "commands.rank",
    "embed": "commands.embed", "EmbedReport": "commands.embed",
    "check": "commands.check", "CheckReport": "commands.check",
    "models": "commands.models", "ModelsReport": "commands.models",
    "EngineSpec": "embedding.spec", "ModelSpec": "embedding.engine",
}

__all__ = sorted(_API) + ["ClipdataError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'clipdata' has no attribute {name!r}")
