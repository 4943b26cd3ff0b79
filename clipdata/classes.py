"""The classes a command is given and the order to review in. `--classes`, `--ontology` or
`--from-layout` become class names and their captions (`resolve_classes`); a class
probability matrix becomes the review order (`review_ranks`: the smallest margin between the
top two scores first). `label` and the Label Studio backend share both, so a backend's
prediction score sorts tasks exactly as `review_rank` orders label's output."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .captions import DEFAULT_TEMPLATE, Ontology, check_template, load_ontology, nfc, render
from .errors import OptionError
from .formats import layout as clip
from .formats.review import UNCERTAIN
from .scoring import Classes


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


def margins(probs: np.ndarray) -> np.ndarray:
    """Per row, the top score minus the second (the top score alone for one class): the
    uncertainty `review_ranks` orders by, smallest first."""
    if not len(probs):
        return np.zeros(0)
    top2 = -np.sort(-np.asarray(probs, np.float64), axis=1)[:, :2]
    return top2[:, 0] - (top2[:, 1] if top2.shape[1] > 1 else 0.0)


def review_ranks(probs: np.ndarray, rels: list[str]) -> list[int]:
    """1 = review first: the smallest margin between the top two scores; ties by path."""
    if not len(probs):
        return []
    gap = margins(probs)
    order = sorted(range(len(rels)), key=lambda i: (float(gap[i]), rels[i]))
    ranks = [0] * len(rels)
    for rank, i in enumerate(order, 1):
        ranks[i] = rank
    return ranks


def training_set(train_from: str | Path, cls: Classes | None) -> tuple[Classes, clip.Labeled]:
    """--train-from: the layout's classes and captions (or, with --classes/--ontology, the
    given ones, whose names must be the layout's) and its labeled images."""
    lay = clip.read_layout(train_from)
    data = clip.read_labeled(train_from, [s.name for s in lay.splits])
    if cls is None:
        return Classes(data.classes, [[c] for c in data.captions]), data
    if sorted(cls.names) != data.classes:
        missing, extra = sorted(set(data.classes) - set(cls.names)), sorted(set(cls.names) - set(data.classes))
        raise OptionError(f"--train-from {train_from}: its classes differ from the ones given"
                          + (f"; not given: {', '.join(missing)}" if missing else "")
                          + (f"; not in the layout: {', '.join(extra)}" if extra else ""),
                          hint="give the layout's class names, or leave --classes/--ontology out to use its captions")
    # the labels index the layout's sorted classes; the probe's rows follow the order given
    order = [cls.names.index(n) for n in data.classes]
    data.labels, data.classes = [order[i] for i in data.labels], list(cls.names)
    return cls, data


def classes_and_training(classes: str | list[str] | None = None, ontology: str | Path | None = None,
                         from_layout: str | Path | None = None, template: str = DEFAULT_TEMPLATE,
                         train_from: str | Path | None = None) -> tuple[Classes, clip.Labeled | None]:
    """The classes, and with --train-from the labeled layout's images (its classes and
    captions too, unless --classes or --ontology name them)."""
    if train_from is None:
        return resolve_classes(classes, ontology, from_layout, template), None
    if from_layout:
        raise OptionError("give --train-from or --from-layout, not both",
                          hint="--train-from takes the classes and captions from the layout too")
    given = resolve_classes(classes, ontology, None, template) if (classes or ontology) else None
    return training_set(train_from, given)
