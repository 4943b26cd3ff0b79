"""Search, look-alikes and re-scoring over the embeddings `label` cached: images are never
embedded again; only a text query runs the text tower (and its embedding is cached too)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from ..errors import ClipdataError
from ..formats.decisions import REJECTED
from .queue import Queue

CACHE_HINT = "rerun clipdata label on this folder (it keeps its embeddings in LABELED/cache)"


class Vectors:
    """The queue's image embeddings (loaded once, from LABELED/cache) and the model's engine
    (made on first use; its weights load only when a query text is not cached)."""

    def __init__(self, queue: Queue, cache_dir: str | Path | None = None, model: str | None = None) -> None:
        """`model`: the model label used, when it is no longer where label.json says."""
        self.queue = queue
        self.model = model or queue.meta.get("model")
        self.cache_dir = Path(cache_dir) if cache_dir else queue.folder / "cache"
        self._lock = threading.Lock()
        self._engine_lock = threading.Lock()
        self._engine = None
        self._matrix: np.ndarray | None = None
        self._present: np.ndarray | None = None

    def warm(self) -> threading.Thread:
        """Hash the images and read their embeddings in the background, so the first search
        does not wait for it; a problem is reported by the request that needs them."""
        def work() -> None:
            try:
                self.matrix()
            except Exception:  # noqa: BLE001  (the request that needs the matrix meets it again, and says so)
                pass

        thread = threading.Thread(target=work, name="clipdata-review-warm", daemon=True)
        thread.start()
        return thread

    def _cache(self):
        from ..embedding import EmbeddingCache
        from ..embedding.cache import FILE

        if not (self.cache_dir / FILE).is_file():
            raise ClipdataError("no embedding cache", file=self.cache_dir, hint=CACHE_HINT)
        return EmbeddingCache(self.cache_dir, self.identity())

    def identity(self) -> str:
        """The cache key of the model's embeddings: the engine's, or the one label recorded
        when it names the same weights (the model folder moved, or was named from elsewhere)."""
        identity, recorded = self.engine().identity, self.queue.meta.get("model_identity")
        if isinstance(recorded, str) and "@" in recorded and recorded.rsplit("@", 1)[1] == identity.rsplit("@", 1)[-1]:
            return recorded
        return identity

    def engine(self):
        with self._engine_lock:  # the warm-up and a first request may both ask: one engine
            if self._engine is None:
                from ..embedding import Engine, ModelSpec
                from ..embedding.engine import looks_like_path

                name = self.model
                if not name:
                    raise ClipdataError("label.json names no model", file=self.queue.folder / "label.json",
                                        hint="start review serve with --model, the model label used")
                if looks_like_path(name) and not Path(name).expanduser().is_dir():
                    where = "" if Path(name).expanduser().is_absolute() else f" from {Path.cwd()}"
                    said = "it was given" if name != self.queue.meta.get("model") else "label.json names it"
                    raise ClipdataError(
                        f"the model folder {name} is not there{where} ({said}; a relative path is taken from the "
                        "folder you run in)", file=self.queue.folder / "label.json",
                        hint="start review serve with --model, the model folder label used")
                self._engine = Engine(ModelSpec(model=name, dtype=self.queue.meta.get("dtype", "auto"),
                                               weights=self.queue.meta.get("weights")))
            return self._engine

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(n x d unit embeddings, present mask): row i is item i; rows whose embedding is
        not cached are zero and ranked last."""
        with self._lock:
            if self._matrix is None:
                keys = [self._key(i) for i in range(len(self.queue.items))]
                cache = self._cache()
                try:  # the images as label embedded them (label.json says how; before it did: the processor)
                    found = cache.get(self.queue.meta.get("preprocess", "processor"), [k for k in keys if k])
                finally:
                    cache.close()
                if not found:
                    raise self._none_found(keys)
                dim = len(next(iter(found.values())))
                self._present = np.array([k in found for k in keys])
                self._matrix = np.stack([found.get(k, np.zeros(dim, np.float32)) for k in keys]).astype(np.float32)
            return self._matrix, self._present  # type: ignore[return-value]

    def _none_found(self, keys: list[str]) -> ClipdataError:
        """Why no listed image has a cached embedding, said as it is: unreadable images,
        another model (or the same weights named from elsewhere), or changed files."""
        readable = sum(1 for k in keys if k)
        if not readable:
            return ClipdataError(f"none of the {len(keys)} listed images can be read under {self.queue.root}",
                                 hint="start review serve with --images, the folder label read")
        identity = self.identity()
        mode = self.queue.meta.get("preprocess", "processor")
        cache = self._cache()
        try:
            stored = cache.stored()
        finally:
            cache.close()
        recorded = self.queue.meta.get("model_identity")
        if stored.get((identity, mode)):
            return ClipdataError(f"none of the {readable} images is as label embedded it (the cache is keyed by each "
                                 "file's SHA-256): the image files changed since label ran", file=self.cache_dir,
                                 hint=CACHE_HINT)
        if recorded and recorded != identity:
            return ClipdataError(f"label embedded these images with {recorded}; the model found from here is "
                                 f"{identity}", file=self.cache_dir,
                                 hint="start review serve with --model, the model folder label used")
        held = ", ".join(f"{m} ({md}, {n})" for (m, md), n in sorted(stored.items()) if md != "text") or "nothing"
        return ClipdataError(f"the cache holds image embeddings of {held}, none of {identity} ({mode})",
                             file=self.cache_dir, hint="start review serve with --model, the model label used, "
                                                       "or " + CACHE_HINT)

    def _key(self, index: int) -> str:
        """The SHA-256 of an item's file ("" when it is gone or cannot be read: not ranked)."""
        from ..imagefiles import sha256_file

        path = self.queue.file(index)
        try:
            return sha256_file(path) if path else ""
        except OSError:
            return ""

    def _ranked(self, query: np.ndarray) -> dict:
        m, present = self.matrix()
        sims = m @ query
        order = sorted(range(len(sims)), key=lambda i: (not present[i], -float(sims[i]), i))
        return {"results": [{"index": i, "score": round(float(sims[i]), 6)} for i in order if present[i]],
                "missing": int((~present).sum())}

    def search(self, text: str) -> dict:
        """Every item with a cached embedding, most similar to the text first."""
        if not text.strip():
            raise ClipdataError("an empty search text", hint="type what to look for, e.g. a blue star")
        cache = self._cache()
        try:
            from ..embedding import embed_texts

            q = embed_texts(self.engine(), [text.strip()], cache)[0]
        finally:
            cache.close()
        return self._ranked(q)

    def similar(self, index: int) -> dict:
        """Every item by cosine similarity to item `index` (itself first)."""
        m, present = self.matrix()
        if not present[index]:
            raise ClipdataError(f"{self.queue.items[index]['path']}: its embedding is not cached", hint=CACHE_HINT)
        return self._ranked(m[index])

    def relabel(self) -> dict:
        """Refit the few-shot probe on the reviewed images, re-score the unreviewed ones."""
        from ..probe import fit_probe
        from ..scoring import Classes, class_embeddings

        t0 = time.perf_counter()
        q = self.queue
        m, present = self.matrix()
        names = q.classes
        idx, labels = [], []
        for row in q.items:
            got = q.review(row)
            if got is not None and got != REJECTED and present[row["index"]]:
                idx.append(row["index"])
                labels.append(names.index(got))
        if len(set(labels)) < 2:
            raise ClipdataError(f"{len(idx)} reviewed image(s) in {len(set(labels))} class(es)",
                                hint="review images of at least two classes first")
        engine = self.engine()
        cache = self._cache()
        try:
            text = class_embeddings(engine, Classes(names, q.meta.get("captions") or [[n] for n in names]), cache)
            from ..embedding import model_scalars

            _, scale, _ = model_scalars(engine, cache)
        finally:
            cache.close()
        probe = fit_probe(m[idx], np.array(labels), text, scale)
        rest = [row["index"] for row in q.items if q.review(row) is None and present[row["index"]]]
        probs = probe.proba(m[rest]) if rest else np.zeros((0, len(names)))
        top_k = len(q.items[0]["label_top_k"])
        changed = q.rescore({i: list(map(float, p)) for i, p in zip(rest, probs)}, top_k)
        return {"cv_accuracy": probe.cv_accuracy, "reviewed": len(idx), "rescored": len(rest),
                "changed": changed, "seconds": round(time.perf_counter() - t0, 3)}
