"""The local distributor: decode and preprocess (in loader processes where they pay), batch,
and run the model in this process. The Ray distributor runs this same function on each shard."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import first_line
from ..machine import default_workers
from .engine import Engine
from .spec import EngineSpec

Vectors = dict[int, np.ndarray]


def load_image(path: str, draft_size: int | None = None):
    """Decode with EXIF orientation applied; with `draft_size`, JPEGs decode at a reduced
    scale (DCT scaling) no smaller than the model's input."""
    from PIL import ImageOps

    from ..images import open_image

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
            return i, None, first_line(e)


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


def embed_local(engine: Engine, spec: EngineSpec, paths: Sequence[str],
                on_batch: Callable[[Vectors, dict[int, str]], None]) -> None:
    """Embed `paths`; after each batch, `on_batch(vectors by index, unreadable by index)`."""
    torch = engine.torch
    data = _Images(list(paths), engine.processor.image_processor, _draft_size(engine) if spec.draft else None)
    n_workers = min(spec.workers if spec.workers is not None else _default_loaders(engine),
                    max(0, len(paths) // spec.batch_size))
    loader = torch.utils.data.DataLoader(data, batch_size=spec.batch_size, num_workers=n_workers,
                                         collate_fn=_collate, shuffle=False)
    for local, pixels, bad in loader:
        vectors = dict(zip(local, engine.embed_pixels(pixels))) if pixels is not None else {}
        on_batch(vectors, dict(bad))


_engines: dict = {}


def engine_for(spec) -> Engine:
    """One engine per spec per process (a Ray actor or a worker reuses it)."""
    if spec not in _engines:
        _engines[spec] = Engine(spec)
    return _engines[spec]
