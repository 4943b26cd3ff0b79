"""prompts: find the best caption wording per class of a CLIP layout by cross-validation, and
write it as an ontology usable with label/eval/convert --ontology. The images are embedded
once (cached); every candidate caption costs only a text pass. Format: formats/prompts.md."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .. import probe
from ..captions import check_template, load_ontology, nfc, render
from ..embedding.spec import EngineSpec
from ..errors import LayoutError, OptionError, OutputError
from ..formats import layout as clip
from ..fsutil import refuse_inside, write_report
from ..templates import ENSEMBLES, IMAGENET_80
from ..names import dumps

LAYOUT_SET = "_tokenization.txt"


@dataclass
class Candidate:
    """One wording of one class: a single caption, or an ensemble (mean of unit embeddings)."""

    name: str
    captions: list[str]


@dataclass
class SetScore:
    name: str
    top1: float                    # on the search images (a fixed set: nothing chosen)
    heldout_top1: float | None = None


@dataclass
class PromptsReport:
    layout: Path
    out: Path
    search_splits: list[str]
    heldout_split: str | None
    classes: list[str]
    images: int
    heldout_images: int
    mode: str                      # "set" or "class" (formats/prompts.md)
    cv_top1: float                 # the selection procedure's accuracy on held-out folds
    cv_by_mode: dict[str, float]
    chosen: dict[str, Candidate]
    heldout_top1: float | None     # the chosen ontology on the held-out split
    sets: list[SetScore]
    candidates: dict[str, list[dict]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    engine: str = ""
    cache_hits: int = 0
    seconds: float = 0.0

    @property
    def layout_set(self) -> SetScore | None:
        return next((s for s in self.sets if s.name == LAYOUT_SET), None)

    @property
    def best_template(self) -> SetScore | None:
        """The single template with the best top-1 on the search images (ties: first)."""
        singles = [s for s in self.sets if s.name != LAYOUT_SET and s.name not in ENSEMBLES and "{" in s.name]
        return max(singles, key=lambda s: s.top1, default=None)

    def to_dict(self) -> dict:
        return {"layout": str(self.layout), "out": str(self.out), "search_splits": self.search_splits,
                "heldout_split": self.heldout_split, "images": self.images, "heldout_images": self.heldout_images,
                "classes": self.classes, "mode": self.mode, "cv_top1": self.cv_top1, "cv_by_mode": self.cv_by_mode,
                "heldout_top1": self.heldout_top1,
                "chosen": {c: {"name": k.name, "captions": k.captions} for c, k in self.chosen.items()},
                "prompt_sets": [{"name": s.name, "top1": s.top1, "heldout_top1": s.heldout_top1} for s in self.sets],
                "candidates": self.candidates, "notes": self.notes, "unreadable": self.unreadable,
                "engine": self.engine}


def _render(template: str, name: str) -> str:
    """captions.render, skipping the a/an look-up (slow: inflect) when the template has no {a}:
    the library alone renders 80 templates per class."""
    return render(template, name) if "{a}" in template else template.replace("{}", name)


def _candidates(classes: list[str], layout_caps: list[str], templates: Sequence[str],
                ontologies: Sequence[str | Path], library: bool
                ) -> tuple[list[list[Candidate]], list[tuple[str, list[int]]], list[str]]:
    """Per class its distinct candidates, and the uniform prompt sets as an index per class."""
    options: list[list[Candidate]] = [[] for _ in classes]
    keys: list[dict[tuple[str, ...], int]] = [{} for _ in classes]
    sets: list[tuple[str, list[int]]] = []
    notes: list[str] = []

    def add(c: int, cand: Candidate) -> int:
        key = tuple(cand.captions)
        if key not in keys[c]:
            keys[c][key] = len(options[c])
            options[c].append(cand)
        return keys[c][key]

    def add_set(name: str, per_class: list[list[str]]) -> None:
        sets.append((name, [add(c, Candidate(name, caps)) for c, caps in enumerate(per_class)]))

    add_set(LAYOUT_SET, [[cap] for cap in layout_caps])
    singles = list(dict.fromkeys([check_template(t) for t in templates] + (list(IMAGENET_80) if library else [])))
    for t in singles:
        add_set(t, [[_render(t, c)] for c in classes])
    if library:
        for name, group in ENSEMBLES.items():
            add_set(name, [[_render(t, c) for t in group] for c in classes])
    for f in ontologies:
        onto = load_ontology(f)
        missing = [c for c in classes if c not in onto.captions]
        if missing:
            raise OptionError(f"no candidate caption for class(es) {', '.join(map(repr, missing))}", file=f,
                              hint="list every class of the layout under `classes:` (captions: [...] for several)")
        extra = sorted(set(onto.captions) - set(classes))
        if extra:
            notes.append(f"{Path(f).name}: class(es) not in the layout, ignored: {', '.join(extra)}")
        name = Path(f).name
        for c, cls in enumerate(classes):
            caps = onto.captions[cls]
            for cap in caps:
                add(c, Candidate(f"{name}: {cap}", [cap]))
        add_set(name, [onto.captions[cls] for cls in classes])
    return options, sets, notes


def _yaml(chosen: dict[str, Candidate], header: str) -> str:
    """An ontology file (formats/ontology.md). Strings are JSON-quoted with ASCII escapes,
    which YAML reads as double-quoted scalars: no name or caption can change the structure."""
    lines = [f"# {header}", "classes:"]
    for cls, cand in chosen.items():
        key = json.dumps(cls)
        if len(cand.captions) == 1:
            lines.append(f"  {key}: {json.dumps(cand.captions[0])}")
        else:
            lines.append(f"  {key}:")
            lines.append("    captions:")
            lines += [f"      - {json.dumps(cap)}" for cap in cand.captions]
    return "\n".join(lines) + "\n"


def prompts(layout: str | Path, out_yaml: str | Path, *, templates: Sequence[str] = (),
            ontologies: Sequence[str | Path] = (), library: bool = True, split: str | None = None,
            folds: int = 5, seed: int = 0, per_class: bool = True, spec: EngineSpec = EngineSpec(),
            cache_dir: str | Path | None | bool = None, json_path: str | Path | None = None,
            progress: Callable[[int, int], None] | None = None) -> PromptsReport:
    """Choose each class's wording by cross-validated top-1 on the layout's labeled images
    (every split but `test`, or `split`), report it on `test` when that split was not used,
    and write the choice to `out_yaml`."""
    probe.check_folds(folds)
    from ..embedding import embed_paths, embed_texts, model_scalars

    t0 = time.perf_counter()
    root, out = Path(layout), Path(out_yaml)
    refuse_inside((out, json_path, cache_dir), [("the layout", root)])
    for f in [out] + ([Path(json_path)] if json_path else []):
        if any(f.resolve() == Path(o).resolve() for o in ontologies):
            raise OutputError("is also a candidate file; it would be overwritten", file=f)
    names = [s.name for s in clip.read_layout(root).splits]
    if split is not None:
        if split not in names:
            raise OptionError(f"--split {split!r}: the layout has {', '.join(names)}")
        search = [split]
    else:
        search = [s for s in names if s != "test"] or names
    heldout = "test" if "test" in names and "test" not in search else None
    data = clip.read_labeled(root, search)
    test = clip.read_labeled(root, [heldout]) if heldout else None
    if test is not None and test.classes != data.classes:
        raise LayoutError(f"the {heldout} split's classes differ from {', '.join(search)}'s", file=root,
                          hint="score one split: --split NAME")
    options, sets, notes = _candidates(data.classes, data.captions, templates, ontologies, library)
    counts = np.bincount(data.labels, minlength=len(data.classes))
    for c in np.flatnonzero(counts < 2):
        notes.append(f"class {data.classes[c]!r} has {counts[c]} image(s) in {', '.join(search)}: "
                     "it is held out in at most one fold, so its choice rests on one image")
    paths = data.images + (test.images if test else [])
    with embed_paths(spec, paths, cache_dir, progress) as emb:
        kept = {str(p) for p in emb.paths}
        rows = np.array([str(p) in kept for p in paths])
        feats = np.full((len(paths), emb.matrix.shape[1]), np.nan, np.float64)
        feats[rows] = emb.matrix
        _, scale, _ = model_scalars(emb.engine, emb.cache)
        flat = list(dict.fromkeys(cap for opts in options for o in opts for cap in o.captions))
        vec = dict(zip(flat, embed_texts(emb.engine, flat, emb.cache).astype(np.float64)))
        stats, engine = emb.stats, emb.engine.describe()
    opt_emb = []
    for opts in options:
        m = np.stack([np.mean([vec[cap] for cap in o.captions], axis=0) for o in opts])
        opt_emb.append(m / np.linalg.norm(m, axis=1, keepdims=True))
    n = len(data.images)
    labels = np.array(data.labels + (test.labels if test else []))
    s_rows = np.flatnonzero(rows[:n])
    h_rows = n + np.flatnonzero(rows[n:])
    if not len(s_rows):
        raise LayoutError("no readable image in the search split(s)", file=root)
    choice = probe.select_prompts(feats[s_rows], labels[s_rows], opt_emb, [s for _, s in sets], scale=scale,
                                  folds=folds, seed=seed, per_class=per_class)

    def heldout_top1(pick: Sequence[int]) -> float | None:
        if not len(h_rows):
            return None
        text = np.stack([opt_emb[c][o] for c, o in enumerate(pick)])
        return float(((feats[h_rows] @ text.T).argmax(axis=1) == labels[h_rows]).mean())

    scores = [SetScore(name, acc, heldout_top1(idx)) for (name, idx), acc in zip(sets, choice.set_accuracy)]
    chosen = {cls: options[c][o] for c, (cls, o) in enumerate(zip(data.classes, choice.choice))}
    candidates = {cls: [{"name": o.name, "captions": o.captions, "top1_if_chosen": acc}
                        for o, acc in zip(options[c], choice.swap_accuracy[c])] for c, cls in enumerate(data.classes)}
    report = PromptsReport(root, out, search, heldout, data.classes, len(s_rows), len(h_rows), choice.mode,
                           choice.cv_accuracy, choice.cv_by_mode, chosen, heldout_top1(choice.choice), scores,
                           candidates, notes, stats.unreadable, engine, stats.cache_hits)
    header = (f"clipdata prompts: the wording per class with the best {folds}-fold cross-validated top-1 "
              f"on {nfc(root.name)} ({', '.join(search)}); formats/prompts.md")
    write_report(out, _yaml(chosen, header))
    if json_path is not None:
        write_report(Path(json_path), dumps(report.to_dict(), indent=2) + "\n")
    report.seconds = time.perf_counter() - t0
    return report
