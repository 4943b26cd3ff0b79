"""The local distributor: decode and preprocess (the fast path by default, in loader
processes where they pay), batch, and run the model in this process. The Ray distributor
runs this same function on each shard."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import first_line
from ..machine import cpu_model, default_batch, default_workers, native_bf16
from .engine import Engine
from .preprocess import FAST_MODE, load_image, preparer  # noqa: F401  (preparer, load_image: re-exported)
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


@dataclass(frozen=True)
class Plan:
    """How a local run uses the machine: recorded in embed.json and label.json, and printed."""

    batch_size: int
    loaders: int  # loader processes; 0: this process decodes each batch, then runs the model
    decode_threads: int  # threads decoding a batch in this process (when loaders is 0)
    model_threads: int  # torch's intra-op threads

    def describe(self) -> str:
        how = (f"{self.loaders} loader process{'es' if self.loaders > 1 else ''}" if self.loaders
               else f"decode on {self.decode_threads} thread{'s' if self.decode_threads > 1 else ''} between batches")
        return f"batch {self.batch_size}, {how}, model on {self.model_threads} thread{'s' if self.model_threads > 1 else ''}"

    def record(self) -> dict:
        """What the output files record: the plan and the machine it was chosen for."""
        return {"batch_size": self.batch_size, "loaders": self.loaders, "decode_threads": self.decode_threads,
                "model_threads": self.model_threads, "cpus": default_workers(), "cpu": cpu_model(),
                "native_bfloat16": native_bf16()}


def plan_for(device: str, spec: EngineSpec, model_threads: int | None = None) -> Plan:
    """Batch size, loader processes and threads for this machine (each given option wins).

    On a CPU with up to 2 cores the two phases of each batch take every core in turn:
    decoding on one thread per core (Pillow's decode and resize release the GIL), then the
    model on every core. A loader process beside the model makes the two fight for the
    cores, or leaves the model a single thread (benchmarks/README.md). Bigger CPUs keep a
    quarter of their cores as loader processes beside the model (not measured here); on a
    GPU every CPU decodes. `model_threads`: torch's setting (read from torch when not
    given). On a CPU it is a ceiling the plan never raises: a caller's
    `torch.set_num_threads` (or OMP_NUM_THREADS) says how much of the machine is ours, and
    a forked child that runs torch on one thread would hang if it were raised (torch's
    thread pool does not survive a fork)."""
    cpus = default_workers()
    if model_threads is None:
        torch = sys.modules.get("torch")
        model_threads = torch.get_num_threads() if torch is not None else cpus
    batch = spec.batch_size or default_batch(device)
    if device != "cpu":
        loaders = cpus if spec.workers is None else spec.workers
        return Plan(batch, loaders, 1, model_threads or cpus)
    ours = max(1, min(cpus, model_threads))
    loaders = spec.workers if spec.workers is not None else (0 if cpus <= 2 else max(1, cpus // 4))
    if loaders:
        return Plan(batch, loaders, 1, max(1, min(ours, cpus - loaders)))
    return Plan(batch, 0, ours, ours)


def _in_process(data: _Images, batch: int, threads: int):
    """Batches decoded in this process, each by `threads` threads at once, in order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) if threads > 1 else _Serial() as pool:
        for a in range(0, len(data), batch):
            yield _collate(list(pool.map(data.__getitem__, range(a, min(a + batch, len(data))))))


class _Serial:
    """A pool of no threads: map in the calling thread."""

    def __enter__(self) -> "_Serial":
        return self

    def __exit__(self, *exc) -> None:
        return None

    @staticmethod
    def map(fn, items):
        return map(fn, items)


def embed_local(engine: Engine, spec: EngineSpec, paths: Sequence[str],
                on_batch: Callable[[Vectors, dict[int, str]], None], measure: Measure | None = None,
                on_measured: Callable[[dict[int, object]], None] | None = None) -> Plan:
    """Embed `paths`; after each batch, `on_batch(vectors by index, unreadable by index)`, and
    with `measure`, `on_measured(measure's value by index)` from the same decode. Returns the
    plan it ran by."""
    torch = engine.torch
    data = _Images(list(paths), engine.preparer(spec.exact_preprocess), measure)
    threads = torch.get_num_threads()
    plan = plan_for(engine.device, spec, threads)
    n_workers = min(plan.loaders, max(0, len(paths) // plan.batch_size))
    if n_workers:
        batches = torch.utils.data.DataLoader(data, batch_size=plan.batch_size, num_workers=n_workers,
                                              collate_fn=_collate, shuffle=False)
    else:  # fewer images than a batch per loader: no process is worth starting
        batches = _in_process(data, plan.batch_size, plan.decode_threads if not plan.loaders else 1)
    if engine.device == "cpu":  # the loaders' cores are not the model's: no oversubscription
        torch.set_num_threads(plan.model_threads if n_workers or not plan.loaders else threads)
    try:
        for local, pixels, bad, measured in batches:
            vectors = dict(zip(local, engine.embed_pixels(pixels))) if pixels is not None else {}
            if on_measured is not None:
                on_measured(measured)
            on_batch(vectors, dict(bad))
    finally:
        torch.set_num_threads(threads)
    return plan


_engines: dict = {}


def engine_for(spec) -> Engine:
    """One engine per spec per process (a Ray actor or a worker reuses it)."""
    if spec not in _engines:
        _engines[spec] = Engine(spec)
    return _engines[spec]
