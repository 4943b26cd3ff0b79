"""The CLIP classification layout: written by convert, read by inspect (and by the later
label/eval commands). The contract lives here and in formats/clip.md, nowhere else.

    OUT/<split>/_tokenization.txt   captions, one per class folder, in sorted() folder order
    OUT/<split>/<class>/<images>
    OUT/manifest.jsonl              one row per written image
    OUT/clipdata.json               what produced the layout
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import ClassNameError, LayoutError, OptionError
from ..fsutil import write_text
from ..names import dumps
from ..records import SPLITS
from ..captions import line_break
from ..textfiles import read_text
from ..imagefiles import IMAGE, find_classes, walk

TOKENIZATION = "_tokenization.txt"
MANIFEST = "manifest.jsonl"
PROVENANCE = "clipdata.json"
KNOWN_FILES = (TOKENIZATION, "metadata.jsonl")  # files a split folder may hold beside its classes


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a class folder, or None when it can."""
    if name == "":
        return "it is empty"
    if name in (".", ".."):
        return f"{name!r} is a special folder name"
    if "/" in name or "\\" in name:
        return "it holds a path separator"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "it holds a control character (NUL, newline, tab, …)"
    if (ch := line_break(name)) is not None:  # U+0085, U+2028, U+2029: captions are one per line
        return f"it holds a line break ({ch})"
    if name.startswith("."):
        return "it starts with a dot (a hidden folder, which readers skip)"
    if name != name.strip():
        return "it starts or ends with white space"
    if name == TOKENIZATION:
        return f"it is the caption file's name, {TOKENIZATION}"
    return None


def check_class_names(names: list[str], file: str | Path | None = None) -> None:
    """Refuse names that cannot be folders, and names that differ only by case (they are one
    folder on macOS and Windows). Never rewrites a name silently."""
    bad = [f"{n!r} ({why})" for n in names if (why := name_problem(n))]
    by_fold: dict[str, list[str]] = {}
    for n in names:
        by_fold.setdefault(n.casefold(), []).append(n)
    clashes = [" / ".join(repr(n) for n in sorted(g)) for g in by_fold.values() if len(g) > 1]
    if bad or clashes:
        parts = []
        if bad:
            parts.append("class name(s) that cannot be a folder: " + ", ".join(bad))
        if clashes:
            parts.append("class names that differ only by case: " + ", ".join(clashes))
        raise ClassNameError(
            "; ".join(parts), file=file,
            hint='rename them with --rename "OLD=NEW" or an --ontology file (formats/ontology.md)',
        )


def tokenization_text(captions_by_folder: dict[str, str]) -> str:
    """Captions in sorted() order of the folder names, joined by \\n, no trailing newline."""
    return "\n".join(captions_by_folder[name] for name in sorted(captions_by_folder))


def write_tokenization(split_dir: Path, captions_by_folder: dict[str, str]) -> None:
    write_text(split_dir / TOKENIZATION, tokenization_text(captions_by_folder))


def manifest_line(row: dict) -> str:
    return dumps(row) + "\n"


@dataclass
class SplitLayout:
    name: str
    folder: Path
    classes: list[str] = field(default_factory=list)  # sorted() folder names
    captions: list[str] | None = None  # None when _tokenization.txt is absent
    trailing_newline: bool = False
    images: dict[str, list[Path]] = field(default_factory=dict)  # class -> image files
    other_files: list[Path] = field(default_factory=list)  # non-image files in class folders
    stray: list[Path] = field(default_factory=list)  # files beside the class folders


@dataclass
class Layout:
    root: Path
    splits: list[SplitLayout]


def read_split(folder: Path, name: str) -> SplitLayout:
    sl = SplitLayout(name=name, folder=folder)
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    sl.classes = find_classes(folder)
    sl.stray = [Path(e.path) for e in entries if not e.is_dir() and e.name not in KNOWN_FILES]
    tok = folder / TOKENIZATION
    if tok.is_file():
        text = read_text(tok, LayoutError)
        sl.trailing_newline = text.endswith("\n")
        sl.captions = text.splitlines() if text else []
    for cls in sl.classes:
        files: list[Path] = []
        for entry in walk(folder / cls):
            (files if entry.kind == IMAGE else sl.other_files).append(entry.path)
        sl.images[cls] = files
    return sl


def read_layout(root: str | Path) -> Layout:
    """Read a CLIP layout: OUT/<split>/_tokenization.txt + class folders, or a single split
    folder that holds _tokenization.txt itself."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError("not a folder", file=root)
    if (root / TOKENIZATION).is_file():
        return Layout(root, [read_split(root, root.name)])
    order = {s: i for i, s in enumerate(SPLITS)}
    subdirs = sorted(
        (e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")),
        key=lambda n: (order.get(n, len(order)), n),
    )
    splits = [read_split(root / d, d) for d in subdirs
              if (root / d / TOKENIZATION).is_file() or d in order]
    if not splits:
        raise LayoutError(
            f"no split folder with a {TOKENIZATION} found", file=root,
            hint="a CLIP layout is OUT/<split>/_tokenization.txt plus OUT/<split>/<class>/ folders",
        )
    return Layout(root, splits)


def split_data(layout: str | Path, split: str | None, min_classes: int = 2
               ) -> tuple[list[str], list[str], list[str], list[Path], list[int]]:
    """The labeled images of one split (None: `test`, else all): (split names, classes,
    layout captions, images, true class index), after checking that captions align with the
    class folders. What eval, prompts, audit and label --train-from score against."""
    lay = read_layout(layout)
    names = [s.name for s in lay.splits]
    if split is not None:
        chosen = [s for s in lay.splits if s.name == split]
        if not chosen:
            raise OptionError(f"--split {split!r}: the layout has {', '.join(names)}")
    else:
        chosen = [s for s in lay.splits if s.name == "test"] or lay.splits
    classes: list[str] = []
    captions: dict[str, str] = {}
    for sl in chosen:
        tok = sl.folder / TOKENIZATION
        if sl.captions is None:
            raise LayoutError(f"no {TOKENIZATION}", file=sl.folder)
        if len(sl.captions) != len(sl.classes):
            raise LayoutError(
                f"{len(sl.captions)} caption line(s) for {len(sl.classes)} class folder(s): line i must caption "
                "the i-th folder in sorted() order, or every score is misattributed", file=tok,
                hint="fix the file (clipdata inspect shows classes beside captions)")
        for cls, cap in zip(sl.classes, sl.captions):
            if captions.setdefault(cls, cap) != cap:
                raise LayoutError(f"class {cls!r} has different captions in different splits", file=tok)
    classes = sorted(captions)
    if len(classes) < min_classes:
        raise LayoutError(f"{len(classes)} class: zero-shot accuracy needs at least two", file=Path(layout))
    images, truth = [], []
    for sl in chosen:
        for cls in sl.classes:
            for p in sl.images[cls]:
                images.append(p)
                truth.append(classes.index(cls))
    if not images and min_classes:
        raise LayoutError("no images in the chosen split(s)", file=Path(layout))
    return [s.name for s in chosen], classes, [captions[c] for c in classes], images, truth


@dataclass
class Labeled:
    """A layout's labeled images over some splits: classes in sorted order, one caption each."""

    splits: list[str]
    classes: list[str]
    captions: list[str]
    images: list[Path]
    labels: list[int]
    image_splits: list[str] = field(default_factory=list)  # the split of each image


def read_labeled(layout: str | Path, splits: Sequence[str], min_classes: int = 2) -> Labeled:
    """The images of these splits with their class index; the splits' classes are united
    (a caption must be the same wherever its class appears; captions must align with folders).
    `min_classes` 0 accepts any split, even one with no class or no image (check reports those)."""
    parts = [split_data(layout, s, min_classes) for s in splits]
    captions: dict[str, str] = {}
    for _, classes, caps, _, _ in parts:
        for c, cap in zip(classes, caps):
            if captions.setdefault(c, cap) != cap:
                raise LayoutError(f"class {c!r} has different captions in different splits", file=Path(layout))
    names = sorted(captions)
    index = {c: i for i, c in enumerate(names)}
    images, labels, where = [], [], []
    for split, (_, classes, _, imgs, truth) in zip(splits, parts):
        images += imgs
        labels += [index[classes[t]] for t in truth]
        where += [split] * len(imgs)
    return Labeled(list(splits), names, [captions[c] for c in names], images, labels, where)
