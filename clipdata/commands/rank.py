"""search, unique, duplicates: rank images by a text or image query, by how unusual they
are, and group near-duplicates. Over a folder of images, or over an embeddings folder
(`embeddings=`, formats/embeddings.md); neighbour search is clipdata.index's (exact in blocks,
or its approximate index above a size threshold; `exact=True` forces exact)."""
from __future__ import annotations

import os
import re
import stat
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..embedding.spec import EngineSpec
from ..errors import OptionError, OutputError, SourceError
from ..fsutil import LOCK_NAME, inside, link_or_copy, locked, refuse_inside, safe_name, write_report
from ..html import write_html
from ..index import _groups, near_pairs, nearest, top_k, uniqueness  # noqa: F401  (nearest: API)
from ..names import dumps

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
    notes: list[str] = field(default_factory=list)


def _embed(images: str | Path, spec: EngineSpec, cache_dir, progress):
    """(root, a context giving the images' embeddings)."""
    from ..embedding import embed_paths, scan_images

    root = Path(images)
    return root, embed_paths(spec, scan_images(root), cache_dir, progress, source=root)


@dataclass
class _Stored:
    """An embeddings folder seen as `Embedded` is: rows, their image paths, the engine (for
    queries) and the cache, with the folder as the home of the saved index."""

    paths: list[Path]
    matrix: np.ndarray
    sha256: list[str]
    engine: object
    cache: object
    describe: str
    index_dir: Path


@contextmanager
def _stored(folder: str | Path, spec: EngineSpec, cache_dir, needs_model: bool) -> Iterator[_Stored]:
    """Read the folder; with `needs_model`, an engine for the queries, refused unless it is the
    model embed.json names (other models' vectors live in another space)."""
    from ..embedding import Engine, open_cache
    from ..formats import embeddings as ef

    e = ef.read(folder)
    desc = f"{e.info.model} embeddings ({e.info.dtype}, {e.info.mode}) from {folder}"
    if not needs_model:
        yield _Stored([Path(p) for p in e.image_path], e.matrix, e.sha256, None, None, desc, Path(folder))
        return
    engine = Engine(spec.check())
    ours, theirs = engine.identity.rsplit(":", 1)[0], e.info.identity.rsplit(":", 1)[0]
    if ours != theirs and ours.split("#")[0] == theirs.split("#")[0]:
        raise OptionError(f"these embeddings of {e.info.model} were made under other rules for its family "
                          f"({theirs.partition('#')[2] or 'before the family table'}; now {ours.partition('#')[2]})",
                          file=Path(folder) / ef.INFO_FILE, hint="embed the images again into a new folder (clipdata embed IMAGES --out NEW_FOLDER)")
    if ours != theirs:
        raise OptionError(f"--model {spec.model} is not the model these embeddings were made with: "
                          f"{e.info.model} ({e.info.identity.rsplit(':', 1)[0]})", file=Path(folder) / ef.INFO_FILE,
                          hint=f"pass --model {e.info.model}")
    with open_cache(engine, cache_dir) as cache:
        yield _Stored([Path(p) for p in e.image_path], e.matrix, e.sha256, engine, cache, desc, Path(folder))


def _source(images, embeddings, spec: EngineSpec, cache_dir, progress, needs_model: bool):
    """(root, a context giving the embeddings) from exactly one of IMAGES or --embeddings."""
    if (images is None) == (embeddings is None):
        raise OptionError("give IMAGES or --embeddings DIR, not both")
    if embeddings is not None:
        return Path(embeddings), _stored(embeddings, spec, cache_dir, needs_model=needs_model)
    return _embed(images, spec, cache_dir, progress)


def _check_query_image(image: Path) -> None:
    """The --image file, checked before any image is embedded (it was read last, after
    minutes of embedding): missing or unreadable is the file's one line (exit 1), a folder,
    pipe or device a usage error. Opened without blocking: a FIFO would wait for ever."""
    try:
        fd = os.open(image, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise SourceError(e.strerror or "cannot be read", file=image, hint="--image names the picture to search by") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OptionError(f"--image {image}: not a regular file (a folder, pipe, socket or device)")
    finally:
        os.close(fd)


def search(images: str | Path | None, queries: Sequence[str] = (), *, image: str | Path | None = None,
           top: int = 20, spec: EngineSpec = EngineSpec(), cache_dir: str | Path | None | bool = None,
           jsonl: str | Path | None = None, copy_to: str | Path | None = None,
           html_path: str | Path | None = None, progress: Callable[[int, int], None] | None = None,
           embeddings: str | Path | None = None, exact: bool | None = None) -> RankReport:
    """Rank images by cosine similarity to each text query (or to --image); over `embeddings`
    (an embeddings folder) instead of `images`, the queries need the folder's model."""
    if not queries and image is None:
        raise OptionError("give a text query or --image", hint='e.g. clipdata search photos/ "a red car"')
    if top < 1:
        raise OptionError("--top must be at least 1")
    refuse_inside((jsonl, html_path, copy_to, cache_dir), _inputs(images, embeddings, ("the --image file", image)))
    if image is not None:
        _check_query_image(Path(image))
    from ..embedding import embed_images, embed_texts

    with _hits_folder(copy_to):  # held from before the embedding: a second run into it refuses at once
        root, embedded = _source(images, embeddings, spec, cache_dir, progress, needs_model=True)
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
        report = _report(root, emb)
        idx, sims = top_k(emb.matrix, q, top, index_dir=getattr(emb, "index_dir", None), exact=exact,
                          notes=report.notes)
        for qi, name in enumerate(names):
            report.hits += [Hit(name, r + 1, emb.paths[i], float(s)) for r, (i, s) in enumerate(zip(idx[qi], sims[qi]))
                            if i >= 0]
        if jsonl is not None:
            write_report(Path(jsonl), "".join(dumps({"query": h.query, "rank": h.rank, "path": str(h.path),
                                                        "score": round(h.score, 6)}) + "\n"
                                            for h in report.hits))
        if copy_to is not None:
            _copy_hits(report, root, Path(copy_to), len(names) > 1)
        if html_path is not None:
            sections = [(n, [(h.path, f"#{h.rank} {h.score:.3f}") for h in report.hits if h.query == n]) for n in names]
            write_html(Path(html_path), f"search: {', '.join(names)}", sections)
        return report


def _inputs(images, embeddings, *more: tuple[str, str | Path | None]) -> list[tuple[str, str | Path | None]]:
    """What a ranking run reads, for refuse_inside."""
    return [("the image folder", images), ("the embeddings folder", embeddings), *more]


def _report(root: Path, emb, **kw) -> RankReport:
    if isinstance(emb, _Stored):
        return RankReport(root, len(emb.paths), engine=emb.describe, **kw)
    return RankReport(root, len(emb.paths), unreadable=emb.stats.unreadable, engine=emb.engine.describe(),
                      cache_hits=emb.stats.cache_hits, **kw)


def _slug(text: str) -> str:
    """A readable folder name: runs of anything but letters, digits, '.', '_' and '-' become
    '_' (safe_name then keeps it from being '.', '..' or hidden, and fits its length)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "query"


@contextmanager
def _hits_folder(copy_to: str | Path | None) -> Iterator[None]:
    """`--copy-to`'s folder, new or empty, locked for the run (fsutil.locked): two searches
    into one folder never mix their hits."""
    if copy_to is None:
        yield
        return
    dest = Path(copy_to)
    with locked(dest):
        if any(p.name != LOCK_NAME for p in dest.iterdir()):
            raise OutputError("--copy-to: the folder is not empty", file=dest, hint="choose a new or empty folder")
        yield


def _copy_hits(report: RankReport, root: Path, dest: Path, per_query: bool) -> None:
    """Link each hit into `dest` (a folder per query when there are several). Every name is
    made safe from its text (a query such as '..' or 'a/b' cannot climb out or nest), distinct
    queries keep distinct folders, and each target is checked to lie inside `dest`."""
    folders: dict[str, str] = {}
    for q in dict.fromkeys(h.query for h in report.hits):
        name, n = safe_name(_slug(q)), 1
        while name in folders.values():
            n += 1
            name = safe_name(_slug(f"{q} {n}"))
        folders[q] = name
    seen: set[tuple[str, int]] = set()
    for h in report.hits:
        if (h.query, h.rank) in seen:
            continue  # the same query given twice: its hits once
        seen.add((h.query, h.rank))
        try:
            rel = h.path.relative_to(root).as_posix().replace("/", "__")
        except ValueError:  # an embeddings folder names images anywhere: their file name
            rel = h.path.name
        stem = rel[:-len(h.path.suffix)] if h.path.suffix else rel
        name = safe_name(f"{h.rank:03d}_{stem}", suffix=h.path.suffix)  # a suffix from disk holds no separator
        link_or_copy(h.path, inside(dest, Path(folders[h.query], name) if per_query else name))


def unique(images: str | Path | None = None, *, per_class: str | Path | None = None, k: int = 5,
           spec: EngineSpec = EngineSpec(), cache_dir: str | Path | None | bool = None,
           jsonl: str | Path | None = None, html_path: str | Path | None = None,
           progress: Callable[[int, int], None] | None = None, embeddings: str | Path | None = None,
           exact: bool | None = None) -> RankReport:
    """Images by uniqueness (mean cosine distance to their k nearest neighbours), most unique
    first; with `per_class`, neighbours are taken within each class folder of a layout split;
    with `embeddings`, over an embeddings folder (its saved index reused)."""
    from ..embedding import embed_paths

    if k < 1:
        raise OptionError("-k must be at least 1")
    if sum(x is not None for x in (images, per_class, embeddings)) != 1:
        raise OptionError("give one of IMAGES, --per-class LAYOUT/split or --embeddings DIR")
    refuse_inside((jsonl, html_path, cache_dir), _inputs(images, embeddings, ("the --per-class layout", per_class)))
    notes: list[str] = []
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
                u = uniqueness(emb.matrix[rows], k, exact=exact, notes=notes)
                scored += [(emb.paths[r], float(v)) for r, v in zip(rows, u)]
    else:
        if embeddings is not None:
            root, embedded = Path(embeddings), _stored(embeddings, spec, cache_dir, needs_model=False)
        else:
            root, embedded = _embed(images, spec, cache_dir, progress)
        with embedded as emb:
            u = uniqueness(emb.matrix, k, index_dir=getattr(emb, "index_dir", None), exact=exact, notes=notes)
            scored = [(p, float(v)) for p, v in zip(emb.paths, u)]
    scored.sort(key=lambda t: (-t[1], str(t[0])))
    report = _report(root, emb, scores=scored, notes=list(dict.fromkeys(notes)))
    if jsonl is not None:
        write_report(Path(jsonl), "".join(dumps({"rank": r + 1, "path": str(p), "uniqueness": round(v, 6)}) + "\n" for r, (p, v) in enumerate(scored)))
    if html_path is not None:
        write_html(Path(html_path), "most unique first",
                   [("uniqueness", [(p, f"{v:.3f}") for p, v in scored])])
    return report


def duplicates(images: str | Path | None, *, threshold: float = 0.02, spec: EngineSpec = EngineSpec(),
               cache_dir: str | Path | None | bool = None, jsonl: str | Path | None = None,
               html_path: str | Path | None = None,
               progress: Callable[[int, int], None] | None = None, embeddings: str | Path | None = None,
               exact: bool | None = None) -> RankReport:
    """Groups of exact duplicates (same bytes) and of near-duplicates (cosine distance at most
    `threshold`, linked transitively); over `embeddings`, same bytes is the same recorded sha256."""
    from ..imagefiles import sha256_file

    if not 0 <= threshold <= 2:
        raise OptionError("--threshold is a cosine distance, between 0 and 2")
    refuse_inside((jsonl, html_path, cache_dir), _inputs(images, embeddings))
    root, embedded = _source(images, embeddings, spec, cache_dir, progress, needs_model=False)
    with embedded as emb:
        pass  # the embeddings are all this needs: the cache closes here
    report = _report(root, emb)
    hashes = emb.sha256 if isinstance(emb, _Stored) else [sha256_file(p) for p in emb.paths]
    by_hash: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        by_hash.setdefault(h, []).append(i)
    same = [g for g in by_hash.values() if len(g) > 1]
    pairs = list(near_pairs(emb.matrix, threshold, index_dir=getattr(emb, "index_dir", None), exact=exact,
                            notes=report.notes))
    near = _groups(len(emb.paths), [(i, j) for i, j, _ in pairs])
    group_of = {i: n for n, g in enumerate(near) for i in g}
    spread = [0.0] * len(near)
    for i, _, d in pairs:
        spread[group_of[i]] = max(spread[group_of[i]], d)
    exact_sets = {frozenset(g) for g in same}
    for g in sorted(same, key=lambda g: g[0]):
        report.groups.append({"kind": "exact", "paths": [str(emb.paths[i]) for i in g], "max_distance": 0.0})
    for n, g in enumerate(near):
        if frozenset(g) in exact_sets:
            continue  # already reported as exact
        report.groups.append({"kind": "near", "paths": [str(emb.paths[i]) for i in g],
                              "max_distance": round(spread[n], 6)})
    if jsonl is not None:
        write_report(Path(jsonl), "".join(dumps({"group": n + 1, **g}) + "\n"
                                        for n, g in enumerate(report.groups)))
    if html_path is not None:
        write_html(Path(html_path), f"{len(report.groups)} duplicate groups",
                   [(f"group {n + 1} ({g['kind']}, max distance {g['max_distance']:.4f})",
                     [(Path(p), "") for p in g["paths"]]) for n, g in enumerate(report.groups)])
    return report
