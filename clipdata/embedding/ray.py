"""The Ray Data distributor of the embedding step: the same function (`embed_local` on one
engine per actor), the same cache, the same results as the local engine, on as many
machines as a Ray cluster has. Paths travel in shards, never image bytes; results are
gathered by key, not by arrival order. `pip install 'clipdata[ray]'`."""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from ..errors import ClipdataError, OptionError, first_line
from ..machine import default_batch
from .local import embed_local, engine_for

INSTALL_HINT = "install the Ray extra: pip install 'clipdata[ray]'"


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ClipdataError("--engine ray needs Ray Data (ray is not installed)", hint=INSTALL_HINT) from None
    return ray


class _Embedder:
    """One engine per actor, loaded once; a batch of paths in, vectors and errors out.
    The spec is a class attribute of a subclass (see `_embedder_for`), not a constructor
    argument: Ray warns that restartable actors' arguments may be lost."""

    SPEC = None

    def __init__(self) -> None:
        self.engine = engine_for(self.SPEC)

    def __call__(self, batch: dict) -> dict:
        paths = [str(p) for p in batch["path"]]
        vectors: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}

        def keep(v: dict[int, np.ndarray], bad: dict[int, str]) -> None:
            vectors.update(v)
            errors.update(bad)

        embed_local(self.engine, self.SPEC, paths, keep)
        dim = next((len(v) for v in vectors.values()), 0)
        blank = np.full(dim, np.nan, np.float32)
        return {"i": batch["i"], "vector": [vectors.get(j, blank).astype(np.float32) for j in range(len(paths))],
                "error": [errors.get(j, "") for j in range(len(paths))]}


def _embedder_for(spec) -> type:
    return type("Embedder", (_Embedder,), {"SPEC": spec})


def start(address: str | None = None) -> None:
    """Join the cluster at `address`, or start a local Ray with this machine's CPUs."""
    ray = _ray()
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, single-user Ray: no token notice
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False


def embed_ray(spec, paths: Sequence[str], *, address: str | None = None, num_actors: int | None = None,
              progress: Callable[[int], None] | None = None) -> tuple[dict[int, np.ndarray], dict[int, str], dict[int, str]]:
    """Embed `paths` on Ray: (vectors by index, unreadable by index, failed by index)."""
    ray = _ray()
    start(address)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    use_gpu = spec.device in ("cuda", "auto") and gpus > 0
    # leave a CPU for the rest of the pipeline: with every CPU held by an actor, Ray cannot
    # schedule the tasks that feed them, and the job never finishes
    free = gpus if use_gpu else max(1, cpus - 1)
    n = num_actors or free
    if n > free or cpus == 0:
        raise OptionError(f"--num-actors {n}: the Ray cluster has {cpus} CPU(s) and {gpus} GPU(s), room for {free} actor(s) "
                          "with one CPU left for reading and gathering", hint="lower --num-actors or add machines")
    worker_spec = replace(spec, workers=0, backend="local")  # decoding happens in the actor itself
    items = [{"i": i, "path": str(p)} for i, p in enumerate(paths)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), n * 4)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ray deprecates spellings between minor releases
        out = ds.map_batches(
            _embedder_for(worker_spec), batch_size=spec.batch_size or default_batch("cuda" if use_gpu else "cpu"),
            compute=ray.data.ActorPoolStrategy(size=n), num_cpus=0 if use_gpu else 1, num_gpus=1 if use_gpu else 0,
            max_restarts=3, max_task_retries=3)
    vectors: dict[int, np.ndarray] = {}
    unreadable: dict[int, str] = {}
    failed: dict[int, str] = {}
    try:
        for row in out.iter_rows():
            i = int(row["i"])
            if row["error"]:
                unreadable[i] = row["error"]
            else:
                vectors[i] = np.asarray(row["vector"], dtype=np.float32)
            if progress:
                progress(1)
    except Exception as e:  # a task that failed past its retries: its images are recorded, not lost
        for i in range(len(paths)):
            if i not in vectors and i not in unreadable:
                failed[i] = first_line(e)
    return vectors, unreadable, failed
