"""Output files: atomic writes, names that fit, paths that stay inside OUT, one run per OUT.

Each file is written to a hidden temporary name in its final folder (so it never leaves OUT)
and renamed into place; a killed run leaves no half-written image under a real name.
Durability is a separate, batched step (`sync_tree`): a run makes what it wrote reach the disk
(data and renames) before its journal says so, once per batch rather than once per file.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import stat
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from .errors import OutputError
from .names import quoted, utf8

TMP_PREFIX = ".clipdata-tmp-"
LOCK_NAME = ".clipdata.lock"
# Bytes per path component: the limit of ext4, XFS, btrfs, APFS (in UTF-8) and NTFS (ASCII).
# Fixed rather than asked of the file system, so a layout that fits here fits everywhere.
NAME_MAX = 255


def _tmp_for(path: Path) -> Path:
    """A hidden sibling; for a name near NAME_MAX the name is hashed, so that any name that
    fits also fits as its temporary name (and an error never names the temporary file)."""
    tmp = f"{TMP_PREFIX}{os.getpid()}-{path.name}"
    if len(tmp.encode("utf-8", "surrogateescape")) > NAME_MAX:
        tmp = f"{TMP_PREFIX}{os.getpid()}-{hashlib.sha1(os.fsencode(path.name)).hexdigest()}"
    return path.with_name(tmp)


# Errors that mean the device, not the file, is at fault: said once, naming the file.
_FULL = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
         errno.EFBIG: "file too large for the file system"}


def _named(e: OSError, path: Path) -> BaseException:
    """The error re-aimed at the real output name (never the temporary one)."""
    if e.errno in _FULL:
        return OutputError(f"{_FULL[e.errno]} while writing", file=path,
                           hint="free some space or choose another output folder, then run the command again "
                                "(convert, label and review apply: with --resume, to keep what was done)")
    return OSError(e.errno, e.strerror, str(path))


def _open_new(tmp: Path) -> BinaryIO:
    """Open for writing, making the folder only when it is missing (one syscall saved per file)."""
    try:
        return open(tmp, "wb")
    except FileNotFoundError:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        return open(tmp, "wb")


def _discard(tmp: Path) -> None:
    """Remove a temporary file on the way out of a failed write. Its own failure (a read-only
    file system answers EROFS even for a file that is not there) must not hide the error
    that matters, which names the real output."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def write_with(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Atomically create `path` with whatever `write(file)` writes."""
    tmp = _tmp_for(path)
    try:
        with _open_new(tmp) as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        if e.filename in (str(tmp), os.fsencode(tmp)) or e.filename is None and e.errno in _FULL:
            raise _named(e, path) from None
        raise
    except BaseException:
        _discard(tmp)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    write_with(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> None:
    """UTF-8; a name's undecodable byte is spelled `\\xNN` (clipdata/names.py), never an error."""
    write_bytes(path, utf8(text))


def write_report(path: str | Path, data: str | bytes) -> None:
    """A file the user named on its own (`--json`, `--jsonl`, `--html`, `--plot`, `prompts
    --out`): atomic like every output, except that a path naming a device or a pipe
    (`/dev/stdout`, bash's `>(jq .)`) is written through. Renaming over it would replace the
    device's entry (as root, /dev/stdout itself) and the reader would never get the data."""
    path = Path(path)
    raw = utf8(data) if isinstance(data, str) else data
    try:
        special = not stat.S_ISREG(os.stat(path).st_mode) and not path.is_dir()
    except OSError:
        special = False
    if not special:
        write_bytes(path, raw)
        return
    with open(path, "wb") as f:
        f.write(raw)


def copy_file(src: Path, dst: Path) -> None:
    """Byte-for-byte copy (no re-encode), without the source's timestamps or permissions."""
    with open(src, "rb") as f:
        write_with(dst, lambda out: shutil.copyfileobj(f, out))


def link_file(src: Path, dst: Path) -> None:
    """Hard link `dst` to `src`; the inode is shared, so the output costs no space."""
    tmp = _tmp_for(dst)
    try:
        try:
            os.link(src, tmp)
        except FileNotFoundError:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError as e:
        _discard(tmp)
        if str(tmp) in (e.filename, e.filename2):  # the errno is kept: link_or_copy reads it
            raise _named(e, dst) from None
        raise
    except BaseException:
        _discard(tmp)
        raise


def file_digest(path: str | Path) -> tuple[int, str]:
    """(size in bytes, SHA-256 hex) of a file: what a journal records of a finished output, and
    what a resume checks on disk before it relies on that output."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def _syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2): one call makes every file, rename and folder entry written on a file
    system durable (one journal commit on ext4/XFS), where fsync would take one call per file."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return fn


_SYNCFS = _syncfs()


def fsync_path(path: str | Path) -> None:
    """fsync a file, or a folder (its entries: new names, renames, removals). Quietly nothing
    where the path cannot be opened (gone, or a folder on Windows) or refuses fsync (some file
    systems, for folders, whose renames are then synchronous)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


fsync_dir = fsync_path


def sync_tree(folder: str | Path, files: Iterable[str | Path] = ()) -> None:
    """Make everything written under `folder` durable: file data, and the folder entries
    of renames. On Linux one syncfs of the file system holding `folder`; elsewhere an fsync
    of each of `files` and of each folder from the one that holds it up to `folder` (a new
    folder's own entry lives in its parent)."""
    folder = Path(folder)
    if _SYNCFS is not None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            if _SYNCFS(fd) == 0:
                return
        finally:
            os.close(fd)
    files = list(files)
    dirs = {folder}
    for path in files:  # each file's folder, and every folder above it up to `folder`: a folder
        d = Path(path).parent  # the run made is reachable only once its parent's entry is durable
        dirs.add(d)
        while folder in d.parents and d.parent not in dirs:
            d = d.parent
            dirs.add(d)
    for path in files:
        fsync_path(path)
    for d in sorted(dirs, key=lambda d: -len(d.parts)):
        fsync_path(d)


def remove(path: str | Path) -> None:
    """Delete a file, a link, or a folder with everything in it (links are removed, never
    followed), by an explicit stack: a tree of any depth, where shutil.rmtree recurses."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    stack: list[tuple[str, bool]] = [(str(path), False)]
    while stack:
        folder, emptied = stack.pop()
        if emptied:
            os.rmdir(folder)
            continue
        stack.append((folder, True))
        with os.scandir(folder) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append((e.path, False))
                else:
                    os.unlink(e.path)


def is_within(child: Path, parent: Path) -> bool:
    """True when `child` is `parent` or lies under it (both resolved)."""
    c, p = child.resolve(), parent.resolve()
    return c == p or p in c.parents


def refuse_inside(outputs: Iterable[str | Path | bool | None], inputs: Iterable[tuple[str, str | Path | None]]) -> None:
    """Refuse, before any work, an output file or folder (a report, --copy-to, --cache-dir) that lies in
    or over one of the run's `inputs` ((what, path); a None path is left out): inputs are
    never changed, and a file written into an image folder would be read as input next time.
    An input that does not exist is left to its reader, which says it is not found."""
    for f in outputs:
        if not isinstance(f, (str, os.PathLike)):  # None; a cache_dir of False (no cache)
            continue
        for what, src in inputs:
            if src is None or not os.path.lexists(src) or not is_within(Path(f), Path(src)):
                continue
            if Path(src).is_dir():
                raise OutputError(f"would be written inside {what}, which stays untouched", file=f,
                                  hint=f"write it outside {what}")
            raise OutputError(f"would overwrite {what}, which this run reads", file=f, hint="write it elsewhere")


def inside(folder: Path, relpath: str | Path) -> Path:
    """`folder / relpath`, refused unless it resolves strictly inside `folder` (symlinks
    followed): no output name made of user text may climb out of its folder."""
    path = Path(folder) / relpath
    c, p = path.resolve(), Path(folder).resolve()
    if p not in c.parents:
        raise OutputError(f"{str(relpath)!r} would be written outside the output folder", file=folder,
                          hint="this name comes from the input: rename it there")
    return path


def name_bytes(name: str) -> int:
    return len(name.encode("utf-8", "surrogateescape"))


def check_name(name: str, *, what: str, file: str | Path | None = None, where: str | None = None) -> str:
    """Refuse a file-name component longer than NAME_MAX bytes, before anything is written;
    `what` says which class, annotation or folder brought it, so the user knows what to fix."""
    n = name_bytes(name)
    if n > NAME_MAX:
        shown = name if len(name) <= 60 else name[:40] + "…" + name[-12:]
        raise OutputError(f"{what} gives the file or folder name {quoted(shown)}, {n} bytes; "
                          f"file systems allow {NAME_MAX}", file=file, where=where,
                          hint="shorten it in the source, or map it to a shorter name with --rename or an ontology")
    return name


def safe_name(text: str, *, suffix: str = "", limit: int = NAME_MAX) -> str:
    """A file-name component made from free text (a query, a caption): separators and
    control characters become '_', no leading dot, never '.' or '..', and cut (with a short
    hash of the whole text, so distinct long texts stay distinct) to fit `limit` bytes with
    `suffix`."""
    out = "".join("_" if ch in "/\\" or ord(ch) < 32 or ord(ch) == 127 else ch for ch in text)
    if out.startswith(".") or out == "":
        out = "_" + out
    room = limit - name_bytes(suffix)
    if name_bytes(out) > room:
        tag = "-" + hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:10]
        cut = out.encode("utf-8", "surrogateescape")[:room - len(tag)].decode("utf-8", "ignore")
        out = cut + tag
    return out + suffix


@contextmanager
def locked(folder: Path) -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (created if missing) for the block: a second run
    into the same folder fails at once instead of mixing its files with the first's. The
    lock is `flock` on `folder/.clipdata.lock`; it dies with the process (and with forked
    workers, which share it), so a killed run never leaves a stale lock."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError("exists and is not a folder", file=folder)
    if folder.is_symlink() and not folder.exists():
        raise OutputError(f"is a link to {os.readlink(folder)}, which does not exist", file=folder,
                          hint="make that folder first, or choose another output folder")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except BlockingIOError:
            os.close(fd)
            raise OutputError("another clipdata run is writing into this folder", file=folder,
                              hint="wait for it to finish (a review server of this folder: stop it), "
                                   "or choose another output folder") from None
        try:  # the holder before us may have removed the file after we opened it: lock the live one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        _unlock(fd)
        os.close(fd)
        if created:
            try:
                folder.rmdir()  # only when the run failed before writing anything
            except OSError:
                pass


def hold_shared(folder: Path) -> Callable[[], None]:
    """A shared lock on `folder`'s lock file, held until the returned function is called: for
    a process that adds to a finished output rather than makes it (the review server, which
    appends decisions to a label folder). Any number share it; a run holding `locked` (label
    --overwrite or --resume into the folder) and it exclude each other, so neither sees the
    other's half-done work. A folder where no lock file can be made is served unlocked (it is
    read-only: no run can write there either). The last holder removes the file."""
    path = Path(folder) / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return lambda: None
        try:
            _lock_shared(fd)
        except BlockingIOError:
            os.close(fd)
            raise OutputError("a clipdata run is writing into this folder", file=folder,
                              hint="wait for it to finish, then start again") from None
        try:  # a run that held it may have removed the file after we opened it: lock the live one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)

    def release() -> None:
        try:
            _lock(fd)
        except BlockingIOError:  # another holder: the file stays
            pass
        else:  # no one else: the file goes (one who opened it meanwhile sees the inode change)
            path.unlink(missing_ok=True)
        finally:
            try:
                _unlock(fd)
            except OSError:
                pass
            os.close(fd)

    return release


try:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _lock_shared(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
except ImportError:  # Windows
    import msvcrt

    def _lock(fd: int) -> None:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            raise BlockingIOError from None

    def _unlock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

    def _lock_shared(fd: int) -> None:
        """msvcrt has no shared lock: an exclusive one would keep out a second server."""


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
