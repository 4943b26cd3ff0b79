"""The one record type every reader yields and every writer takes.

A reader turns a dataset into a `Source`: the declared classes, one `Sample` per image with
its labels, and what it had to leave out. Nothing downstream knows which format it came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .masks import Mask

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True, slots=True)
class Label:
    """One label on an image: a box in source pixels, or the whole image when `box` is None;
    `mask` the object's shape, when the source has one and masks were asked for."""

    name: str
    box: tuple[float, float, float, float] | None = None  # x, y, w, h
    id: int | str | None = None  # the annotation id as the source gives it
    iscrowd: bool = False
    mask: Mask | None = None


@dataclass(slots=True)
class Sample:
    """One source image.

    `path` is the file on disk, or None when the reader could not find it (then `searched`
    lists the folders it tried). `name` is the image as the source names it.
    `width`/`height` are the size the annotations were made on, when the source says so.
    `embedded`: `path` is a LabelMe JSON holding the image itself (`imageData`).
    """

    name: str
    path: Path | None
    split: str
    labels: list[Label] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    searched: tuple[str, ...] = ()
    embedded: bool = False  # the pixels are base64 `imageData` inside `path` (a LabelMe JSON)


@dataclass(frozen=True)
class Skip:
    """An item left out, and why. `reason` is a short stable key used for counting."""

    reason: str
    item: str
    detail: str = ""
    annotation_id: int | str | None = None
    labels: int = 0  # an image left out at read time: how many labels (boxes) went with it


@dataclass
class Source:
    """What a reader returns: everything the transform and the writer need."""

    format: str
    path: Path
    classes: list[str]  # declared class names, in the source's order
    samples: list[Sample]
    skipped: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    group: str | None = None  # the annotation group's name, where the source says (Roboflow)
    unused_files: list[str] = field(default_factory=list)  # annotation files found but not read


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
