"""The embedding cache: one SQLite file, rows keyed by model identity, mode (how the image was
preprocessed, or `text`) and the SHA-256 of the image file's bytes (or of the caption). Incremental (only new images are embedded), and safe
to interrupt (each batch is one committed transaction). A second table remembers each file's
hash beside its stat, so a run reads only the files that changed. Format: formats/cache.md.

A cache is only ever a copy of what can be computed again: one that SQLite cannot read (cut
short, overwritten, not a database) is moved aside to `embeddings.sqlite.corrupt` and rebuilt,
with a note, rather than stopping the command. A cache SQLite cannot *write* (a full disk, a
read-only folder, an I/O error) is not damaged: it is kept as it is, and the command stops
in one line naming it."""
from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import OutputError

FILE = "embeddings.sqlite"
# SQLite's result codes for a file that is not a readable database (the rest, such as
# SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR or SQLITE_CANTOPEN, mean the file is fine
# and the disk or its folder is not)
_DAMAGED = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_FULL = 13  # SQLITE_FULL
_HINT = "choose another cache folder with --cache-dir (or $CLIPDATA_CACHE), or run with --no-cache"
RACY_NS = 2_000_000_000  # a file's recorded hash is trusted once it was 2 s old when recorded (FAT's mtime tick)
SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model   TEXT NOT NULL,     -- model identity: name@weights-fingerprint:dtype
    mode    TEXT NOT NULL,     -- 'processor' or 'fast-pillow-x2-r4' (images), 'text' (captions)
    content TEXT NOT NULL,     -- sha256 of the image file's bytes, or of the UTF-8 caption, hex
    dim     INTEGER NOT NULL,
    vector  BLOB NOT NULL,     -- dim float32 values, little-endian, unit length
    PRIMARY KEY (model, mode, content)
);
CREATE TABLE IF NOT EXISTS files (
    path     BLOB PRIMARY KEY,  -- the path as the run named it, as bytes (names need not be UTF-8)
    dev      INTEGER NOT NULL,  -- os.stat: device, inode, size, modification and change times (ns)
    ino      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    sha256   TEXT NOT NULL,     -- of the bytes read when the row was written
    seen_ns  INTEGER NOT NULL   -- the clock when it was written: a file changed within RACY_NS of it is hashed again
);
CREATE TABLE IF NOT EXISTS models (
    model       TEXT PRIMARY KEY,  -- as above
    kind        TEXT NOT NULL,     -- 'clip' (softmax) or 'siglip' (sigmoid)
    logit_scale REAL NOT NULL,
    logit_bias  REAL NOT NULL
)"""


class EmbeddingCache:
    def __init__(self, folder: str | Path, model: str) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"the embedding cache folder cannot be made ({e.strerror})", file=self.folder,
                              hint=_HINT) from None
        self.model = model
        self.notes: list[str] = []  # what a command should tell the user (a rebuilt cache)
        try:
            self.db = self._open()
        except sqlite3.DatabaseError as e:
            self._rebuild(e)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.folder / FILE)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # a cache is a copy of what can be computed again: a commit need not reach the disk
            # before the run goes on (WAL keeps the file consistent through a crash)
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def _rebuild(self, error: sqlite3.DatabaseError) -> None:
        """Move the unreadable file aside (kept for a bug report) and start an empty cache; an
        error of the disk rather than of the file stops the command, the file untouched."""
        code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
        damaged = (code & 0xFF in _DAMAGED) if code is not None else not isinstance(error, sqlite3.OperationalError)
        if not damaged:
            if code is not None and code & 0xFF == _FULL:
                raise OutputError("no space left on the device while writing the embedding cache",
                                  file=self.folder / FILE, hint="free some space, or " + _HINT) from None
            raise OutputError(f"the embedding cache cannot be written ({error})", file=self.folder / FILE,
                              hint=_HINT) from None
        if getattr(self, "db", None) is not None:
            self.db.close()
        path = self.folder / FILE
        os.replace(path, path.with_name(FILE + ".corrupt"))
        for extra in ("-wal", "-shm"):
            path.with_name(FILE + extra).unlink(missing_ok=True)
        note = (f"{path}: the embedding cache was unreadable ({error}); it was moved to "
                f"{FILE}.corrupt and is rebuilt, so this run embeds everything again")
        self.notes.append(note)
        print(f"note: {note}", file=sys.stderr)
        self.db = self._open()

    def stored(self) -> dict[tuple[str, str], int]:
        """How many embeddings the cache holds per (model identity, mode): what a lookup that
        found nothing can name."""
        return {(m, mode): n for m, mode, n in
                self.db.execute("SELECT model, mode, COUNT(*) FROM embeddings GROUP BY model, mode")}

    def scalars(self) -> tuple[str, float, float] | None:
        """The model's kind, logit scale and bias, when a run already recorded them."""
        row = self.db.execute("SELECT kind, logit_scale, logit_bias FROM models WHERE model = ?",
                              [self.model]).fetchone()
        return tuple(row) if row else None  # type: ignore[return-value]

    def put_scalars(self, kind: str, scale: float, bias: float) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?)", [self.model, kind, scale, bias])

    def get(self, mode: str, contents: Iterable[str]) -> dict[str, np.ndarray]:
        try:
            return self._get(mode, contents)
        except sqlite3.DatabaseError as e:  # damage found past the header: start again
            self._rebuild(e)
            return {}

    def _get(self, mode: str, contents: Iterable[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        keys = list(dict.fromkeys(contents))
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            rows = self.db.execute(
                f"SELECT content, vector FROM embeddings WHERE model = ? AND mode = ? "
                f"AND content IN ({','.join('?' * len(chunk))})", [self.model, mode, *chunk])
            for content, blob in rows:
                found[content] = np.frombuffer(blob, dtype="<f4")
        return found

    def put(self, mode: str, items: dict[str, np.ndarray]) -> None:
        rows = [(self.model, mode, c, len(v), np.asarray(v, dtype="<f4").tobytes()) for c, v in items.items()]
        try:
            self._put(rows)
        except sqlite3.DatabaseError as e:
            self._rebuild(e)
            self._put(rows)

    def _put(self, rows: list[tuple]) -> None:
        with self.db:  # one transaction: all of a batch or none of it
            self.db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)", rows)

    def file_hashes(self, paths: Sequence[str], hash_file: Callable[[str], str]) -> dict[str, str]:
        """The SHA-256 of each readable file: from the `files` table where the file's stat
        (device, inode, size, mtime, ctime) is the one recorded with it and it had not changed
        for RACY_NS before the row was written (git's racy-file rule: a later write in the
        same clock tick cannot go unseen), else `hash_file(path)`, then recorded. A file
        that cannot be stat'ed or read is left out. All rows are written in one transaction."""
        stats: dict[str, os.stat_result] = {}
        for p in paths:
            try:
                stats[p] = os.stat(p)
            except OSError:
                continue
        try:
            known = self._known(list(stats))
        except sqlite3.DatabaseError as e:
            self._rebuild(e)
            known = {}
        out: dict[str, str] = {}
        fresh = []
        now = time.time_ns()
        for p, st in stats.items():
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            row = known.get(p)
            if row is not None and row[:5] == key and max(st.st_mtime_ns, st.st_ctime_ns) < row[6] - RACY_NS:
                out[p] = row[5]
                continue
            try:
                out[p] = hash_file(p)
            except OSError:
                continue
            fresh.append((os.fsencode(p), *key, out[p], now))
        if fresh:
            try:
                with self.db:
                    self.db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)", fresh)
            except sqlite3.DatabaseError as e:
                self._rebuild(e)
        return out

    def _known(self, paths: list[str]) -> dict[str, tuple]:
        found: dict[str, tuple] = {}
        for i in range(0, len(paths), 500):
            chunk = [os.fsencode(p) for p in paths[i:i + 500]]
            for row in self.db.execute(f"SELECT path, dev, ino, size, mtime_ns, ctime_ns, sha256, seen_ns FROM files "
                                       f"WHERE path IN ({','.join('?' * len(chunk))})", chunk):
                found[os.fsdecode(row[0])] = tuple(row[1:])
        return found

    def close(self) -> None:
        self.db.close()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
