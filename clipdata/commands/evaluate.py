"""eval (the API function `evaluate`, since `eval` is a builtin): zero-shot accuracy of a CLIP layout under several caption wordings, side by side.
Image embeddings are computed once (and cached); each prompt set costs one small text pass.
The JSON schema is in formats/eval.md."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..captions import DEFAULT_TEMPLATE, check_template, load_ontology, render
from ..embedding.spec import EngineSpec
from ..errors import OptionError
from ..formats import layout as clip
from ..fsutil import refuse_inside, write_report
from ..scoring import Classes, class_embeddings, zero_shot
from ..names import dumps


@dataclass
class PromptSet:
    name: str
    captions: list[list[str]]  # per class (sorted folder order), one or more captions
    top1: float = 0.0
    top5: float | None = None
    mean_per_class_recall: float = 0.0
    per_class_recall: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)  # rows: true class, columns: predicted
    predictions: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "captions": self.captions, "top1": self.top1, "top5": self.top5,
                "mean_per_class_recall": self.mean_per_class_recall,
                "per_class_recall": self.per_class_recall, "confusion_matrix": self.confusion}


@dataclass
class EvalReport:
    layout: Path
    splits: list[str]
    classes: list[str]
    images: int
    sets: list[PromptSet]
    flipped: list[dict]  # best vs worst set: images whose prediction changed
    unreadable: dict[str, str]
    engine: str
    cache_hits: int
    seconds: float

    @property
    def best(self) -> PromptSet:
        return max(self.sets, key=lambda s: (s.top1, s.mean_per_class_recall))

    def to_dict(self) -> dict:
        return {"layout": str(self.layout), "splits": self.splits, "classes": self.classes,
                "images": self.images, "engine": self.engine, "best": self.best.name,
                "prompt_sets": [s.to_dict() for s in self.sets], "flipped": self.flipped,
                "unreadable": self.unreadable}


def prompt_sets(classes: list[str], layout_captions: list[str], templates: Sequence[str],
                ontologies: Sequence[str | Path], use_layout: bool = True) -> list[PromptSet]:
    sets = [PromptSet("_tokenization.txt", [[c] for c in layout_captions])] if use_layout else []
    for t in templates:
        check_template(t)
        sets.append(PromptSet(t, [[render(t, c)] for c in classes]))
    for f in ontologies:
        onto = load_ontology(f)
        sets.append(PromptSet(Path(f).name, [onto.all_captions(c, DEFAULT_TEMPLATE) for c in classes]))
    if not sets:
        raise OptionError("no prompt set to evaluate")
    return sets


def metrics(ps: PromptSet, probs: np.ndarray, truth: np.ndarray, classes: list[str]) -> None:
    n = len(classes)
    pred = probs.argmax(axis=1)
    ps.predictions = pred.tolist()
    ps.top1 = float((pred == truth).mean())
    if n >= 5:
        top5 = np.argsort(-probs, axis=1, kind="stable")[:, :5]
        ps.top5 = float((top5 == truth[:, None]).any(axis=1).mean())
    conf = np.zeros((n, n), dtype=int)
    np.add.at(conf, (truth, pred), 1)
    ps.confusion = conf.tolist()
    recalls = {c: float(conf[i, i] / conf[i].sum()) for i, c in enumerate(classes) if conf[i].sum()}
    ps.per_class_recall = recalls
    ps.mean_per_class_recall = float(np.mean(list(recalls.values())))


def evaluate(layout: str | Path, *, split: str | None = None, templates: Sequence[str] = (),
             ontologies: Sequence[str | Path] = (), use_layout: bool = True,
             spec: EngineSpec = EngineSpec(), cache_dir: str | Path | None | bool = None,
             json_path: str | Path | None = None, plot_path: str | Path | None = None,
             progress: Callable[[int, int], None] | None = None) -> EvalReport:
    """Zero-shot top-1/top-5/per-class recall for each prompt set, on one pass of the images."""
    import time

    from ..embedding import embed_paths

    t0 = time.perf_counter()
    refuse_inside((json_path, plot_path, cache_dir), [("the layout", layout)] + [("an --ontology file", o) for o in ontologies])
    splits, classes, layout_caps, images, truth_all = clip.split_data(layout, split)
    sets = prompt_sets(classes, layout_caps, templates, ontologies, use_layout)
    if plot_path is not None:
        _matplotlib()
    with embed_paths(spec, images, cache_dir, progress, source=Path(layout)) as emb:
        kept = {p: i for i, p in enumerate(images)}
        truth = np.array([truth_all[kept[p]] for p in emb.paths])
        for ps in sets:
            text = class_embeddings(emb.engine, Classes(classes, ps.captions), emb.cache)
            metrics(ps, zero_shot(emb.engine, emb.matrix, text, emb.cache), truth, classes)
    root = Path(layout)
    report = EvalReport(root, splits, classes, len(emb.paths), sets, [], emb.stats.unreadable,
                        emb.engine.describe(), emb.stats.cache_hits, 0.0)
    best, worst = report.best, min(sets, key=lambda s: (s.top1, s.mean_per_class_recall))
    if best is not worst:
        for p, t, b, w in zip(emb.paths, truth, best.predictions, worst.predictions):
            if b != w:
                report.flipped.append({"path": p.relative_to(root).as_posix(), "class": classes[t],
                                       best.name: classes[b], worst.name: classes[w]})
    if json_path is not None:
        write_report(Path(json_path), dumps(report.to_dict(), indent=2) + "\n")
    if plot_path is not None:
        plot_confusion(best, classes, Path(plot_path))
    report.seconds = time.perf_counter() - t0
    return report


def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OptionError("--plot needs matplotlib", hint="pip install 'clipdata[plot]'") from None
    return plt


def plot_confusion(ps: PromptSet, classes: list[str], path: Path) -> None:
    plt = _matplotlib()
    conf = np.array(ps.confusion)
    size = max(4.0, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(conf, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{ps.name}: top-1 {ps.top1:.1%}")
    for i in range(len(classes)):
        for j in range(len(classes)):
            if conf[i, j]:
                ax.text(j, i, str(conf[i, j]), ha="center", va="center",
                        color="white" if conf[i, j] > conf.max() / 2 else "black", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()  # written whole, like every output: a killed run leaves no half PNG
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    write_report(path, buf.getvalue())
