"""Image embedding over a list of files: decode and preprocess in worker processes
(overlapped with the model), batch, cache. `embed_images` over one engine per process
(`engine_for`) is also the unit the Ray backend runs on each shard of paths."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .cache import EmbeddingCache, content_hash
from .errors import SourceError
from .formats import is_image_name
from .engine import EmbedStats, Engine, EngineSpec
from .workers import default_workers


def scan_images(root: Path) -> list[Path]:
    """Image files under root, recursively, sorted by their relative POSIX path string."""
    if not root.is_dir():
        raise SourceError("not a folder", file=root, hint="pass the folder that holds the images")
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath) / f for f in filenames if is_image_name(f) and not f.startswith(".")]
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    if not found:
        raise SourceError("no images found", file=root,
                          hint="images are found recursively by extension (.jpg .jpeg .png .bmp .tif .webp ...)")
    return found


def load_image(path: str, draft_size: int | None = None):
    """Decode with EXIF orientation applied; with `draft_size`, JPEGs decode at a reduced
    scale (DCT scaling) no smaller than the model's input."""
    from PIL import ImageOps

    from .images import open_image

    if draft_size:
        from PIL import Image

        img = Image.open(path)
        img.draft("RGB", (draft_size, draft_size))
        img.load()
    else:
        img = open_image(Path(path))
    return ImageOps.exif_transpose(img)


class _Images:
    """A map-style dataset: index -> (index, pixel tensor or None, error or None)."""

    def __init__(self, paths: Sequence[str], image_processor, draft_size: int | None) -> None:
        self.paths, self.image_processor, self.draft_size = paths, image_processor, draft_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            img = load_image(self.paths[i], self.draft_size)
            return i, self.image_processor(images=img, return_tensors="pt")["pixel_values"][0], None
        except Exception as e:  # unreadable, truncated, not an image: recorded, never fatal
            return i, None, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _collate(items):
    import torch

    ok = [(i, t) for i, t, err in items if t is not None]
    bad = [(i, err) for i, t, err in items if t is None]
    return [i for i, _ in ok], (torch.stack([t for _, t in ok]) if ok else None), bad


def _default_loaders(engine: Engine) -> int:
    """Decode/preprocess processes. On a GPU every CPU can feed the model. On a CPU the model
    already uses every core, so loaders only take time from it: none on 2 cores (measured
    faster than 1 or 2 there), a quarter of the cores on bigger machines."""
    cpus = default_workers()
    if engine.device != "cpu":
        return cpus
    return 0 if cpus <= 2 else max(1, cpus // 4)


def _draft_size(engine: Engine) -> int:
    size = getattr(engine.processor.image_processor, "size", None) or {}
    return int(size.get("shortest_edge") or size.get("height") or 224)


def embed_images(engine: Engine, paths: Sequence[str | Path], cache: EmbeddingCache | None = None,
                 progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, EmbedStats]:
    """Unit embeddings, one row per path (rows of unreadable images are NaN; their reasons
    are in stats.unreadable). Cached images never reach the model."""
    torch = engine.torch
    spec = engine.spec
    t0 = time.perf_counter()
    paths = [str(p) for p in paths]
    stats = EmbedStats(images=len(paths))
    mode = "draft" if spec.draft else "processor"
    contents = [content_hash(p) if cache else "" for p in paths]
    known = cache.get(mode, contents) if cache else {}
    rows: list[np.ndarray | None] = [known.get(c) if cache else None for c in contents]
    stats.cache_hits = sum(r is not None for r in rows)
    todo = [i for i, r in enumerate(rows) if r is None]
    done = stats.cache_hits
    if progress:
        progress(done, len(paths))
    if todo and spec.backend == "ray":
        from .distributed import embed_ray

        def tick(k: int) -> None:
            nonlocal done
            done += k
            if progress:
                progress(done, len(paths))

        vectors, bad, failed = embed_ray(spec, [paths[i] for i in todo], address=spec.ray_address,
                                         num_actors=spec.num_actors, progress=tick)
        for j, vec in vectors.items():
            rows[todo[j]] = vec
        for j, err in bad.items():
            stats.unreadable[paths[todo[j]]] = err
        for j, err in failed.items():
            stats.failed[paths[todo[j]]] = err
        if cache and vectors:
            cache.put(mode, {contents[todo[j]]: v for j, v in vectors.items()})
    elif todo:
        data = _Images([paths[i] for i in todo], engine.processor.image_processor,
                       _draft_size(engine) if spec.draft else None)
        n_workers = min(spec.workers if spec.workers is not None else _default_loaders(engine),
                        max(0, len(todo) // spec.batch_size))
        loader = torch.utils.data.DataLoader(data, batch_size=spec.batch_size, num_workers=n_workers,
                                             collate_fn=_collate, shuffle=False)
        for local, pixels, bad in loader:
            for j, err in bad:
                stats.unreadable[paths[todo[j]]] = err
            if pixels is not None:
                emb = engine.embed_pixels(pixels)
                fresh = {}
                for j, vec in zip(local, emb):
                    rows[todo[j]] = vec
                    fresh[contents[todo[j]]] = vec
                if cache:
                    cache.put(mode, fresh)
            done += len(local) + len(bad)
            if progress:
                progress(done, len(paths))
    dim = next((len(r) for r in rows if r is not None), 0)
    nan = np.full(dim, np.nan, np.float32)
    matrix = np.stack([r if r is not None else nan for r in rows]).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
    stats.seconds = time.perf_counter() - t0
    return matrix, stats


_engines: dict[EngineSpec, Engine] = {}


def engine_for(spec: EngineSpec) -> Engine:
    """One engine per spec per process (a worker of a distributed backend reuses it)."""
    if spec not in _engines:
        _engines[spec] = Engine(spec)
    return _engines[spec]


def default_cache_dir() -> Path:
    """$CLIPDATA_CACHE, else the user cache folder ($XDG_CACHE_HOME or ~/.cache)/clipdata."""
    if os.environ.get("CLIPDATA_CACHE"):
        return Path(os.environ["CLIPDATA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clipdata"


@dataclass
class Embedded:
    """Images and their unit embeddings (unreadable images left out, listed in stats)."""

    paths: list[Path]
    matrix: np.ndarray
    stats: EmbedStats
    engine: Engine
    cache: EmbeddingCache | None


def embed_paths(spec: EngineSpec, paths: Sequence[Path], cache_dir: str | Path | None | bool = None,
                progress: Callable[[int, int], None] | None = None) -> Embedded:
    """Embed these images with a fresh engine; `cache_dir` None: the default cache, False: none.
    The cache stays open (for caption embeddings); close it with `.cache.close()`."""
    engine = Engine(spec)
    cache = None if cache_dir is False else EmbeddingCache(
        default_cache_dir() if cache_dir is None else cache_dir, engine.identity)
    matrix, stats = embed_images(engine, paths, cache, progress)
    keep = [i for i, p in enumerate(paths) if str(p) not in stats.unreadable and str(p) not in stats.failed]
    return Embedded([Path(paths[i]) for i in keep], matrix[keep], stats, engine, cache)
