"""Neighbour search over unit embeddings: exact in blocks (never an N x N matrix), or, above
APPROX_FROM rows, an approximate faiss index (IVF lists of 8-bit scalar-quantised vectors)
whose candidates are re-scored exactly, so every similarity reported is the true cosine.

The index is saved in `index_dir` (an embeddings folder) beside a fingerprint of the
embeddings; later calls reuse it, and rebuild it when the embeddings change or the file is
unreadable. `exact=True` forces exact search; `exact=False` demands the index; `None` picks
by size. faiss-cpu is an optional extra: without it, search stays exact with a note.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import OptionError
from .fsutil import write_text, write_with

BLOCK_BYTES = 128 << 20  # similarity block budget: rows x N x 4 bytes
APPROX_FROM = 10_000  # rows from which the index is clearly faster: 3x at 10k, 6x at 40k (benchmarks/index.py)
TOP_K_APPROX_QUERIES = 256  # fewer queries: one flat scan is faster than loading an index
INDEX_FILE = "index/ivf_sq8.faiss"
INFO_FILE = "index/index.json"
BATCH = 4096  # query rows per index search: bounds candidate memory
EXTRA = 10  # candidates fetched beyond k, re-scored exactly
SQ_MARGIN = 0.02  # cosine slack on the quantised range search; pairs are then checked exactly
INSTALL_HINT = "pip install 'clipdata[index]'"


def _blocks(n_rows: int, n_cols: int) -> Iterator[tuple[int, int]]:
    step = max(1, min(n_rows, BLOCK_BYTES // max(1, 4 * n_cols)))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


# ---------------------------------------------------------------- choosing exact or approximate

def _faiss():
    try:
        import faiss
    except Exception:  # a broken install is as good as none
        return None
    return faiss


def _use_index(n: int, exact: bool | None, notes: list[str] | None) -> bool:
    if exact:
        return False
    faiss = _faiss()
    if exact is False and faiss is None:
        raise OptionError("the approximate index needs faiss-cpu", hint=INSTALL_HINT)
    if exact is None and n < APPROX_FROM:
        return False
    if faiss is None:
        if notes is not None:
            notes.append(f"{n} embeddings searched exactly; {INSTALL_HINT} for the faster approximate index")
        return False
    return True


# ---------------------------------------------------------------- the saved index

def fingerprint(emb: np.ndarray) -> str:
    """Content hash of the embeddings: the saved index is valid only for these exact rows."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{emb.shape}:{emb.dtype.str}".encode())
    flat = np.ascontiguousarray(emb).reshape(-1).view(np.uint8)
    step = 1 << 26
    for start in range(0, len(flat), step):
        h.update(flat[start:start + step])
    return h.hexdigest()


def _params(n: int) -> tuple[int, int]:
    """(lists, lists probed): about 4 sqrt(N) lists; probing 1/256 of them keeps recall@10 high
    on clustered (image-like) embeddings."""
    nlist = max(1, min(n // 39, 1 << round(math.log2(4 * math.sqrt(n)))))
    return nlist, max(1, min(nlist, max(16, nlist // 256)))


def _build(emb: np.ndarray):
    faiss = _faiss()
    n, d = emb.shape
    nlist, nprobe = _params(n)
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10
    rng = np.random.default_rng(0)  # a fixed sample: the same rows give the same index
    sample = emb if n <= 64 * nlist else emb[np.sort(rng.choice(n, 64 * nlist, replace=False))]
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    for a in range(0, n, 65536):
        index.add(np.ascontiguousarray(emb[a:a + 65536], dtype=np.float32))
    index.nprobe = nprobe
    return index


def _load_or_build(emb: np.ndarray, index_dir: str | Path | None, notes: list[str] | None):
    """The saved index when it matches `emb`; else a new one, saved when `index_dir` is given."""
    faiss = _faiss()
    if index_dir is None:
        return _build(emb)
    path, info_path = Path(index_dir) / INDEX_FILE, Path(index_dir) / INFO_FILE
    fp = fingerprint(emb)
    info: dict = {}
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
    if path.is_file():
        if info.get("fingerprint") == fp:
            try:
                index = faiss.read_index(str(path))
                if index.ntotal == len(emb) and index.d == emb.shape[1]:
                    index.nprobe = int(info.get("nprobe", _params(len(emb))[1]))
                    return index
            except RuntimeError:
                pass
            if notes is not None:
                notes.append(f"{path}: the index file is unreadable; rebuilt it")
        elif notes is not None:
            notes.append(f"{path}: the embeddings changed since the index was built; rebuilt it")
    index = _build(emb)
    nlist, nprobe = _params(len(emb))
    try:  # streamed to the file: no second copy of the index in memory
        write_with(path, lambda f: faiss.write_index(index, faiss.PyCallbackIOWriter(f.write)))
        write_text(info_path, json.dumps({"fingerprint": fp, "count": len(emb), "dim": int(emb.shape[1]),
                                          "kind": f"IVF{nlist},SQ8", "nprobe": nprobe,
                                          "faiss": faiss.__version__}, indent=2) + "\n")
    except OSError as e:  # a read-only folder: the search still runs, the next one rebuilds
        if notes is not None:
            notes.append(f"{path}: the index could not be saved ({e.strerror or e}); it is rebuilt next time")
    return index


def _best_first(rows: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """Column order per row: highest similarity first, ties by lower row index (deterministic)."""
    return np.lexsort((rows, -sims), axis=1)


def _rescore(emb: np.ndarray, queries: np.ndarray, cand: np.ndarray, k: int,
             self_rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosines of the candidates, best k first; -1 / -inf where too few were found."""
    valid = cand >= 0
    if self_rows is not None:
        valid &= cand != self_rows[:, None]
    safe = np.where(valid, cand, 0)
    sims = np.einsum("qd,qkd->qk", queries, emb[safe]).astype(np.float32)
    sims[~valid] = -np.inf
    order = _best_first(safe, sims)[:, :k]
    sim = np.take_along_axis(sims, order, axis=1)
    idx = np.where(np.isfinite(sim), np.take_along_axis(safe, order, axis=1), -1)
    return idx.astype(np.int64), sim


# ---------------------------------------------------------------- the searches

def _exact_top(emb: np.ndarray, queries: np.ndarray, k: int, self_start: int | None):
    n = len(emb)
    idx = np.zeros((len(queries), k), dtype=np.int64)
    sim = np.zeros((len(queries), k), dtype=np.float32)
    for a, b in _blocks(len(queries), n):
        s = queries[a:b] @ emb.T
        if self_start is not None:
            s[np.arange(b - a), np.arange(self_start + a, self_start + b)] = -np.inf  # not its own neighbour
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(s, part, axis=1)
        order = _best_first(part, vals)
        idx[a:b] = np.take_along_axis(part, order, axis=1)
        sim[a:b] = np.take_along_axis(vals, order, axis=1)
    return idx, sim


def nearest(emb: np.ndarray, k: int, *, index_dir: str | Path | None = None, exact: bool | None = None,
            notes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the k most similar other rows: (indices, cosine similarities), best first.
    From the index, a row with fewer than k candidates gets index -1 and similarity -inf."""
    n = len(emb)
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros((n, max(k, 0)), dtype=np.int64), np.zeros((n, max(k, 0)), dtype=np.float32)
    if not _use_index(n, exact, notes):
        return _exact_top(emb, emb, k, 0)
    index = _load_or_build(emb, index_dir, notes)
    idx = np.empty((n, k), dtype=np.int64)
    sim = np.empty((n, k), dtype=np.float32)
    for a in range(0, n, BATCH):
        q = np.ascontiguousarray(emb[a:a + BATCH], dtype=np.float32)
        _, cand = index.search(q, k + 1 + EXTRA)
        idx[a:a + len(q)], sim[a:a + len(q)] = _rescore(emb, q, cand, k, np.arange(a, a + len(q)))
    return idx, sim


def uniqueness(emb: np.ndarray, k: int = 5, *, index_dir: str | Path | None = None, exact: bool | None = None,
               notes: list[str] | None = None) -> np.ndarray:
    """Mean cosine distance (1 - cos) to the k nearest other images."""
    if len(emb) < 2:
        return np.zeros(len(emb), dtype=np.float32)
    _, sim = nearest(emb, k, index_dir=index_dir, exact=exact, notes=notes)
    dist = 1.0 - sim
    found = np.isfinite(dist)
    # a row the index found fewer neighbours for is scored on those it found
    return (np.where(found, dist, 0).sum(axis=1) / np.maximum(found.sum(axis=1), 1)).astype(np.float32)


def near_pairs(emb: np.ndarray, threshold: float, *, index_dir: str | Path | None = None,
               exact: bool | None = None, notes: list[str] | None = None) -> Iterator[tuple[int, int, float]]:
    """Pairs (i < j) whose cosine distance is at most `threshold`; with the index, candidates from
    a range search on the quantised vectors, each checked with its exact cosine."""
    n = len(emb)
    if not _use_index(n, exact, notes):
        for a, b in _blocks(n, n):
            s = emb[a:b] @ emb.T
            rows, cols = np.nonzero(s >= 1.0 - threshold)
            for r, c in zip(rows, cols):
                i = a + r
                if i < c:
                    yield int(i), int(c), float(1.0 - s[r, c])
        return
    index = _load_or_build(emb, index_dir, notes)
    keys: list[np.ndarray] = []
    for a in range(0, n, BATCH):
        q = np.ascontiguousarray(emb[a:a + BATCH], dtype=np.float32)
        lims, _, cand = index.range_search(q, 1.0 - threshold - SQ_MARGIN)
        rows = np.repeat(np.arange(a, a + len(q)), np.diff(lims).astype(np.int64))
        lo, hi = np.minimum(rows, cand), np.maximum(rows, cand)
        keep = lo != hi
        keys.append(lo[keep].astype(np.int64) * n + hi[keep])  # a pair found from either side counts once
    pairs = np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)
    for start in range(0, len(pairs), 1 << 16):
        chunk = pairs[start:start + (1 << 16)]
        i, j = chunk // n, chunk % n
        d = 1.0 - np.einsum("pd,pd->p", emb[i], emb[j])
        for a, b, dist in zip(i[d <= threshold], j[d <= threshold], d[d <= threshold]):
            yield int(a), int(b), float(dist)


def top_k(emb: np.ndarray, queries: np.ndarray, k: int, *, index_dir: str | Path | None = None,
          exact: bool | None = None, notes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the k most similar rows of `emb`: (indices, cosines), best first.
    A handful of queries is always a flat scan; the index serves many queries over many rows."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    k = min(k, len(emb))
    if k <= 0:
        return np.zeros((len(queries), 0), dtype=np.int64), np.zeros((len(queries), 0), dtype=np.float32)
    if exact is None and len(queries) < TOP_K_APPROX_QUERIES:
        exact = True
    if not _use_index(len(emb), exact, notes):
        return _exact_top(emb, queries, k, None)
    index = _load_or_build(emb, index_dir, notes)
    idx = np.empty((len(queries), k), dtype=np.int64)
    sim = np.empty((len(queries), k), dtype=np.float32)
    for a in range(0, len(queries), BATCH):
        q = np.ascontiguousarray(queries[a:a + BATCH])
        _, cand = index.search(q, k + EXTRA)
        idx[a:a + len(q)], sim[a:a + len(q)] = _rescore(emb, q, cand, k, None)
    return idx, sim


def _groups(n: int, pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])
