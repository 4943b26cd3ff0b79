"""The embeddings folder, in clip-retrieval's layout (autofaiss and clip-retrieval's `index`
read it as is; spec: formats/embeddings.md):

    DIR/img_emb/img_emb_{i}.npy           float32, unit rows
    DIR/metadata/metadata_{i}.parquet     image_path, width, height, sha256: row for row
    DIR/embed.json                        model identity, dtype, preprocessing mode, counts

Each file is written atomically and a part counts as finished once both of its files exist
with the same number of rows, so a killed run keeps its finished parts.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SourceError, first_line
from ..fsutil import write_bytes, write_text, write_with
from ..names import dumps

EMB_DIR, META_DIR, INFO_FILE = "img_emb", "metadata", "embed.json"
COLUMNS = ("image_path", "width", "height", "sha256")
FORMAT_VERSION = 1
INSTALL_HINT = "pip install 'clipdata[embed]'"
_PART = re.compile(r"img_emb_(\d+)\.npy")


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except Exception as e:  # a broken install is as good as none
        from ..errors import OptionError

        raise OptionError(f"the embeddings folder's metadata is Parquet, and pyarrow does not import ({e})",
                          hint=INSTALL_HINT) from None
    return pa, pq


def npy_path(root: Path, i: int) -> Path:
    return root / EMB_DIR / f"img_emb_{i}.npy"


def parquet_path(root: Path, i: int) -> Path:
    return root / META_DIR / f"metadata_{i}.parquet"


@dataclass(frozen=True)
class EmbedInfo:
    """What embed.json records: enough to refuse a text query from another model."""

    model: str  # the --model value as given
    identity: str  # name@weights-fingerprint:dtype, the embedding cache's key
    dtype: str
    mode: str  # image preprocessing: 'processor' (--exact-preprocess) or 'fast-pillow-x2-r4'
    dim: int
    count: int  # rows over all parts
    parts: int
    part_size: int
    unreadable: int = 0  # images found but not embedded (each named in the run's report)
    complete: bool = True  # False while a run is writing parts
    run: dict | None = None  # how the run used the machine (batch size, loaders, threads, CPU): a record

    def to_json(self) -> str:
        return dumps({"format": FORMAT_VERSION, "model": self.model, "identity": self.identity,
                           "dtype": self.dtype, "mode": self.mode, "dim": self.dim, "count": self.count,
                           "parts": self.parts, "part_size": self.part_size, "unreadable": self.unreadable,
                           "complete": self.complete, **({"run": self.run} if self.run else {})}, indent=2) + "\n"


@dataclass
class Embeddings:
    root: Path
    info: EmbedInfo
    matrix: np.ndarray  # count x dim float32, unit rows (memory-mapped when there is one part)
    image_path: list[str]
    width: list[int]
    height: list[int]
    sha256: list[str]


def write_part(root: Path, i: int, matrix: np.ndarray, image_path: Sequence[str], width: Sequence[int],
               height: Sequence[int], sha256: Sequence[str]) -> None:
    """Part i: the vectors first, the metadata last (its presence marks the part finished)."""
    pa, pq = _pyarrow()
    if not len(matrix) == len(image_path) == len(width) == len(height) == len(sha256):
        raise ValueError("every column of a part needs one value per vector")
    rows = np.ascontiguousarray(matrix, dtype="<f4")  # no copy for float32 rows: streamed to disk
    write_with(npy_path(root, i), lambda f: np.lib.format.write_array(f, rows, allow_pickle=False))
    table = pa.table({"image_path": pa.array(list(image_path), pa.string()),
                      "width": pa.array(list(width), pa.int32()), "height": pa.array(list(height), pa.int32()),
                      "sha256": pa.array(list(sha256), pa.string())})
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    write_bytes(parquet_path(root, i), buf.getvalue().to_pybytes())


def write_info(root: Path, info: EmbedInfo) -> None:
    write_text(root / INFO_FILE, info.to_json())


def read_info(root: str | Path) -> EmbedInfo:
    root = Path(root)
    path = root / INFO_FILE
    if not path.is_file():
        raise SourceError("not an embeddings folder: no embed.json", file=root,
                          hint="make one with: clipdata embed IMAGES --out DIR")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SourceError("not UTF-8 text", file=path) from None
    except json.JSONDecodeError as e:
        raise SourceError(f"malformed JSON: {e.msg}", file=path, where=f"line {e.lineno}, column {e.colno}",
                          hint="rerun clipdata embed to rewrite it") from None
    if not isinstance(data, dict):
        raise SourceError("expected a JSON object", file=path)
    fields = {"model": str, "identity": str, "dtype": str, "mode": str, "dim": int, "count": int,
              "parts": int, "part_size": int}
    for key, kind in fields.items():
        value = data.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            raise SourceError(f"{key!r} is missing or not a {'non-negative integer' if kind is int else 'string'}",
                              file=path, hint="rerun clipdata embed to rewrite it")
    if data.get("format") != FORMAT_VERSION:
        raise SourceError(f"format {data.get('format')!r} is not {FORMAT_VERSION}", file=path,
                          hint="upgrade clipdata, or rerun clipdata embed")
    complete, unreadable = data.get("complete", True), data.get("unreadable", 0)
    if not isinstance(complete, bool) or not isinstance(unreadable, int) or isinstance(unreadable, bool):
        raise SourceError("'complete' must be true or false and 'unreadable' an integer", file=path,
                          hint="rerun clipdata embed to rewrite it")
    return EmbedInfo(**{k: data[k] for k in fields}, unreadable=unreadable, complete=complete)


def part_rows(root: Path, i: int) -> int | None:
    """Rows of part i when both its files exist and agree, else None (not finished)."""
    npy, pq_file = npy_path(root, i), parquet_path(root, i)
    if not (npy.is_file() and pq_file.is_file()):
        return None
    try:
        rows = np.load(npy, mmap_mode="r").shape[0]
        _, pq = _pyarrow()
        return rows if pq.ParquetFile(pq_file).metadata.num_rows == rows else None
    except Exception:  # a torn or foreign file is simply not a finished part
        return None


def _load_npy(path: Path, dim: int) -> np.ndarray:
    try:
        m = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise SourceError(f"not a readable .npy file ({first_line(e)})", file=path, hint="rerun clipdata embed") from None
    if m.ndim != 2 or m.shape[1] != dim or m.dtype != np.float32:
        raise SourceError(f"expected float32 rows of {dim} values, found {m.dtype} {m.shape}", file=path,
                          hint="rerun clipdata embed")
    return m


def _load_meta(path: Path):
    _, pq = _pyarrow()
    try:
        pf = pq.ParquetFile(path)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise SourceError(f"not a readable Parquet file ({first_line(e)})", file=path,
                          hint="rerun clipdata embed") from None
    missing = [c for c in COLUMNS if c not in pf.schema_arrow.names]
    if missing:
        raise SourceError(f"no column {', '.join(missing)} (expected {', '.join(COLUMNS)})", file=path,
                          hint="rerun clipdata embed to rewrite the part")
    return pf.read(columns=list(COLUMNS))


def read(root: str | Path) -> Embeddings:
    """Every part, in order, as one matrix with its metadata columns. Parts are found by the
    vector files on disk and checked against embed.json; a gap, a missing metadata file or a
    row-count mismatch is a clear error, never a silent loss."""
    root = Path(root)
    info = read_info(root)
    if not info.complete:
        raise SourceError("the embedding run that writes this folder has not finished", file=root / INFO_FILE,
                          hint="rerun the same clipdata embed command: it keeps the finished parts")
    found = sorted(int(m.group(1)) for p in (root / EMB_DIR).glob("img_emb_*.npy") if (m := _PART.fullmatch(p.name)))
    expected = list(range(info.parts))
    for i in expected:
        if i not in found:
            raise SourceError(f"part {i} is missing ({EMB_DIR}/img_emb_{i}.npy); embed.json lists {info.parts} part(s)",
                              file=root, hint="rerun clipdata embed to finish the folder")
    if found != expected:
        raise SourceError(f"{len(found)} vector part(s) on disk, embed.json lists {info.parts}", file=root,
                          hint="rerun clipdata embed to finish the folder")
    mats, cols = [], {c: [] for c in COLUMNS}
    for i in expected:
        m = _load_npy(npy_path(root, i), info.dim)
        try:
            table = _load_meta(parquet_path(root, i))
        except FileNotFoundError:
            raise SourceError(f"part {i} has vectors but no metadata ({META_DIR}/metadata_{i}.parquet)", file=root,
                              hint="rerun clipdata embed to finish the folder") from None
        if table.num_rows != len(m):
            raise SourceError(f"part {i}: {len(m)} vectors but {table.num_rows} metadata rows", file=root,
                              where=f"{META_DIR}/metadata_{i}.parquet", hint="rerun clipdata embed to rewrite the part")
        mats.append(m)
        for c in COLUMNS:
            cols[c] += table.column(c).to_pylist()
    total = sum(len(m) for m in mats)
    if total != info.count:
        raise SourceError(f"embed.json counts {info.count} rows, the parts hold {total}", file=root / INFO_FILE,
                          hint="rerun clipdata embed to rewrite it")
    if len(mats) == 1:
        matrix = mats[0]
    elif mats:
        matrix = np.empty((total, info.dim), dtype=np.float32)
        at = 0
        for m in mats:
            matrix[at:at + len(m)] = m
            at += len(m)
    else:
        matrix = np.zeros((0, info.dim), dtype=np.float32)
    return Embeddings(root, info, matrix, cols["image_path"], cols["width"], cols["height"], cols["sha256"])
