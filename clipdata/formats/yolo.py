"""YOLO reader: Ultralytics `data.yaml`, the Darknet "YOLO 1.1" layout (`obj.data`,
`obj.names`, `train.txt`), and a flat folder with `classes.txt` (labelImg, Label Studio).

Boxes are normalised `class cx cy w h`; a file in which any line has more than 6 columns
holds polygons (Ultralytics' rule: segments, and oriented boxes as their 4 corners), each
read as its extent and, with masks, its polygon. The rules and quirks are in formats/yolo.md.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import ClipdataError, SourceError
from ..masks import Mask
from ..records import Label, Sample, Skip, Source, split_name
from ..textfiles import read_lines, read_text
from ..yamlfile import load_yaml
from ..imagefiles import BROKEN, IMAGE, SPECIAL, displayed_size, walk

# What a dataset folder may hold to describe itself, in the order one is chosen.
DESCRIPTORS = ("data.yaml", "data.yml", "obj.data", "classes.txt", "obj.names")
TOLERANCE = 0.01  # normalised box coordinates up to 1% outside [0, 1] are clamped
SHAPE_TOLERANCE = 0.1  # polygon and oriented-box corners: DOTA-style corners run a few % outside


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last `images` folder becomes `labels`, the extension `.txt`.
    Without an `images` folder the label file sits beside the image (Darknet)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


Row = tuple[int, int, tuple[float, float, float, float], tuple[float, ...] | None]


def parse_labels(text: str, file: str, nc: int) -> tuple[list[tuple[int, int, tuple[float, float, float, float]]], list[Skip]]:
    """Parse a label file into (line number, class, (x0, y0, x1, y1) normalised) and skips."""
    rows, skips = parse_shapes(text, file, nc)
    return [(n, c, box) for n, c, box, _ in rows], skips


def parse_shapes(text: str, file: str, nc: int, pose: bool = False) -> tuple[list[Row], list[Skip]]:
    """Parse a label file into (line number, class, (x0, y0, x1, y1) normalised, polygon or
    None) and skips. A polygon is normalised x, y pairs (3 points or more); a 4-point line
    whose corners cross (an oriented box written in another corner order) has them put in
    order around their centre. With `pose` (a data.yaml with `kpt_shape` or `task: pose`),
    every line is a box followed by keypoints, which are ignored: keypoint lines would
    otherwise read as polygons.

    A malformed line or a class out of range raises SourceError with file and line; a shape
    too far outside the image is skipped (`invalid_box`)."""
    rows = [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    polygons = not pose and any(len(cols) > 6 for _, cols in rows)
    boxes: list[Row] = []
    skips = []
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
        poly = None
        tolerance = TOLERANCE
        if polygons:
            if len(values) % 2:
                raise SourceError(f"a polygon needs x y pairs, got {len(values)} coordinates", file=file, where=where)
            if len(values) == 8 and _crossed(values):
                values = _in_order(values)
            xs, ys = values[0::2], values[1::2]
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
            if len(values) >= 6:  # two points (a 5-column line) make a box, never a shape
                poly = tuple(values)
                tolerance = SHAPE_TOLERANCE
        else:
            cx, cy, w, h = values[:4]  # a 6th column (confidence) is ignored
            x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            if w < 0 or h < 0:
                skips.append(Skip("invalid_box", file, f"{where}: negative size", n))
                continue
        if not all(math.isfinite(v) for v in (values if polygons else values[:4])) or min(x0, y0) < -tolerance or max(x1, y1) > 1 + tolerance:
            skips.append(Skip("invalid_box", file, f"{where}: outside the image", n))
            continue
        clamp = lambda v: min(1.0, max(0.0, v))  # noqa: E731
        boxes.append((n, int(cls_f), (clamp(x0), clamp(y0), clamp(x1), clamp(y1)), poly))
    return boxes, skips


def _crossed(v: list[float]) -> bool:
    """Whether a quadrilateral's edges 0-1 and 2-3, or 1-2 and 3-0, cross (a bow tie)."""
    p = [(v[0], v[1]), (v[2], v[3]), (v[4], v[5]), (v[6], v[7])]

    def side(a, b, c) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    def cross(a, b, c, d) -> bool:
        return side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0

    return cross(p[0], p[1], p[2], p[3]) or cross(p[1], p[2], p[3], p[0])


def _in_order(v: list[float]) -> list[float]:
    """The four corners sorted by their angle around the centre, starting from the first."""
    pts = [(v[i], v[i + 1]) for i in range(0, 8, 2)]
    cx, cy = sum(p[0] for p in pts) / 4, sum(p[1] for p in pts) / 4
    first = math.atan2(pts[0][1] - cy, pts[0][0] - cx)
    pts.sort(key=lambda p: (math.atan2(p[1] - cy, p[0] - cx) - first) % (2 * math.pi))
    return [c for p in pts for c in p]


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


def _key(path: Path) -> str:
    """What makes two spellings of a path one file: `./a.jpg`, `a.jpg`, `/abs/a.jpg` and a
    link to it are the same image."""
    return os.path.realpath(path)


def _name(image: Path, root: Path) -> str:
    """The image's name in the output: relative to the dataset root however the list spelled
    it (absolute, `./`, `..`), or its absolute path when it lies elsewhere."""
    for a, b in ((os.path.abspath(image), os.path.abspath(root)), (_key(image), _key(root))):
        rel = os.path.relpath(a, b)
        if rel != os.pardir and not rel.startswith(os.pardir + os.sep):
            return Path(rel).as_posix()
    return Path(os.path.abspath(image)).as_posix()


def _orphans(images: list[Path], root: Path, listed: bool) -> list[Skip]:
    """Label files in the labels folders of these images (all splits at once: a labels folder
    two lists share is one folder) that no image read has. With lists, a label file whose
    image is on disk but in no list is `not_in_list`; otherwise `missing_image`."""
    wanted = {_key(label_path(i)) for i in images}
    folders: dict[str, Path] = {}
    for i in images:
        folder = label_path(i).parent
        if folder.is_dir():
            folders.setdefault(_key(folder), folder)
    skips = []
    for _, folder in sorted(folders.items()):
        for f in sorted(folder.glob("*.txt")):
            if _key(f) in wanted or f.name in DESCRIPTORS:  # classes.txt names classes, it labels nothing
                continue
            image = _image_of(f) if listed else None
            reason, why = (("not_in_list", f"its image {_name(image, root)} is in no image list") if image
                           else ("missing_image", "a label file without its image"))
            skips.append(Skip(reason, _name(f, root), why, labels=_line_count(f)))
    return skips


def _image_of(label: Path) -> Path | None:
    """The image a label file belongs to (the reverse of label_path), when one is on disk."""
    parts = list(label.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "labels":
            parts[i] = "images"
            break
    folder = Path(*parts).parent
    for e in walk(folder) if folder.is_dir() else ():
        if e.kind == IMAGE and e.path.parent == folder and e.path.stem == label.stem:
            return e.path
    return None


@dataclass
class _Listed:
    """An image a split names: found on disk (`path`), or not (`path` None, `looked` where)."""

    name: str
    path: Path | None
    split: str
    origin: str  # the list and line, or the folder, that named it
    looked: tuple[str, ...] = ()


def _add_images(src: Source, entries: list[_Listed], root: Path, names: list[str], listed: bool,
                masks: bool = False, pose: bool = False) -> None:
    """Every image the splits name, each once: an image named twice (in one list, or in two
    splits) is read the first time and skipped the next (`listed_twice`, saying where)."""
    first: dict[str, _Listed] = {}
    found = []
    for e in entries:
        key = _key(e.path) if e.path is not None else f"missing:{e.name}"
        if key in first:
            was = first[key]
            src.skipped.append(Skip("listed_twice", e.name, f"{e.origin} names it again (first: {was.origin}, "
                                    f"split {was.split}); read once"))
            continue
        first[key] = e
        found.append(e)
    src.skipped += _orphans([e.path for e in found if e.path is not None], root, listed)
    for e in found:
        if e.path is None:  # the missing-image rule decides, whatever labels it would have had
            src.samples.append(Sample(name=e.name, path=None, split=e.split, searched=e.looked))
            continue
        image, rel = e.path, e.name
        lab = label_path(image)
        if os.path.lexists(lab) and not lab.is_file():  # a pipe would block; a dangling link says nothing
            src.skipped.append(Skip("not_a_regular_file", rel, f"its label file {_name(lab, root)} is not a regular file"))
            continue
        text = read_text(lab) if lab.is_file() else ""
        boxes, skips = parse_shapes(text, str(lab), len(names), pose)
        src.skipped += skips
        if not image.is_file():  # a listed pipe or link to nothing is never opened
            broken = os.path.islink(image) and not image.exists()
            src.skipped.append(Skip("broken_link" if broken else "not_a_regular_file", rel,
                                    f"named by {e.origin}; never opened", labels=len(boxes)))
            continue
        if not boxes:
            src.samples.append(Sample(name=rel, path=image, split=e.split))  # a background image
            continue
        size = _image_size(image)
        if isinstance(size, str):
            src.skipped.append(Skip("unreadable_image", rel, size, labels=len(boxes)))
            continue
        w, h = size
        labels = [Label(names[c], (x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h), n,
                        mask=_mask(poly, w, h) if masks and poly else None)
                  for n, c, (x0, y0, x1, y1), poly in boxes]
        src.samples.append(Sample(name=rel, path=image, split=e.split, labels=labels, width=w, height=h))


def _mask(poly: tuple[float, ...], w: int, h: int) -> Mask:
    """A normalised polygon in the image's pixels."""
    return Mask(polygons=(tuple(v * (h if i % 2 else w) for i, v in enumerate(poly)),))


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
        wrong = ", not an integer" if type(nc) is not int else f" but names lists {len(names)} classes"
        raise SourceError(f"nc is {nc!r}{wrong}", file=file, where="nc")
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


def _images_in(folder: Path, root: Path, src: Source, split: str) -> list[_Listed]:
    """The images under a folder; a pipe named `x.jpg` or a link to nothing is skipped, said."""
    found = []
    for e in walk(folder):
        if e.kind == IMAGE:
            found.append(_Listed(_name(e.path, root), e.path, split, f"folder {_name(folder, root)}"))
        elif e.kind in (SPECIAL, BROKEN):
            src.skipped.append(Skip("not_a_regular_file" if e.kind == SPECIAL else "broken_link", _name(e.path, root),
                                    "never opened"))
    return found


_DRIVE = re.compile(r"^[A-Za-z]:/")


def list_entry(line: str, list_dir: Path, root: Path) -> tuple[Path | None, str, tuple[str, ...]]:
    """The one rule for a line of an image list (`train.txt` of a data.yaml or an obj.data):
    (the image on disk or None, its name, the places looked in).

    A Windows-written line (`images\\a.jpg`, `C:\\data\\a.jpg`) reads with `/`. Tried in order:
    an absolute path as written; `./x` in the list's folder; other relative paths under the
    dataset root, then the list's folder (with the `../` and val/valid retries of a YAML
    value); then the path's tails under the root, longest first, so that a path written on
    another machine (`/home/them/ds/images/a.jpg`, Darknet's `data/obj/a.jpg`,
    `C:\\ds\\images\\a.jpg`) finds `images/a.jpg` in this dataset."""
    written = line.strip()
    text = written if os.path.lexists(written) else written.replace("\\", "/")
    cands: list[Path] = []
    if os.path.isabs(text) or _DRIVE.match(text):
        cands.append(Path(text))
    elif text.startswith("./"):
        cands.append(list_dir / text[2:])
    else:
        cands += [root / text, _resolve(text, list_dir)]
    parts = [p for p in PurePosixPath(text).parts if p not in ("/", ".", "..")]
    if parts and _DRIVE.match(text):
        parts = parts[1:]
    cands += [root / PurePosixPath(*parts[i:]) for i in range(len(parts))]
    for c in cands:
        if os.path.lexists(c):
            return c, _name(c, root), ()
    looked = tuple(dict.fromkeys(str(c.parent) for c in cands))
    return None, text, looked


def _read_list(file: Path, root: Path, split: str) -> list[_Listed]:
    """The images of a .txt list, by list_entry; blank lines and `#` lines are skipped."""
    out = []
    for n, line in enumerate(read_lines(file), 1):
        if not line.strip() or line.strip().startswith("#"):
            continue
        path, name, looked = list_entry(line, file.parent, root)
        out.append(_Listed(name, path, split, f"{_name(file, root)} line {n}", looked))
    return out


def _split_images(value: str, root: Path, file: Path, where: str, src: Source, split: str) -> tuple[list[_Listed], bool]:
    """The images a data.yaml split value names, and whether they came from a list."""
    p = _resolve(value, root)
    if not p.exists():  # written on Windows or another machine: the image-list rule (list_entry)
        found, _, _ = list_entry(value, root, root)
        if found is not None and found.exists():
            src.notes.append(f"{where}: {value!r} is not here; read {_name(found, root)} instead")
            p = found
    if p.is_dir():
        if (p.parent / "labelTxt").is_dir():
            raise _obb(file)
        return _images_in(p, root, src, split), False
    if p.is_file() and p.suffix == ".txt":
        return _read_list(p, root, split), True
    raise SourceError(f"{value!r} is not a folder or a .txt list of images (looked for {p})", file=file, where=where)


def _obb(file: Path) -> SourceError:
    return SourceError("DOTA-style oriented boxes (labelTxt/: pixel corners and a class name) are not read",
                       file=file, hint="export Ultralytics OBB labels instead (labels/*.txt: class x1 y1 x2 y2 x3 y3 x4 y4, "
                       "normalised), which clipdata reads")


def read_yaml(file: Path, split: str | None, masks: bool = False) -> Source:
    data = _yaml(file)
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
    found, entries, listed = False, [], False
    for key in ("train", "val", "validation", "valid", "test"):
        value = data.get(key)
        if not value:
            continue
        the_split = split_name(key) or key
        for v in value if isinstance(value, list) else [value]:
            got, from_list = _split_images(str(v), root, file, key, src, the_split)
            entries += got
            listed = listed or from_list
            found = True
    if not found:
        raise SourceError("no train/val/test entry", file=file)
    pose = data.get("kpt_shape") is not None or str(data.get("task", "")).strip() == "pose"
    if pose:
        src.notes.append(f"{file.name} describes pose labels: each line's box is read, its keypoints are ignored")
    _add_images(src, entries, root, names, listed, masks, pose)
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


def _class_names(file: Path) -> list[str]:
    """The names of an obj.names or classes.txt, one a line, the line's index the class's.
    Blank lines at the end are dropped; one before a name is refused: Darknet reads it as a
    class without a name, and dropping it would shift every class after it by one."""
    names = [n.strip() for n in read_lines(file)]
    while names and not names[-1]:
        names.pop()
    if "" in names:
        line = names.index("") + 1
        raise SourceError(f"a blank line before the last class name: Darknet reads it as class {line - 1}, without "
                          "a name, and skipping it would shift every class after it", file=file,
                          where=f"line {line}", hint="write the class's name there, or delete the line and renumber "
                          "the label files")
    return names


def read_darknet(file: Path, split: str | None, masks: bool = False) -> Source:
    root = file.parent
    data = _kv(file)
    names_file = _darknet_path(data.get("names", "obj.names"), root)
    if not names_file.is_file():
        raise SourceError(f"names file {data.get('names', 'obj.names')} not found", file=file, where="names")
    names = _class_names(names_file)
    src = Source(format="yolo", path=file, classes=names, samples=[])
    if data.get("classes", str(len(names))) != str(len(names)):
        src.notes.append(f"{file.name} says classes = {data['classes']}, but {names_file.name} names {len(names)}; "
                         f"the names were read")
    entries = []
    for key in ("train", "valid", "test"):
        if key in data:
            lst = _darknet_path(data[key], root)
            if not lst.is_file():
                raise SourceError(f"image list {data[key]} not found", file=file, where=key)
            entries += _read_list(lst, root, split_name(key) or key)
    _add_images(src, entries, root, names, True, masks)
    return src


def read_flat(folder: Path, split: str | None, masks: bool = False) -> Source:
    names_file = next((folder / n for n in ("classes.txt", "obj.names") if (folder / n).is_file()))
    names = _class_names(names_file)
    src = Source(format="yolo", path=folder, classes=names, samples=[])
    base = folder / "images" if (folder / "images").is_dir() else folder
    entries = _images_in(base, folder, src, "train")
    for e in entries:
        first = e.path.relative_to(base).parts[0]
        e.split = (split_name(first) if first != e.path.name else None) or split or "train"
    _add_images(src, entries, folder, names, False, masks)
    return src


def read(path: str | Path, *, split: str | None = None, masks: bool = False) -> Source:
    path = Path(path)
    if path.is_file():
        if path.name == "obj.data":
            return read_darknet(path, split, masks)
        if path.suffix in (".yaml", ".yml"):
            return read_yaml(path, split, masks)
        raise SourceError("expected a data.yaml, an obj.data or a dataset folder", file=path)
    if not path.is_dir():
        raise SourceError("not found", file=path)
    if (path / "labelTxt").is_dir() or any(path.glob("*/labelTxt")):
        raise _obb(path)
    present = [n for n in DESCRIPTORS if (path / n).is_file()]
    if present:
        chosen = present[0]
        if chosen in ("data.yaml", "data.yml"):
            src = read_yaml(path / chosen, split, masks)
        elif chosen == "obj.data":
            src = read_darknet(path / chosen, split, masks)
        else:
            src = read_flat(path, split, masks)
        used = {chosen, "obj.names"} if chosen == "obj.data" else {chosen}
        src.unused_files += [n for n in present if n not in used]
        if src.unused_files:
            src.notes.append(f"read {chosen}; not read: {', '.join(src.unused_files)}")
        return src
    raise SourceError("no data.yaml, obj.data or classes.txt in this folder", file=path,
                      hint="pass the dataset's YAML file, or a folder holding one")
