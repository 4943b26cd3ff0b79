"""The format registry: a name maps to the module that reads it, imported only when used
(fsspec's lazy registry). Adding a format is one module here with a `read(path, **options)`
function taking only the ReadOptions fields it declares, its page under formats/ at the top
of the repository, its tests, and one `register_reader` line below.

Options a reader does not take are refused, never swallowed: `--include-crowd` on a VOC set
is a usage mistake the user should hear about.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType

from ..errors import OptionError
from ..records import Source


@dataclass(frozen=True)
class ReadOptions:
    """Every option a reader may take; each reader declares the ones it uses."""

    images: str | Path | None = None  # where the images are, when not beside the annotations
    split: str | None = None  # the split of a source without splits
    include_crowd: bool = False  # COCO
    skip_difficult: bool = False  # VOC
    masks: bool = False  # keep object masks (polygons, RLE): convert --mask fill|alpha


OPTION_FLAGS = {"images": "--images", "split": "--split", "include_crowd": "--include-crowd",
                "skip_difficult": "--skip-difficult", "masks": "--mask"}
# Options a reader without them simply does not use: a VOC box has no mask, and is cropped
# as a rectangle (counted in a note), never refused.
QUIET_OPTIONS = frozenset({"masks"})


@dataclass(frozen=True)
class Format:
    name: str
    module: str  # relative to clipdata.formats
    summary: str
    example: str
    options: tuple[str, ...]  # the ReadOptions fields its reader takes


REGISTRY: dict[str, Format] = {}


def register_reader(name: str, module: str, summary: str, example: str, options: tuple[str, ...]) -> None:
    REGISTRY[name] = Format(name, module, summary, example, options)


register_reader("folder", "folder", "folder-per-class images (torchvision ImageFolder rules)",
                "clipdata convert folder photos/ out/", ("split",))
register_reader("coco", "coco", "COCO object detection JSON (boxes, polygons, RLE); each box becomes a crop",
                "clipdata convert coco annotations.json out/", ("images", "split", "include_crowd", "masks"))
register_reader("yolo", "yolo", "YOLO labels (boxes, segments, oriented boxes): Ultralytics data.yaml, Darknet obj.data, or classes.txt",
                "clipdata convert yolo data.yaml out/", ("split", "masks"))
register_reader("voc", "voc", "Pascal VOC XML: Annotations/ + JPEGImages/",
                "clipdata convert voc VOCdevkit/VOC2012 out/", ("images", "split", "skip_difficult"))
register_reader("labelme", "labelme", "LabelMe JSON files (rectangles, polygons, image flags)",
                "clipdata convert labelme annotated/ out/", ("images", "split", "masks"))
register_reader("cvat", "cvat", "CVAT for images 1.1 XML (boxes, rotated boxes, polygons, masks, tags)",
                "clipdata convert cvat export/annotations.xml out/", ("images", "split", "masks"))
register_reader("labelstudio", "labelstudio", "a Label Studio JSON or JSON_MIN export (rectangles, polygons, choices)",
                "clipdata convert labelstudio export.json out/ --images photos/", ("images", "split", "masks"))
register_reader("createml", "createml", "Apple Create ML JSON (centre-based boxes), or Roboflow's Create ML export",
                "clipdata convert createml export/ out/", ("images", "split"))
register_reader("review", "review", "a reviewed `clipdata label` output (review tree, Label Studio export, CSV)",
                "clipdata review apply labeled/ out/", ("images", "split"))


def get(name: str) -> Format:
    try:
        return REGISTRY[name.lower()]
    except KeyError:
        choices = "; ".join(f"{f.name} ({f.summary})" for f in REGISTRY.values())
        raise OptionError(f"unknown format {name!r}", hint=f"choose one of: {choices}; or auto (told from the files)") from None


def load(name: str) -> ModuleType:
    return importlib.import_module(f".{get(name).module}", __name__)


def read(name: str, path: Path, options: ReadOptions) -> Source:
    """Read `path` with the reader of format `name`, passing the options it takes and refusing
    the ones it does not."""
    fmt = get(name)
    given = {f.name: getattr(options, f.name) for f in fields(options)}
    defaults = ReadOptions()
    stray = [k for k, v in given.items()
             if k not in fmt.options and k not in QUIET_OPTIONS and v != getattr(defaults, k)]
    if stray:
        raise OptionError(f"{', '.join(OPTION_FLAGS[k] for k in stray)} does not apply to the {fmt.name} format",
                          hint=f"{fmt.name} takes: {', '.join(OPTION_FLAGS[k] for k in fmt.options) or 'no reader options'}")
    return load(name).read(path, **{k: given[k] for k in fmt.options})
