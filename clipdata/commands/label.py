"""label: CLIP proposes a class and a confidence for each unlabeled image, and hands the
proposals to a person: a review tree of class folders, a Label Studio import, a CSV, and a
page of thumbnails (written by formats/review.py). Formats: formats/label.md."""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .._version import __version__
from ..captions import DEFAULT_TEMPLATE
from ..classes import classes_and_training, resolve_classes, review_ranks  # noqa: F401  (resolve_classes: imported from here too)
from ..embedding.spec import EngineSpec
from ..errors import OptionError, OutputError
from ..formats import layout as clip
from ..formats.review import UNCERTAIN, write_labelstudio, write_predictions, write_review
from ..fsutil import LOCK_NAME, NAME_MAX, is_within, locked, name_bytes, refuse_inside, remove, write_text
from ..imagefiles import displayed_size
from ..pipeline.journal import JOURNAL, Journal, interrupted, replay
from ..scoring import Classes, class_embeddings, zero_shot
from ..names import dumps


@dataclass
class LabelReport:
    out: Path
    images: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # decided class -> images
    uncertain: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # distributed runs: tasks that failed past retries
    cache_hits: int = 0
    seconds: float = 0.0
    engine: str = ""
    notes: list[str] = field(default_factory=list)
    scorer: str = "zero-shot"  # what decided: zero-shot, probe or blend (--train-from)
    plan: object = None  # embedding.local.Plan: batch size, loaders and threads chosen for the machine
    cv_accuracies: dict[str, float] = field(default_factory=dict)  # per scorer, on the --train-from layout

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def review_names(rels: list[str]) -> dict[str, str]:
    """A flat, collision-free file name per relative path for the review tree. `a/b.jpg`
    becomes `a__b.jpg`, unless another image already has that name (a real `a__b.jpg`, or a
    case-only twin on a case-insensitive disk) or it is too long: then a short hash of the
    path is added to the stem. Top-level files keep their own names. Deterministic: the same
    paths give the same names."""
    taken: set[str] = set()
    out: dict[str, str] = {}

    def claim(rel: str, name: str) -> None:
        out[rel] = name
        taken.add(name.casefold())

    for rel in sorted(r for r in rels if "/" not in r):
        claim(rel, rel)
    for rel in sorted(r for r in rels if "/" in r):
        flat = rel.replace("/", "__")
        if flat.casefold() not in taken and name_bytes(flat) <= NAME_MAX:
            claim(rel, flat)
            continue
        stem, dot, ext = flat.rpartition(".") if "." in flat.rsplit("__", 1)[-1] else (flat, "", "")
        tag = hashlib.sha1(rel.encode("utf-8", "surrogateescape")).hexdigest()
        for n in range(8, 41):
            tail = f"~{tag[:n]}{dot}{ext}"
            room = NAME_MAX - name_bytes(tail)
            cut = stem.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
            if (cut + tail).casefold() not in taken:
                claim(rel, cut + tail)
                break
        else:  # 40 hex digits of SHA-1 taken by other names: nothing sane is left
            raise OutputError(f"no free review file name for {rel!r}")
    return out


def _check_overlap(out: Path, root: Path) -> None:
    if is_within(out, root) or is_within(root, out):
        raise OutputError("the output folder and the image folder overlap", file=out,
                          hint="a later scan would read the review tree as images; choose a folder outside")


def _locked_output(fn: Callable) -> Callable:
    """Run `fn` holding OUT's lock (fsutil.locked): two labels into one folder never mix.
    The overlap check comes first, so the lock never creates a folder inside the images."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        out, root = Path(bound.arguments["out"]), Path(bound.arguments["images"])
        _check_overlap(out, root)
        refuse_inside((bound.arguments.get("cache_dir"),), [("the image folder", root)])
        with locked(out):
            return fn(*args, **kwargs)

    return run


@_locked_output
def label(images: str | Path, out: str | Path, *, classes: str | list[str] | None = None,
          ontology: str | Path | None = None, from_layout: str | Path | None = None,
          template: str = DEFAULT_TEMPLATE, spec: EngineSpec = EngineSpec(), top_k: int = 3,
          threshold: float = 0.5, margin: float = 0.1, copy: bool = False,
          cache_dir: str | Path | None = None, overwrite: bool = False,
          train_from: str | Path | None = None, folds: int = 5, resume: bool = False,
          progress: Callable[[int, int], None] | None = None) -> LabelReport:
    """Pre-label the images under `images`; write the review material to `out`. With
    `train_from` (a labeled CLIP layout, or one split of it), a few-shot probe fitted on its
    images scores them, blended with zero-shot as cross-validation on the layout chooses.
    `resume`: finish a killed run of the same command in `out` (its cached embeddings are
    kept; every other file is written again)."""
    from .. import probe as fewshot
    from ..embedding import Engine, cache_mode, check_some_read, embed_images, model_scalars, open_cache, scan_images
    from ..embedding.engine import resolve_model
    from ..embedding.local import plan_for

    t0 = time.perf_counter()
    root, out = Path(images), Path(out)
    cls, train = classes_and_training(classes, ontology, from_layout, template, train_from)
    if top_k < 1:
        raise OptionError("--top-k must be at least 1")
    if train_from is not None:
        from ..probe import check_folds

        check_folds(folds)
    if not 0 <= threshold <= 1 or not 0 <= margin <= 1:
        raise OptionError("--threshold and --margin are probabilities, between 0 and 1")
    engine = Engine(spec.check())  # a bad engine option is refused before OUT is touched
    paths = scan_images(root)
    fingerprint = hashlib.sha256(json.dumps(
        [__version__, str(root.resolve()), cls.names, cls.captions, top_k, threshold, margin, copy,
         str(Path(train_from).resolve()) if train_from is not None else None, folds,
         spec.model, spec.dtype, spec.exact_preprocess]).encode()).hexdigest()
    if resume:
        replay(out, fingerprint, "label.json")  # the same command, or a clear refusal
    _prepare(out, overwrite or (resume and interrupted(out)), root)
    Journal(out, fingerprint, fresh=True).close()  # marks OUT unfinished until label.json is written
    # label keeps its own cache in OUT (kept by --overwrite) unless told otherwise
    with open_cache(engine, cache_dir if cache_dir is not None else out / "cache") as cache:
        text = class_embeddings(engine, cls, cache)
        matrix, stats = embed_images(engine, paths, cache, progress, spec)
        check_some_read(paths, stats, root)
        ok = [i for i, p in enumerate(paths) if str(p) not in stats.unreadable and str(p) not in stats.failed]
        fitted = None
        if train is not None:
            tm, tstats = embed_images(engine, train.images, cache, None, spec)
            keep = [j for j, p in enumerate(train.images) if str(p) not in tstats.unreadable and str(p) not in tstats.failed]
            _, scale, _ = model_scalars(engine, cache)
            fitted = fewshot.fit_probe(tm[keep].astype(np.float64), np.array(train.labels)[keep], text, scale,
                                       folds=folds)
            probs = fitted.proba(matrix[ok].astype(np.float64)) if ok else np.zeros((0, len(cls.names)))
        else:
            probs = zero_shot(engine, matrix[ok], text, cache) if ok else np.zeros((0, len(cls.names)))
    report = LabelReport(out=out, images=len(ok), unreadable=stats.unreadable, failed=stats.failed,
                         cache_hits=stats.cache_hits, engine=engine.describe(), plan=plan_for(engine.device, spec))
    if fitted is not None:
        report.scorer, report.cv_accuracies = fitted.scorer, dict(fitted.cv_accuracies)
        if tstats.unreadable:
            report.notes.append(f"--train-from: {len(tstats.unreadable)} unreadable image(s) left out of training")
    rels = [paths[i].relative_to(root).as_posix() for i in ok]
    flat, ranks = review_names(rels), review_ranks(probs, rels)
    rows = []
    for row_i, i in enumerate(ok):
        p = probs[row_i]
        order = np.argsort(-p, kind="stable")[:max(top_k, 2)]
        top = [{"class": cls.names[j], "score": round(float(p[j]), 6)} for j in order]
        gap = float(p[order[0]] - p[order[1]])
        uncertain = bool(p[order[0]] < threshold or gap < margin)
        rel = rels[row_i]
        decision = None if uncertain else cls.names[order[0]]
        width, height = displayed_size(paths[i])
        rows.append({"path": rel, "top_k": top[:top_k], "decision": decision, "uncertain": uncertain,
                     "review_file": f"review/{decision or UNCERTAIN}/{flat[rel]}",
                     "review_rank": ranks[row_i], "scorer": report.scorer,
                     "width": width, "height": height})
    for r in rows:
        report.counts[r["decision"] or UNCERTAIN] = report.counts.get(r["decision"] or UNCERTAIN, 0) + 1
    report.uncertain = report.counts.pop(UNCERTAIN, 0)
    meta = {"model": resolve_model(spec.model),  # as it resolves: review serve may run from elsewhere
            "model_identity": engine.identity,  # the key of its cached embeddings
            "engine": engine.describe(), "dtype": engine.dtype,
            "preprocess": cache_mode(spec),  # how the cached image embeddings were made (review serve reads them)
            "template": template,
            "classes": cls.names, "captions": cls.captions, "threshold": threshold, "margin": margin,
            "images_root": str(root.resolve()), "scorer": report.scorer, "run": report.plan.record(),
            "review_order": "review_rank: 1 = the smallest margin between the top two scores"}
    if spec.weights:  # an open_clip model's checkpoint: review serve loads the same one
        w = Path(spec.weights).expanduser()
        meta["weights"] = str(w.resolve()) if w.is_file() else spec.weights  # a file from any folder
    if fitted is not None:
        meta["train_from"] = {"layout": str(Path(train_from).resolve()), "images": len(keep), "folds": folds,
                              "cv_accuracy": fitted.cv_accuracies,
                              "strength": None if fitted.scorer == "zero-shot" else fitted.strength,  # JSON has no inf
                              "blend_weight": fitted.weight}
    write_predictions(out, rows, meta, top_k)
    write_review(out, root, rows, cls.names, {n: caps[0] for n, caps in zip(cls.names, cls.captions)}, copy)
    write_labelstudio(out, root, sorted(rows, key=lambda r: r["review_rank"]), cls.names, meta["model"])
    _write_html(out, rows, cls, meta)
    write_text(out / "label.json", dumps({**meta, "unreadable": stats.unreadable, "failed": stats.failed,
                                               "counts": report.counts, "uncertain": report.uncertain},
                                              indent=2) + "\n")
    # the review tree's images too: where syncfs is missing, only the files named are synced
    Journal(out, fingerprint, fresh=False).finish([out / f for f in OUTPUT_FILES]
                                                  + [out / r["review_file"] for r in rows])
    report.seconds = time.perf_counter() - t0
    return report


# What label writes at the top of OUT (review/ aside), made durable before its journal goes.
OUTPUT_FILES = ("predictions.jsonl", "predictions.csv", "labelstudio.json", "labelstudio_config.xml",
                "index.html", "label.json", "review/_tokenization.txt")


def _prepare(out: Path, overwrite: bool, root: Path) -> None:
    """OUT new, empty, or (with --overwrite, or --resume after a kill) emptied of an earlier
    label's output. The cache stays (the point of it); so does a killed run's journal until
    the new one replaces it, so a kill while emptying still leaves a folder marked as ours."""
    _check_overlap(out, root)
    if out.is_dir() and any(p.name not in ("cache", LOCK_NAME) for p in out.iterdir()):
        if not overwrite:
            if interrupted(out):
                raise OutputError("holds an interrupted clipdata label run", file=out,
                                  hint="pass --resume to finish it, or --overwrite to start again")
            raise OutputError("already holds files", file=out, hint="choose an empty folder, or pass --overwrite")
        if not (out / "label.json").is_file() and not interrupted(out):
            raise OutputError("holds files that clipdata label did not write; --overwrite only replaces its own output",
                              file=out)
        for child in out.iterdir():
            if child.name not in ("cache", LOCK_NAME, JOURNAL):
                remove(child)
    out.mkdir(parents=True, exist_ok=True)


def _write_html(out: Path, rows: list[dict], cls: Classes, meta: dict) -> None:
    """Thumbnails (the review tree's files) grouped by prediction, uncertain first, each group
    in review order (least certain first): what a person wants to see before reviewing."""
    from ..html import write_html

    groups: dict[str, list[dict]] = {UNCERTAIN: []}
    groups.update({n: [] for n in cls.names})
    for r in rows:
        groups[r["decision"] or UNCERTAIN].append(r)
    sections = []
    for name, items in groups.items():
        items = sorted(items, key=lambda r: r["review_rank"])
        sections.append(("uncertain" if name == UNCERTAIN else name, [
            (out / r["review_file"], "\n".join(f"{t['class']} {t['score']:.2f}" for t in r["top_k"]))
            for r in items]))
    write_html(out / "index.html", f"{len(rows)} images, {meta['engine']}",
               [s for s in sections if s[1]],
               intro="<p>Uncertain first; within a class, least certain first (review_rank). Review by moving files "
                     "between the folders under <code>review/</code>, then run <code>clipdata review apply</code>.</p>")
