"""search, unique, duplicates: rank images by a text or image query, by how unusual they
are, and group near-duplicates — exact neighbour search in blocks, never an N x N matrix."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..embedding.spec import EngineSpec
from ..errors import OptionError
from ..fsutil import link_or_copy, write_text
from ..html import write_html

BLOCK_BYTES = 128 << 20  # similarity block budget: rows x N x 4 bytes


def _blocks(n_rows: int, n_cols: int) -> Iterator[tuple[int, int]]:
    step = max(1, min(n_rows, BLOCK_BYTES // max(1, 4 * n_cols)))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


def nearest(emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the k most similar other rows: (indices, cosine similarities), best first."""
    n = len(emb)
    k = min(k, n - 1)
    idx = np.zeros((n, k), dtype=np.int64)
    sim = np.zeros((n, k), dtype=np.float32)
    if k <= 0:
        return idx, sim
    for a, b in _blocks(n, n):
        s = emb[a:b] @ emb.T
        s[np.arange(b - a), np.arange(a, b)] = -np.inf  # not its own neighbour
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        idx[a:b] = np.take_along_axis(part, order, axis=1)
        sim[a:b] = np.take_along_axis(vals, order, axis=1)
    return idx, sim


def uniqueness(emb: np.ndarray, k: int = 5) -> np.ndarray:
    """Mean cosine distance (1 - cos) to the k nearest other images."""
    if len(emb) < 2:
        return np.zeros(len(emb), dtype=np.float32)
    _, sim = nearest(emb, k)
    return (1.0 - sim).mean(axis=1)


def near_pairs(emb: np.ndarray, threshold: float) -> Iterator[tuple[int, int, float]]:
    """Pairs (i < j) whose cosine distance is at most `threshold`, found block by block."""
    n = len(emb)
    for a, b in _blocks(n, n):
        s = emb[a:b] @ emb.T
        rows, cols = np.nonzero(s >= 1.0 - threshold)
        for r, c in zip(rows, cols):
            i = a + r
            if i < c:
                yield int(i), int(c), float(1.0 - s[r, c])


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


@dataclass
class Hit:
    query: str
    rank: int
    path: Path
    score: float


@dataclass
class RankReport:
    root: Path
    images: int
    hits: list[Hit] = field(default_factory=list)  # search
    scores: list[tuple[Path, float]] = field(default_factory=list)  # unique, most unique first
    groups: list[dict] = field(default_factory=list)  # duplicates
    unreadable: dict[str, str] = field(default_factory=dict)
    engine: str = ""
    cache_hits: int = 0


def _embed(images: str | Path, spec: EngineSpec, cache_dir, progress):
    """(root, a context giving the images' embeddings)."""
    from ..embedding import embed_paths, scan_images

    root = Path(images)
    return root, embed_paths(spec, scan_images(root), cache_dir, progress)


def search(images: str | Path, queries: Sequence[str] = (), *, image: str | Path | None = None,
           top: int = 20, spec: EngineSpec = EngineSpec(), cache_dir: str | Path | None | bool = None,
           jsonl: str | Path | None = None, copy_to: str | Path | None = None,
           html_path: str | Path | None = None, progress: Callable[[int, int], None] | None = None) -> RankReport:
    """Rank images by cosine similarity to each text query (or to --image)."""
    if not queries and image is None:
        raise OptionError("give a text query or --image", hint='e.g. clipdata search photos/ "a red car"')
    if top < 1:
        raise OptionError("--top must be at least 1")
    from ..embedding import embed_images, embed_texts

    root, embedded = _embed(images, spec, cache_dir, progress)
    with embedded as emb:
        names = list(queries)
        vecs = [embed_texts(emb.engine, names, emb.cache)] if names else []
        if image is not None:
            m, st = embed_images(emb.engine, [Path(image)], emb.cache, spec=spec)
            if st.unreadable:
                raise OptionError(f"--image {image}: unreadable ({next(iter(st.unreadable.values()))})")
            names.append(f"image:{Path(image).name}")
            vecs.append(m)
    q = np.concatenate(vecs)
    report = RankReport(root, len(emb.paths), unreadable=emb.stats.unreadable, engine=emb.engine.describe(),
                        cache_hits=emb.stats.cache_hits)
    sims = emb.matrix @ q.T  # N x queries: small
    for qi, name in enumerate(names):
        order = np.argsort(-sims[:, qi], kind="stable")[:top]
        report.hits += [Hit(name, r + 1, emb.paths[i], float(sims[i, qi])) for r, i in enumerate(order)]
    if jsonl is not None:
        write_text(Path(jsonl), "".join(json.dumps({"query": h.query, "rank": h.rank, "path": str(h.path),
                                                    "score": round(h.score, 6)}, ensure_ascii=False) + "\n"
                                        for h in report.hits))
    if copy_to is not None:
        _copy_hits(report, root, Path(copy_to), len(names) > 1)
    if html_path is not None:
        sections = [(n, [(h.path, f"#{h.rank} {h.score:.3f}") for h in report.hits if h.query == n]) for n in names]
        write_html(Path(html_path), f"search: {', '.join(names)}", sections)
    return report


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "query"


def _copy_hits(report: RankReport, root: Path, dest: Path, per_query: bool) -> None:
    if dest.exists() and any(dest.iterdir()):
        raise OptionError(f"--copy-to {dest}: the folder is not empty")
    for h in report.hits:
        folder = dest / _slug(h.query) if per_query else dest
        target = folder / f"{h.rank:03d}_{h.path.relative_to(root).as_posix().replace('/', '__')}"
        link_or_copy(h.path, target)


def unique(images: str | Path | None = None, *, per_class: str | Path | None = None, k: int = 5,
           spec: EngineSpec = EngineSpec(), cache_dir: str | Path | None | bool = None,
           jsonl: str | Path | None = None, html_path: str | Path | None = None,
           progress: Callable[[int, int], None] | None = None) -> RankReport:
    """Images by uniqueness (mean cosine distance to their k nearest neighbours), most unique
    first; with `per_class`, neighbours are taken within each class folder of a layout split."""
    from ..embedding import embed_paths

    if k < 1:
        raise OptionError("-k must be at least 1")
    if (images is None) == (per_class is None):
        raise OptionError("give IMAGES or --per-class LAYOUT/split")
    if per_class is not None:
        from ..formats import layout as clip_layout

        lay = clip_layout.read_layout(per_class)
        root = Path(per_class)
        groups = [(sl.name, cls, files) for sl in lay.splits for cls, files in sl.images.items()]
        paths = [p for _, _, files in groups for p in files]
        if not paths:
            raise OptionError(f"--per-class {per_class}: no images")
        with embed_paths(spec, paths, cache_dir, progress) as emb:
            index = {p: i for i, p in enumerate(emb.paths)}
            scored: list[tuple[Path, float]] = []
            for _, _, files in groups:
                rows = [index[p] for p in files if p in index]
                u = uniqueness(emb.matrix[rows], k)
                scored += [(emb.paths[r], float(v)) for r, v in zip(rows, u)]
    else:
        root, embedded = _embed(images, spec, cache_dir, progress)
        with embedded as emb:
            scored = [(p, float(v)) for p, v in zip(emb.paths, uniqueness(emb.matrix, k))]
    scored.sort(key=lambda t: (-t[1], str(t[0])))
    report = RankReport(root, len(emb.paths), scores=scored, unreadable=emb.stats.unreadable,
                        engine=emb.engine.describe(), cache_hits=emb.stats.cache_hits)
    if jsonl is not None:
        write_text(Path(jsonl), "".join(json.dumps({"rank": r + 1, "path": str(p), "uniqueness": round(v, 6)},
                                                   ensure_ascii=False) + "\n" for r, (p, v) in enumerate(scored)))
    if html_path is not None:
        write_html(Path(html_path), "most unique first",
                   [("uniqueness", [(p, f"{v:.3f}") for p, v in scored])])
    return report


def duplicates(images: str | Path, *, threshold: float = 0.02, spec: EngineSpec = EngineSpec(),
               cache_dir: str | Path | None | bool = None, jsonl: str | Path | None = None,
               html_path: str | Path | None = None,
               progress: Callable[[int, int], None] | None = None) -> RankReport:
    """Groups of exact duplicates (same bytes) and of near-duplicates (cosine distance at most
    `threshold`, linked transitively)."""
    from ..imagefiles import sha256_file

    if not 0 <= threshold <= 2:
        raise OptionError("--threshold is a cosine distance, between 0 and 2")
    root, embedded = _embed(images, spec, cache_dir, progress)
    with embedded as emb:
        pass  # the embeddings are all this needs: the cache closes here
    report = RankReport(root, len(emb.paths), unreadable=emb.stats.unreadable, engine=emb.engine.describe(),
                        cache_hits=emb.stats.cache_hits)
    by_hash: dict[str, list[int]] = {}
    for i, p in enumerate(emb.paths):
        by_hash.setdefault(sha256_file(p), []).append(i)
    exact = [g for g in by_hash.values() if len(g) > 1]
    pairs = list(near_pairs(emb.matrix, threshold))
    near = _groups(len(emb.paths), [(i, j) for i, j, _ in pairs])
    group_of = {i: n for n, g in enumerate(near) for i in g}
    spread = [0.0] * len(near)
    for i, _, d in pairs:
        spread[group_of[i]] = max(spread[group_of[i]], d)
    exact_sets = {frozenset(g) for g in exact}
    for g in sorted(exact, key=lambda g: g[0]):
        report.groups.append({"kind": "exact", "paths": [str(emb.paths[i]) for i in g], "max_distance": 0.0})
    for n, g in enumerate(near):
        if frozenset(g) in exact_sets:
            continue  # already reported as exact
        report.groups.append({"kind": "near", "paths": [str(emb.paths[i]) for i in g],
                              "max_distance": round(spread[n], 6)})
    if jsonl is not None:
        write_text(Path(jsonl), "".join(json.dumps({"group": n + 1, **g}, ensure_ascii=False) + "\n"
                                        for n, g in enumerate(report.groups)))
    if html_path is not None:
        write_html(Path(html_path), f"{len(report.groups)} duplicate groups",
                   [(f"group {n + 1} ({g['kind']}, max distance {g['max_distance']:.4f})",
                     [(Path(p), "") for p in g["paths"]]) for n, g in enumerate(report.groups)])
    return report
