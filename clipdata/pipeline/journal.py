"""The journal behind `convert --resume`: OUT/.clipdata-journal.jsonl, a header line with the
run's fingerprint, then one line per finished image task with the size and SHA-256 of each
file it wrote. A killed run leaves it behind; a resumed run replays it, checks every file it
would rely on against the disk (a missing, empty or cut file is made again), and does only the
rest, so the output is byte-identical to a run that never stopped. Lines reach the journal in
batches, each after the files it names are durable (`fsutil.sync_tree`). Format:
formats/runs.md (resume)."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import OutputError
from ..fsutil import LOCK_NAME, TMP_PREFIX, file_digest, fsync_dir, sync_tree
from ..imagefiles import is_image_name, sha256_file
from .jobs import Result

JOURNAL = ".clipdata-journal.jsonl"
VERSION = 2  # 2: results carry [size, sha256] per file written
# Files whose content is hashed (annotations, lists, class names); any other file (images,
# archives) counts by size and modification time, so a resume never reads every image.
_HASHED = (".json", ".jsonl", ".xml", ".txt", ".yaml", ".yml", ".csv", ".names", ".data")


def _identity(e: os.DirEntry) -> tuple[int, int] | None:
    try:
        st = e.stat(follow_symlinks=False)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _files(root: Path, skip: Path) -> Iterator[Path | tuple[Path, str]]:
    """Every file under root (or root itself), sorted, links to folders not followed, `skip`
    left out; a folder that cannot be listed (no permission, a path past the system's limit)
    comes as (folder, why). An explicit stack: a 100,000-deep tree walks like a flat one."""
    if not root.is_dir():
        yield root
        return
    try:  # skip by identity: resolving every folder's path costs depth² lookups on a deep tree
        skip_stat = os.stat(skip)
        skip_id: tuple[int, int] | None = (skip_stat.st_dev, skip_stat.st_ino)
    except OSError:
        skip_id = None
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            yield Path(folder), e.strerror or type(e).__name__
            continue
        dirs = []
        for e in entries:
            try:
                is_dir = e.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                if skip_id is None or e.inode() != skip_id[1] or _identity(e) != skip_id:
                    dirs.append(e.path)
            elif not (e.is_symlink() and _is_dir_link(e.path)):
                yield Path(e.path)
        stack.extend(reversed(dirs))  # popped in sorted order: a deterministic walk


def _is_dir_link(path: str) -> bool:
    try:
        return os.path.isdir(path)
    except OSError:
        return False


_SQLITE_SIDECARS = ("-wal", "-shm")


def fingerprint_inputs(inputs: Iterable[Path], out: Path) -> dict[str, str]:
    """What the run reads, as {file: digest} for annotation-like files (content hash with size
    and mtime) plus one "<other files>" digest over every other file's path, size and mtime.
    A resume compares it, so an edited annotation file is named rather than mixed in."""
    digests: dict[str, str] = {}
    others = hashlib.sha256()
    for root in inputs:
        for path in _files(Path(root), out):
            if isinstance(path, tuple):  # a folder not listed: its name and why stand for it
                others.update(f"{path[0]}\0unlisted: {path[1]}\n".encode("utf-8", "surrogateescape"))
                continue
            if path.name == LOCK_NAME:  # another process's lock (a review server's over a label
                continue  # folder): it comes and goes with that process, and is never read
            if path.name.endswith(_SQLITE_SIDECARS) and path.with_name(path.name[:-4]).is_file():
                continue  # an open SQLite database's -wal/-shm (a server using the label folder's cache)
            try:
                st = path.stat()
            except OSError:
                continue  # a link to nothing, a file gone while walking
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
            if path.suffix.lower() in _HASHED and not is_image_name(path.name) and stat.S_ISREG(st.st_mode):
                # (a pipe named like an annotation file would block the hash: it counts by stamp)
                digests[str(path)] = f"{stamp}:{sha256_file(path)}"
            else:
                others.update(f"{path}\0{stamp}\n".encode("utf-8", "surrogateescape"))
    digests["<other files>"] = others.hexdigest()
    return digests


def _changed(old: dict[str, str], new: dict[str, str]) -> str:
    names = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    shown = ["image or other files (added, removed or modified)" if n == "<other files>" else n for n in names[:3]]
    return ", ".join(shown) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def read_journal(out: Path, fingerprint: str, provenance: str | None = None,
                 inputs: dict[str, str] | None = None) -> list[dict] | None:
    """The lines a killed run recorded after its header, once the header says it was the same
    command (and, given `inputs`, over the same inputs); temporary files it left are removed,
    and a last line cut by the kill is cut off. None when there is no journal, or one whose
    header never reached the disk whole (nothing after it can have been recorded). With
    `provenance`, a folder holding that file and no journal is a finished run: refused."""
    journal = out / JOURNAL
    if not journal.is_file():
        if provenance is not None and (out / provenance).is_file():
            raise OutputError("holds a finished run: nothing to resume", file=out,
                              hint="pass --overwrite to run again")
        return None
    data = journal.read_bytes()
    whole = data.rfind(b"\n") + 1
    if whole < len(data):  # the line being written when the run was killed
        with open(journal, "r+b") as f:
            f.truncate(whole)
            os.fsync(f.fileno())
    lines = data[:whole].split(b"\n")
    try:
        header = json.loads(lines[0])
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    _remove_temporaries(out)
    if not isinstance(header, dict) or "fingerprint" not in header:
        return None
    if header.get("fingerprint") != fingerprint or header.get("clipdata_journal") != VERSION:
        raise OutputError("the interrupted run in this folder used another source or other options",
                          file=out, hint="repeat the original command with --resume, or pass --overwrite")
    if inputs is not None and header.get("inputs") != inputs:
        raise OutputError(f"the source changed since the interrupted run: {_changed(header.get('inputs') or {}, inputs)}",
                          file=out, hint="a resume would mix old and new outputs: pass --overwrite to convert again")
    rows = []
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # damaged: what it recorded is done again
        if isinstance(row, dict):
            rows.append(row)
    return rows


def replay(out: Path, fingerprint: str, provenance: str, inputs: dict[str, str] | None = None) -> dict[int, Result]:
    """The image results a killed conversion recorded (read_journal); an empty dict when
    there is nothing to resume."""
    results: dict[int, Result] = {}
    for row in read_journal(out, fingerprint, provenance, inputs) or []:
        try:
            r = Result.from_json(row)
        except (KeyError, TypeError):
            continue  # not a result: its image is done again
        results[r.index] = r
    return results


def whole(out: Path, files: object) -> bool:
    """Whether every file a journal line lists as {relative path: [size, sha256]} is on disk
    with that size and content."""
    if not isinstance(files, dict):
        return False
    for rel, want in files.items():
        try:
            if not (isinstance(want, list) and len(want) == 2) or (out / rel).stat().st_size != want[0] \
                    or list(file_digest(out / rel)) != want:
                return False
        except OSError:
            return False
    return True


def _remove_temporaries(out: Path) -> None:
    for path in _files(out, out / JOURNAL):
        if not isinstance(path, tuple) and path.name.startswith(TMP_PREFIX):
            path.unlink(missing_ok=True)


def verify(out: Path, results: dict[int, Result], relpaths: Callable[[int], list[str]],
           workers: int = 4) -> list[int]:
    """Check every file the journaled results say they wrote against the disk (size, then
    SHA-256): the indices whose files are missing, changed, empty or cut, which the caller
    does again (and drops from `results`). `relpaths(i)`: the output paths of task i."""

    def bad(item: tuple[int, Result]) -> bool:
        i, r = item
        paths = relpaths(i)
        return len(paths) != len(r.outputs) or not whole(out, {paths[k]: r.files[k] for k in r.written()})

    items = sorted(results.items())
    with ThreadPoolExecutor(max(1, workers)) as pool:  # hashing releases the GIL
        redo = [i for (i, _), b in zip(items, pool.map(bad, items)) if b]
    for i in redo:
        del results[i]
    return redo


def interrupted(out: Path) -> bool:
    """Whether OUT holds a run that was stopped before its end (its journal is still there)."""
    return (out / JOURNAL).exists()


class Journal:
    """Appends results as they are folded in (a command that redoes all its outputs on resume,
    such as `label`, keeps the header alone: the mark of an unfinished run and its fingerprint). Lines are written in batches: before each, the
    files its results name are made durable (data and renames, `sync_tree`), then the lines
    are written and the journal fsynced; so a line on disk always means its files are."""

    BATCH = 4096  # results per batch at most
    INTERVAL = 1.0  # seconds between batches at least (more when syncing is slow)

    def __init__(self, out: Path, fingerprint: str, fresh: bool, inputs: dict[str, str] | None = None) -> None:
        self.out = out
        self.path = out / JOURNAL
        self._file = open(self.path, "wb" if fresh else "ab")
        self._pending: list[bytes] = []
        self._written: list[Path] = []
        self._due = time.monotonic() + self.INTERVAL
        if fresh:
            header = {"clipdata_journal": VERSION, "fingerprint": fingerprint, "inputs": inputs}
            self._file.write(json.dumps(header).encode() + b"\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            fsync_dir(out)

    def record(self, result: Result, paths: Iterable[str] = ()) -> None:
        """`paths`: the output paths of the task, relative to OUT."""
        written = set(result.written())
        self.record_line(result.to_json(), [self.out / p for k, p in enumerate(paths) if k in written])

    def record_line(self, line: dict, files: Iterable[Path] = ()) -> None:
        """Record `line` once `files` (what it says was written) are durable: at the next batch."""
        self._pending.append(json.dumps(line).encode() + b"\n")
        self._written += list(files)
        if len(self._pending) >= self.BATCH or time.monotonic() >= self._due:
            self.commit()

    def commit(self) -> None:
        """Make the pending results' files durable, then record them."""
        if not self._pending:
            return
        t0 = time.monotonic()
        sync_tree(self.out, self._written)
        self._file.write(b"".join(self._pending))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._pending, self._written = [], []
        now = time.monotonic()
        self._due = now + max(self.INTERVAL, 10 * (now - t0))  # syncing stays under ~10% of the run

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self._file.close()

    def finish(self, files: Iterable[Path] = ()) -> None:
        """The run is complete: once the last files written (`files`) are durable, nothing is
        left to resume."""
        sync_tree(self.out, files)
        self.path.unlink()
        fsync_dir(self.out)
