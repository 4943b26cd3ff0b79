"""The one embedding path every command reuses: cache lookup -> one distributor (local, or
Ray) chosen here and only here -> write back to the cache batch by batch.

Modules: `spec` (what is asked), `engine` (the model only), `local` and `ray` (the two
distributors, one signature), `cache` (the SQLite cache). Nothing here knows about formats.
"""
from __future__ import annotations

import os
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import SourceError, first_line
from ..imagefiles import sha256_file, walk_images
from ..names import problem
from .cache import EmbeddingCache, text_hash
from .engine import Engine, ModelError, ModelSpec
from .local import Measure, cache_mode
from .spec import EngineSpec, EmbedStats

__all__ = ["EngineSpec", "ModelSpec", "Engine", "ModelError", "EmbedStats", "EmbeddingCache", "Embedded",
           "embed_images", "embed_paths", "embed_texts", "measure_images", "model_scalars", "open_cache", "default_cache_dir",
           "scan_images", "check_some_read"]

Progress = Callable[[int, int], None]


def scan_images(root: Path) -> list[Path]:
    """Image files under root, recursively (imagefiles' walk rules), sorted by their relative
    POSIX path string. Names of images that are not regular files (a pipe, a link to nothing)
    are listed too: `embed_images` counts them as unreadable without opening them."""
    if not root.is_dir():
        raise SourceError("not a folder", file=root, hint="pass the folder that holds the images")
    rejected: list = []
    found = walk_images(root, rejected=rejected) + [e.path for e in rejected]
    if any(e.path == root for e in rejected):
        raise SourceError("cannot be listed", file=root, hint="check its permissions (it needs r and x)")
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    if not found:
        raise SourceError("no images found", file=root,
                          hint="images are found recursively by extension (.jpg .jpeg .png .bmp .tif .webp ...)")
    return found


def default_cache_dir() -> Path:
    """$CLIPDATA_CACHE, else the user cache folder ($XDG_CACHE_HOME or ~/.cache)/clipdata."""
    if os.environ.get("CLIPDATA_CACHE"):
        return Path(os.environ["CLIPDATA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clipdata"


@contextmanager
def open_cache(engine: Engine, cache_dir: str | Path | None | bool = None) -> Iterator[EmbeddingCache | None]:
    """The cache for this engine's model, closed on the way out. `cache_dir` None: the
    default cache; False: no cache; else that folder."""
    if cache_dir is False:
        yield None
        return
    cache = EmbeddingCache(default_cache_dir() if cache_dir is None else cache_dir, engine.identity)
    try:
        yield cache
    finally:
        cache.close()


def model_scalars(engine: Engine, cache: EmbeddingCache | None) -> tuple[str, float, float]:
    """(kind, logit scale, logit bias): from the cache when a run recorded them (a warm run
    never loads the weights), else from the weights, and then recorded."""
    if cache is not None:
        known = cache.scalars()
        if known is not None:
            engine.set_scalars(known)
            return known
    scalars = engine.scalars
    if cache is not None:
        cache.put_scalars(*scalars)
    return scalars


def embed_texts(engine: Engine, texts: Sequence[str], cache: EmbeddingCache | None = None) -> np.ndarray:
    """Unit caption embeddings; with a cache, a caption embedded before is not embedded again."""
    if cache is None:
        return engine.embed_texts(texts)
    keys = [text_hash(t) for t in texts]
    known = cache.get("text", keys)
    missing = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in known))
    if missing:
        fresh = {text_hash(t): v for t, v in zip(missing, engine.embed_texts(missing))}
        cache.put("text", fresh)
        known.update(fresh)
    return np.stack([known[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)


def embed_images(engine: Engine, paths: Sequence[str | Path], cache: EmbeddingCache | None = None,
                 progress: Progress | None = None, spec: EngineSpec | None = None,
                 measure: Measure | None = None) -> tuple[np.ndarray, EmbedStats]:
    """Unit embeddings, one row per path (rows of unreadable images are NaN; their reasons
    are in stats.unreadable). Cached images never reach the model. `spec` (default: the
    engine's) says how to load and where to run. `measure(decoded RGB image, displayed
    (height, width))`, a picklable function, is applied to each image the local distributor
    decodes, in that same decode: its values are in stats.measured (cached images, and images
    embedded on Ray, are not decoded and not measured)."""
    spec = (spec or engine.spec)
    if isinstance(spec, EngineSpec):
        spec.check()
    else:
        spec = EngineSpec(model=spec.model, device=spec.device, dtype=spec.dtype)
    t0 = time.perf_counter()
    paths = [str(p) for p in paths]
    stats = EmbedStats(images=len(paths))
    stats.unreadable.update(_not_files(paths))
    mode = cache_mode(spec)
    if cache:
        stats.sha256 = cache.file_hashes([p for p in paths if p not in stats.unreadable], sha256_file)
        stats.unreadable.update({p: "cannot be read" for p in paths if p not in stats.unreadable and p not in stats.sha256})
    contents = [stats.sha256.get(p, "") for p in paths]
    known = cache.get(mode, contents) if cache else {}
    rows: list[np.ndarray | None] = [known.get(c) if cache else None for c in contents]
    stats.cache_hits = sum(r is not None for r in rows)
    todo = [i for i, r in enumerate(rows) if r is None and paths[i] not in stats.unreadable]
    done = stats.cache_hits + len(stats.unreadable)
    if progress:
        progress(done, len(paths))

    def on_batch(vectors: dict[int, np.ndarray], bad: dict[int, str]) -> None:
        nonlocal done
        for j, vec in vectors.items():
            rows[todo[j]] = vec
        for j, err in bad.items():
            stats.unreadable[paths[todo[j]]] = err
        if cache and vectors:  # each batch its own transaction: a killed run keeps what it did
            cache.put(mode, {contents[todo[j]]: v for j, v in vectors.items()})
        done += len(vectors) + len(bad)
        if progress:
            progress(done, len(paths))

    if todo and spec.backend == "ray":
        from .ray import embed_ray

        def tick(k: int) -> None:
            nonlocal done
            done += k
            if progress:
                progress(done, len(paths))

        vectors, bad, failed = embed_ray(spec, [paths[i] for i in todo], address=spec.ray_address,
                                         num_actors=spec.num_actors, progress=tick)
        done -= len(vectors) + len(bad)  # on_batch counts them again
        on_batch(vectors, bad)
        stats.failed.update({paths[todo[j]]: err for j, err in failed.items()})
    elif todo:
        from .local import embed_local

        def on_measured(values: dict[int, object]) -> None:
            stats.measured.update({paths[todo[j]]: v for j, v in values.items()})

        embed_local(engine, spec, [paths[i] for i in todo], on_batch, measure, on_measured if measure else None)
    dim = next((len(r) for r in rows if r is not None), 0)
    nan = np.full(dim, np.nan, np.float32)
    matrix = (np.stack([r if r is not None else nan for r in rows]).astype(np.float32) if rows
              else np.zeros((0, dim), np.float32))
    stats.seconds = time.perf_counter() - t0
    return matrix, stats


def measure_images(engine: Engine, paths: Sequence[str | Path], measure: Measure, spec: EngineSpec | None = None,
                   progress: Progress | None = None) -> tuple[dict[str, object], dict[str, str]]:
    """`measure` on images the embedding step did not decode (cache hits), decoded exactly as
    the model's loader decodes them, so a value never depends on whether the cache was warm:
    ({path: value}, {path: why unreadable})."""
    spec = spec or engine.spec
    prepare = engine.preparer(getattr(spec, "exact_preprocess", False))
    paths = [str(p) for p in paths]
    bad = _not_files(paths)
    values: dict[str, object] = {}
    for n, p in enumerate(paths, 1):
        if p not in bad:
            try:
                prepare(p, observe=lambda img, shown, p=p: values.__setitem__(p, measure(img, shown)))
            except Exception as e:  # unreadable, as the loader records it
                bad[p] = first_line(e)
        if progress:
            progress(n, len(paths))
    return values, bad


def _not_files(paths: Sequence[str]) -> dict[str, str]:
    """The paths that must never be opened (a pipe would block the run for ever), and those
    whose name is not UTF-8 (clipdata/names.py: no output could name them), with why."""
    bad = {}
    for p in paths:
        why = problem(p, "its path")
        if why:
            bad[p] = why
            continue
        try:
            st = os.stat(p)
        except OSError as e:
            bad[p] = "a link to nothing" if os.path.islink(p) else (e.strerror or "cannot be read")
            continue
        if stat.S_ISDIR(st.st_mode):  # scan_images lists a folder it could not list (imagefiles.UNLISTED)
            bad[p] = "a folder that cannot be listed: its images are not read (check its permissions)"
        elif not stat.S_ISREG(st.st_mode):
            bad[p] = "not a regular file (a pipe, socket or device)"
    return bad


@dataclass
class Embedded:
    """Images and their unit embeddings (unreadable images left out, listed in stats)."""

    paths: list[Path]
    matrix: np.ndarray
    stats: EmbedStats
    engine: Engine
    cache: EmbeddingCache | None


def check_some_read(paths: Sequence[str | Path], stats: EmbedStats, source: str | Path | None = None) -> None:
    """Images were given and none could be embedded: one line and exit 1, for every command
    (an empty result with exit 0 would look like "nothing matched" to a script)."""
    lost = {**stats.unreadable, **stats.failed}
    if paths and len(lost) >= len(paths):
        first, why = next(iter(lost.items()))
        raise SourceError(f"none of the {len(paths)} image(s) could be read (e.g. {Path(first).name}: {why})",
                          file=source, hint="check the files (clipdata inspect checks a layout)")


@contextmanager
def embed_paths(spec: EngineSpec, paths: Sequence[Path], cache_dir: str | Path | None | bool = None,
                progress: Progress | None = None, measure: Measure | None = None,
                source: str | Path | None = None) -> Iterator[Embedded]:
    """Embed these images with a fresh engine, as a context: the cache stays open inside it
    (for caption embeddings) and is closed on the way out. `cache_dir` as in `open_cache`;
    `measure` as in `embed_images`. When not one image could be read, a SourceError naming
    `source` (check_some_read)."""
    engine = Engine(spec.check())
    with open_cache(engine, cache_dir) as cache:
        matrix, stats = embed_images(engine, paths, cache, progress, spec, measure)
        check_some_read(paths, stats, source)
        keep = [i for i, p in enumerate(paths) if str(p) not in stats.unreadable and str(p) not in stats.failed]
        yield Embedded([Path(paths[i]) for i in keep], matrix[keep], stats, engine, cache)
