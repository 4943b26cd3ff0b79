"""Pascal VOC reader: `Annotations/*.xml` + `JPEGImages/` (+ `ImageSets/Main/*.txt` splits;
folder names in any case, so labelImg's `annotations/` + `images/` too), Roboflow's split
folders (`<split>/*.xml` beside the images, or `<split>/Annotations` + `<split>/JPEGImages`,
mixed), or a flat folder of XML + images. `--images` names the image folder for all of them.

Tags are read by name, never by position; coordinates are 1-based inclusive and may be
floats. The rules are in formats/voc.md.
"""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from ..errors import SourceError
from ..records import SPLITS, Label, Sample, Skip, Source, split_name
from ..imagefiles import IMAGE_EXTENSIONS, relative_name as _rel
from ..textfiles import read_bytes, read_lines
from .. import xmlfile

ANNOTATIONS = ("annotations",)  # folder names, lower-cased
IMAGES = ("jpegimages", "images")
SPLIT_LISTS = {"train": "train", "val": "valid", "test": "test", "trainval": "train"}


def _text(el: ET.Element | None, tag: str) -> str | None:
    found = el.find(tag) if el is not None else None
    return found.text.strip() if found is not None and found.text is not None else None


def _is_labelme(root: ET.Element) -> bool:
    return root.find("imagesize") is not None or any(
        o.find("polygon") is not None or o.find("segm") is not None for o in root.iter("object"))


def to_box(xmin: float, ymin: float, xmax: float, ymax: float) -> tuple[float, float, float, float]:
    """VOC pixels are 1-based and inclusive: the box covering pixel columns xmin..xmax is,
    in 0-based edges, [xmin - 1, xmax), so x = xmin - 1 and w = xmax - xmin + 1."""
    return xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1


def parse_xml(data: bytes, file: str, skip_difficult: bool = False) -> tuple[str | None, tuple[int, int] | None, list[Label], list[Skip]]:
    """(filename, (width, height) or None, labels, skips) of one VOC XML."""
    root = xmlfile.parse(data, file)  # entities (bombs, external files) refused, never expanded
    if root.tag != "annotation":
        raise SourceError(f"root element is <{root.tag}>, not <annotation>: not a Pascal VOC file", file=file)
    if _is_labelme(root):
        raise SourceError("this is a LabelMe XML (polygons, <imagesize>), not Pascal VOC", file=file,
                          hint="LabelMe is not supported; export Pascal VOC boxes instead")
    filename = _text(root, "filename")
    size = None
    w, h = _text(root.find("size"), "width"), _text(root.find("size"), "height")
    try:
        fw, fh = float(w or "nan"), float(h or "nan")
    except ValueError:
        fw = fh = math.nan  # an unreadable <size> is as good as none: the image itself is measured
    if math.isfinite(fw) and math.isfinite(fh) and fw >= 1 and fh >= 1:
        size = (int(fw), int(fh))
    labels, skips = [], []
    for i, obj in enumerate(root.findall("object"), 1):
        name = _text(obj, "name")
        if not name:
            raise SourceError("an <object> has no <name>", file=file, where=f"object {i}")
        difficult = _text(obj, "difficult") == "1"
        if difficult and skip_difficult:
            skips.append(Skip("difficult", file, f"object {i} ({name})", i))
            continue
        bb = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(_text(bb, t) or "nan") for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            skips.append(Skip("invalid_box", file, f"object {i}: coordinates are not numbers", i))
            continue
        if not all(v == v and abs(v) != float("inf") for v in (xmin, ymin, xmax, ymax)) or xmax < xmin or ymax < ymin:
            skips.append(Skip("invalid_box", file, f"object {i}: missing or inverted <bndbox>", i))
            continue
        labels.append(Label(name, to_box(xmin, ymin, xmax, ymax), i))
    return filename, size, labels, skips


def _find_image(filename: str | None, xml: Path, folder: Path) -> tuple[Path | None, bool]:
    """(image, fell back): the <filename>, else the XML's stem with an image extension."""
    if filename:
        p = folder / Path(filename.replace("\\", "/")).name
        if p.is_file():
            return p, False
    for ext in IMAGE_EXTENSIONS:
        for e in (ext, ext.upper()):
            p = folder / (xml.stem + e)
            if p.is_file():
                return p, True
    return None, False


def _split_lists(root: Path) -> dict[str, list[str]]:
    main = root / "ImageSets" / "Main"
    lists: dict[str, list[str]] = {}
    for name, split in SPLIT_LISTS.items():
        f = main / f"{name}.txt"
        if f.is_file() and not (name == "trainval" and "train" in lists):
            ids = [l.split()[0] for l in read_lines(f) if l.strip() and not l.lstrip().startswith("#")]
            lists.setdefault(split, []).extend(i for i in ids if i not in lists.get(split, []))
    return lists


def _child(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The sub-folder of `folder` named one of `names` (case-insensitively; the first name
    found wins): labelImg writes `annotations/` + `images/`, the devkit `Annotations/` +
    `JPEGImages/`."""
    try:
        subs = {}
        for e in sorted(os.scandir(folder), key=lambda e: e.name):
            if e.is_dir():
                subs.setdefault(e.name.lower(), Path(e.path))
    except OSError:
        return None
    return next((subs[n] for n in names if n in subs), None)


def _xml_files(folder: Path, root: Path, src: Source) -> list[Path]:
    """The `*.xml` files of a folder; a pipe or device named `x.xml` is skipped, never opened."""
    found = []
    for x in sorted(folder.glob("*.xml")):
        if x.is_file():
            found.append(x)
        else:
            src.skipped.append(Skip("not_a_regular_file", _rel(x, root), "not a regular file, never opened"))
    return found


def _units(root: Path) -> list[tuple[Path, str | None]]:
    """The folders that hold annotations, each with the split its name gives (None: from
    ImageSets lists or --split): the root itself (devkit, labelImg, a flat folder), or split
    folders, each either devkit-like (Roboflow's `train/Annotations` + `train/JPEGImages`)
    or flat (`valid/*.xml` beside the images) — both kinds can sit side by side."""
    if _child(root, ANNOTATIONS):
        return [(root, None)]
    units = [(d, split_name(d.name)) for d in sorted(p for p in root.iterdir() if p.is_dir())
             if split_name(d.name) and (_child(d, ANNOTATIONS) or any(d.glob("*.xml")))]
    return units or [(root, None)]


def _jobs(unit: Path, unit_split: str | None, root: Path, images_dir: Path | None, split: str | None,
          src: Source) -> list[tuple[Path, Path, str, bool]]:
    """(xml, image folder, split, listed) for every annotation file of one unit to read."""
    ann = _child(unit, ANNOTATIONS)
    if ann is None:  # XML beside the images
        return [(x, images_dir or unit, unit_split or split or "train", False) for x in _xml_files(unit, root, src)]
    images = images_dir or _child(unit, IMAGES) or unit / "JPEGImages"
    xmls = _xml_files(ann, root, src)
    lists = _split_lists(unit) if unit_split is None else {}
    if not lists:
        return [(x, images, unit_split or split or "train", False) for x in xmls]
    jobs = []
    for s in SPLITS:
        for i in lists.get(s, []):
            xml = ann / f"{i}.xml"
            if "/" in i or "\\" in i or i in (".", ".."):  # an id is a file stem: never read outside Annotations/
                src.skipped.append(Skip("missing_annotation", i, "an ImageSets id that is a path, not a file name"))
            elif xml.is_file():
                jobs.append((xml, images, s, True))
            else:
                src.skipped.append(Skip("missing_annotation", i, f"listed in ImageSets/Main but {xml.name} is absent"))
    listed = {j[0] for j in jobs}
    unlisted = [_rel(x, root) for x in xmls if x not in listed]
    if unlisted:
        src.unused_files += unlisted
        src.notes.append(f"{len(unlisted)} annotation file(s) are in no ImageSets/Main list and were not read: "
                         + ", ".join(unlisted[:3]) + (" …" if len(unlisted) > 3 else ""))
    return jobs


def read(path: str | Path, *, images: str | Path | None = None, split: str | None = None,
         skip_difficult: bool = False) -> Source:
    root = Path(path)
    if not root.is_dir():
        raise SourceError("not a folder", file=root, hint="pass the folder holding Annotations/ and JPEGImages/")
    images_dir = Path(images) if images is not None else None
    if images_dir is not None and not images_dir.is_dir():
        raise SourceError("--images folder not found", file=images_dir)
    src = Source(format="voc", path=root, classes=[], samples=[])
    units = _units(root)
    jobs: list[tuple[Path, Path, str, bool]] = []
    for unit, unit_split in units:
        jobs += _jobs(unit, unit_split, root, images_dir, split, src)
    if units[0][0] != root:  # split folders: XML files beside them are not read
        stray = [_rel(x, root) for x in sorted(root.glob("*.xml"))]
        if stray:
            src.unused_files += stray
            src.notes.append(f"{len(stray)} annotation file(s) beside the split folders were not read: {', '.join(stray[:3])}")
    if not jobs and not src.skipped:
        raise SourceError("no VOC annotation found", file=root,
                          hint="expected Annotations/*.xml + JPEGImages/ (any case), <split>/*.xml, or *.xml beside the images")
    fallbacks = 0
    for xml, folder, s, listed in jobs:
        filename, size, labels, skips = parse_xml(read_bytes(xml), str(xml), skip_difficult)
        src.skipped += skips
        image, fell_back = _find_image(filename, xml, folder)
        fallbacks += fell_back
        name = _rel(image, root) if image else (filename or xml.stem)
        if image is None and listed:
            src.skipped.append(Skip("missing_image", name, f"listed in ImageSets/Main; looked in {folder}",
                                    labels=len(labels)))
            continue
        for label in labels:
            if label.name not in src.classes:
                src.classes.append(label.name)
        src.samples.append(Sample(name=name, path=image, split=s, labels=labels,
                                  width=size[0] if size else None, height=size[1] if size else None,
                                  searched=(str(folder),)))
    if fallbacks:
        src.notes.append(f"{fallbacks} image(s) found by the XML file's name because <filename> names no existing file")
    src.classes.sort()
    if split and any(j[2] != split for j in jobs):
        src.notes.append(f"--split {split} ignored: the source names its splits")
    return src
