"""The format registry: a name maps to the module that reads it, imported only when used.

Adding a format means one new module here (a `read(path, **options) -> Source` function),
its page under formats/ at the top of the repository, its tests, and one line below.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from ..errors import OptionError


@dataclass(frozen=True)
class Format:
    name: str
    module: str  # relative to clipdata.formats
    summary: str
    example: str


REGISTRY: dict[str, Format] = {
    f.name: f
    for f in (
        Format("folder", "folder", "folder-per-class images (torchvision ImageFolder rules)",
               "clipdata convert folder photos/ out/"),
        Format("coco", "coco", "COCO object detection JSON; each box becomes a crop",
               "clipdata convert coco annotations.json out/"),
        Format("yolo", "yolo", "YOLO labels: Ultralytics data.yaml, Darknet obj.data, or classes.txt",
               "clipdata convert yolo data.yaml out/"),
        Format("voc", "voc", "Pascal VOC XML: Annotations/ + JPEGImages/",
               "clipdata convert voc VOCdevkit/VOC2012 out/"),
        Format("review", "review", "a reviewed `clipdata label` output (review tree, Label Studio export, CSV)",
               "clipdata review apply labeled/ out/"),
    )
}

# Hand-off files written beside the layout (`--export`), each a module with `export()`.
EXPORTS = {"hf": "hf", "openclip": "openclip"}


def get(name: str) -> Format:
    try:
        return REGISTRY[name.lower()]
    except KeyError:
        raise OptionError(
            f"unknown format {name!r}",
            hint=f"choose one of: {', '.join(sorted(REGISTRY))}",
        ) from None


def load(name: str) -> ModuleType:
    return importlib.import_module(f".{get(name).module}", __name__)


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


def split_name(token: str) -> str | None:
    """The canonical split for a folder or file-name token: train, valid or test."""
    t = token.lower().rstrip("0123456789")
    if t == "train":
        return "train"
    if t in ("val", "valid", "validation"):
        return "valid"
    if t == "test":
        return "test"
    return None


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def is_image_name(name: str) -> bool:
    """torchvision's rule: the extension, matched case-insensitively."""
    return name.lower().endswith(IMAGE_EXTENSIONS)
