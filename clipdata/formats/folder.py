"""Folder-per-class reader, following torchvision ImageFolder's rules.

Class = name of a top-level folder, classes in `sorted()` order, images found recursively
(symlinked folders followed), extensions matched case-insensitively. When every top-level
folder is a split name (train, val/valid/validation, test) those are the splits.
Hidden entries (".ipynb_checkpoints", ".DS_Store") are skipped and said to be, and so are
symbolic links that lead out of their class folder (a link cycle, or a link into another
class, would count images twice or label them as the wrong class), pipes and broken links.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import SourceError
from ..records import Label, Sample, Skip, Source, split_name
from ..imagefiles import BROKEN, HIDDEN, HIDDEN_DIR, OTHER, OUTSIDE, OUTSIDE_DIR, SPECIAL, find_classes, is_inside, walk


def _read_split(root: Path, base: Path, split: str, src: Source) -> None:
    real_base = os.path.realpath(base)
    classes = find_classes(root)
    subs: set[str] = set()  # the class folders' sub-folders holding images ("" for the folder itself)
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir():
            rel = Path(entry.path).relative_to(base).as_posix()
            if entry.name.startswith("."):
                src.skipped.append(Skip("hidden", rel))
            else:
                src.skipped.append(Skip("not_in_class_folder", rel, "files beside the class folders are not labeled"))
        elif entry.name.startswith("."):
            src.skipped.append(Skip("hidden", Path(entry.path).relative_to(base).as_posix() + "/"))
    for cls in classes:
        if cls not in src.classes:
            src.classes.append(cls)
        found = 0
        if not is_inside(root / cls, real_base):
            src.skipped.append(Skip("outside_source", f"{(root / cls).relative_to(base).as_posix()}/",
                                    "a symbolic link that leads out of the source folder"))
            continue
        for entry in walk(root / cls, inside=root / cls):  # a link into another class is not this class
            rel = entry.path.relative_to(base).as_posix()
            if entry.kind in (HIDDEN_DIR, OUTSIDE_DIR):
                rel += "/"
            if entry.kind in (HIDDEN, HIDDEN_DIR):
                src.skipped.append(Skip("hidden", rel))
            elif entry.kind in (OUTSIDE, OUTSIDE_DIR) and not is_inside(entry.path, real_base):
                src.skipped.append(Skip("outside_source", rel, "a symbolic link that leads out of the source folder"))
            elif entry.kind in (OUTSIDE, OUTSIDE_DIR):
                src.skipped.append(Skip("outside_class", rel, f"a symbolic link that leads out of the class folder {cls}/"))
            elif entry.kind == SPECIAL:
                src.skipped.append(Skip("not_a_regular_file", rel, "a pipe, socket or device, never opened"))
            elif entry.kind == BROKEN:
                src.skipped.append(Skip("broken_link", rel, "a symbolic link to nothing"))
            elif entry.kind == OTHER:
                src.skipped.append(Skip("not_an_image", rel, "extension is not an image extension"))
            else:
                src.samples.append(Sample(name=rel, path=entry.path, split=split, labels=[Label(cls)]))
                found += 1
                inner = entry.path.relative_to(root / cls).parts
                subs.add(inner[0] if len(inner) > 1 else "")
        if not found:
            src.notes.append(f"class folder {(root / cls).relative_to(base).as_posix()}/ holds no images; it gets no output folder")
    if len(classes) == 1 and len(subs) > 1 and "" not in subs:  # dataset/images/<class>/…: one class, wrongly
        folder = (root / classes[0]).relative_to(base).as_posix()
        shown = ", ".join(sorted(subs)[:5]) + (", …" if len(subs) > 5 else "")
        fix = f"pass {folder}/ as SOURCE" if root == base else f"move them up into {root.relative_to(base).as_posix()}/"
        src.notes.append(f"one class, {classes[0]!r}, whose images all lie in its sub-folders ({shown}); if those "
                         f"are the classes, {fix}")


def read(path: str | Path, *, split: str | None = None) -> Source:
    base = Path(path)
    if not base.is_dir():
        raise SourceError("not a folder", file=base, hint="pass the folder that holds the class folders")
    src = Source(format="folder", path=base, classes=[], samples=[])
    top = find_classes(base)
    splits = {d: split_name(d) for d in top}
    if top and all(s is not None for s in splits.values()):
        seen: dict[str, str] = {}
        for d, s in splits.items():
            if s in seen:
                raise SourceError(
                    f"folders {seen[s]!r} and {d!r} are both the {s} split",
                    file=base, hint="keep one of them",
                )
            seen[s] = d
        if split:
            src.notes.append(f"--split {split} ignored: the source has its own split folders")
        for d, s in splits.items():
            _read_split(base / d, base, s, src)
    else:
        named = [d for d, s in splits.items() if s is not None]
        if named:
            src.notes.append(
                f"folder(s) {', '.join(named)} read as classes, not splits, because other top-level folders are not split names"
            )
        _read_split(base, base, split or "train", src)
    if not src.samples:
        raise SourceError("no images found in class folders", file=base,
                          hint="expected SOURCE/<class>/<image> or SOURCE/<split>/<class>/<image>")
    return src
