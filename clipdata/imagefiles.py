"""Image files on disk: the one rule set every reader and command shares (like torchvision's
`datasets/folder.py`): which names are images, how a folder tree is walked, how a file is
hashed and how big it displays.

The walk rules:
- names starting with "." (files and folders) are hidden: reported, never read;
- an image is a regular file whose extension is in IMAGE_EXTENSIONS (case-insensitive);
- symbolic links to folders are followed, each real folder (device, inode) at most once, so
  a link cycle cannot loop or multiply files; with `inside`, a link leading out of that folder
  is reported as `outside` and not entered;
- entries come in sorted order (folders, then files, by name), so every walk is deterministic.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# What a walk says of each entry.
IMAGE, OTHER, HIDDEN, OUTSIDE, HIDDEN_DIR, OUTSIDE_DIR = "image", "other", "hidden", "outside", "hidden_dir", "outside_dir"


def is_image_name(name: str) -> bool:
    """torchvision's rule: the extension, matched case-insensitively."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def is_inside(path: Path, real_root: str) -> bool:
    """Whether `path`, with every link resolved, lies in the folder `real_root` (already real)."""
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class Entry:
    path: Path
    kind: str  # IMAGE, OTHER, HIDDEN, OUTSIDE (files); HIDDEN_DIR, OUTSIDE_DIR (folders, not entered)


def walk(root: Path, *, inside: Path | None = None) -> Iterator[Entry]:
    """Every entry under `root` (recursively) with what it is, by the module's rules."""
    real_inside = os.path.realpath(inside) if inside is not None else None
    seen: set[tuple[int, int]] = set()

    def visit(folder: Path) -> Iterator[Entry]:
        try:
            st = os.stat(folder)
        except OSError:
            return
        if (st.st_dev, st.st_ino) in seen:
            return  # a link cycle, or a second link to a folder already walked
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        dirs = [e for e in entries if e.is_dir()]
        files = [e for e in entries if not e.is_dir()]
        for e in dirs:
            p = Path(e.path)
            if e.name.startswith("."):
                yield Entry(p, HIDDEN_DIR)
            elif real_inside is not None and not is_inside(p, real_inside):
                yield Entry(p, OUTSIDE_DIR)
            else:
                yield from visit(p)
        for e in files:
            p = Path(e.path)
            if e.name.startswith("."):
                yield Entry(p, HIDDEN)
            elif real_inside is not None and e.is_symlink() and not is_inside(p, real_inside):
                yield Entry(p, OUTSIDE)
            else:
                yield Entry(p, IMAGE if is_image_name(e.name) else OTHER)

    yield from visit(Path(root))


def walk_images(root: Path, *, inside: Path | None = None) -> list[Path]:
    """The image files under `root`, in walk order."""
    return [e.path for e in walk(root, inside=inside) if e.kind == IMAGE]


def find_classes(folder: Path) -> list[str]:
    """The class folders of a split folder: its visible sub-folders, sorted (ImageFolder's order)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, hex (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def displayed_size(path: Path) -> tuple[int, int]:
    """The image's size as displayed (EXIF orientations 5-8 swap width and height), from its
    header only. Raises what Pillow raises for an unreadable file."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            w, h = h, w
    return w, h
