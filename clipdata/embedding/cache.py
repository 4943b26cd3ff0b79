"""The embedding cache: one SQLite file, rows keyed by model identity, mode (how the image was
preprocessed, or `text`) and the SHA-256 of the image file's bytes (or of the caption). Incremental (only new images are embedded), and safe
to interrupt (each batch is one committed transaction). Format: formats/cache.md.

A cache is only ever a copy of what can be computed again: one that SQLite cannot read (cut
short, overwritten, not a database) is moved aside to `embeddings.sqlite.corrupt` and rebuilt,
with a note, rather than stopping the command."""
from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
from pathlib import Path
from typing import Iterable

import numpy as np

FILE = "embeddings.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model   TEXT NOT NULL,     -- model identity: name@weights-fingerprint:dtype
    mode    TEXT NOT NULL,     -- 'processor' or 'fast-pillow-x2-r4' (images), 'text' (captions)
    content TEXT NOT NULL,     -- sha256 of the image file's bytes, or of the UTF-8 caption, hex
    dim     INTEGER NOT NULL,
    vector  BLOB NOT NULL,     -- dim float32 values, little-endian, unit length
    PRIMARY KEY (model, mode, content)
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
        self.folder.mkdir(parents=True, exist_ok=True)
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
            db.executescript(SCHEMA)
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def _rebuild(self, error: sqlite3.DatabaseError) -> None:
        """Move the unreadable file aside (kept for a bug report) and start an empty cache."""
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

    def close(self) -> None:
        self.db.close()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
