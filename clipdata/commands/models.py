"""`clipdata models`: the model families clipdata scores, what each needs installed and
whether it is, and a --model value for each (clipdata/embedding/families.py is the table)."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from ..embedding.families import FAMILIES, LEFT_OUT, Family

# what a family's `needs` names -> the modules that must import
_MODULES = {"clipdata[clip]": ("torch", "transformers"), "sentencepiece": ("sentencepiece",),
            "clipdata[open_clip]": ("open_clip", "torchvision")}


@dataclass
class ModelsReport:
    families: list[Family]
    installed: dict[str, bool]  # family key -> its packages are installed (found, not imported)
    left_out: dict[str, str] = field(default_factory=dict)  # model types -> why they are not scored


def _installed(family: Family) -> bool:
    modules = [m for need, mods in _MODULES.items() if need in family.needs for m in mods]
    return all(importlib.util.find_spec(m) is not None for m in modules)


def models() -> ModelsReport:
    """The family table, with whether each family's packages are installed here."""
    return ModelsReport(list(FAMILIES), {f.key: _installed(f) for f in FAMILIES}, dict(LEFT_OUT))
