"""YOLO reader: Ultralytics `data.yaml`, the Darknet "YOLO 1.1" layout (`obj.data`,
`obj.names`, `train.txt`), and a flat folder with `classes.txt` (labelImg, Label Studio).

Boxes are normalised `class cx cy w h`; a file in which any line has more than 6 columns
holds polygons (Ultralytics' rule). The rules and quirks are in formats/yolo.md.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ..errors import ClipdataError, SourceError
from ..records import Label, Sample, Skip, Source, split_name
from ..textfiles import read_lines, read_text
from ..yamlfile import load_yaml
from ..imagefiles import BROKEN, IMAGE, SPECIAL, displayed_size, relative_name as _rel, walk

# What a dataset folder may hold to describe itself, in the order one is chosen.
DESCRIPTORS = ("data.yaml", "data.yml", "obj.data", "classes.txt", "obj.names")
TOLERANCE = 0.01  # normalised coordinates up to 1% outside [0, 1] are clamped


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last `images` folder becomes `labels`, the extension `.txt`.
    Without an `images` folder the label file sits beside the image (Darknet)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def parse_labels(text: str, file: str, nc: int) -> tuple[list[tuple[int, int, tuple[float, float, float, float]]], list[Skip]]:
    """Parse a label file into (line number, class, (x0, y0, x1, y1) normalised) and skips.

    A malformed line or a class out of range raises SourceError with file and line; a box
    too far outside the image is skipped (`invalid_box`)."""
    rows = [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    polygons = any(len(cols) > 6 for _, cols in rows)
    boxes, skips = [], []
    for n, cols in rows:
        where = f"line {n}"
        if len(cols) < 5:
            raise SourceError(f"expected 'class cx cy w h', got {len(cols)} value(s)", file=file, where=where)
        try:
            cls_f = float(cols[0])
            values = [float(v) for v in cols[1:]]
        except ValueError:
            raise SourceError(f"not a number in {' '.join(cols)!r}", file=file, where=where) from None
        if not cls_f.is_integer() or not 0 <= cls_f < nc:
            raise SourceError(f"class index {cols[0]} is out of range (the dataset has {nc} classes)",
                              file=file, where=where, hint="check `names` in the YAML or classes.txt")
        if polygons:
            if len(values) % 2:
                raise SourceError(f"a polygon needs x y pairs, got {len(values)} coordinates", file=file, where=where)
            xs, ys = values[0::2], values[1::2]
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        else:
            cx, cy, w, h = values[:4]  # a 6th column (confidence) is ignored
            x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            if w < 0 or h < 0:
                skips.append(Skip("invalid_box", file, f"{where}: negative size", n))
                continue
        if not all(v == v for v in (x0, y0, x1, y1)) or min(x0, y0) < -TOLERANCE or max(x1, y1) > 1 + TOLERANCE:
            skips.append(Skip("invalid_box", file, f"{where}: outside the image", n))
            continue
        clamp = lambda v: min(1.0, max(0.0, v))  # noqa: E731
        boxes.append((n, int(cls_f), (clamp(x0), clamp(y0), clamp(x1), clamp(y1))))
    return boxes, skips


def _image_size(path: Path) -> tuple[int, int] | str:
    """The displayed size (EXIF-rotated, as Ultralytics measures it), or why it is unreadable."""
    try:
        return displayed_size(path)
    except Exception as e:  # any header failure means the image is unreadable here
        return str(e) or type(e).__name__


def _line_count(file: Path) -> int:
    """The boxes a label file holds (its non-empty lines), or 0 when it cannot be read."""
    try:
        return sum(1 for line in read_text(file).split("\n") if line.strip())
    except ClipdataError:
        return 0


def _orphans(images: list[Path], root: Path) -> list[Skip]:
    """Label files in the labels folders of these images that no image has."""
    wanted = {label_path(i) for i in images}
    folders = {p.parent for p in wanted if p.parent.is_dir()}
    skips = []
    for folder in sorted(folders):
        for f in sorted(folder.glob("*.txt")):
            if f not in wanted and f.name not in DESCRIPTORS:  # classes.txt names classes, it labels nothing
                rel = f.relative_to(root).as_posix() if root in f.parents else str(f)
                skips.append(Skip("missing_image", rel, "a label file without its image", labels=_line_count(f)))
    return skips


def _add_images(src: Source, images: list[Path], root: Path, split: str, names: list[str]) -> None:
    src.skipped += _orphans(images, root)
    for image in images:
        rel = _rel(image, root)
        lab = label_path(image)
        if os.path.lexists(lab) and not lab.is_file():  # a pipe would block; a dangling link says nothing
            src.skipped.append(Skip("not_a_regular_file", rel, f"its label file {_rel(lab, root)} is not a regular file"))
            continue
        text = read_text(lab) if lab.is_file() else ""
        boxes, skips = parse_labels(text, str(lab), len(names))
        src.skipped += skips
        if not image.is_file():  # its boxes cannot be measured; the missing-image rule decides
            labels = [Label(names[c], None, n) for n, c, _ in boxes]
            src.samples.append(Sample(name=rel, path=None, split=split, labels=labels, searched=(str(image.parent),)))
            continue
        if not boxes:
            src.samples.append(Sample(name=rel, path=image, split=split))  # a background image
            continue
        size = _image_size(image)
        if isinstance(size, str):
            src.skipped.append(Skip("unreadable_image", rel, size, labels=len(boxes)))
            continue
        w, h = size
        labels = [Label(names[c], (x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h), n)
                  for n, c, (x0, y0, x1, y1) in boxes]
        src.samples.append(Sample(name=rel, path=image, split=split, labels=labels, width=w, height=h))


def _yaml(file: Path) -> dict:
    data = load_yaml(file, SourceError, as_written=[("names",)])  # `names: [yes, 010]` stays text
    if not isinstance(data, dict):
        raise SourceError("expected a mapping with names and train/val/test", file=file)
    return data


def _names(value: object, nc: object, file: Path) -> list[str]:
    """The class names of a data.yaml, read as written (see _yaml)."""
    if isinstance(value, dict):
        for k in value:  # "01" and "1" would both be class 1: refuse anything not written 0, 1, 2…
            if not (k.isascii() and k.isdecimal() and str(int(k)) == k):
                raise SourceError(f"`names` key {k!r} is not a class index (0, 1, 2…, no leading zero)",
                                  file=file, where="names")
        keys = sorted(int(k) for k in value)
        if keys != list(range(len(keys))):
            raise SourceError("`names` keys must be 0..n-1 without gaps", file=file, where="names")
        names = [value[str(k)] for k in keys]
    elif isinstance(value, list):
        names = value
    else:
        raise SourceError("no `names` list or mapping", file=file, where="names")
    for i, n in enumerate(names):
        if not isinstance(n, str):
            raise SourceError(f"class {i} is a {type(n).__name__}, not a name", file=file, where="names")
    if nc is not None and (type(nc) is not int or nc != len(names)):
        raise SourceError(f"nc is {nc!r} but names lists {len(names)} classes", file=file, where="nc")
    return names


_ALIASES = {"val": ("valid", "validation"), "valid": ("val", "validation"), "validation": ("val", "valid")}


def _resolve(value: str, root: Path) -> Path:
    p = Path(value) if os.path.isabs(value) else root / value
    if not p.exists() and value.startswith("../"):
        p = root / value[3:]  # Roboflow writes `train: ../train/images` beside the split folders
    if not p.exists():  # `valid/images` named in the YAML, `val/images` on disk (or the reverse)
        parts = p.parts
        for i, part in enumerate(parts):
            for alias in _ALIASES.get(part, ()):
                cand = Path(*parts[:i], alias, *parts[i + 1:])
                if cand.exists():
                    return cand
    return p


def _images_in(folder: Path, root: Path, src: Source) -> list[Path]:
    """The images under a folder; a pipe named `x.jpg` or a link to nothing is skipped, said."""
    found = []
    for e in walk(folder):
        if e.kind == IMAGE:
            found.append(e.path)
        elif e.kind in (SPECIAL, BROKEN):
            src.skipped.append(Skip("not_a_regular_file" if e.kind == SPECIAL else "broken_link", _rel(e.path, root),
                                    "never opened"))
    return found


def _split_images(value: str, root: Path, file: Path, where: str, src: Source) -> list[Path]:
    p = _resolve(value, root)
    if p.is_dir():
        if (p.parent / "labelTxt").is_dir():
            raise _obb(file)
        return _images_in(p, root, src)
    if p.is_file() and p.suffix == ".txt":
        out = []
        for line in read_lines(p):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("./"):
                out.append(p.parent / line[2:])
            elif os.path.isabs(line):
                out.append(Path(line))
            else:
                cand = root / line
                out.append(cand if cand.exists() else _resolve(line, p.parent))
        return out
    raise SourceError(f"{value!r} is not a folder or a .txt list of images (looked for {p})", file=file, where=where)


def _obb(file: Path) -> SourceError:
    return SourceError("oriented boxes (YOLO OBB) are not supported", file=file,
                       hint="export axis-aligned boxes or polygons instead")


def read_yaml(file: Path, split: str | None) -> Source:
    data = _yaml(file)
    if str(data.get("task", "")).lower() == "obb":
        raise _obb(file)
    names = _names(data.get("names"), data.get("nc"), file)
    src = Source(format="yolo", path=file, classes=list(names), samples=[])
    root = file.parent
    if data.get("path"):
        given = Path(str(data["path"]))
        cand = given if given.is_absolute() else file.parent / given
        if cand.is_dir():
            root = cand
        else:
            src.notes.append(f"path {given} does not exist; read the splits relative to {file.parent}")
    found = False
    for key in ("train", "val", "validation", "valid", "test"):
        value = data.get(key)
        if not value:
            continue
        the_split = split_name(key) or key
        for v in value if isinstance(value, list) else [value]:
            _add_images(src, _split_images(str(v), root, file, key, src), root, the_split, names)
            found = True
    if not found:
        raise SourceError("no train/val/test entry", file=file)
    if split:
        src.notes.append(f"--split {split} ignored: the YAML names its splits")
    return src


def _kv(file: Path) -> dict[str, str]:
    out = {}
    for line in read_lines(file):
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _darknet_path(value: str, root: Path) -> Path:
    """obj.data names paths as the training machine saw them (`data/train.txt`); look for
    them inside the dataset folder."""
    rel = PurePosixPath(value.replace("\\", "/"))
    for cand in (root / rel, root / PurePosixPath(*rel.parts[1:]) if len(rel.parts) > 1 else None, root / rel.name):
        if cand is not None and cand.exists():
            return cand
    return root / rel


def read_darknet(file: Path, split: str | None) -> Source:
    root = file.parent
    data = _kv(file)
    names_file = _darknet_path(data.get("names", "obj.names"), root)
    if not names_file.is_file():
        raise SourceError(f"names file {data.get('names', 'obj.names')} not found", file=file, where="names")
    names = [n.strip() for n in read_lines(names_file) if n.strip()]
    src = Source(format="yolo", path=file, classes=names, samples=[])
    for key in ("train", "valid", "test"):
        if key in data:
            lst = _darknet_path(data[key], root)
            if not lst.is_file():
                raise SourceError(f"image list {data[key]} not found", file=file, where=key)
            images = [_darknet_path(l.strip(), root) for l in read_lines(lst) if l.strip()]
            _add_images(src, images, root, split_name(key) or key, names)
    return src


def read_flat(folder: Path, split: str | None) -> Source:
    names_file = next((folder / n for n in ("classes.txt", "obj.names") if (folder / n).is_file()))
    names = [n.strip() for n in read_lines(names_file) if n.strip()]
    src = Source(format="yolo", path=folder, classes=names, samples=[])
    base = folder / "images" if (folder / "images").is_dir() else folder
    by_split: dict[str, list[Path]] = {}
    for image in _images_in(base, folder, src):
        first = image.relative_to(base).parts[0]
        s = split_name(first) if first != image.name else None
        by_split.setdefault(s or split or "train", []).append(image)
    for s, images in by_split.items():
        _add_images(src, images, folder, s, names)
    return src


def read(path: str | Path, *, split: str | None = None) -> Source:
    path = Path(path)
    if path.is_file():
        if path.name == "obj.data":
            return read_darknet(path, split)
        if path.suffix in (".yaml", ".yml"):
            return read_yaml(path, split)
        raise SourceError("expected a data.yaml, an obj.data or a dataset folder", file=path)
    if not path.is_dir():
        raise SourceError("not found", file=path)
    if (path / "labelTxt").is_dir() or any(path.glob("*/labelTxt")):
        raise _obb(path)
    present = [n for n in DESCRIPTORS if (path / n).is_file()]
    if present:
        chosen = present[0]
        if chosen in ("data.yaml", "data.yml"):
            src = read_yaml(path / chosen, split)
        elif chosen == "obj.data":
            src = read_darknet(path / chosen, split)
        else:
            src = read_flat(path, split)
        used = {chosen, "obj.names"} if chosen == "obj.data" else {chosen}
        src.unused_files += [n for n in present if n not in used]
        if src.unused_files:
            src.notes.append(f"read {chosen}; not read: {', '.join(src.unused_files)}")
        return src
    raise SourceError("no data.yaml, obj.data or classes.txt in this folder", file=path,
                      hint="pass the dataset's YAML file, or a folder holding one")
