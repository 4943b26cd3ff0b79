"""Folder-per-class reader, following torchvision ImageFolder's rules.

Class = name of a top-level folder, classes in `sorted()` order, images found recursively
(symlinked folders followed), extensions matched case-insensitively. When every top-level
folder is a split name (train, val/valid/validation, test) those are the splits.
Hidden entries (".ipynb_checkpoints", ".DS_Store") are skipped and said to be, and so are
symbolic links that lead out of the source folder.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import SourceError
from ..records import Label, Sample, Skip, Source
from . import is_image_name, split_name


def _dirs(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _inside(path: Path, real_base: Path) -> bool:
    """Whether `path`, symbolic links followed, stays inside the source folder."""
    real = Path(os.path.realpath(path))
    return real == real_base or real_base in real.parents


def _read_split(root: Path, base: Path, split: str, src: Source) -> None:
    real_base = Path(os.path.realpath(base))
    classes = _dirs(root)
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
        if not _inside(root / cls, real_base):
            src.skipped.append(Skip("outside_source", f"{(root / cls).relative_to(base).as_posix()}/",
                                    "a symbolic link that leads out of the source folder"))
            continue
        for dirpath, dirnames, filenames in os.walk(root / cls, followlinks=True):
            hidden = sorted(d for d in dirnames if d.startswith("."))
            outside = sorted(d for d in dirnames if not d.startswith(".") and not _inside(Path(dirpath) / d, real_base))
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in outside)
            for name in hidden:
                src.skipped.append(Skip("hidden", (Path(dirpath) / name).relative_to(base).as_posix() + "/"))
            for name in outside:
                src.skipped.append(Skip("outside_source", (Path(dirpath) / name).relative_to(base).as_posix() + "/",
                                        "a symbolic link that leads out of the source folder"))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                rel = path.relative_to(base).as_posix()
                if name.startswith("."):
                    src.skipped.append(Skip("hidden", rel))
                elif not _inside(path, real_base):
                    src.skipped.append(Skip("outside_source", rel, "a symbolic link that leads out of the source folder"))
                elif not is_image_name(name):
                    src.skipped.append(Skip("not_an_image", rel, "extension is not an image extension"))
                else:
                    src.samples.append(Sample(name=rel, path=path, split=split, labels=[Label(cls)]))
                    found += 1
        if not found:
            src.notes.append(f"class folder {(root / cls).relative_to(base).as_posix()}/ holds no images; it gets no output folder")


def read(path: str | Path, *, split: str | None = None, **_: object) -> Source:
    base = Path(path)
    if not base.is_dir():
        raise SourceError("not a folder", file=base, hint="pass the folder that holds the class folders")
    src = Source(format="folder", path=base, classes=[], samples=[])
    top = _dirs(base)
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
