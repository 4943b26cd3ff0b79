"""Image files on disk: the one rule set every reader and command shares (like torchvision's
`datasets/folder.py`): which names are images, how a folder tree is walked, how a file is
hashed and how big it displays.

The walk rules:
- names starting with "." (files and folders) are hidden: reported, never read;
- an image is a regular file whose extension is in IMAGE_EXTENSIONS (case-insensitive);
  pipes, sockets and devices (`SPECIAL`) and links to nothing (`BROKEN`) are told apart by
  `stat` before anything opens them;
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
SPECIAL, BROKEN = "special", "broken"  # a FIFO, socket or device; a link to nothing
UNLISTED = "unlisted"  # a folder that cannot be listed (no read permission): its images are unknown


MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF8", "gif"), (b"BM", "bmp"),
         (b"II*\x00", "tif"), (b"MM\x00*", "tif"), (b"RIFF", "webp"))


def content_extension(head: bytes) -> str | None:
    """The image type of a file, from its first bytes; None when none is known."""
    for magic, ext in MAGIC:
        if head.startswith(magic):
            return ext
    return None


def sniffed_extension(path: Path) -> str | None:
    """content_extension of a file on disk (a regular file only: a pipe is never opened)."""
    try:
        if not Path(path).is_file():
            return None
        with open(path, "rb") as f:
            return content_extension(f.read(16))
    except OSError:
        return None


def is_image_name(name: str) -> bool:
    """torchvision's rule: the extension, matched case-insensitively."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def relative_name(path: Path, root: Path) -> str:
    """`path` relative to `root` in POSIX form, or whole when it lies elsewhere (a list may
    name an image outside the dataset folder)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def is_inside(path: Path, real_root: str) -> bool:
    """Whether `path`, with every link resolved, lies in the folder `real_root` (already real)."""
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class Entry:
    path: Path
    kind: str  # IMAGE, OTHER, HIDDEN, OUTSIDE, SPECIAL, BROKEN (files); HIDDEN_DIR, OUTSIDE_DIR (folders, not entered)


def _file_kind(e: os.DirEntry) -> str:
    """What a non-folder entry is, by `stat` alone: a pipe named `x.jpg` is never opened
    (opening it would block forever)."""
    try:
        regular = e.is_file()  # follows a link: a link to a regular file is a file
    except OSError:
        return BROKEN
    if regular:
        return IMAGE if is_image_name(e.name) else OTHER
    return BROKEN if e.is_symlink() and not os.path.exists(e.path) else SPECIAL


def walk(root: Path, *, inside: Path | None = None, unlisted: bool = False) -> Iterator[Entry]:
    """Every entry under `root` (recursively) with what it is, by the module's rules.

    The walk keeps its own stack (no recursion limit on deep trees) and enters each real
    folder once, so its work is bounded by the folders that exist, whatever the links. A folder
    it cannot list (no read permission) is passed over, or with `unlisted` said as UNLISTED."""
    real_inside = os.path.realpath(inside) if inside is not None else None
    seen: set[tuple[int, int]] = set()
    said: list[Entry] = []  # with `unlisted`, folders that cannot be listed are said (UNLISTED)

    def listing(folder: Path) -> tuple[list[os.DirEntry], list[os.DirEntry]] | None:
        try:
            st = os.stat(folder)
        except OSError:
            return None
        if (st.st_dev, st.st_ino) in seen:
            return None  # a link cycle, or a second link to a folder already walked
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            if unlisted:
                said.append(Entry(Path(folder), UNLISTED))
            return None
        dirs = [e for e in entries if _is_dir(e)]
        return dirs, [e for e in entries if not _is_dir(e)]

    # Each frame: the folders still to enter, then the files to yield once they are done.
    stack: list[tuple[Iterator[os.DirEntry], list[os.DirEntry]]] = []
    top = listing(Path(root))
    if top is not None:
        stack.append((iter(top[0]), top[1]))
    yield from said
    said.clear()
    while stack:
        dirs, files = stack[-1]
        e = next(dirs, None)
        if e is None:
            stack.pop()
            for f in files:
                p = Path(f.path)
                if f.name.startswith("."):
                    yield Entry(p, HIDDEN)
                elif real_inside is not None and f.is_symlink() and not is_inside(p, real_inside):
                    yield Entry(p, OUTSIDE)
                else:
                    yield Entry(p, _file_kind(f))
            continue
        p = Path(e.path)
        if e.name.startswith("."):
            yield Entry(p, HIDDEN_DIR)
        elif real_inside is not None and e.is_symlink() and not is_inside(p, real_inside):
            # only a link can leave: a plain folder of a folder inside is inside (resolving
            # every folder's whole path cost depth² lookups, minutes on a 1,000-deep tree)
            yield Entry(p, OUTSIDE_DIR)
        else:
            below = listing(p)
            if below is not None:
                stack.append((iter(below[0]), below[1]))
            yield from said
            said.clear()


def _is_dir(e: os.DirEntry) -> bool:
    try:
        return e.is_dir()
    except OSError:
        return False


def walk_images(root: Path, *, inside: Path | None = None, rejected: list[Entry] | None = None) -> list[Path]:
    """The image files under `root`, in walk order. Files named like images that cannot be
    read as files (SPECIAL: a pipe would block; BROKEN: a link to nothing) are never
    returned; pass `rejected` to be told of them, and of folders that cannot be listed
    (UNLISTED), so that a command counts them as skipped."""
    images = []
    for e in walk(root, inside=inside, unlisted=rejected is not None):
        if e.kind == IMAGE:
            images.append(e.path)
        elif rejected is not None and (e.kind in (SPECIAL, BROKEN) and is_image_name(e.path.name) or e.kind == UNLISTED):
            rejected.append(e)
    return images


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
