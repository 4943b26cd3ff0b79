"""What the readers of annotation tools (LabelMe, CVAT, Label Studio, CreateML) share: a
shape made into a label (a box, with its polygon as the mask when masks are asked for), a
rotated rectangle's corners, numbers checked before they are trusted, and image paths
looked up without ever leaving the folders the user gave."""
from __future__ import annotations

import math
import os
from pathlib import Path, PurePosixPath

from ..errors import SourceError
from ..imagefiles import is_image_name
from ..masks import Mask, Polygon, check_polygon
from ..records import Label, Skip, Source

Box = tuple[float, float, float, float]


def images_folder(images: str | Path | None) -> Path | None:
    """The `--images` folder, checked."""
    folder = Path(images) if images is not None else None
    if folder is not None and not folder.is_dir():
        raise SourceError("--images folder not found", file=folder)
    return folder


def number(value: object, text: bool = False) -> float | None:
    """A finite number, or None (`true`, NaN, infinities and integers beyond a float are
    not; a string only with `text`, for XML attributes)."""
    if type(value) is str and text:
        try:
            value = float(value)
        except ValueError:
            return None
    if type(value) not in (int, float):
        return None
    try:
        v = float(value)  # type: ignore[arg-type]
    except OverflowError:  # a JSON integer of 400 digits is no coordinate either
        return None
    return v if math.isfinite(v) else None


def points_polygon(points: object) -> Polygon | str:
    """`[[x, y], …]` as a flat polygon, or the skip reason with its detail ("empty_polygon: …"
    for fewer than three points, "invalid_box: …" for anything that is not numbers)."""
    if not isinstance(points, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in points):
        return "invalid_box: points must be a list of [x, y] pairs"
    flat = []
    for p in points:
        for v in p:
            n = number(v) if type(v) is not str else None
            if n is None:
                return "invalid_box: a coordinate is not a finite number"
            flat.append(n)
    return flat_polygon(flat)


def flat_polygon(flat: list[float]) -> Polygon | str:
    poly = check_polygon(flat)
    if isinstance(poly, str):
        return ("empty_polygon: " if poly.startswith("empty:") else "invalid_box: ") + poly.split(": ", 1)[1]
    return poly


def extent(poly: Polygon) -> Box:
    xs, ys = poly[0::2], poly[1::2]
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def shape_label(name: str, polys: list[Polygon], ann_id: object, masks: bool) -> Label:
    """A label whose box is the extent of its polygons, and whose mask (when asked for) is
    their union."""
    box = extent(tuple(v for p in polys for v in p)) if len(polys) > 1 else extent(polys[0])
    return Label(name, box, ann_id, mask=Mask(polygons=tuple(polys)) if masks else None)


def rectangle(x: float, y: float, w: float, h: float, degrees: float, cx: float, cy: float) -> Polygon:
    """The corners of the rectangle (x, y, w, h) turned `degrees` clockwise (image axes: y
    points down) around (cx, cy)."""
    a = math.radians(degrees)
    cos, sin = math.cos(a), math.sin(a)
    out: list[float] = []
    for px, py in ((x, y), (x + w, y), (x + w, y + h), (x, y + h)):
        dx, dy = px - cx, py - cy
        out += [cx + dx * cos - dy * sin, cy + dx * sin + dy * cos]
    return tuple(out)


def skip_of(reason_detail: str, item: str, where: str, ann_id: object) -> Skip:
    """A Skip from a "reason: detail" string."""
    reason, _, detail = reason_detail.partition(": ")
    return Skip(reason, item, f"{where}: {detail}", ann_id)


def keep(made: Label | str, labels: list[Label], src: Source, item: str, where: str, ann_id: object) -> None:
    """A label made from a shape joins the image's labels; a reason is counted as a skip."""
    if isinstance(made, str):
        src.skipped.append(skip_of(made, item, where, ann_id))
    else:
        labels.append(made)


def declare(src: Source, labels: list[Label]) -> None:
    """The classes a source declares: its labels' names, in the order first met."""
    for label in labels:
        if label.name not in src.classes:
            src.classes.append(label.name)


class ImageFinder:
    """Looks up the image an annotation names: as written (Windows separators read as
    separators) from the annotation's folder or `--images`, then by its file name alone. A
    name that resolves outside the source folder and `--images` (`../../etc/passwd`, an
    absolute path elsewhere) is never opened: only its file name is looked up, and `outside`
    counts such names for a note."""

    def __init__(self, root: Path, images: Path | None) -> None:
        self.roots = [os.path.realpath(root if root.is_dir() else root.parent)]
        self.images = images
        if images is not None:
            self.roots.append(os.path.realpath(images))
        self.outside: list[str] = []

    def allowed(self, path: Path) -> bool:
        real = os.path.realpath(path)
        return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in self.roots)

    def find(self, name: str, near: Path) -> tuple[Path | None, tuple[str, ...]]:
        """(the image file or None, the folders searched)."""
        rel = PurePosixPath(name.replace("\\", "/"))
        bases = [near] + ([self.images] if self.images is not None else [])
        searched = tuple(str(b) for b in bases)
        if not name or "\0" in name:
            return None, searched
        left = False
        for base in bases:
            cand = Path(rel) if rel.is_absolute() else base / rel
            if self.allowed(cand):
                if _is_file(cand):
                    return Path(os.path.normpath(cand)), searched
            else:
                left = True
        if left:
            self.outside.append(name)
        for base in bases:
            cand = base / rel.name
            if rel.name and self.allowed(cand) and _is_file(cand):
                return cand, searched
        return None, searched

    def note(self) -> list[str]:
        if not self.outside:
            return []
        shown = ", ".join(repr(n) for n in self.outside[:3]) + (f" and {len(self.outside) - 3} more"
                                                              if len(self.outside) > 3 else "")
        return [f"{len(self.outside)} image path(s) lead outside the source folder and --images: not followed, "
                f"only their file names were looked up ({shown})"]


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def image_name(name: str) -> bool:
    return is_image_name(PurePosixPath(name.replace("\\", "/")).name)
