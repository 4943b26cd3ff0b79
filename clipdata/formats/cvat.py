"""CVAT for images 1.1 XML reader: `<image>` elements with `<box>` (rotated too),
`<polygon>`, `<mask>` (CVAT's own row-major RLE in a box) and `<tag>` (a whole-image label);
`subset` attributes (a project export) or `<meta><task><subset>` give the splits. Read
incrementally (one `<image>` in memory at a time) by a parser that refuses entities. The
rules and quirks are in formats/cvat.md.
"""
from __future__ import annotations

import os
from pathlib import Path
from xml.etree.ElementTree import Element

from ..errors import SourceError
from ..imagefiles import IMAGE, relative_name, walk
from ..masks import Mask, rle_from_rows
from ..records import Label, Sample, Skip, Source, split_name
from ..xmlfile import iterparse
from .shapes import ImageFinder, declare, flat_polygon, images_folder, keep, number, rectangle, shape_label

SHAPES = ("box", "polygon", "mask", "tag", "polyline", "points", "ellipse", "cuboid", "skeleton")


def find_xml(folder: Path) -> Path:
    """`annotations.xml` (CVAT's export), else the only XML file of the folder."""
    if (folder / "annotations.xml").is_file():
        return folder / "annotations.xml"
    found = sorted(p for p in folder.glob("*.xml") if p.is_file())
    if len(found) == 1:
        return found[0]
    raise SourceError("no annotations.xml in this folder" if not found else
                      f"{len(found)} XML files and no annotations.xml: which one is CVAT's?", file=folder,
                      hint="pass the CVAT XML file itself")


def read(path: str | Path, *, images: str | Path | None = None, split: str | None = None,
         masks: bool = False) -> Source:
    path = Path(path)
    images_dir = images_folder(images)
    if path.is_dir():
        xml = find_xml(path)
    elif path.is_file():
        xml = path
    else:
        raise SourceError("not found", file=path)
    src = Source(format="cvat", path=xml, classes=[], samples=[])
    finder = ImageFinder(xml.parent, images_dir)
    task_subset: str | None = None
    stack: list[str] = []
    counts: dict = {"rotated": 0, "other_subset": set()}
    for event, el in iterparse(xml):
        if event == "start":
            if not stack and el.tag != "annotations":
                raise SourceError(f"root element is <{el.tag}>, not <annotations>: not a CVAT XML file", file=xml)
            stack.append(el.tag)
            continue
        stack.pop()
        if el.tag == "label" and stack and stack[-1] == "labels" and "meta" in stack:
            name = el.findtext("name")
            if name and name.strip() and name not in src.classes:
                src.classes.append(name)
        elif el.tag == "subset" and stack[-2:] == ["meta", "task"] and el.text and el.text.strip():
            task_subset = el.text.strip()
        elif el.tag == "track" and len(stack) == 1:
            raise SourceError("this is a CVAT for video XML (tracks), which is not read", file=xml,
                              hint="export the task as 'CVAT for images 1.1'")
        elif el.tag == "image" and len(stack) == 1:
            src.samples.append(_image(el, xml, finder, split, task_subset, masks, src, counts))
            el.clear()
        elif len(stack) == 1 and el.tag != "meta":
            el.clear()
    if not stack and not src.samples and not src.skipped:
        src.notes.append("the XML lists no image")
    src.notes += finder.note()
    if counts["rotated"]:
        src.notes.append(f"{counts['rotated']} rotated box(es): cropped by their corners' extent "
                         "(with --mask, cut to the rotated box)")
    if counts["other_subset"]:
        src.notes.append(f"subset(s) {', '.join(sorted(counts['other_subset']))} are not train/valid/test: "
                         f"read as {split or 'train'}")
    src.notes += _unlisted(xml.parent, images_dir, src)
    return src


def _unlisted(folder: Path, images_dir: Path | None, src: Source) -> list[str]:
    """Image files in the export's images folder that the XML does not list (CVAT exports
    them when a task holds frames nobody annotated, or a file was added by hand)."""
    base = images_dir or (folder / "images")
    if not base.is_dir():
        return []
    listed = {os.path.realpath(s.path) for s in src.samples if s.path is not None}
    extra = [relative_name(e.path, base) for e in walk(base, inside=base)
             if e.kind == IMAGE and os.path.realpath(e.path) not in listed]
    if not extra:
        return []
    shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
    return [f"{len(extra)} image file(s) in {base.name}/ are not listed in the XML, so not read: {shown}"]


def _image(el: Element, xml: Path, finder: ImageFinder, split: str | None, task_subset: str | None,
           masks: bool, src: Source, counts: dict) -> Sample:
    name = el.get("name")
    if not name:
        raise SourceError("an <image> has no name", file=xml, where=f"image id {el.get('id')}")
    subset = el.get("subset") or task_subset
    the_split = split or (split_name(subset) if subset else None)
    if subset and not the_split:
        counts["other_subset"].add(subset)
    the_split = the_split or "train"
    near = [xml.parent / "images" / subset] if subset else []
    path, searched = None, ()
    for base in near + [xml.parent / "images", xml.parent]:
        path, searched = finder.find(name, base)
        if path is not None:
            break
    w, h = number(el.get("width"), True), number(el.get("height"), True)
    size = (int(w), int(h)) if w and h and w >= 1 and h >= 1 and w.is_integer() and h.is_integer() else None
    labels: list[Label] = []
    for i, shape in enumerate(el, 1):
        kind = shape.tag
        where = f"image {name!r}, {kind} {i}"
        label = shape.get("label")
        if kind == "attribute":
            continue
        if label is None or not label.strip():
            src.skipped.append(Skip("no_label", name, f"{where}: no label", i))
            continue
        if kind == "tag":
            labels.append(Label(label, None, i))
        elif kind == "box":
            made = _box(shape, label, i, masks, counts)
        elif kind == "polygon":
            made = _polygon(shape.get("points"), label, i, masks)
        elif kind == "mask":
            made = _mask(shape, label, i, masks, size)
        else:
            src.skipped.append(Skip("unsupported_shape", name, f"{where}: not cropped", i))
            continue
        if kind != "tag":
            keep(made, labels, src, name, where, i)
    declare(src, labels)
    return Sample(name=name, path=path, split=the_split, labels=labels, searched=searched,
                  width=size[0] if size else None, height=size[1] if size else None)


def _box(el: Element, label: str, i: int, masks: bool, counts: dict) -> Label | str:
    v = [number(el.get(k), True) for k in ("xtl", "ytl", "xbr", "ybr")]
    if None in v:
        return "invalid_box: xtl, ytl, xbr, ybr must be numbers"
    x0, y0, x1, y1 = v  # type: ignore[misc]
    if x1 < x0 or y1 < y0:
        return "invalid_box: inverted box"
    rotation = number(el.get("rotation") or 0, True)
    if rotation is None:
        return "invalid_box: rotation must be a number"
    if rotation % 360:
        counts["rotated"] += 1
        poly = rectangle(x0, y0, x1 - x0, y1 - y0, rotation, (x0 + x1) / 2, (y0 + y1) / 2)
        return shape_label(label, [poly], i, masks)
    return Label(label, (x0, y0, x1 - x0, y1 - y0), i)


def _polygon(points: str | None, label: str, i: int, masks: bool) -> Label | str:
    flat: list[float] = []
    for pair in (points or "").split(";"):
        xy = pair.split(",")
        if len(xy) != 2:
            return "invalid_box: points must be 'x,y;x,y;…'"
        for t in xy:
            n = number(t.strip(), True)
            if n is None:
                return "invalid_box: a coordinate is not a finite number"
            flat.append(n)
    poly = flat_polygon(flat)
    return poly if isinstance(poly, str) else shape_label(label, [poly], i, masks)


def _mask(el: Element, label: str, i: int, masks: bool, size: tuple[int, int] | None) -> Label | str:
    """CVAT's `<mask rle="0, 5, 3, …" left top width height>`: runs over the box, row by row."""
    v = [number(el.get(k), True) for k in ("left", "top", "width", "height")]
    if None in v or not all(x.is_integer() for x in v):  # type: ignore[union-attr]
        return "invalid_box: left, top, width, height must be whole numbers"
    left, top, w, h = (int(x) for x in v)  # type: ignore[arg-type]
    try:
        runs = [int(t) for t in (el.get("rle") or "").replace(" ", "").split(",") if t != ""]
    except ValueError:
        runs = []
    if not runs or any(r < 0 for r in runs):
        return "invalid_box: rle must be a list of run lengths"
    mask = None
    if masks:
        if size is None:
            return "invalid_box: a mask needs the image's width and height"
        rle = rle_from_rows(runs, left, top, w, h, size[1], size[0])
        if isinstance(rle, str):
            return "mask_outside_image: " + rle if "outside" in rle else "invalid_box: " + rle
        mask = Mask(rle=rle)
    elif sum(runs) > w * h:
        return f"invalid_box: its runs are longer than its {w}x{h} box"
    return Label(label, (float(left), float(top), float(w), float(h)), i, mask=mask)

