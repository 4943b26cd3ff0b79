"""Structure-aware fuzzing of every reader: hypothesis strategies that build whole datasets —
folder trees, COCO / YOLO / VOC / LabelMe / CVAT / Label Studio / Create ML files, reviewed
label outputs, image lists — with odd names (spaces, non-ASCII, names that are not UTF-8,
250-byte names, `..`, backslashes, brackets, leading dots), duplicates, missing, corrupt and
bomb images, XML entities, pipes, symbolic links and depth, then run `clipdata convert` on
them as a user would and check what every run promises:

- no traceback and no "this is a bug" line: exit 0, or one line and exit 1 or 2; no hang;
- on exit 0, conservation holds (`read == written + skipped` for boxes and images in
  clipdata.json) and, where the generator knows it, every box it wrote was read; the
  manifest names exactly the image files of OUT, every text file written is UTF-8 and every
  name too, and `clipdata inspect OUT` passes;
- nothing is written outside OUT, and the source is not changed.

About one case in four is hostile (`hostile`): it may also hold what stops a run on purpose
(an out-of-range class index, a class that cannot be a folder, UTF-16 text, an entity bomb);
the other cases are odd but convertible, so most runs reach exit 0 and their OUT is checked.

Registry-driven: each reader of `clipdata.formats.REGISTRY` plugs in with a generator
(`@generator("name")`, a hypothesis strategy of `Dataset`); tests/test_fuzz_readers.py fails
for a reader without one. The CI run (tests/test_fuzz_readers.py) draws a fixed, small
sample per format; `python fuzz/readers.py` runs as many as asked and reports what it found.
"""
from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import stat
import struct
import zlib
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from hypothesis import strategies as st
from PIL import Image

# -- what a dataset is made of ----------------------------------------------------------------

LINK, LINK_DIR, FIFO, DIR = "link", "link_dir", "fifo", "dir"  # special entries: (kind, target)
ROOT = b"@ROOT@"  # in a file's bytes: replaced by the absolute folder the case is written in


@dataclass
class Dataset:
    """Files to write under a fresh folder (relative names as bytes, so a name may be any
    bytes), the SOURCE to pass (relative), extra convert options, and how many boxes the
    files hold when the generator knows (every one must be read: written or counted)."""

    fmt: str
    files: dict[bytes, bytes | tuple[str, bytes]] = field(default_factory=dict)
    source: bytes = b"src"
    options: list[str] = field(default_factory=list)
    boxes: int | None = None

    def add(self, rel: str | bytes, data: bytes | tuple[str, bytes]) -> None:
        self.files[rel if isinstance(rel, bytes) else os.fsencode(rel)] = data

    def describe(self) -> str:
        kinds = Counter(k.rsplit(b".", 1)[-1][:8].decode("ascii", "replace") for k in self.files)
        return f"{self.fmt} {os.fsdecode(self.source)} {self.options} {dict(kinds)}"

    def listing(self) -> str:
        """Every file with its size or kind: what a report shows to reproduce a case."""
        return "\n".join(f"  {rel!r}: {v[0] + ' ' + repr(v[1]) if isinstance(v, tuple) else len(v)}"
                         for rel, v in sorted(self.files.items()))


def write(dataset: Dataset, root: Path) -> None:
    """Create the dataset's files under root (folders as needed; links and pipes as asked)."""
    base = os.fsencode(root)
    for rel, data in sorted(dataset.files.items()):
        path = os.path.join(base, rel)
        if not _makedirs(base, os.path.dirname(rel)):
            continue  # a file already holds a folder's name: that entry is left out
        if isinstance(data, tuple):
            kind, target = data
            if kind in (LINK, LINK_DIR):
                if not os.path.lexists(path):
                    os.symlink(target.replace(ROOT, base), path)
            elif kind == FIFO and not os.path.lexists(path):
                os.mkfifo(path)
            elif kind == DIR:
                _makedirs(base, rel)
            continue
        if os.path.isdir(path):  # a file named like a folder already made: keep the folder
            continue
        with open(path, "wb") as f:
            f.write(data.replace(ROOT, base))


def _makedirs(base: bytes, rel: bytes) -> bool:
    """mkdir -p, one level at a time (os.makedirs recurses: a 1,100-deep tree needs this);
    False where a file stands in the way."""
    path = base
    for part in rel.split(b"/"):
        if not part:
            continue
        path = os.path.join(path, part)
        try:
            os.mkdir(path)
        except FileExistsError:
            if not os.path.isdir(path):
                return False
    return True


# -- the pieces every generator shares ------------------------------------------------------------

# Hypothesis starts from its simplest draw (the first of a sampled list) and shrinks towards
# it: the usual case comes first, so a fixed small sample is mostly usual, odd only at times.
def often(draw, n: int) -> bool:
    """True n times in n + 1."""
    return draw(st.sampled_from([True] * n + [False]))


def rarely(draw, n: int) -> bool:
    """True once in n + 1."""
    return not often(draw, n)


def some(draw, most: int = 3) -> int:
    """How many boxes (or shapes) an image has: 1 to `most`, sometimes none."""
    return draw(st.sampled_from([1, 2, 3, 0][:most] + [0]))


def hostile(draw) -> bool:
    """About one case in four may hold what stops a run on purpose."""
    return rarely(draw, 3)


def _image_bytes(size: tuple[int, int], mode: str, fmt: str, seed: int) -> bytes:
    rnd = random.Random(seed)
    img = Image.new("RGB", size, (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    if mode == "RGBA":
        img = img.convert("RGBA")
    elif mode == "P":
        img = img.convert("P")
    elif mode == "L":
        img = img.convert("L")
    buf = io.BytesIO()
    save = {"transparency": 0} if mode == "P" and fmt == "PNG" else {}
    img.save(buf, fmt, **save)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header declares 10 gigapixels, in 100 bytes (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


@st.composite
def image_data(draw) -> bytes:
    """A small real image, or what a real folder also holds: a corrupt, empty, cut or
    mislabelled file, or a decompression bomb."""
    kind = draw(st.sampled_from(["jpeg"] * 4 + ["png"] * 4 + ["corrupt", "empty", "truncated", "text", "bomb"]))
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    seed = draw(st.integers(0, 1000))
    if kind == "jpeg":
        return _image_bytes(size, draw(st.sampled_from(["RGB", "L"])), "JPEG", seed)
    if kind == "png":
        return _image_bytes(size, draw(st.sampled_from(["RGB", "RGBA", "P", "L"])), "PNG", seed)
    if kind == "truncated":
        return _image_bytes(size, "RGB", "JPEG", seed)[:draw(st.integers(0, 60))]
    if kind == "bomb":
        return bomb_png()
    return {"corrupt": b"\xff\xd8\xff\xe0 not really", "empty": b"", "text": b"hello\n"}[kind]


# Names: plain, spaced, accented, CJK, not UTF-8 (cp1252 and a lone byte), 250 bytes, with
# brackets, backslashes, leading dots, dashes, dots inside, Windows-reserved characters.
NAME_BYTES = [b"a", b"b", b"img 1", b"caf\xc3\xa9", b"\xe6\x97\xa5\xe6\x9c\xac", b"caf\xe9", b"\xff",
              b"x" * 200, b"y" * 250, b"photo[1]", b"back\\slash", b".hidden", b"-dash", b"a.b.c",
              b"UPPER", b"sp ace ", b"con", b"q?u*o:te", b"%20", b"tab\tname"]
# Class names any dataset may have, and those that stop a run on purpose (clip.md's rules).
CLASSES = ["cat", "dog", "red circle", "caf\u00e9", "x" * 200, "[red]", "7", "yes", "\u65e5\u672c",
           "a.b", "-dash", "__ignore__"]
BAD_CLASSES = ["Cat", "a/b", ".dot", "\u2028", "", "_tokenization.txt", "x" * 300, " pad ", "caf\udce9"]
EXTENSIONS = [b".jpg", b".png", b".JPG", b".jpeg", b".webp", b".bmp", b".txt", b""]


def classes(draw, bad: bool, *, min_size: int = 1, max_size: int = 3, text_only: bool = False) -> list[str]:
    pool = CLASSES + (BAD_CLASSES if bad else [])
    if text_only:  # in a line-based or XML file: no line breaks, no lone surrogates
        pool = [c for c in pool if "\udce9" not in c and "\u2028" not in c and "\n" not in c]
    return draw(st.lists(st.sampled_from(pool), min_size=min_size, max_size=max_size))


def names(max_size: int = 5) -> st.SearchStrategy[list[bytes]]:
    return st.lists(st.sampled_from(NAME_BYTES), min_size=1, max_size=max_size)


@st.composite
def image_name(draw) -> bytes:
    return draw(st.sampled_from(NAME_BYTES)) + draw(st.sampled_from(EXTENSIONS))


def _text(b: bytes) -> str:
    """How a name appears in a text file written by a tool (a name that is not UTF-8 keeps its
    surrogate: json.dumps writes `\\udce9`, as Python tools do)."""
    return os.fsdecode(b)


def _encode(text: str, draw, bad: bool = False) -> bytes:
    """A text file as tools write it: UTF-8, sometimes with a byte-order mark; UTF-16 (which
    is refused with one line) only in hostile cases."""
    how = draw(st.sampled_from(["utf8", "utf8", "utf8", "bom"] + (["utf16"] if bad and rarely(draw, 2) else [])))
    data = text.encode("utf-8", "surrogateescape")
    return {"utf8": data, "bom": b"\xef\xbb\xbf" + data, "utf16": text.encode("utf-16", "surrogatepass")}[how]


def _options(draw, bad: bool) -> list[str]:
    opts = ["--workers", "1"]
    if often(draw, 3):
        opts.append("--skip-missing")
    if rarely(draw, 4):
        opts += ["--mode", "scenes"]
    if rarely(draw, 4):
        opts += ["--split-ratios", draw(st.sampled_from(["0.8,0.1,0.1", "1,0,0", "0.5,0.5"]))]
    if rarely(draw, 5):
        opts += ["--padding", draw(st.sampled_from(["0.1", "8px"] + (["-1", "1e-2", "nan"] if bad else [])))]
    if rarely(draw, 5):
        opts.append("--square")
    if rarely(draw, 6):
        opts += ["--image-format", "png"]
    return opts


def _depth(draw) -> bytes:
    """A folder prefix 0-3 levels deep (rarely 40), names drawn from the odd ones."""
    n = draw(st.sampled_from([0, 0, 1, 1, 2, 3, 40]))
    return b"".join(draw(st.sampled_from([b"d", b"sub", b"caf\xe9", b"..x", b"train", b"val"])) + b"/" for _ in range(n))


def _xml_text(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


# An XML prologue: none, a harmless one, or (hostile) entities: a billion laughs, an external
# entity naming a file outside the dataset (never to be read).
XML_BOMB = ('<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY a "aaaaaaaaaa">'
            + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8)) + "]>")
XML_EXTERNAL = '<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY x SYSTEM "file:///etc/hostname">]>'


def _prologue(draw, bad: bool) -> tuple[str, str]:
    """(prologue, an entity reference to put in a text field)."""
    kind = draw(st.sampled_from(["none", "plain"] * 2 + (["bomb", "external"] if bad else [])))
    return {"none": ("", ""), "plain": ('<?xml version="1.0" encoding="utf-8"?>', ""),
            "bomb": (XML_BOMB, "&i;"), "external": (XML_EXTERNAL, "&x;")}[kind]


def _images_folder(draw, ds: Dataset) -> bytes:
    """Where a generator puts images: beside the annotations, in images/, or (with --images)
    in a folder elsewhere."""
    where = draw(st.sampled_from([b"", b"images/", b"elsewhere/"]))
    if where == b"elsewhere/":
        ds.options += ["--images", "src/elsewhere"]
        ds.add(b"src/elsewhere", (DIR, b""))
    return where


# -- one generator per reader --------------------------------------------------------------------

GENERATORS: dict[str, Callable[[], st.SearchStrategy[Dataset]]] = {}


def generator(fmt: str):
    def register(fn):
        GENERATORS[fmt] = fn
        return fn
    return register


@generator("folder")
@st.composite
def folder_dataset(draw) -> Dataset:
    bad = hostile(draw)
    ds = Dataset("folder", options=_options(draw, bad))
    splits = draw(st.sampled_from([[b""], [b"train/", b"valid/"], [b"train/", b"val/", b"test/"], [b"train/", b"cats/"]]))
    for split in splits:
        for cls in draw(names(3)):
            for img in draw(st.lists(image_name(), max_size=4)):
                ds.add(b"src/" + split + cls + b"/" + _depth(draw) + img, draw(image_data()))
    extra = draw(st.sampled_from(["none", "none", "link", "cycle", "dangling", "fifo", "stray", "deep", "link-out"]))
    first = next(iter(ds.files), None)
    if extra == "link" and first:
        ds.add(b"src/" + splits[0] + b"linked/l.jpg", (LINK, os.path.join(b"..", b"..", first[4 + len(splits[0]):])))
    elif extra == "cycle":
        ds.add(b"src/" + splits[0] + b"cyc/loop", (LINK_DIR, b".."))
    elif extra == "dangling":
        ds.add(b"src/" + splits[0] + b"gone/x.jpg", (LINK, b"nowhere.jpg"))
    elif extra == "fifo":
        ds.add(b"src/" + splits[0] + b"pipe/p.jpg", (FIFO, b""))
    elif extra == "stray":
        ds.add(b"src/" + splits[0] + b"stray.jpg", draw(image_data()))
    elif extra == "link-out":  # a link leading out of SOURCE: never read
        ds.add(b"outside/o.jpg", _image_bytes((8, 8), "RGB", "JPEG", 4))
        ds.add(b"src/" + splits[0] + b"cat/o.jpg", (LINK, ROOT + b"/outside/o.jpg"))
        ds.add(b"src/" + splits[0] + b"out", (LINK_DIR, ROOT + b"/outside"))
    elif extra == "deep":  # deeper than Python's recursion limit
        ds.add(b"src/" + splits[0] + b"deep/" + b"d/" * 1100 + b"x.jpg", _image_bytes((8, 8), "RGB", "JPEG", 1))
    return ds


def _box(draw, w: int, h: int) -> list:
    kind = draw(st.sampled_from(["ok", "ok", "ok", "outside", "negative", "zero", "nan", "str", "short", "huge"]))
    if kind == "ok":
        x, y = draw(st.integers(0, max(0, w - 1))), draw(st.integers(0, max(0, h - 1)))
        return [x, y, draw(st.integers(1, max(1, w - x))), draw(st.integers(1, max(1, h - y)))]
    return {"outside": [w + 5, h + 5, 3, 3], "negative": [2, 2, -4, 3], "zero": [1, 1, 0, 0],
            "nan": [float("nan"), 0, 1, 1], "str": ["1", 2, 3, 4], "short": [1, 2], "huge": [0, 0, 1e12, 1e12]}[kind]


@generator("coco")
@st.composite
def coco_dataset(draw) -> Dataset:
    bad = hostile(draw)
    ds = Dataset("coco", source=b"src/annotations.json", options=_options(draw, bad))
    where = _images_folder(draw, ds)
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(classes(draw, bad, max_size=4))]
    if bad and draw(st.booleans()):
        cats.append({"id": cats[0]["id"], "name": "dup-id"})
    images, anns = [], []
    for i, name in enumerate(draw(st.lists(image_name(), min_size=1, max_size=5))):
        folder = draw(st.sampled_from([b"", b"", where, b"sub/"] + ([b"../", b"/abs/"] if bad else [])))
        file_name = _text(folder + name)
        w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
        entry = {"id": draw(st.sampled_from([i + 1] * 6 + ([1, "x"] if bad else []))), "file_name": file_name}
        if draw(st.booleans()):
            entry.update(width=w, height=h)
        images.append(entry)
        if often(draw, 4) and not folder.startswith((b"..", b"/")):
            ds.add(b"src/" + (where if folder == where else folder) + name, draw(image_data()))
        for _ in range(some(draw)):
            anns.append({"id": len(anns) + 1, "image_id": entry["id"],
                         "category_id": draw(st.sampled_from([c["id"] for c in cats] + ([99] if bad else []))),
                         "bbox": _box(draw, w, h), "iscrowd": draw(st.sampled_from([0, 0, 0, 1])), "area": 1})
    data = {"images": images, "annotations": anns, "categories": cats}
    ds.add(ds.source, _encode(json.dumps(data), draw, bad))
    return ds


@generator("yolo")
@st.composite
def yolo_dataset(draw) -> Dataset:
    bad = hostile(draw)
    layout = draw(st.sampled_from(["yaml-folders", "yaml-list", "darknet", "flat"]))
    ds = Dataset("yolo", options=_options(draw, bad))
    cls = classes(draw, bad, text_only=True)
    nc = len(cls)
    entries = []
    for name in draw(st.lists(st.sampled_from(NAME_BYTES), min_size=1, max_size=5)):
        ext = draw(st.sampled_from([b".jpg", b".png", b".JPG"]))
        split = draw(st.sampled_from([b"train", b"val"]))
        rel = (b"images/" + split + b"/" if layout != "flat" else b"images/") + name + ext
        if often(draw, 5):
            ds.add(b"src/" + rel, draw(image_data()))
        if often(draw, 5):
            label = rel.replace(b"images/", b"labels/", 1).rsplit(b".", 1)[0] + b".txt"
            lines = []
            for _ in range(some(draw)):
                c = draw(st.sampled_from([0, 0, nc - 1] + ([nc, -1, 0.5] if bad else [])))
                n = draw(st.sampled_from([4, 4, 4, 8] + ([5, 3] if bad else [])))
                vals = [draw(st.floats(-0.2, 1.2, allow_nan=False)) for _ in range(n)]
                lines.append(" ".join([str(c)] + [f"{v:.3f}" for v in vals]))
            text = _encode("\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"])), draw, bad)
            ds.add(b"src/" + label, (FIFO, b"") if rarely(draw, 12) else text)  # a pipe is never opened
        entries.append((split, rel))
    for split in (b"train", b"val"):
        ds.add(b"src/images/" + split, (DIR, b""))
    names_yaml = json.dumps(cls)
    if layout == "flat":
        ds.add(b"src/classes.txt", _encode("\n".join(cls) + "\n", draw, bad))
        ds.source = b"src"
    elif layout == "darknet":
        listed = [_spell(draw, rel) for _, rel in entries] + ([_spell(draw, entries[0][1])] if draw(st.booleans()) else [])
        ds.add(b"src/train.txt", _encode("\n".join(listed) + "\n", draw, bad))
        ds.add(b"src/obj.names", _encode("\n".join(cls) + "\n", draw, bad))
        ds.add(b"src/obj.data", b"classes = %d\ntrain = data/train.txt\nnames = data/obj.names\n" % nc)
        ds.source = b"src/obj.data"
    else:
        if layout == "yaml-list":
            for split in (b"train", b"val"):
                listed = [_spell(draw, rel) for s, rel in entries if s == split]
                listed += [_text(draw(image_name()))] if rarely(draw, 4) else []
                ds.add(b"src/" + split + b".txt", _encode("\n".join(listed) + "\n", draw, bad))
            body = f"train: train.txt\nval: val.txt\nnames: {names_yaml}\n"
        else:
            path = draw(st.sampled_from(["."] + (["/elsewhere", ".."] if bad else [])))
            body = f"path: {path}\ntrain: images/train\nval: images/val\nnames: {names_yaml}\n"
        ds.add(b"src/data.yaml", _encode(body, draw, bad))
        ds.source = b"src/data.yaml"
    return ds


def _spell(draw, rel: bytes) -> str:
    """One of the ways a list line names an image."""
    how = draw(st.sampled_from(["plain", "dot", "windows", "abs-foreign", "data", "abs"]))
    text = _text(rel)
    return {"plain": text, "dot": "./" + text, "windows": text.replace("/", "\\"),
            "abs-foreign": "/home/someone/ds/" + text, "data": "data/" + text,
            "abs": os.fsdecode(ROOT) + "/src/" + text}[how]


@generator("voc")
@st.composite
def voc_dataset(draw) -> Dataset:
    bad = hostile(draw)
    ds = Dataset("voc", options=_options(draw, bad), boxes=0)
    listed = []
    prologue, entity = _prologue(draw, bad)
    for name in draw(st.lists(st.sampled_from([n for n in NAME_BYTES if b"\\" not in n]), min_size=1, max_size=4, unique=True)):
        stem = _text(name)
        if often(draw, 4):
            ds.add(b"src/JPEGImages/" + name + b".jpg", draw(image_data()))
        objects = ""
        for _ in range(some(draw)):
            cls = draw(st.sampled_from(classes(draw, bad, text_only=True)))
            b = [draw(st.sampled_from(["1", "5", "0", "-3", "48.5", "x", "", "1e9"])) for _ in range(4)]
            objects += (f"<object><name>{_xml_text(cls)}{entity}</name><difficult>{draw(st.sampled_from(['0', '1']))}</difficult>"
                        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>")
            ds.boxes += 1
        size = draw(st.sampled_from(["<size><width>48</width><height>48</height></size>", "", "<size><width>0</width></size>"]))
        filename = draw(st.sampled_from([stem + ".jpg", "other.jpg", "", stem.upper() + ".JPG"]))
        xml = f"{prologue}<annotation><filename>{_xml_text(filename)}</filename>{size}{objects}</annotation>"
        if bad and rarely(draw, 6):
            xml = xml[: len(xml) // 2]  # cut short
        ds.add(b"src/Annotations/" + name + b".xml", xml.encode("utf-8", "surrogateescape"))
        listed.append(stem)
    if draw(st.booleans()):
        ds.add(b"src/ImageSets/Main/train.txt", ("\n".join(listed + ["not-there"]) + "\n").encode("utf-8", "surrogateescape"))
        ds.boxes = None  # a listed set reads only its listed files
    return ds


@generator("labelme")
@st.composite
def labelme_dataset(draw) -> Dataset:
    bad = hostile(draw)
    ds = Dataset("labelme", options=_options(draw, bad))
    where = _images_folder(draw, ds)
    for name in draw(st.lists(st.sampled_from(NAME_BYTES), min_size=1, max_size=4, unique=True)):
        img = name + b".jpg"
        if often(draw, 4):
            ds.add(b"src/" + where + img, draw(image_data()))
        shapes = []
        for _ in range(some(draw)):
            kind = draw(st.sampled_from(["rectangle", "polygon", "rectangle", None, "circle", "line", "point"]))
            n = {"rectangle": 2, "polygon": 4, None: 4, "circle": 2, "line": 2, "point": 1}[kind]
            n = draw(st.sampled_from([n, n, n, 3, 1, 0]))
            pts = [[draw(st.floats(-5, 60, allow_nan=False)), draw(st.floats(-5, 60, allow_nan=False))]
                   for _ in range(n)]
            shapes.append({"label": draw(st.sampled_from(classes(draw, bad))), "points": pts,
                           "group_id": draw(st.sampled_from([None, None, 1])), "shape_type": kind})
        paths = [_text(img), "..\\images\\" + _text(img), "images/" + _text(img), "../images/" + _text(img), ""]
        data = {"version": "5.0.1", "shapes": shapes,
                "imagePath": draw(st.sampled_from(paths + (["../../../../etc/passwd", "/etc/passwd"] if bad else []))),
                "imageData": None, "imageHeight": 48, "imageWidth": 48,
                "flags": draw(st.sampled_from([{}, {"cat": True}, {"cat": True, "dog": True}, {"__ignore__": True},
                                               {"cat": False}]))}
        ds.add(b"src/" + name + b".json", (FIFO, b"") if rarely(draw, 12) else _encode(json.dumps(data), draw, bad))
    return ds


@generator("cvat")
@st.composite
def cvat_dataset(draw) -> Dataset:
    bad = hostile(draw)
    ds = Dataset("cvat", source=b"src/annotations.xml", options=_options(draw, bad))
    where = _images_folder(draw, ds)
    labels = classes(draw, bad, text_only=True)
    body = "".join(f"<label><name>{_xml_text(n)}</name></label>" for n in labels)
    prologue, entity = _prologue(draw, bad)
    items = ""
    for i, name in enumerate(draw(st.lists(st.sampled_from([n for n in NAME_BYTES if b"\xe9" not in n and b"\xff" not in n]),
                                           min_size=1, max_size=4, unique=True))):
        img = name + b".jpg"
        if often(draw, 4):
            ds.add(b"src/" + where + img, draw(image_data()))
        shapes = ""
        for _ in range(some(draw)):
            lab = _xml_text(draw(st.sampled_from(labels + ["undeclared"]))) + entity
            kind = draw(st.sampled_from(["box", "box", "polygon", "tag", "polyline", "mask"]))
            if kind == "box":
                c = [draw(st.sampled_from(["0", "3.5", "47", "-2", "100", "nan"])) for _ in range(4)]
                rot = draw(st.sampled_from(["", ' rotation="30"']))
                shapes += f'<box label="{lab}" xtl="{c[0]}" ytl="{c[1]}" xbr="{c[2]}" ybr="{c[3]}"{rot}/>'
            elif kind == "polygon":
                shapes += f'<polygon label="{lab}" points="{draw(st.sampled_from(["1,1;9,1;9,9", "1,1", "a,b;c", ""]))}"/>'
            elif kind == "mask":
                shapes += f'<mask label="{lab}" rle="{draw(st.sampled_from(["1, 2, 3", "", "x"]))}" left="1" top="1" width="3" height="2"/>'
            else:
                shapes += f'<{kind} label="{lab}" points="1,1;2,2"/>'
        subset = draw(st.sampled_from(["", ' subset="Train"', ' subset="Validation"', ' subset="default"']))
        items += f'<image id="{i}" name="{_xml_text(_text(img))}" width="48" height="48"{subset}>{shapes}</image>'
    xml = f'{prologue}<annotations><version>1.1</version><meta><task><labels>{body}</labels></task></meta>{items}</annotations>'
    ds.add(ds.source, xml.encode("utf-8"))
    return ds


@generator("labelstudio")
@st.composite
def labelstudio_dataset(draw) -> Dataset:
    """Label Studio's JSON (tasks with annotations, some cancelled, several per task,
    predictions) or JSON_MIN export; image URLs of every kind Label Studio writes."""
    bad = hostile(draw)
    ds = Dataset("labelstudio", source=b"src/export.json", options=_options(draw, bad))
    where = _images_folder(draw, ds)
    tasks, minimal = [], rarely(draw, 3)
    for i, name in enumerate(draw(st.lists(st.sampled_from(NAME_BYTES), min_size=1, max_size=4, unique=True))):
        img = name + draw(st.sampled_from([b".jpg", b".png"]))
        if often(draw, 4):
            ds.add(b"src/" + where + img, draw(image_data()))
        rel = _text(where + img)
        url = draw(st.sampled_from([rel, "/data/local-files/?d=" + rel.replace(" ", "%20"), "/data/upload/3/8f2a1b3c-" + _text(img),
                                    "https://example.com/x/" + _text(img) + "?sig=1", "s3://bucket/" + _text(img)]
                                   + (["/data/local-files/?d=../../etc/passwd", "/etc/passwd", ""] if bad else [])))
        results = []
        for r in range(some(draw)):
            kind = draw(st.sampled_from(["rectanglelabels", "rectanglelabels", "polygonlabels", "choices",
                                         "keypointlabels", "textarea"]))
            value: dict = {}
            if kind == "rectanglelabels":
                value = {"x": draw(st.sampled_from([0, 10, 12.5, 50, 99.9] + ([101.5, -3, float("nan")] if bad else []))),
                         "y": draw(st.sampled_from([0, 10, 33.3, 90])), "width": draw(st.sampled_from([1, 10, 50, 0, 100])),
                         "height": draw(st.sampled_from([1, 10, 50, 0])), "rotation": draw(st.sampled_from([0, 0, 30]))}
            elif kind == "polygonlabels":
                value = {"points": draw(st.sampled_from([[[1, 1], [50, 1], [50, 50]], [[1, 1], [2, 2]], []]))}
            elif kind == "keypointlabels":
                value = {"x": 5, "y": 5}
            if kind == "choices":
                value["choices"] = draw(st.lists(st.sampled_from(classes(draw, bad)), max_size=2))
            elif kind == "textarea":
                value["text"] = ["free text"]
            else:
                value[kind] = draw(st.lists(st.sampled_from(classes(draw, bad)), min_size=0 if bad else 1, max_size=1))
            results.append({"id": f"r{i}x{r}", "type": kind, "from_name": "label", "to_name": "image", "value": value,
                            **({"original_width": 48, "original_height": 48} if often(draw, 3) else {})})
        annotations = [{"id": i * 10 + 1, "result": results, "was_cancelled": False,
                        "updated_at": "2024-01-02T00:00:00Z"}]
        if rarely(draw, 4):
            annotations.append({"id": i * 10 + 2, "result": [], "was_cancelled": draw(st.booleans()),
                                "updated_at": draw(st.sampled_from(["2023-01-01T00:00:00Z", "2025-01-01T00:00:00Z"]))})
        if minimal:
            for a in annotations:
                if a["was_cancelled"]:
                    continue
                rec = {"id": i + 1, "image": url, "annotation_id": a["id"], "updated_at": a["updated_at"]}
                for res in a["result"]:
                    key = res["type"]
                    if key == "choices":
                        rec["class"] = {"choices": res["value"]["choices"]}
                    elif key.endswith("labels"):
                        region = {k: v for k, v in res["value"].items()}
                        region.update(original_width=48, original_height=48)
                        rec.setdefault("label", []).append(region)
                tasks.append(rec)
        else:
            task = {"id": i + 1, "data": {"image": url}, "annotations": annotations}
            if rarely(draw, 4):
                task["predictions"] = [{"result": results}]
            tasks.append(task)
    ds.add(ds.source, _encode(json.dumps(tasks), draw, bad))
    return ds


@generator("createml")
@st.composite
def createml_dataset(draw) -> Dataset:
    """A Create ML JSON file, or Roboflow's split folders of `_annotations.createml.json`."""
    bad = hostile(draw)
    roboflow = draw(st.booleans())
    ds = Dataset("createml", source=b"src" if roboflow else b"src/annotations.json", options=_options(draw, bad), boxes=0)
    where = b"" if roboflow else _images_folder(draw, ds)
    for split in ([b"train/", b"valid/"] if roboflow else [b""]):
        entries = []
        for name in draw(st.lists(st.sampled_from(NAME_BYTES), min_size=1, max_size=4)):
            img = name + draw(st.sampled_from([b".jpg", b".png"]))
            if often(draw, 4):
                ds.add(b"src/" + split + where + img, draw(image_data()))
            anns = []
            for _ in range(some(draw)):
                anns.append({"label": draw(st.sampled_from(classes(draw, bad) + ([""] if bad else []))),
                             "coordinates": {"x": draw(st.sampled_from([0, 10, 24, 47.5, 60])), "y": draw(st.sampled_from([0, 24, 30])),
                                             "width": draw(st.sampled_from([1, 10, 48, 0, -2, 100])),
                                             "height": draw(st.sampled_from([1, 10, 48, float("nan"), "8"]))}})
            ds.boxes += len(anns)
            entries.append({"image": _text(draw(st.sampled_from([b"", where] + ([b"../../"] if bad else []))) + img),
                            "annotations": anns})
        ds.add(b"src/" + split + (b"_annotations.createml.json" if roboflow else b"annotations.json"),
               _encode(json.dumps(entries), draw, bad))
    return ds


@generator("review")
@st.composite
def review_dataset(draw) -> Dataset:
    """A `clipdata label` output as a reviewer leaves it: label.json, predictions.jsonl, the
    review tree with files moved, added, copied twice or removed, decisions.jsonl, and
    optionally an edited predictions.csv or a Label Studio export to apply instead."""
    bad = hostile(draw)
    ds = Dataset("review", source=b"lab", options=_options(draw, bad))
    from clipdata.commands.label import review_names

    cls = draw(st.lists(st.sampled_from(CLASSES), min_size=1, max_size=3, unique=True))
    rows, decisions = [], []
    utf8 = [n for n in NAME_BYTES if b"\xe9" not in n and b"\xff" not in n]  # label leaves other names out
    rels = draw(st.lists(st.builds(bytes.__add__, st.sampled_from([b"", b"sub/", b"caf\xc3\xa9/"]), st.sampled_from(utf8)),
                         min_size=1, max_size=5, unique=True))
    flat = review_names([_text(r + b".jpg") for r in rels])
    for i, rel in enumerate(r + b".jpg" for r in rels):
        data = draw(image_data())
        if often(draw, 5):
            ds.add(b"images/" + rel, data)
        top = [{"class": c, "score": 0.9 / (k + 1)} for k, c in enumerate(cls)]
        uncertain = draw(st.booleans())
        folder = "_uncertain" if uncertain else cls[0]
        review_file = f"review/{folder}/{flat[_text(rel)]}"
        rows.append({"path": _text(rel), "top_k": top, "decision": None if uncertain else cls[0],
                     "uncertain": uncertain, "review_file": review_file, "review_rank": i})
        fate = draw(st.sampled_from(["left", "left", "moved", "removed", "twice"]))
        place = {"left": folder, "moved": draw(st.sampled_from(cls)), "twice": folder}.get(fate)
        if place is not None:
            ds.add(os.fsencode(f"lab/review/{place}/{flat[_text(rel)]}"), data)
        if fate == "twice":
            ds.add(os.fsencode(f"lab/review/{cls[-1]}/{flat[_text(rel)]}"), data)
        if rarely(draw, 3):
            decisions.append({"path": _text(rel), "class": draw(st.sampled_from(cls + ["_rejected", None]))})
    if bad and draw(st.booleans()):
        decisions.append({"path": draw(st.sampled_from(["../outside.jpg", "/etc/passwd", "not-listed.jpg"])), "class": cls[0]})
        ds.add(b"outside.jpg", _image_bytes((8, 8), "RGB", "JPEG", 2))
    if rarely(draw, 5):  # a reviewer's own file, maybe named in cp1252
        added = draw(st.sampled_from([b"added by hand.jpg", b"caf\xe9.jpg"]))
        ds.add(b"lab/review/" + os.fsencode(cls[0]) + b"/" + added, _image_bytes((9, 9), "RGB", "JPEG", 3))
    for c in cls + ["_uncertain"]:
        ds.add(b"lab/review/" + os.fsencode(c), (DIR, b""))
    meta = {"classes": cls, "images_root": os.fsdecode(ROOT) + "/images", "model": "tiny", "threshold": 0.5,
            "margin": 0.1, "captions": [[f"a photo of a {c}"] for c in cls]}
    ds.add(b"lab/label.json", json.dumps(meta).encode())
    ds.add(b"lab/predictions.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    if decisions:
        ds.add(b"lab/decisions.jsonl", "".join(json.dumps(d) + "\n" for d in decisions).encode())
    what = draw(st.sampled_from(["tree", "tree", "csv", "export"]))
    if what == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "decision", "uncertain", "review_rank", "class1", "score1", "final"])
        for r in rows:
            final = draw(st.sampled_from(["", "", r["top_k"][0]["class"], cls[-1]]))
            w.writerow([r["path"], r["decision"] or "", "no", r["review_rank"], r["top_k"][0]["class"], "0.9", final])
        lines = [buf.getvalue().rstrip("\n")]
        ds.add(b"lab/predictions.csv", _encode("\n".join(lines) + "\n", draw, bad))
        ds.source = b"lab/predictions.csv"
    elif what == "export":
        tasks = []
        for r in rows:
            if rarely(draw, 4):
                continue
            chosen = draw(st.sampled_from(cls))
            tasks.append({"id": r["review_rank"] + 1, "data": {"image": "/data/local-files/?d=images/" + r["path"]},
                          "meta": {"path": r["path"]},
                          "annotations": [{"id": 1, "was_cancelled": rarely(draw, 4),
                                           "result": [{"from_name": "class", "to_name": "image", "type": "choices",
                                                       "value": {"choices": [chosen]}}]}]})
        ds.add(b"lab/export.json", _encode(json.dumps(tasks), draw, bad))
        ds.source = b"lab/export.json"
    return ds


# -- running one case ------------------------------------------------------------------------------

TEXT_SUFFIXES = (".json", ".jsonl", ".txt", ".csv", ".yaml")
CASE_SECONDS = 120  # a case that runs longer has hung (a pipe read, a loop): the case fails


def snapshot(root: Path, skip: Path) -> dict[bytes, tuple]:
    """Every entry under root except `skip`'s subtree: (kind, size, mtime_ns) — what the run
    must not change. Iterative: the cases themselves are deeper than the recursion limit."""
    out = {}
    base, skip_b = os.fsencode(root), os.fsencode(skip)
    stack = [base]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as it:
            for e in it:
                if e.path == skip_b:
                    continue
                st_ = e.stat(follow_symlinks=False)
                out[e.path] = (stat.S_IFMT(st_.st_mode), 0 if stat.S_ISDIR(st_.st_mode) else st_.st_size, st_.st_mtime_ns)
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return out


class Hang(BaseException):
    """Not an Exception: the command's own catch-all must not take it for a bug of its own."""


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raise Hang in the main thread after `seconds` (a blocking open or read is interrupted)."""
    def alarm(_sig, _frame):
        raise Hang(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@contextmanager
def case_folder() -> Iterator[Path]:
    """A fresh folder for one case, removed by `rm -rf` afterwards (shutil.rmtree recurses
    per level, and a case may be 1,100 folders deep)."""
    import subprocess
    import tempfile

    d = tempfile.mkdtemp(prefix="readerfuzz-")
    try:
        yield Path(d)
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", d], check=False, timeout=120)
        subprocess.run(["rm", "-rf", d], check=False, timeout=120)


def run(fmt: str, examples: int, *, derandomize: bool = True, seed: int | None = None, twice: bool = False,
        report: Callable[[Dataset, "Outcome"], None] | None = None) -> Counter:
    """Draw `examples` datasets of `fmt` and run each; `report` sees every outcome (the long
    mode collects), else the first case with a problem fails, shrunk by hypothesis to a
    smallest one. Returns how the runs ended (by exit code)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as fixed_seed

    codes: Counter = Counter()

    @settings(max_examples=examples, derandomize=derandomize, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(GENERATORS[fmt](), st.sampled_from([False, False, False, True]))
    def case(dataset: Dataset, auto: bool) -> None:
        with case_folder() as root:
            outcome = run_case(dataset, root, auto=auto, twice=twice)
        codes[outcome.exit_code] += 1
        if report is not None:
            report(dataset, outcome)
        else:
            assert not outcome.problems, (f"{dataset.describe()}\n{dataset.listing()}\n"
                                          + "\n".join(outcome.problems) + "\n" + outcome.output[-800:])

    if seed is not None:
        case = fixed_seed(seed)(case)
    case()
    return codes


_OPTIONS: dict[str, set[str]] = {}


def command_options() -> dict[str, set[str]]:
    """Every option of every command (`review apply` as "review apply"), from the CLI itself."""
    if not _OPTIONS:
        import typer

        from clipdata.cli import app

        todo = [("", typer.main.get_command(app))]
        while todo:
            name, cmd = todo.pop()
            if hasattr(cmd, "commands"):  # a group
                todo += [((name + " " + n).strip(), c) for n, c in cmd.commands.items()]
            else:
                _OPTIONS[name] = {o for p in cmd.params for o in p.opts if o.startswith("--")} | {"--help"}
    return _OPTIONS


def untrue_hints(text: str, command: str = "convert") -> list[str]:
    """The options a message names that its command does not take (another command's, when
    the message names that command)."""
    import re

    opts = command_options()
    text = re.sub(r"(convmv|iconv) [^)—;]*", "", text)  # another tool's options
    known = set().union(*opts.values()) if re.search(r"clipdata (?!convert)[a-z]", text) else opts[command]
    return sorted({o for o in re.findall(r"(?<![\w-])--[a-z][a-z-]*", text) if o not in known})


@dataclass
class Outcome:
    exit_code: int
    output: str
    problems: list[str]


def run_case(dataset: Dataset, root: Path, *, auto: bool = False, twice: bool = False) -> Outcome:
    """Write the dataset under root, convert it into root/out (as `convert auto` with `auto`:
    detection first, formats/auto.md), and check every promise; with `twice`, also that the
    same command gives the same bytes (a second run into root/out2)."""
    from typer.testing import CliRunner

    from clipdata.cli import app

    auto = auto and dataset.fmt != "review"  # a label output is not told from its files
    write(dataset, root)
    out = root / "out"
    before = snapshot(root, out)
    base = os.fsdecode(os.fsencode(root))
    args = ["convert", "auto" if auto else dataset.fmt, os.path.join(base, os.fsdecode(dataset.source)), str(out),
            *[os.path.join(base, a) if a.startswith("src/") else a for a in dataset.options]]
    problems = []
    try:
        with deadline(CASE_SECONDS):
            r = CliRunner().invoke(app, args)
            again = CliRunner().invoke(app, args[:3] + [str(root / "out2")] + args[4:]) if twice else None
    except Hang as e:
        return Outcome(-1, "", [f"hang: {e}"])
    if again is not None and (again.exit_code != r.exit_code or (r.exit_code == 0 and _tree(out) != _tree(root / "out2"))):
        problems.append("the same command gave other bytes (or another exit) the second time")
    text, code = r.output, r.exit_code
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        problems.append(f"exception escaped: {type(r.exception).__name__}: {r.exception}")
    if "bug in clipdata" in text or "Traceback" in text:
        problems.append("the catch-all line or a traceback: " + text.strip()[-400:])
    if code not in (0, 1, 2):
        problems.append(f"exit code {code}")
    if code in (1, 2) and len([line for line in text.splitlines() if line.strip()]) != 1:
        problems.append(f"a failure of {len(text.splitlines())} lines, not one: {text[-300:]}")
    if code in (1, 2) and not text.startswith("error: "):
        problems.append(f"a failure that is not an error line: {text[:300]}")
    if code and untrue_hints(text):
        problems.append(f"a hint names an option that does not exist: {untrue_hints(text)} in {text[-300:]}")
    if again is not None and (root / "out2").exists():
        import shutil

        shutil.rmtree(root / "out2")
    after = snapshot(root, out)
    if after != before:
        changed = sorted(set(after) ^ set(before)) or sorted(k for k in after if after[k] != before[k])
        problems.append(f"written or changed outside OUT: {[os.fsdecode(c)[len(base):] for c in changed[:5]]}")
    if code == 0:
        problems += check_out(out, dataset)
        if auto and f"format detected: {dataset.fmt}" not in (out / "clipdata.json").read_text(encoding="utf-8"):
            problems.append(f"detected as another format than {dataset.fmt}")
    return Outcome(code, text, problems)


def _tree(out: Path) -> dict[str, bytes]:
    """Every file of OUT with its bytes, OUT's own path in clipdata.json blurred."""
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    return {k: v.replace(os.fsencode(out), b"OUT") for k, v in files.items()}


def check_out(out: Path, dataset: Dataset | None = None) -> list[str]:
    """What a finished OUT must be: balanced, every box the generator wrote read, its
    manifest naming its images, UTF-8 text and names, a layout `inspect` accepts."""
    from typer.testing import CliRunner

    from clipdata.cli import app

    problems = []
    try:
        prov = json.loads((out / "clipdata.json").read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError) as e:
        return [f"unreadable output: {e}"]
    for name in ("boxes", "images"):
        t = prov[name]
        if t["read"] != t["written"] + sum(t["skipped"].values()):
            problems.append(f"conservation broken for {name}: {t}")
    if dataset is not None and dataset.boxes is not None and prov["boxes"]["read"] != dataset.boxes:
        problems.append(f"{dataset.boxes} boxes in the files, {prov['boxes']['read']} read: {prov['boxes']}")
    if len(rows) != prov["totals"]["crops"] + prov["totals"]["images"]:
        problems.append(f"{len(rows)} manifest rows for totals {prov['totals']}")
    listed = {r["path"] for r in rows}
    from clipdata.imagefiles import is_image_name

    odd = sorted(p for p in listed if not is_image_name(p))
    if odd:  # loaders that go by extension (ImageFolder) would pass over them
        problems.append(f"output images without an image extension: {odd[:3]}")
    on_disk = set()
    for p in out.rglob("*"):
        rel = p.relative_to(out).as_posix()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in TEXT_SUFFIXES and "/" in rel \
                and not rel.startswith("webdataset/"):
            on_disk.add(rel)
        if p.is_file() and p.suffix in TEXT_SUFFIXES:
            try:
                p.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"{rel} is not UTF-8")
        try:
            os.fsencode(p.name).decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"an output name that is not UTF-8: {p.name!r}")
    if listed != on_disk:
        problems.append(f"manifest and OUT differ: only listed {sorted(listed - on_disk)[:3]}, "
                        f"only on disk {sorted(on_disk - listed)[:3]}")
    if rows:
        r = CliRunner().invoke(app, ["inspect", str(out), "--quiet"])
        if r.exit_code != 0:
            problems.append(f"inspect refuses the output: {r.output.strip()[-300:]}")
    return problems
