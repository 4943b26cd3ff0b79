"""The embedding cache: one SQLite file, rows keyed by model identity, preprocessing mode and
the SHA-256 of the image file's bytes. Incremental (only new images are embedded), and safe
to interrupt (each batch is one committed transaction). Format: formats/cache.md."""
from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Iterable

import numpy as np

FILE = "embeddings.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model   TEXT NOT NULL,     -- model identity: name@weights-fingerprint:dtype
    mode    TEXT NOT NULL,     -- preprocessing: 'processor' or 'draft'
    content TEXT NOT NULL,     -- sha256 of the image file's bytes, hex
    dim     INTEGER NOT NULL,
    vector  BLOB NOT NULL,     -- dim float32 values, little-endian, unit length
    PRIMARY KEY (model, mode, content)
)"""


def content_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class EmbeddingCache:
    def __init__(self, folder: str | Path, model: str, mode: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.model, self.mode = model, mode
        self.db = sqlite3.connect(self.folder / FILE)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(SCHEMA)
        self.db.commit()

    def get(self, contents: Iterable[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        keys = list(dict.fromkeys(contents))
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            rows = self.db.execute(
                f"SELECT content, vector FROM embeddings WHERE model = ? AND mode = ? "
                f"AND content IN ({','.join('?' * len(chunk))})", [self.model, self.mode, *chunk])
            for content, blob in rows:
                found[content] = np.frombuffer(blob, dtype="<f4")
        return found

    def put(self, items: dict[str, np.ndarray]) -> None:
        with self.db:  # one transaction: all of a batch or none of it
            self.db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)",
                [(self.model, self.mode, c, len(v), np.asarray(v, dtype="<f4").tobytes()) for c, v in items.items()])

    def close(self) -> None:
        self.db.close()
