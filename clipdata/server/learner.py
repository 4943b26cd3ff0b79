"""The Label Studio backend's model: what every project shares (the engine, the classes and
their text embeddings, the way to a task's image, the embedding cache) and what each project
learns (a few-shot probe refitted in the background from all its annotations, and the
model_version naming it). No HTTP here: backend.py only translates requests into these calls.
Rules: formats/labelstudio-backend.md."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from ..classes import margins
from ..errors import ClipdataError, first_line
from ..formats.layout import Labeled
from ..scoring import Classes
from .labelstudio import BackendError, Control, ImageRef, LabelStudio, annotated, fetch_remote, locate

log = logging.getLogger("clipdata.backend")
FETCHERS = 8            # images fetched from Label Studio at once
KNOWN_UPLOADS = 200_000  # upload address -> content hash, remembered (uploads never change)
LOGGED = 5              # task errors logged one by one per request; the rest are counted
CHUNK = 256             # images embedded per hold of the model lock


@dataclass
class Fit:
    """A project's learning state, as /health reports it."""

    state: str = "idle"            # idle, fitting
    queued: bool = False           # another fit was asked for while one ran
    fits: int = 0                  # finished fits
    last_error: str | None = None  # why the last fit failed (the previous scorer is kept)
    last_seconds: float | None = None
    left_out: dict[str, int] = field(default_factory=dict)  # annotated tasks not learnt from, by reason


@dataclass
class Scorer:
    """What predicts for one project, swapped whole when a fit ends."""

    probe: object | None          # probe.Probe, or None: zero-shot with the model's own scalars
    annotations: int              # annotated tasks learnt from
    version: str
    cv_accuracy: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "zero-shot" if self.probe is None else self.probe.scorer


@dataclass
class Project:
    id: int
    control: Control
    scorer: Scorer
    fit: Fit = field(default_factory=Fit)
    lock: threading.Lock = field(default_factory=threading.Lock)


def project_id(value: object) -> int:
    """Label Studio names a project `<id>.<created timestamp>` (or by its id alone)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        head = value.split(".", 1)[0]
        if head.isdigit() and int(head) > 0:
            return int(head)
    raise BackendError(f"project {value!r} is not a Label Studio project id",
                       hint='Label Studio sends "project": "<id>.<timestamp>"')


class Learner:
    """The shared model and every project's scorer. Thread-safe: predictions run in the
    server's threads, fits in one background thread per project."""

    def __init__(self, classes: Classes, spec, *, cache_dir: str | Path | None = None,
                 studio: LabelStudio | None = None, images: Path | None = None, allow_remote: bool = False,
                 train: Labeled | None = None, folds: int = 5) -> None:
        from ..embedding import Engine, cache_mode

        self.classes, self.spec = classes, spec.check()
        self.engine = Engine(self.spec)
        self.mode = cache_mode(self.spec)
        self.cache_dir = cache_dir
        self.studio, self.images, self.allow_remote = studio, images, allow_remote
        self.train, self.folds = train, folds
        self.projects: dict[int, Project] = {}
        self._lock = threading.Lock()          # the projects table
        self._model = threading.Lock()         # one model call at a time
        self._uploads: OrderedDict[str, str] = OrderedDict()
        self._fits: list[threading.Thread] = []  # running fits, waited for at close
        self._text: np.ndarray | None = None
        self._train_embedded: tuple[np.ndarray, np.ndarray] | None = None  # --train-from, embedded once
        self._base = self._fingerprint()

    # -- identity ---------------------------------------------------------------------------
    def _fingerprint(self) -> str:
        """What predictions depend on besides the annotations: model, pixels, captions, layout."""
        h = hashlib.sha256(json.dumps([self.engine.identity, self.mode, self.classes.names, self.classes.captions,
                                       len(self.train.images) if self.train else 0, self.folds]).encode())
        if self.train is not None:
            for p, y in zip(self.train.images, self.train.labels):
                h.update(f"{p}\0{y}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    @property
    def model_name(self) -> str:
        m = self.spec.model
        return Path(m).name if os.path.isdir(m) else m

    def version(self, scorer: str, annotations: int, learnt: list[tuple[int, str]]) -> str:
        """`clipdata:<model>:<scorer>:<annotations>:<fingerprint>`. It changes whenever what the
        scorer learnt from changes (an annotation added, changed or removed), so Label Studio,
        which skips tasks holding a prediction of the current version, asks again; the same
        annotations give the same version (and the same predictions), after a restart too."""
        h = hashlib.sha256(self._base.encode())
        for task, cls in sorted(learnt):
            h.update(f"{task}\0{cls}\n".encode())
        return f"clipdata:{self.model_name}:{scorer}:{annotations}:{h.hexdigest()[:8]}"

    # -- projects ---------------------------------------------------------------------------
    def project(self, pid: int, control: Control | None) -> Project:
        """The project's state; a project seen for the first time starts zero-shot and fits
        at once in the background (after a restart this restores what it had learnt)."""
        with self._lock:
            known = self.projects.get(pid)
            if known is not None:
                if control is not None and control != known.control:
                    control.check_classes(self.classes.names)
                    known.control = control
                return known
            if control is None:
                raise BackendError(f"project {pid} has not been set up with this backend",
                                   hint="connect the backend in the project's settings (Label Studio calls /setup)")
            control.check_classes(self.classes.names)
            p = Project(pid, control, Scorer(None, 0, self.version("zero-shot", 0, [])))
            self.projects[pid] = p
        if self.studio is not None:
            self.request_fit(p, "first contact")
        return p

    # -- images -----------------------------------------------------------------------------
    def _cache(self):
        from ..embedding import open_cache

        return open_cache(self.engine, self.cache_dir)

    def _bytes(self, ref: ImageRef) -> bytes:
        if ref.kind == "remote":
            return fetch_remote(ref.where)
        if self.studio is None:
            raise BackendError(f"{ref.where} is served by Label Studio, and no --label-studio-url was given")
        return self.studio.fetch(ref)

    def embed(self, tasks: list[dict], key: str) -> tuple[np.ndarray, dict[int, str]]:
        """One unit embedding row per task (NaN where it failed) and, by task position, why
        an image could not be read. Images come through the cache, keyed by content: an image
        is run through the model once however often it is predicted."""
        from ..embedding import embed_images

        n = len(tasks)
        errors: dict[int, str] = {}
        refs: dict[int, ImageRef] = {}
        for i, task in enumerate(tasks):
            data = task.get("data")  # a task whose data is not an object has no image: its own error
            try:
                refs[i] = locate(data.get(key) if isinstance(data, dict) else None, key, self.studio.url if self.studio else None,
                                 self.images, self.allow_remote, task.get("id"))
            except BackendError as e:
                errors[i] = str(e)
        known: dict[int, str] = {}
        with self._lock:
            for i, ref in refs.items():
                if ref.stable and ref.where in self._uploads:
                    known[i] = self._uploads[ref.where]
        rows: dict[int, np.ndarray] = {}
        if known:
            with self._cache() as cache:
                found = cache.get(self.mode, list(known.values())) if cache else {}
            rows = {i: found[h] for i, h in known.items() if h in found}
        fetch = [i for i, ref in refs.items() if ref.kind != "disk" and i not in rows]
        paths: dict[int, str] = {i: ref.where for i, ref in refs.items() if ref.kind == "disk"}
        # a scratch folder only while images are fetched: a server killed between requests
        # (SIGKILL, the OOM killer) leaves nothing in the temporary folder
        work = Path(tempfile.mkdtemp(prefix="clipdata-backend-")) if fetch else None
        try:
            hashes: dict[int, str] = {}

            def get(i: int) -> None:
                try:
                    data = self._bytes(refs[i])
                except ClipdataError as e:
                    errors[i] = str(e)
                    return
                h = hashlib.sha256(data).hexdigest()
                suffix = PurePosixPath(refs[i].where.split("?", 1)[0]).suffix[:8]
                path = work / f"{h}{suffix if suffix.isascii() else ''}"
                path.write_bytes(data)
                hashes[i], paths[i] = h, str(path)

            if fetch:
                with ThreadPoolExecutor(min(FETCHERS, len(fetch)), thread_name_prefix="clipdata-fetch") as pool:
                    list(pool.map(get, fetch))
            order = sorted(paths)
            for start in range(0, len(order), CHUNK):  # the model lock is let go between chunks
                chunk = order[start:start + CHUNK]
                with self._model, self._cache() as cache:
                    matrix, stats = embed_images(self.engine, [paths[i] for i in chunk], cache, None, self.spec)
                for j, i in enumerate(chunk):
                    bad = stats.unreadable.get(paths[i]) or stats.failed.get(paths[i])
                    if bad:
                        errors[i] = f"{refs[i].where}: not an image the model can read ({bad})"
                    else:
                        rows[i] = matrix[j]
            with self._lock:
                for i, h in hashes.items():
                    if refs[i].stable and i in rows:
                        self._uploads[refs[i].where] = h
                        self._uploads.move_to_end(refs[i].where)
                while len(self._uploads) > KNOWN_UPLOADS:
                    self._uploads.popitem(last=False)
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
        dim = next((len(v) for v in rows.values()), 0)
        out = np.full((n, dim), np.nan, np.float32)
        for i, v in rows.items():
            out[i] = v
        return out, errors

    def text(self) -> tuple[np.ndarray, float]:
        """The class text embeddings and the logit scale (computed once, through the cache)."""
        from ..embedding import model_scalars
        from ..scoring import class_embeddings

        with self._model:
            if self._text is None:
                with self._cache() as cache:
                    self._text = class_embeddings(self.engine, self.classes, cache)
                    self._scalars = model_scalars(self.engine, cache)
            return self._text, self._scalars[1]

    # -- predicting -------------------------------------------------------------------------
    def predict(self, project: Project, tasks: list[dict]) -> tuple[list, list[dict]]:
        """Label Studio's `results`, one entry per task in order ([] where its image could not
        be read: no prediction, and the task is asked for again later), and the errors."""
        from ..scoring import zero_shot

        scorer = project.scorer  # one consistent scorer for the whole batch, even if a fit ends now
        matrix, errors = self.embed(tasks, project.control.key)
        ok = [i for i in range(len(tasks)) if i not in errors]
        text, _ = self.text()
        if ok:
            x = matrix[ok].astype(np.float64)
            if scorer.probe is None:  # the model's own kind, scale and bias, as label scores
                probs = zero_shot(self.engine, x, text)
            else:
                probs = scorer.probe.proba(x)
        else:
            probs = np.zeros((0, len(self.classes.names)))
        gaps = margins(probs)
        results: list = [[] for _ in tasks]
        names, ctl = self.classes.names, project.control
        for row, i in enumerate(ok):
            best = int(np.argmax(probs[row]))
            results[i] = {
                "result": [{"from_name": ctl.from_name, "to_name": ctl.to_name, "type": "choices",
                            "value": {"choices": [ctl.result_value.get(names[best], names[best])]}}],
                "score": round(float(gaps[row]), 6),
                "model_version": scorer.version,
            }
        failed = [{"task": tasks[i].get("id"), "error": e} for i, e in sorted(errors.items())]
        for f in failed[:LOGGED]:
            log.warning("project %s, task %s: not predicted: %s", project.id, f["task"], f["error"])
        if len(failed) > LOGGED:
            log.warning("project %s: %d more tasks not predicted (the response's errors list each)", project.id,
                        len(failed) - LOGGED)
        return results, failed

    # -- learning ---------------------------------------------------------------------------
    def request_fit(self, project: Project, why: str) -> None:
        """Refit in the background; a request during a fit queues one more fit (never more)."""
        with project.lock:
            if project.fit.state == "fitting":
                project.fit.queued = True
                return
            project.fit.state = "fitting"
        thread = threading.Thread(target=self._fit_loop, args=(project, why), name=f"clipdata-fit-{project.id}",
                                  daemon=True)
        with self._lock:
            self._fits = [t for t in self._fits if t.is_alive()] + [thread]
        thread.start()

    def _fit_loop(self, project: Project, why: str) -> None:
        while True:
            self._fit_once(project, why)
            with project.lock:
                if not project.fit.queued:
                    project.fit.state = "idle"
                    return
                project.fit.queued = False
            why = "annotations changed during the last fit"

    def _train_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """--train-from: the layout's images, embedded once."""
        if self._train_embedded is None:
            from ..embedding import embed_images

            assert self.train is not None
            images, labels = self.train.images, np.array(self.train.labels)
            rows, keep = [], []
            for start in range(0, len(images), CHUNK):  # predictions may use the model between chunks
                chunk = images[start:start + CHUNK]
                with self._model, self._cache() as cache:
                    m, stats = embed_images(self.engine, chunk, cache, None, self.spec)
                ok = [j for j, p in enumerate(chunk) if str(p) not in stats.unreadable and str(p) not in stats.failed]
                rows.append(m[ok].astype(np.float64))
                keep += [start + j for j in ok]
            self._train_embedded = (np.concatenate(rows) if rows else np.zeros((0, 0)), labels[keep])
        return self._train_embedded

    def _fit_once(self, project: Project, why: str) -> None:
        from ..probe import fit_probe

        t0 = time.perf_counter()
        try:
            if self.studio is None:
                raise BackendError("learning needs Label Studio's API",
                                   hint="pass --label-studio-url (or set LABEL_STUDIO_URL) and LABEL_STUDIO_API_KEY")
            got = annotated(self.studio.export(project.id), project.control, self.classes.names)
            left_out = dict(got.left_out)
            matrix, errors = self.embed(got.tasks, project.control.key)
            for e in errors.values():
                reason = "image unreadable: " + e.split(": ", 1)[-1][:120]
                left_out[reason] = left_out.get(reason, 0) + 1
            keep = [i for i in range(len(got.tasks)) if i not in errors]
            names = self.classes.names
            x = matrix[keep].astype(np.float64)
            y = np.array([names.index(got.tasks[i]["class"]) for i in keep], np.int64)
            if self.train is not None:
                tx, ty = self._train_rows()
                if len(tx):
                    x, y = np.concatenate([tx, x]) if len(x) else tx, np.concatenate([ty, y])
            text, scale = self.text()
            probe = fit_probe(x, y, text, scale, folds=self.folds) if len(y) else None
            learnt = [(got.tasks[i]["id"], got.tasks[i]["class"]) for i in keep]
            kind = "zero-shot" if probe is None else probe.scorer
            scorer = Scorer(probe, len(keep), self.version(kind, len(keep), learnt),
                            {k: round(v, 4) for k, v in (probe.cv_accuracies if probe else {}).items()})
            seconds = time.perf_counter() - t0
            with project.lock:
                changed = scorer.version != project.scorer.version
                project.scorer = scorer
                project.fit.fits += 1
                project.fit.last_error = None
                project.fit.last_seconds = round(seconds, 3)
                project.fit.left_out = left_out
            cv = ", ".join(f"{k} {v:.3f}" for k, v in scorer.cv_accuracy.items()) or "no cross-validation"
            log.info("project %s: fitted on %d annotation(s) in %.2f s (%s): %s decides (%s); model_version %s%s",
                     project.id, len(keep), seconds, why, scorer.name, cv, scorer.version,
                     "" if changed else " (unchanged)")
            if left_out:
                log.info("project %s: left out of learning: %s", project.id,
                         "; ".join(f"{n} {r}" for r, n in sorted(left_out.items())))
        except Exception as e:  # a failed fit keeps the previous scorer, and says why
            line = str(e) if isinstance(e, ClipdataError) else f"{type(e).__name__}: {first_line(e)}"
            with project.lock:
                project.fit.last_error = line
                project.fit.last_seconds = round(time.perf_counter() - t0, 3)
            log.warning("project %s: the fit failed, predictions keep %s: %s", project.id,
                        project.scorer.version, line)

    # -- status -----------------------------------------------------------------------------
    def status(self) -> dict:
        with self._lock:
            projects = list(self.projects.values())
        out = {}
        for p in projects:
            with p.lock:
                s, f = p.scorer, p.fit
                out[str(p.id)] = {
                    "model_version": s.version, "scorer": s.name, "annotations": s.annotations,
                    "cv_accuracy": s.cv_accuracy,
                    "fit": {"state": f.state, "queued": f.queued, "fits": f.fits, "last_error": f.last_error,
                            "last_seconds": f.last_seconds, "left_out": f.left_out},
                }
        return {"model": self.spec.model, "classes": self.classes.names, "projects": out,
                "label_studio": self.studio.url if self.studio else None,
                "images": str(self.images) if self.images else None}

    def versions(self) -> list[str]:
        with self._lock:
            return sorted({p.scorer.version for p in self.projects.values()})

    def close(self, wait: float = 60.0) -> None:
        """Let running fits end (a thread killed inside torch at exit aborts the process)."""
        with self._lock:
            running = list(self._fits)
        deadline = time.monotonic() + wait
        for t in running:
            t.join(max(0.0, deadline - time.monotonic()))
