"""The reviewer's decision log, `LABELED/decisions.jsonl`: one JSON row per decision, appended
and flushed to disk before the caller is told it is saved. The last row per path wins; an undo
is a new row. Format: formats/review.md ("The decision file").

Safe with two writers (two tabs of one server, or two servers on one folder): every append
holds an exclusive `flock` on the file, first reads what the other writer appended since (so
`previous` is always the value on disk), then writes its rows in one `write` and `fsync`s.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SourceError
from ..fsutil import fsync_dir
from ..names import dumps

FILE = "decisions.jsonl"
REJECTED = "_rejected"

try:  # POSIX; elsewhere the in-process lock alone serialises one server's tabs
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


def _parse(line: bytes, file: Path, number: int) -> dict:
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        why = "nested too deep" if isinstance(e, RecursionError) else getattr(e, "msg", e)
        raise SourceError(f"malformed decision row: {why}", file=file, where=f"line {number}",
                          hint="the file is appended by clipdata review serve; remove the damaged line") from None
    if not isinstance(row, dict) or not isinstance(row.get("path"), str) or not (
            row.get("class") is None or isinstance(row.get("class"), str)):
        raise SourceError('a decision row needs "path" (a string) and "class" (a string or null)',
                          file=file, where=f"line {number}")
    return row


def _regular(fd: int, path: Path) -> None:
    """Refuse an open decision file that is not a regular file (a FIFO, a device, a folder)."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise SourceError("is not a regular file (a pipe, socket, device or folder)", file=path,
                          hint="remove it: review serve makes the file with the first decision")


@dataclass
class DecisionLog:
    """The decisions of one label folder: `state` maps each path to its last row."""

    folder: Path
    state: dict[str, dict] = field(default_factory=dict)
    rows: int = 0  # rows read or written so far
    _offset: int = 0  # bytes of the file already folded into `state`
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def path(self) -> Path:
        return Path(self.folder) / FILE

    def current(self, path: str) -> str | None:
        """The class the reviewer gave `path` (or `_rejected`), None when not reviewed."""
        row = self.state.get(path)
        return row.get("class") if row else None

    def refresh(self) -> None:
        """Fold in rows other writers appended since the last read."""
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        """Fold in whole rows appended since the last read (by this or another writer).
        A last line without its newline is a write that never finished: it was never
        reported as saved, so it is left out (and cut off by the next append)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO never blocks
        except FileNotFoundError:
            return
        with os.fdopen(fd, "rb") as f:
            _regular(f.fileno(), self.path)
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            self.rows += 1
            if line.strip():
                row = _parse(line, self.path, self.rows)
                self.state[row["path"]] = row
        self._offset += end

    def append(self, decisions: list[tuple[str, str | None]], *, undo: bool = False) -> list[dict]:
        """Save (path, class) decisions; class None takes a path back to not reviewed.
        Returns the rows as written, each with the `previous` value it replaced. Nothing is
        taken as saved (in `state`) before the rows are on disk: a failed write changes
        nothing, and the next append writes over what it left."""
        with self._lock:
            created = not self.path.exists()
            # never through a symlink (ELOOP): decisions are written inside the label folder only
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_NONBLOCK", 0), 0o644)
            try:
                _regular(fd, self.path)
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_size < self._offset:  # cut or replaced behind our back: read it again
                    self.state.clear()
                    self._offset = self.rows = 0
                self._refresh()
                if os.fstat(fd).st_size > self._offset:  # an unfinished row of a killed writer
                    os.ftruncate(fd, self._offset)
                now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                rows, after = [], {}
                for path, cls in decisions:
                    row = {"path": path, "class": cls, "time": now,
                           "previous": (after[path] if path in after else self.state.get(path, {})).get("class")}
                    if undo:
                        row["undo"] = True
                    rows.append(row)
                    after[path] = row
                data = "".join(dumps(r) + "\n" for r in rows).encode("utf-8")
                try:
                    os.lseek(fd, self._offset, os.SEEK_SET)
                    written = 0
                    while written < len(data):
                        written += os.write(fd, data[written:])
                    os.fsync(fd)
                    if created:
                        fsync_dir(self.folder)  # the file's name, durable with its first rows
                except OSError:  # a full disk: nothing is taken as saved (nor read back by a refresh)
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, self._offset)
                    raise
                self.state.update(after)
                self._offset += len(data)
                self.rows += len(rows)
                return rows
            finally:
                os.close(fd)  # closing releases the flock


def read(folder: str | Path) -> dict[str, str | None]:
    """Each path's last decision (a class, `_rejected`, or None for one taken back)."""
    log = DecisionLog(Path(folder))
    log.refresh()
    return {p: r.get("class") for p, r in log.state.items()}
