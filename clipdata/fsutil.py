"""Atomic file writes: every output appears whole or not at all.

Each file is written to a hidden temporary name in its final folder (so it never leaves OUT)
and renamed into place; a killed run leaves no half-written image under a real name.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import BinaryIO, Callable

TMP_PREFIX = ".clipdata-tmp-"


def _tmp_for(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")


def _open_new(tmp: Path) -> BinaryIO:
    """Open for writing, making the folder only when it is missing (one syscall saved per file)."""
    try:
        return open(tmp, "wb")
    except FileNotFoundError:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        return open(tmp, "wb")


def write_with(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Atomically create `path` with whatever `write(file)` writes."""
    tmp = _tmp_for(path)
    try:
        with _open_new(tmp) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    write_with(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def copy_file(src: Path, dst: Path) -> None:
    """Byte-for-byte copy (no re-encode), without the source's timestamps or permissions."""
    with open(src, "rb") as f:
        write_with(dst, lambda out: shutil.copyfileobj(f, out))


def link_file(src: Path, dst: Path) -> None:
    """Hard link `dst` to `src`; the inode is shared, so the output costs no space."""
    tmp = _tmp_for(dst)
    try:
        os.link(src, tmp)
    except FileNotFoundError:
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, tmp)
    try:
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_within(child: Path, parent: Path) -> bool:
    """True when `child` is `parent` or lies under it (both resolved)."""
    c, p = child.resolve(), parent.resolve()
    return c == p or p in c.parents


# Errors that mean "no hard link here" (another file system, not permitted, too many links,
# unsupported), as opposed to a missing source: those fall back to a copy.
_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP)


def link_or_copy(src: Path, dst: Path) -> bool:
    """Hard-link `dst` to `src` where the file system allows, else copy; True when linked."""
    try:
        link_file(src, dst)
        return True
    except OSError as e:
        if e.errno not in _NO_LINK:
            raise
    copy_file(src, dst)
    return False
