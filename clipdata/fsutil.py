"""Atomic file writes: every output appears whole or not at all.

Each file is written to a hidden temporary name in its final folder (so it never leaves OUT)
and renamed into place; a killed run leaves no half-written image under a real name.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

TMP_PREFIX = ".clipdata-tmp-"


def _tmp_for(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_for(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def copy_file(src: Path, dst: Path) -> None:
    """Byte-for-byte copy (no re-encode), without the source's timestamps or permissions."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_for(dst)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def link_file(src: Path, dst: Path) -> None:
    """Hard link `dst` to `src`; the inode is shared, so the output costs no space."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_for(dst)
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def is_within(child: Path, parent: Path) -> bool:
    """True when `child` is `parent` or lies under it (both resolved)."""
    c, p = child.resolve(), parent.resolve()
    return c == p or p in c.parents
