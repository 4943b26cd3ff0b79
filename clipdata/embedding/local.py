"""The local distributor: decode and preprocess (the fast path by default, in loader
processes where they pay), batch, and run the model in this process. The Ray distributor
runs this same function on each shard."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import first_line
from ..machine import default_workers
from .engine import Engine
from .preprocess import FAST_MODE, Observer, load_image, preparer  # noqa: F401  (preparer, load_image: re-exported)
from .spec import EngineSpec

Vectors = dict[int, np.ndarray]


def cache_mode(spec: EngineSpec) -> str:
    """The cache's name for the pixels `spec` feeds the model: embeddings made from other
    pixels are never mixed with these."""
    return "processor" if spec.exact_preprocess else FAST_MODE


Measure = Callable[[object, tuple[int, int]], object]  # (decoded RGB image, displayed (h, w)) -> a value


class _Images:
    """A map-style dataset: index -> (index, pixel tensor or None, error or None, measured).
    `measure` (picklable) sees each decoded image: measured is its value, else None."""

    def __init__(self, paths: Sequence[str], prepare: Callable[..., object], measure: Measure | None = None) -> None:
        self.paths, self.prepare, self.measure = paths, prepare, measure

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        seen: list = []
        try:
            if self.measure is None:
                return i, self.prepare(self.paths[i]), None, None
            pixels = self.prepare(self.paths[i], observe=lambda img, shown: seen.append(self.measure(img, shown)))
            return i, pixels, None, seen[0]
        except Exception as e:  # unreadable, truncated, not an image: recorded, never fatal
            return i, None, first_line(e), None


def _collate(items):
    import torch

    ok = [(i, t) for i, t, err, _ in items if t is not None]
    bad = [(i, err) for i, t, err, _ in items if t is None]
    measured = {i: m for i, t, _, m in items if t is not None and m is not None}
    if ok and isinstance(ok[0][1], dict):  # several inputs per image: one batch tensor each
        return [i for i, _ in ok], {k: torch.stack([t[k] for _, t in ok]) for k in ok[0][1]}, bad, measured
    return [i for i, _ in ok], (torch.stack([t for _, t in ok]) if ok else None), bad, measured


def _megapixels(path: str) -> float:
    """The stored size from the file's header (nothing is decoded); 0 when unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.width * img.height / 1e6
    except Exception:  # the loader reports unreadable files; here it only sizes the work
        return 0.0


def _default_loaders(engine: Engine, paths: Sequence[str]) -> int:
    """Decode/preprocess processes. On a GPU every CPU can feed the model. On a 2-core CPU,
    one loader beside a one-thread model pays once decoding is a large share of the work:
    measured ~3x serial at 1920x1080 and ~2x at 4000x3000, equal at 640x480, so photos from
    1 megapixel up get one (sized by the first file). Bigger CPUs: a quarter of the cores."""
    cpus = default_workers()
    if engine.device != "cpu":
        return cpus
    if cpus <= 2:
        return 1 if cpus == 2 and paths and _megapixels(paths[0]) >= 1.0 else 0
    return max(1, cpus // 4)


def embed_local(engine: Engine, spec: EngineSpec, paths: Sequence[str],
                on_batch: Callable[[Vectors, dict[int, str]], None], measure: Measure | None = None,
                on_measured: Callable[[dict[int, object]], None] | None = None) -> None:
    """Embed `paths`; after each batch, `on_batch(vectors by index, unreadable by index)`, and
    with `measure`, `on_measured(measure's value by index)` from the same decode."""
    torch = engine.torch
    data = _Images(list(paths), engine.preparer(spec.exact_preprocess), measure)
    n_workers = min(spec.workers if spec.workers is not None else _default_loaders(engine, paths),
                    max(0, len(paths) // spec.batch_size))
    loader = torch.utils.data.DataLoader(data, batch_size=spec.batch_size, num_workers=n_workers,
                                         collate_fn=_collate, shuffle=False)
    threads = torch.get_num_threads()
    if engine.device == "cpu" and n_workers:  # the loaders' cores are not the model's: no oversubscription
        torch.set_num_threads(max(1, default_workers() - n_workers))
    try:
        for local, pixels, bad, measured in loader:
            vectors = dict(zip(local, engine.embed_pixels(pixels))) if pixels is not None else {}
            if on_measured is not None:
                on_measured(measured)
            on_batch(vectors, dict(bad))
    finally:
        torch.set_num_threads(threads)


_engines: dict = {}


def engine_for(spec) -> Engine:
    """One engine per spec per process (a Ray actor or a worker reuses it)."""
    if spec not in _engines:
        _engines[spec] = Engine(spec)
    return _engines[spec]
