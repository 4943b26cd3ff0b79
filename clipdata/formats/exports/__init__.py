"""Hand-off files written beside a layout (`--export`): one module per target, each with
`export(out, rows, options) -> list[Path]` over the manifest rows, imported only when used."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from ...errors import OptionError

EXPORTS = {"hf": "hf", "openclip": "openclip", "webdataset": "webdataset"}


@dataclass(frozen=True)
class ExportOptions:
    relative: bool = False  # open_clip: paths relative to OUT
    shard_size: int = 10_000  # webdataset: samples per shard
    classes: tuple[str, ...] = ()  # the global class list (sorted): one class index across splits


def parse_exports(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """`hf,openclip` or a list of names -> the exporter names, validated."""
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else [v for x in value for v in x.split(",")]
    names = [i.strip().lower() for i in items if i.strip()]
    unknown = [n for n in names if n not in EXPORTS]
    if unknown:
        raise OptionError(f"--export {', '.join(unknown)} is not known", hint=f"choose from: {', '.join(EXPORTS)}")
    return sorted(set(names), key=names.index)


def load_export(name: str) -> ModuleType:
    return importlib.import_module(f".{EXPORTS[name]}", __name__)
