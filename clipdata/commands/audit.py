"""audit: the images of a CLIP layout whose label is probably wrong. Out-of-fold probabilities
come from the few-shot probe (k-fold over the layout), and the confident-learning rule flags
an image whose given label is improbable while another class is confidently predicted.
Format: formats/audit.md."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .. import probe
from ..embedding.spec import EngineSpec
from ..errors import LayoutError, OptionError
from ..formats import layout as clip
from ..fsutil import refuse_inside, write_report
from ..scoring import Classes, class_embeddings
from ..names import dumps

EXAMPLES = 4  # per class on the html page


@dataclass
class AuditReport:
    layout: Path
    splits: list[str]
    classes: list[str]
    images: int
    flagged: int
    rows: list[dict]   # every image, most suspicious first: path, label, suggested, score, flagged
    scorer: str        # what gave the out-of-fold probabilities: zero-shot, probe or blend
    cv_top1: float | None
    notes: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    engine: str = ""
    cache_hits: int = 0
    seconds: float = 0.0


def _page(path: Path, report: AuditReport, files: dict[str, Path], examples: dict[str, list[Path]],
          top: int) -> None:
    """Each flagged image beside typical images of its given and its suggested class."""
    from ..html import write_html

    sections = []
    for row in [r for r in report.rows if r["flagged"]][:top]:
        items = [(files[row["path"]], f"{row['path']}\nlabeled {row['label']}, looks like {row['suggested']}\n"
                                      f"score {row['score']:.3f}")]
        items += [(p, f"a {row['label']}") for p in examples[row["label"]]]
        items += [(p, f"a {row['suggested']}") for p in examples[row["suggested"]]]
        sections.append((f"{row['path']}: {row['label']} -> {row['suggested']}?", items))
    intro = (f"<p>{report.flagged} of {report.images} images flagged; the first {min(top, report.flagged)} are "
             "shown, each followed by the most typical images of its given and its suggested class.</p>")
    write_html(path, f"audit of {report.layout.name}", sections, intro)


def audit(layout: str | Path, *, splits: Sequence[str] = (), folds: int = 5, seed: int = 0,
          spec: EngineSpec = EngineSpec(), cache_dir: str | Path | None | bool = None,
          jsonl: str | Path | None = None, html_path: str | Path | None = None, html_top: int = 50,
          progress: Callable[[int, int], None] | None = None) -> AuditReport:
    """Rank every labeled image of the layout (all splits, or `splits`) by how likely its label is wrong."""
    probe.check_folds(folds)
    from ..embedding import embed_paths, model_scalars

    t0 = time.perf_counter()
    root = Path(layout)
    refuse_inside((jsonl, html_path, cache_dir), [("the layout", root)])
    names = [s.name for s in clip.read_layout(root).splits]
    unknown = [s for s in splits if s not in names]
    if unknown:
        raise OptionError(f"--split {unknown[0]!r}: the layout has {', '.join(names)}")
    data = clip.read_labeled(root, list(splits) or names)
    notes = []
    counts = np.bincount(data.labels, minlength=len(data.classes))
    for c in np.flatnonzero(counts < probe.MIN_PER_CLASS):
        notes.append(f"class {data.classes[c]!r} has {counts[c]} image: it is scored zero-shot (its caption), "
                     "since no fold could learn it")
    with embed_paths(spec, data.images, cache_dir, progress) as emb:
        index = {str(p): i for i, p in enumerate(data.images)}
        labels = np.array([data.labels[index[str(p)]] for p in emb.paths])
        text = class_embeddings(emb.engine, Classes(data.classes, [[c] for c in data.captions]), emb.cache)
        _, scale, _ = model_scalars(emb.engine, emb.cache)
        stats, engine, paths = emb.stats, emb.engine.describe(), emb.paths
        feats = emb.matrix.astype(np.float64)
    if not len(paths):
        raise LayoutError("no readable image", file=root)
    fit = probe.fit_probe(feats, labels, text, scale, folds=folds, seed=seed)
    oof = probe.out_of_fold_proba(feats, labels, text, scale, fitted=fit)
    issues = probe.find_label_issues(oof, labels)
    rel = [p.relative_to(root).as_posix() for p in paths]
    rows = [{"path": rel[i.index], "label": data.classes[i.label], "suggested": data.classes[i.suggested],
             "score": round(i.score, 6), "flagged": i.flagged} for i in issues]
    report = AuditReport(root, data.splits, data.classes, len(paths), sum(i.flagged for i in issues), rows,
                         fit.scorer, fit.cv_accuracy, notes, stats.unreadable, engine, stats.cache_hits)
    if jsonl is not None:
        write_report(Path(jsonl), "".join(dumps(r) + "\n" for r in rows))
    if html_path is not None:
        # typical images: the highest out-of-fold probability of their own label
        own = oof[np.arange(len(labels)), labels]
        examples = {}
        for c, cls in enumerate(data.classes):
            idx = np.flatnonzero(labels == c)
            examples[cls] = [paths[i] for i in idx[np.argsort(-own[idx], kind="stable")][:EXAMPLES]]
        _page(Path(html_path), report, dict(zip(rel, paths)), examples, html_top)
    report.seconds = time.perf_counter() - t0
    return report
