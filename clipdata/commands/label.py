"""label: CLIP proposes a class and a confidence for each unlabeled image, and hands the
proposals to a person: a review tree of class folders, a Label Studio import, a CSV, and a
page of thumbnails (written by formats/review.py). Formats: formats/label.md."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..captions import DEFAULT_TEMPLATE, Ontology, check_template, load_ontology, nfc, render
from ..embedding.spec import EngineSpec
from ..errors import OptionError, OutputError
from ..formats import layout as clip
from ..formats.review import (UNCERTAIN, review_name, write_labelstudio, write_predictions,
                              write_review)
from ..fsutil import write_text
from ..imagefiles import displayed_size
from ..scoring import Classes, class_embeddings, zero_shot


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

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def resolve_classes(classes: str | list[str] | None = None, ontology: str | Path | None = None,
                    from_layout: str | Path | None = None, template: str = DEFAULT_TEMPLATE) -> Classes:
    """The classes and their captions, from exactly one of --classes, --ontology, --from-layout."""
    given = [x for x in (classes, ontology, from_layout) if x]
    if len(given) != 1:
        raise OptionError("give the classes one way: --classes, --ontology or --from-layout",
                          hint='e.g. --classes "daisy,dandelion"')
    check_template(template)
    if classes:
        names = [nfc(c.strip()) for c in (classes.split(",") if isinstance(classes, str) else classes)]
        names = [n for n in names if n]
        caps = [[render(template, n)] for n in names]
    elif ontology:
        onto: Ontology = load_ontology(ontology)
        names = [n for n in onto.mentioned if n not in onto.drops]
        names = list(dict.fromkeys(onto.target(n) or n for n in sorted(names)))
        caps = [onto.all_captions(n, template) for n in names]
    else:
        lay = clip.read_layout(from_layout)
        if len(lay.splits) != 1:
            raise OptionError(f"--from-layout {from_layout}: name one split folder (it has {len(lay.splits)})",
                              hint=f"e.g. --from-layout {Path(str(from_layout)) / lay.splits[0].name}")
        sl = lay.splits[0]
        if sl.captions is None or len(sl.captions) != len(sl.classes):
            raise OptionError(f"--from-layout {from_layout}: {clip.TOKENIZATION} does not have one caption per class folder",
                              hint="check it with clipdata inspect")
        names, caps = sl.classes, [[c] for c in sl.captions]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise OptionError(f"duplicate class name(s): {', '.join(map(repr, dup))}")
    if len(names) < 2:
        raise OptionError(f"{len(names)} class given: CLIP needs at least two to choose between",
                          hint="a softmax over one class always says 1.0; add the alternatives, e.g. 'other'")
    clip.check_class_names([n for n in names])
    if UNCERTAIN in names:
        raise OptionError(f"{UNCERTAIN!r} is reserved for the review tree's uncertain folder")
    return Classes(names, caps)


def label(images: str | Path, out: str | Path, *, classes: str | list[str] | None = None,
          ontology: str | Path | None = None, from_layout: str | Path | None = None,
          template: str = DEFAULT_TEMPLATE, spec: EngineSpec = EngineSpec(), top_k: int = 3,
          threshold: float = 0.5, margin: float = 0.1, copy: bool = False,
          cache_dir: str | Path | None = None, overwrite: bool = False,
          progress: Callable[[int, int], None] | None = None) -> LabelReport:
    """Pre-label the images under `images`; write the review material to `out`."""
    from ..embedding import Engine, embed_images, open_cache, scan_images

    t0 = time.perf_counter()
    root, out = Path(images), Path(out)
    cls = resolve_classes(classes, ontology, from_layout, template)
    if top_k < 1:
        raise OptionError("--top-k must be at least 1")
    if not 0 <= threshold <= 1 or not 0 <= margin <= 1:
        raise OptionError("--threshold and --margin are probabilities, between 0 and 1")
    paths = scan_images(root)
    _prepare(out, overwrite, root)
    engine = Engine(spec.check())
    # label keeps its own cache in OUT (kept by --overwrite) unless told otherwise
    with open_cache(engine, cache_dir if cache_dir is not None else out / "cache") as cache:
        text = class_embeddings(engine, cls, cache)
        matrix, stats = embed_images(engine, paths, cache, progress, spec)
        ok = [i for i, p in enumerate(paths) if str(p) not in stats.unreadable and str(p) not in stats.failed]
        probs = zero_shot(engine, matrix[ok], text, cache) if ok else np.zeros((0, len(cls.names)))
    report = LabelReport(out=out, images=len(ok), unreadable=stats.unreadable, failed=stats.failed,
                         cache_hits=stats.cache_hits, engine=engine.describe())
    rows = []
    for row_i, i in enumerate(ok):
        p = probs[row_i]
        order = np.argsort(-p, kind="stable")[:max(top_k, 2)]
        top = [{"class": cls.names[j], "score": round(float(p[j]), 6)} for j in order]
        gap = float(p[order[0]] - p[order[1]])
        uncertain = bool(p[order[0]] < threshold or gap < margin)
        rel = paths[i].relative_to(root).as_posix()
        decision = None if uncertain else cls.names[order[0]]
        width, height = displayed_size(paths[i])
        rows.append({"path": rel, "top_k": top[:top_k], "decision": decision, "uncertain": uncertain,
                     "review_file": f"review/{decision or UNCERTAIN}/{review_name(rel)}",
                     "width": width, "height": height})
    for r in rows:
        report.counts[r["decision"] or UNCERTAIN] = report.counts.get(r["decision"] or UNCERTAIN, 0) + 1
    report.uncertain = report.counts.pop(UNCERTAIN, 0)
    meta = {"model": spec.model, "engine": engine.describe(), "template": template,
            "classes": cls.names, "captions": cls.captions, "threshold": threshold, "margin": margin,
            "images_root": str(root.resolve())}
    write_predictions(out, rows, meta, top_k)
    write_review(out, root, rows, cls.names, {n: caps[0] for n, caps in zip(cls.names, cls.captions)}, copy)
    write_labelstudio(out, root, rows, cls.names, spec.model)
    _write_html(out, rows, cls, meta)
    write_text(out / "label.json", json.dumps({**meta, "unreadable": stats.unreadable, "failed": stats.failed,
                                               "counts": report.counts, "uncertain": report.uncertain},
                                              indent=2, ensure_ascii=False) + "\n")
    report.seconds = time.perf_counter() - t0
    return report


def _prepare(out: Path, overwrite: bool, root: Path) -> None:
    from ..fsutil import is_within

    if is_within(out, root) or is_within(root, out):
        raise OutputError("the output folder and the image folder overlap", file=out,
                          hint="a later scan would read the review tree as images; choose a folder outside")
    if out.is_dir() and any(p.name != "cache" for p in out.iterdir()):
        if not overwrite:
            raise OutputError("already holds files", file=out, hint="choose an empty folder, or pass --overwrite")
        if not (out / "label.json").is_file():
            raise OutputError("holds files that clipdata label did not write; --overwrite only replaces its own output",
                              file=out)
        import shutil
        for child in out.iterdir():
            if child.name != "cache":  # embeddings stay: the point of the cache
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _write_html(out: Path, rows: list[dict], cls: Classes, meta: dict) -> None:
    """Thumbnails (the review tree's files) grouped by prediction, uncertain first, each group
    least confident first: what a person wants to see before reviewing."""
    from ..html import write_html

    groups: dict[str, list[dict]] = {UNCERTAIN: []}
    groups.update({n: [] for n in cls.names})
    for r in rows:
        groups[r["decision"] or UNCERTAIN].append(r)
    sections = []
    for name, items in groups.items():
        items = sorted(items, key=lambda r: (r["top_k"][0]["score"], r["path"]))
        sections.append(("uncertain" if name == UNCERTAIN else name, [
            (out / r["review_file"], "\n".join(f"{t['class']} {t['score']:.2f}" for t in r["top_k"]))
            for r in items]))
    write_html(out / "index.html", f"{len(rows)} images, {meta['engine']}",
               [s for s in sections if s[1]],
               intro="<p>Uncertain first; within a class, least confident first. Review by moving files "
                     "between the folders under <code>review/</code>, then run <code>clipdata review apply</code>.</p>")
