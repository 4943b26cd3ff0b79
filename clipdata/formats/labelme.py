"""LabelMe JSON reader (wkentaro/labelme): a folder of `.json` files, one per image, each
with `shapes` (`label`, `points`, `shape_type`, `group_id`), `imagePath`, `imageData` (the
image itself, base64, when saved with it), `imageWidth`/`imageHeight` and image `flags`.

Rectangles become boxes, polygons boxes with their polygon as the mask; shapes sharing a
label and a `group_id` are one object (as labelme's own labelme2coco joins them); other
shape types are counted as `unsupported_shape`; exactly one true image flag is a
whole-image label. The rules and quirks are in formats/labelme.md.
"""
from __future__ import annotations

import base64
import binascii
from pathlib import Path, PurePosixPath

from ..errors import SourceError
from ..imagefiles import OTHER, SPECIAL, BROKEN, content_extension, relative_name, walk
from ..records import Label, Sample, Skip, Source, split_name
from ..textfiles import load_json
from .shapes import ImageFinder, declare, images_folder, extent, image_name, number, points_polygon, shape_label, skip_of

IGNORE = "__ignore__"  # labelme's label (and flag) for regions to leave out


def read(path: str | Path, *, images: str | Path | None = None, split: str | None = None,
         masks: bool = False) -> Source:
    path = Path(path)
    images_dir = images_folder(images)
    if path.is_file():
        root, files = path.parent, [path]
    elif path.is_dir():
        root, files = path, []
    else:
        raise SourceError("not found", file=path)
    src = Source(format="labelme", path=path, classes=[], samples=[])
    if path.is_dir():
        for e in walk(path, inside=path):
            if e.path.suffix.lower() != ".json":
                continue
            if e.kind == OTHER:
                files.append(e.path)
            elif e.kind in (SPECIAL, BROKEN):
                src.skipped.append(Skip("not_a_regular_file" if e.kind == SPECIAL else "broken_link",
                                        relative_name(e.path, root), "never opened"))
    finder = ImageFinder(root, images_dir)
    counts = {"joined": 0, "objects": 0, "multi_flags": 0, "ignored_flags": 0}
    for f in files:
        data = load_json(f)
        rel = relative_name(f, root)
        if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
            if path.is_file():
                raise SourceError('not a LabelMe file: expected an object with a "shapes" list', file=f)
            src.unused_files.append(rel)
            continue
        first = PurePosixPath(rel).parts[0] if "/" in rel else ""
        the_split = split or split_name(first) or "train"
        src.samples.append(_sample(data, f, rel, the_split, finder, masks, src, counts))
    if not src.samples and not src.skipped:
        raise SourceError("no LabelMe JSON file found", file=path,
                          hint="pass the folder holding labelme's .json files (or one of them)")
    src.notes += finder.note()
    if src.unused_files:
        src.notes.append(f"JSON file(s) not read (not LabelMe files): {', '.join(src.unused_files[:5])}"
                         + (f" and {len(src.unused_files) - 5} more" if len(src.unused_files) > 5 else ""))
    if counts["joined"]:
        src.notes.append(f"{counts['joined']} shapes sharing a label and a group_id were joined into "
                         f"{counts['objects']} objects")
    if counts["multi_flags"]:
        src.notes.append(f"{counts['multi_flags']} image(s) have several true flags: none is used as a whole-image "
                         "label (a layout folder holds one class per image)")
    if counts["ignored_flags"]:
        src.notes.append(f"{counts['ignored_flags']} image(s) are flagged {IGNORE}: their flags give no label")
    return src


def _embedded_ext(data: object) -> str | None:
    """The image type of base64 `imageData`, from its first bytes; None when it is none."""
    if not isinstance(data, str) or not data:
        return None
    try:
        head = base64.b64decode(data[:32], validate=True)
    except (binascii.Error, ValueError):
        return "bin"
    return content_extension(head) or "bin"


def _sample(data: dict, file: Path, rel: str, split: str, finder: ImageFinder, masks: bool,
            src: Source, counts: dict[str, int]) -> Sample:
    where = lambda i: f"shapes[{i}]"  # noqa: E731
    image_path = data.get("imagePath")
    if image_path is not None and not isinstance(image_path, str):
        raise SourceError('"imagePath" must be a string', file=file, where="imagePath")
    name = image_path or ""
    path, searched = (None, (str(file.parent),))
    if name and image_name(name):
        path, searched = finder.find(name, file.parent)
    embedded = False
    if path is None:
        ext = _embedded_ext(data.get("imageData"))
        if ext is not None:  # the pixels travel in the JSON (imagePath may even name the JSON)
            path, embedded = file, True
            rel_image = str(PurePosixPath(rel).with_suffix("." + ext))
        else:
            rel_image = name or rel
    else:
        rel_image = relative_name(path, Path(finder.roots[0]))
    w, h = (number(data.get("imageWidth")), number(data.get("imageHeight")))
    size_ok = w is not None and h is not None and w >= 1 and h >= 1 and w.is_integer() and h.is_integer()

    labels: list[Label] = []
    groups: dict[tuple[str, object], list[tuple[int, object]]] = {}
    for i, shape in enumerate(data["shapes"]):
        if not isinstance(shape, dict):
            raise SourceError("a shape must be an object", file=file, where=where(i))
        label = shape.get("label")
        if not isinstance(label, str):
            raise SourceError('"label" must be a string', file=file, where=where(i))
        kind = shape.get("shape_type") or "polygon"  # labelme before 3.0 wrote no shape_type
        ann_id = i + 1
        if not label.strip():
            src.skipped.append(Skip("no_label", rel_image, f"{where(i)}: an empty label", ann_id))
            continue
        if label == IGNORE:
            src.skipped.append(Skip("dropped_class", rel_image, f"{where(i)}: labelme's {IGNORE} label", ann_id))
            continue
        if kind not in ("polygon", "rectangle"):
            src.skipped.append(Skip("unsupported_shape", rel_image, f"{where(i)}: shape_type {kind!r}", ann_id))
            continue
        poly = points_polygon(shape.get("points"))
        if kind == "rectangle":
            if isinstance(poly, str) and poly.startswith("empty_polygon"):  # two corners: a rectangle's own
                poly = _corners(shape.get("points"))
            if isinstance(poly, tuple):
                x, y, bw, bh = extent(poly)
                poly = (x, y, x + bw, y, x + bw, y + bh, x, y + bh)  # labelme2coco's rectangle polygon
        if isinstance(poly, str):
            src.skipped.append(skip_of(poly, rel_image, where(i), ann_id))
            continue
        group = shape.get("group_id")
        if group is not None:
            groups.setdefault((label, group), []).append((ann_id, (kind, poly)))
            continue
        if kind == "rectangle":
            labels.append(Label(label, extent(poly), ann_id))
        else:
            labels.append(shape_label(label, [poly], ann_id, masks))
    for (label, group), members in groups.items():
        polys = [poly for _, (_, poly) in members]
        if len(members) == 1 and members[0][1][0] == "rectangle":
            labels.append(Label(label, extent(polys[0]), members[0][0]))
            continue
        if len(members) > 1:
            counts["joined"] += len(members)
            counts["objects"] += 1
        labels.append(shape_label(label, polys, members[0][0], masks))
    labels += _flag_label(data.get("flags"), counts)
    declare(src, labels)
    return Sample(name=rel_image, path=path, split=split, labels=labels, embedded=embedded,
                  width=int(w) if size_ok else None, height=int(h) if size_ok else None, searched=searched)


def _corners(points: object) -> tuple[float, ...] | str:
    """A rectangle's two corners, [[x1, y1], [x2, y2]] in any order, as a flat list."""
    if isinstance(points, list) and len(points) == 2:
        flat = [number(v) for p in points if isinstance(p, list) and len(p) == 2 for v in p
                if type(v) is not str]
        if len(flat) == 4 and None not in flat:
            return tuple(flat)  # type: ignore[arg-type]
    return "invalid_box: a rectangle needs two [x, y] corners"


def _flag_label(flags: object, counts: dict[str, int]) -> list[Label]:
    """The image's class from its flags (labelme's classification mode): exactly one true."""
    if not isinstance(flags, dict):
        return []
    if flags.get(IGNORE) is True:
        counts["ignored_flags"] += 1
        return []
    on = [k for k, v in flags.items() if v is True and isinstance(k, str) and not k.startswith("__")]
    if len(on) > 1:
        counts["multi_flags"] += 1
        return []
    return [Label(on[0], None, "flags")] if on else []
