"""check: one pass over a CLIP layout that finds what to fix before training or benchmarking
on it -- leakage between splits, near-duplicates, bad images, suspect labels, outliers,
classes CLIP confuses, thin classes -- as a report (JSON, and a page to look at) and as a gate
(`fail_on`). Every kind, its rule and its threshold: formats/check.md.

Images are embedded through the one embedding path; the pixel measures (quality and the
near-duplicate signatures) are taken in that same decode. From an embeddings folder, nothing
is decoded but the few images a near-duplicate candidate needs.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .. import probe, quality
from ..embedding.spec import EngineSpec
from ..errors import LayoutError, OptionError, SourceError
from ..formats import layout as clip
from ..fsutil import refuse_inside, write_report
from ..index import _groups, nearest, top_k

KINDS = ("leakage", "duplicates", "quality", "label", "outlier", "captions", "balance")
PIXEL_KINDS = ("leakage", "duplicates", "quality")  # need the pixel measures
MODEL_KINDS = ("label", "captions")  # need the model's text side
FORMAT_VERSION = 1
# Defaults of every threshold (`thresholds=`, `--threshold NAME=VALUE`); formats/check.md says how each was chosen.
THRESHOLDS: dict[str, float] = {
    "near": 0.96,            # pixel similarity that confirms a near-duplicate
    "clip_candidate": 0.80,  # cosine from which a CLIP neighbour is a candidate
    "neighbours": 10,        # CLIP neighbours per image looked at
    "outlier_z": 6.0,        # robust z-score of the distance to the class's neighbours
    "outlier_gap": 0.05,     # ... and at least this far (cosine distance) above the class's median
    "confused": 0.25,        # share of a class's images zero-shot gives to one other class
    "min_class": 5,          # a class with fewer images (all splits) is too small
    "min_class_share": 0.2,  # ... or with less than this share of the median class
    **quality.THRESHOLDS,
}
PIXEL_NEIGHBOURS = 5  # pixel-signature neighbours per image (plain and mirrored) looked at
LABEL_SAMPLE = 20_000  # the label probe is cross-validated on at most this many images
LABEL_BUDGET = 64_000  # ... and images x classes (4,000 x 16 classes: about 20 s on 2 cores)
CHUNK = 65_536  # rows scored at a time
MAP_POINTS = 1_000  # points drawn on the 2-D map (t-SNE of 1,000 points: seconds)
OUTLIER_K = 5
Progress = Callable[[str, int, int], None]


@dataclass
class CheckReport:
    layout: Path
    splits: list[str]
    classes: list[str]
    captions: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> images
    images: int                          # images checked (readable, or rows of the embeddings folder)
    kinds: list[str]
    findings: list[dict]
    thresholds: dict[str, float]
    engine: str = ""
    source: str = "images"               # "images" or the embeddings folder
    cache_hits: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    zero_shot: dict = field(default_factory=dict)   # confusion matrix, per-class accuracy, closest captions
    label_scorer: str = ""
    map: dict = field(default_factory=dict)         # method, points (x, y, class, path, flagged kinds)
    measured: dict[str, str] = field(default_factory=dict)  # how the pixel measures were taken
    gate: dict = field(default_factory=dict)        # fail_on, baseline, new ids, failed
    seconds: float = 0.0

    @property
    def by_kind(self) -> dict[str, int]:
        out = {k: 0 for k in self.kinds}
        for f in self.findings:
            out[f["kind"]] = out.get(f["kind"], 0) + 1
        return out

    @property
    def failed(self) -> bool:
        return bool(self.gate.get("failed"))

    def to_dict(self) -> dict:
        return {"format": FORMAT_VERSION, "layout": str(self.layout), "source": self.source, "engine": self.engine,
                "splits": self.splits, "classes": self.classes, "captions": self.captions, "counts": self.counts,
                "images": self.images, "kinds": self.kinds, "thresholds": self.thresholds,
                "summary": self.by_kind, "gate": self.gate, "findings": self.findings,
                "unreadable": self.unreadable, "notes": self.notes, "zero_shot": self.zero_shot,
                "label_scorer": self.label_scorer,
                # how many images took each road depends on the cache, not the layout: left out,
                # so that the same layout gives the same bytes, cold cache or warm
                "measured": {k: v for k, v in self.measured.items() if k == "pass"},
                "map": {k: v for k, v in self.map.items() if k != "points"}}


def _finding(kind: str, type_: str, paths: Sequence[str], message: str, **extra) -> dict:
    """A finding with a stable id: the same problem gets the same id in every run (what a
    baseline compares), whatever else the run found."""
    key = "\0".join([kind, type_, *sorted(paths), *map(str, extra.get("classes", ())), str(extra.get("split", ""))])
    fid = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
    return {"id": fid, "kind": kind, "type": type_, "paths": list(paths), "message": message, **extra}


# ---------------------------------------------------------------- the data

class _Under(Sequence[Path]):
    """root / rel[i], made when asked: a list of 1,000,000 Path objects holds 260 MB for the
    whole run, and check needs a path only for the few images it decodes or shows."""

    def __init__(self, root: Path, rel: list[str]) -> None:
        self.root, self.rel = root, rel

    def __len__(self) -> int:
        return len(self.rel)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self.root / r for r in self.rel[i]]
        return self.root / self.rel[i]


@dataclass
class _Data:
    """The images checked, row by row: path, path relative to the layout, split, class."""

    root: Path
    classes: list[str]
    captions: list[str]
    splits: list[str]
    counts: dict[str, dict[str, int]]
    paths: Sequence[Path]
    rel: list[str]
    split: np.ndarray   # split index per row
    label: np.ndarray   # class index per row
    matrix: np.ndarray  # unit embeddings, row per image
    measured: list      # quality.Measured or None per row


def _layout(root: Path) -> clip.Labeled:
    names = [s.name for s in clip.read_layout(root).splits]
    return clip.read_labeled(root, names, min_classes=0)


def _counts(lab: clip.Labeled, lay_splits: list[str]) -> dict[str, dict[str, int]]:
    counts = {s: {} for s in lay_splits}
    for s, y in zip(lab.image_splits, lab.labels):
        counts[s][lab.classes[y]] = counts[s].get(lab.classes[y], 0) + 1
    return counts


# ---------------------------------------------------------------- near-duplicates and leakage

def _signature_bank(measured: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows with pixels, their signatures, their mirrored signatures). Only measured rows get
    one: from an embeddings folder almost none are, and a zero row for each of 1,000,000 images
    (and its mirror) would take 6 GB."""
    live = np.array([i for i, m in enumerate(measured) if m is not None], np.int64)
    sig = quality.signatures([measured[i].thumb for i in live]) if len(live) \
        else np.zeros((0, quality.THUMB * quality.THUMB * 3), np.float32)
    return live, sig, quality.flipped(sig)


def _candidates(matrix: np.ndarray, live: np.ndarray, sig: np.ndarray, flip: np.ndarray, th: dict,
                index_dir, notes: list[str]) -> np.ndarray:
    """Candidate pairs (i < j), as an (m, 2) array: each image's CLIP neighbours above the
    candidate cosine, and its neighbours by pixel signature (plain and mirrored) among the
    rows `live` whose signatures `sig` are."""
    n = len(matrix)
    pairs = []
    k = int(th["neighbours"])
    if n > 1 and k > 0:
        idx, sim = nearest(matrix, k, index_dir=index_dir, notes=notes)
        rows = np.repeat(np.arange(n), idx.shape[1])
        keep = (idx.reshape(-1) >= 0) & (sim.reshape(-1) >= th["clip_candidate"])
        pairs.append(np.stack([rows[keep], idx.reshape(-1)[keep]], axis=1))
    some = np.abs(sig).sum(axis=1) > 0  # a constant picture correlates with nothing
    if not some.all():
        live, sig, flip = live[some], sig[some], flip[some]
    if len(live) > 1:
        kp = min(PIXEL_NEIGHBOURS, len(live) - 1)
        for queries, self_match in ((sig, True), (flip, False)):
            idx, _ = top_k(sig, queries, kp + 1, exact=None, notes=None)
            rows = np.repeat(live, idx.shape[1])
            cols = idx.reshape(-1)
            ok = cols >= 0
            cand = np.stack([rows[ok], live[cols[ok]]], axis=1)
            pairs.append(cand[cand[:, 0] != cand[:, 1]] if self_match else cand)
    if not pairs:
        return np.zeros((0, 2), np.int64)
    allp = np.sort(np.concatenate(pairs).astype(np.int64), axis=1)
    keys = np.unique(allp[allp[:, 0] != allp[:, 1]] @ np.array([n, 1], np.int64))
    return np.stack([keys // n, keys % n], axis=1)


def _near(d: _Data, th: dict, sha: np.ndarray | None, index_dir, notes: list[str],
          decode_missing: Callable[[list[int]], None] | None) -> tuple[list[dict], list[dict]]:
    """(leakage findings, duplicates findings)."""
    n = len(d.paths)
    cand = _candidates(d.matrix, *_signature_bank(d.measured), th, index_dir, notes)
    if decode_missing is not None and len(cand):
        need = sorted({int(i) for i in cand.reshape(-1) if d.measured[i] is None})
        if need:
            decode_missing(need)
    exact_edges: list[tuple[int, int]] = []
    if sha is not None:  # the same file bytes: exact, whatever the embeddings say
        order = np.argsort(sha, kind="stable")  # equal hashes side by side, each run in row order
        same = np.flatnonzero(sha[order][1:] == sha[order][:-1]) + 1
        run_start = np.maximum.accumulate(np.where(np.r_[True, sha[order][1:] != sha[order][:-1]],
                                                   np.arange(len(order)), 0))
        exact_edges = [(int(order[run_start[k]]), int(order[k])) for k in same]
    edges: dict[tuple[int, int], tuple[str, float, float]] = {}
    for i, j in exact_edges:
        edges[(i, j)] = ("exact", 1.0, float(d.matrix[i] @ d.matrix[j]))
    unconfirmed = 0
    if len(cand):
        ok = np.array([d.measured[i] is not None and d.measured[j] is not None for i, j in cand], bool)
        unconfirmed = int((~ok).sum())
        c = cand[ok]
        if len(c):
            thumbs = [m.thumb if m is not None else b"" for m in d.measured]
            pix = quality.crop_similarity(thumbs, c)
            cos = np.einsum("pd,pd->p", d.matrix[c[:, 0]], d.matrix[c[:, 1]])
            for (i, j), p, cs in zip(c.tolist(), pix.tolist(), cos.tolist()):
                if p >= th["near"] and (i, j) not in edges:
                    edges[(i, j)] = ("near", p, cs)
    if unconfirmed:
        notes.append(f"{unconfirmed} near-duplicate candidate pair(s) could not be confirmed: an image's pixels "
                     "could not be read (formats/check.md)")
    _exact_by_pixels(d, edges)
    leak, dups = [], []
    for g in _groups(n, list(edges)):
        members = set(g)
        ge = [(e, v) for e, v in edges.items() if e[0] in members]
        splits = sorted({d.splits[d.split[i]] for i in g}, key=d.splits.index)
        kind_type = "exact" if all(v[0] == "exact" for _, v in ge) else "near"
        pixel = min(v[1] for _, v in ge)
        cosine = min(v[2] for _, v in ge)
        paths = [d.rel[i] for i in sorted(g, key=lambda i: (d.split[i], d.rel[i]))]
        labels = sorted({d.classes[d.label[i]] for i in g})
        extra = {"splits": [d.splits[d.split[i]] for i in sorted(g, key=lambda i: (d.split[i], d.rel[i]))],
                 "pixel_similarity": round(pixel, 4), "clip_cosine": round(cosine, 4), "labels": labels}
        if len(splits) > 1:
            keep = splits[0] if "train" not in splits else "train"
            drop = [d.rel[i] for i in g if d.splits[d.split[i]] != keep]
            leak.append(_finding("leakage", kind_type, paths,
                                 f"copies in {' and '.join(splits)}: {', '.join(paths[:4])}"
                                 + (f" (+{len(paths) - 4})" if len(paths) > 4 else ""),
                                 drop=sorted(drop), **extra))
        else:
            dups.append(_finding("duplicates", kind_type, paths,
                                 f"{len(paths)} copies in {splits[0]}: {', '.join(paths[:4])}"
                                 + (f" (+{len(paths) - 4})" if len(paths) > 4 else ""), **extra))
    return leak, dups


def _exact_by_pixels(d: _Data, edges: dict) -> None:
    """A near pair of the same displayed size whose signatures agree to the last digit is
    decoded in full: the same pixels make it exact (a re-saved or re-tagged file)."""
    from ..images import Unreadable, open_image

    cache: dict[int, str | None] = {}

    def phash(i: int) -> str | None:
        if i not in cache:
            try:
                from PIL import ImageOps

                cache[i] = quality.pixel_hash(ImageOps.exif_transpose(open_image(d.paths[i])).convert("RGB"))
            except (Unreadable, OSError, ValueError):
                cache[i] = None
        return cache[i]

    for (i, j), (t, p, cs) in list(edges.items()):
        if t != "near" or p < 0.999:
            continue
        mi, mj = d.measured[i], d.measured[j]
        if mi is None or mj is None or (mi["width"], mi["height"]) != (mj["width"], mj["height"]):
            continue
        hi, hj = phash(i), phash(j)
        if hi is not None and hi == hj:
            edges[(i, j)] = ("exact", 1.0, cs)


# ---------------------------------------------------------------- quality

def _quality(d: _Data, th: dict, unreadable: dict[str, str], root: Path) -> list[dict]:
    out = []
    for p, why in sorted(unreadable.items()):
        rel = _rel(Path(p), root)
        out.append(_finding("quality", "undecodable", [rel], f"{rel}: undecodable ({why})", reason=why))
    rows = [i for i, m in enumerate(d.measured) if m is not None]
    if not rows:
        return out
    values = np.stack([d.measured[i].values for i in rows])
    issues = quality.quality_issues(values, th)
    for i, found in zip(rows, issues):
        for t, score in found:
            out.append(_finding("quality", t, [d.rel[i]], f"{d.rel[i]}: {t.replace('_', ' ')} ({score:.3g})",
                                score=round(score, 4), label=d.classes[d.label[i]]))
    return out


def _rel(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return p.as_posix()


# ---------------------------------------------------------------- labels, outliers, captions, balance

def _label(d: _Data, text: np.ndarray, scale: float, folds: int, seed: int, report: CheckReport) -> list[dict]:
    """audit's rule: out-of-fold probabilities of the text-initialised probe, then confident
    learning. The probe is cross-validated on at most LABEL_SAMPLE images and LABEL_BUDGET
    image-classes (a stratified sample); the images outside the sample are scored by its fit
    on the sample, which never saw them. A sample of fewer than two images per class is no
    probe: zero-shot scores every image (it never saw any). Scored in chunks: the matrix of
    probabilities is never whole."""
    n, k = len(d.label), len(d.classes)
    if n < 2:
        report.notes.append("label: fewer than two images, nothing to cross-validate")
        return []
    counts = np.bincount(d.label, minlength=k)
    for c in np.flatnonzero((counts > 0) & (counts < probe.MIN_PER_CLASS)):
        report.notes.append(f"label: class {d.classes[c]!r} has {counts[c]} image: it is scored zero-shot (its caption)")
    size = min(n, LABEL_SAMPLE, LABEL_BUDGET // k)
    rng = np.random.default_rng(seed)
    fit, oof, sample = None, None, np.zeros(0, np.int64)
    if size >= min(n, 2 * k):
        if size < n:
            by_class = np.argsort(d.label, kind="stable")
            starts = np.searchsorted(d.label[by_class], np.arange(k + 1))
            sample = np.sort(np.concatenate([
                rng.permutation(by_class[starts[c]:starts[c + 1]])[:max(probe.MIN_PER_CLASS, int(size * counts[c] / n))]
                for c in range(k)]))
            report.notes.append(f"label: the probe is cross-validated on a stratified sample of {len(sample)} images; "
                                f"the other {n - len(sample)} are scored by its fit on that sample")
        else:
            sample = np.arange(n)
        feats = d.matrix[sample].astype(np.float64)
        fit = probe.fit_probe(feats, d.label[sample], text, scale, folds=folds, seed=seed)
        oof = probe.out_of_fold_proba(feats, d.label[sample], text, scale, fitted=fit)
        report.label_scorer = fit.scorer + (f", cross-validated top-1 {fit.cv_accuracy:.1%}"
                                            if fit.cv_accuracy is not None else "")
    else:
        report.label_scorer = "zero-shot"
        report.notes.append(f"label: {k} classes are too many to cross-validate a probe within its budget; "
                            "zero-shot probabilities (which saw no image) are judged instead")
    where = np.full(n, -1, np.int64)
    where[sample] = np.arange(len(sample))

    def chunks():
        for a in range(0, n, CHUNK):
            x = d.matrix[a:a + CHUNK].astype(np.float64)
            p = fit.proba(x) if fit is not None else probe.zero_shot_proba(x, text, scale)
            inside = where[a:a + CHUNK] >= 0
            if inside.any():
                p[inside] = oof[where[a:a + CHUNK][inside]]
            yield a, p

    sums, cnt = np.zeros(k), np.zeros(k)
    for a, p in chunks():
        s_, c_ = probe.class_thresholds(p, d.label[a:a + CHUNK], k)
        sums += s_
        cnt += c_
    thresholds = np.divide(sums, cnt, out=np.full(k, np.inf), where=cnt > 0)
    flagged = []
    for a, p in chunks():
        flagged += [i for i in probe.find_label_issues(p, d.label[a:a + CHUNK], thresholds, offset=a) if i.flagged]
    flagged.sort(key=lambda i: (-i.score, i.index))
    return [_finding("label", "suspect", [d.rel[i.index]],
                     f"{d.rel[i.index]}: labeled {d.classes[i.label]}, looks like {d.classes[i.suggested]}",
                     label=d.classes[i.label], suggested=d.classes[i.suggested], score=round(i.score, 4))
            for i in flagged]


def _outliers(d: _Data, th: dict, index_dir, notes: list[str]) -> list[dict]:
    """Per class: each image's mean cosine distance to its nearest same-class images; flagged
    when far above the class's own median (robust z-score, median absolute deviation)."""
    out = []
    small = []
    by_class = np.argsort(d.label, kind="stable")
    starts = np.searchsorted(d.label[by_class], np.arange(len(d.classes) + 1))
    for c, name in enumerate(d.classes):
        idx = by_class[starts[c]:starts[c + 1]]
        if len(idx) < 4:
            if len(idx):
                small.append(name)
            continue
        k = min(OUTLIER_K, len(idx) - 1)
        _, sim = nearest(np.ascontiguousarray(d.matrix[idx]), k, notes=notes)
        dist = 1.0 - sim
        score = np.where(np.isfinite(dist), dist, 0).sum(axis=1) / np.maximum(np.isfinite(dist).sum(axis=1), 1)
        med = float(np.median(score))
        mad = float(np.median(np.abs(score - med))) * 1.4826
        z = (score - med) / max(mad, 1e-6)
        for r in np.flatnonzero((z > th["outlier_z"]) & (score - med > th["outlier_gap"])):
            i = idx[r]
            out.append(_finding("outlier", "far", [d.rel[i]],
                                f"{d.rel[i]}: unlike the other {name} images (distance {score[r]:.3f}, class median {med:.3f})",
                                label=name, score=round(float(score[r]), 4), class_median=round(med, 4),
                                z=round(float(min(z[r], 1e6)), 2)))
    if small:
        notes.append(f"outlier: {len(small)} class(es) with fewer than 4 images not scored ({', '.join(small[:5])})")
    return sorted(out, key=lambda f: -f["z"])


def _captions(d: _Data, text: np.ndarray, th: dict, report: CheckReport) -> list[dict]:
    """Zero-shot with the layout's captions: the confusion matrix, per-class accuracy, the
    closest caption pairs, and a finding per class pair that zero-shot confuses."""
    k = len(d.classes)
    pred = np.concatenate([(d.matrix[a:a + CHUNK] @ text.T.astype(np.float32)).argmax(axis=1)
                           for a in range(0, len(d.label), CHUNK)]) if len(d.label) else np.zeros(0, np.int64)
    conf = np.zeros((k, k), np.int64)
    np.add.at(conf, (d.label, pred), 1)
    per = {d.classes[c]: (round(float(conf[c, c] / conf[c].sum()), 4) if conf[c].sum() else None) for c in range(k)}
    tsim = text @ text.T
    iu = np.triu_indices(k, 1)
    order = np.argsort(-tsim[iu], kind="stable")[:20]
    closest = [{"classes": [d.classes[iu[0][o]], d.classes[iu[1][o]]], "captions": [d.captions[iu[0][o]], d.captions[iu[1][o]]],
                "cosine": round(float(tsim[iu][o]), 4)} for o in order]
    report.zero_shot = {"top1": round(float((pred == d.label).mean()), 4) if len(pred) else None,
                        "per_class_accuracy": per, "confusion_matrix": conf.tolist(), "closest_captions": closest}
    out = []
    for a in range(k):
        for b in range(k):
            if a == b or not conf[a].sum():
                continue
            share = conf[a, b] / conf[a].sum()
            if share >= th["confused"] and conf[a, b] >= 2:
                out.append(_finding("captions", "confused", [], f"zero-shot calls {conf[a, b]} of {conf[a].sum()} "
                                    f"{d.classes[a]} images {d.classes[b]} (captions {d.captions[a]!r} / "
                                    f"{d.captions[b]!r}, text cosine {tsim[a, b]:.3f})",
                                    classes=[d.classes[a], d.classes[b]], share=round(float(share), 4),
                                    images=int(conf[a, b]), caption_cosine=round(float(tsim[a, b]), 4)))
    for a, b in zip(*iu):
        if d.captions[a].strip().casefold() == d.captions[b].strip().casefold():
            out.append(_finding("captions", "same_caption", [], f"{d.classes[a]} and {d.classes[b]} have the same "
                                f"caption {d.captions[a]!r}", classes=[d.classes[a], d.classes[b]]))
    return sorted(out, key=lambda f: -f.get("share", 1.0))


def _balance(counts: dict[str, dict[str, int]], classes: list[str], th: dict) -> list[dict]:
    total = {c: sum(counts[s].get(c, 0) for s in counts) for c in classes}
    med = float(np.median(list(total.values()))) if total else 0.0
    out = []
    for c in classes:
        if total[c] < th["min_class"] or total[c] < th["min_class_share"] * med:
            out.append(_finding("balance", "too_few", [], f"class {c!r} has {total[c]} image(s) (median class: {med:g})",
                                classes=[c], images=total[c], median=med))
    for s, per in counts.items():
        if not per:
            continue
        missing = [c for c in classes if not per.get(c)]
        for c in missing:
            out.append(_finding("balance", "missing", [], f"split {s} has no {c!r} images", classes=[c], split=s))
    return out


# ---------------------------------------------------------------- the map

def _map(d: _Data, findings: list[dict], seed: int) -> dict:
    """2-D coordinates of (at most MAP_POINTS) embeddings, flagged images first: UMAP when
    umap-learn is installed, else t-SNE (scikit-learn), else PCA."""
    flagged: dict[str, list[str]] = {}
    for f in findings:
        for p in f["paths"]:
            flagged.setdefault(p, [])
            if f["kind"] not in flagged[p]:
                flagged[p].append(f["kind"])
    n = len(d.paths)
    if n < 3:
        return {"method": "none", "points": []}
    first = [i for i in range(n) if d.rel[i] in flagged][:MAP_POINTS // 2]
    rest = np.setdiff1d(np.arange(n), first)
    rng = np.random.default_rng(seed)
    take = np.sort(np.concatenate([np.array(first, np.int64),
                                   rng.choice(rest, min(len(rest), MAP_POINTS - len(first)), replace=False)]))
    x = d.matrix[take].astype(np.float64)
    xy, method = None, ""
    try:
        import umap  # noqa: F401

        xy = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, len(take) - 1)).fit_transform(x)
        method = "UMAP (umap-learn)"
    except Exception:
        pass
    if xy is None:
        try:
            from sklearn.manifold import TSNE

            xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, (len(take) - 1) / 3),
                      metric="cosine", max_iter=500).fit_transform(x)
            method = "t-SNE (scikit-learn)"
        except ImportError:
            c = x - x.mean(axis=0)
            _, _, vt = np.linalg.svd(c, full_matrices=False)
            xy = c @ vt[:2].T
            method = "PCA"
    points = [{"x": float(xy[r, 0]), "y": float(xy[r, 1]), "label": d.classes[d.label[i]], "path": d.rel[i],
               "split": d.splits[d.split[i]], "flagged": flagged.get(d.rel[i], [])} for r, i in enumerate(take)]
    return {"method": method, "shown": len(take), "of": n, "points": points}


# ---------------------------------------------------------------- the gate

def load_baseline(path: str | Path) -> set[str]:
    """The finding ids of an earlier report (its JSON)."""
    from ..textfiles import read_text

    p = Path(path)
    if not p.is_file():
        raise OptionError("--baseline: no such file", file=p, hint="pass the --json report of an earlier check")
    try:
        data = json.loads(read_text(p, OptionError))
    except json.JSONDecodeError as e:
        raise OptionError(f"malformed JSON: {e.msg}", file=p, where=f"line {e.lineno}, column {e.colno}",
                          hint="pass the --json report of an earlier check") from None
    if not isinstance(data, dict) or not isinstance(data.get("findings"), list) \
            or not all(isinstance(f, dict) and isinstance(f.get("id"), str) for f in data["findings"]):
        raise OptionError("not a check report: no list of findings with ids", file=p,
                          hint="pass the --json report of an earlier check")
    return {f["id"] for f in data["findings"]}


def _gate(report: CheckReport, fail_on: Sequence[str], baseline: set[str] | None, baseline_path) -> None:
    hits = [f for f in report.findings if f["kind"] in fail_on]
    new = [f for f in hits if baseline is None or f["id"] not in baseline]
    report.gate = {"fail_on": list(fail_on), "baseline": str(baseline_path) if baseline_path else None,
                   "failing": [f["id"] for f in new], "failed": bool(fail_on) and bool(new)}


def parse_kinds(text: str | Sequence[str] | None, what: str) -> list[str]:
    """`leakage,label` (or a list) -> kinds, in KINDS order; `all` is every kind."""
    if text is None:
        return []
    items = [t.strip() for part in ([text] if isinstance(text, str) else text) for t in part.split(",") if t.strip()]
    if "all" in items:
        return list(KINDS)
    bad = [t for t in items if t not in KINDS]
    if bad:
        raise OptionError(f"{what} {bad[0]!r} is not a kind: {', '.join(KINDS)} (or all)")
    return [k for k in KINDS if k in items]


def parse_thresholds(items: Sequence[str] | dict | None) -> dict[str, float]:
    """NAME=VALUE pairs (or a dict) over the defaults."""
    th = dict(THRESHOLDS)
    pairs = items.items() if isinstance(items, dict) else [(i.partition("=")[0].strip(), i.partition("=")[2]) for i in items or ()]
    for name, value in pairs:
        if name not in th:
            raise OptionError(f"--threshold {name!r} is not a threshold: {', '.join(sorted(th))}")
        try:
            th[name] = float(value)
        except (TypeError, ValueError):
            raise OptionError(f"--threshold {name}={value!r}: not a number") from None
        if not math.isfinite(th[name]):  # nan compares false with everything: the check would be off
            raise OptionError(f"--threshold {name}={value!r}: not a finite number")
    return th


# ---------------------------------------------------------------- the command

def check(layout: str | Path, *, kinds: Sequence[str] | str | None = None, spec: EngineSpec = EngineSpec(),
          cache_dir: str | Path | None | bool = None, embeddings: str | Path | None = None,
          json_path: str | Path | None = None, html_path: str | Path | None = None,
          fail_on: Sequence[str] | str | None = None, baseline: str | Path | None = None,
          thresholds: Sequence[str] | dict | None = None, folds: int = 5, seed: int = 0,
          progress: Progress | None = None) -> CheckReport:
    """Check a CLIP layout for every kind (or `kinds`); `report.failed` is the gate's verdict:
    a finding of a `fail_on` kind (not in the `baseline` report, when given)."""
    t0 = time.perf_counter()
    root = Path(layout)
    refuse_inside((json_path, html_path), [("the layout", root), ("the embeddings folder", embeddings)])
    refuse_inside((cache_dir,), [("the layout", root), ("the embeddings folder", embeddings)])
    th = parse_thresholds(thresholds)
    probe.check_folds(folds)
    gate_kinds = parse_kinds(fail_on, "--fail-on")
    chosen = parse_kinds(kinds, "--kinds") if kinds else [k for k in KINDS if not (embeddings and k == "quality")]
    base = load_baseline(baseline) if baseline is not None else None
    if baseline is not None and not gate_kinds:
        raise OptionError("--baseline needs --fail-on: it says which new findings fail the gate")
    if html_path is not None:
        from ..checkpage import require

        require()
    lab = _layout(root)
    lay_splits = [s.name for s in clip.read_layout(root).splits]
    counts = _counts(lab, lay_splits)
    report = CheckReport(root, lay_splits, lab.classes, lab.captions, counts, 0, chosen, [], th)
    if not lab.images:
        raise LayoutError("no images in the layout", file=root, hint="clipdata inspect shows what it holds")
    def tick(phase: str) -> Callable[[int, int], None]:
        return (lambda done, total: progress(phase, done, total)) if progress else (lambda done, total: None)

    want_pixels = any(k in chosen for k in PIXEL_KINDS)
    needs_text = any(k in chosen for k in MODEL_KINDS) and len(lab.classes) >= 2
    if any(k in chosen for k in MODEL_KINDS) and len(lab.classes) < 2:
        report.notes.append(f"label and captions need two classes; the layout has {len(lab.classes)}")
    if embeddings is not None:
        d, text, scale, sha = _from_embeddings(root, lab, embeddings, spec, cache_dir, needs_text, report)
        decode = _decoder(d, spec, report, tick("decoding")) if want_pixels else None
        if "quality" in chosen:
            decode(list(range(len(d.paths))))
            report.measured = {"pass": "images decoded once for the pixel measures (no embedding)"}
    else:
        index = {str(p): i for i, p in enumerate(lab.images)}  # not built from a folder: 160 MB at 1,000,000
        d, text, scale, sha = _from_images(root, lab, index, spec, cache_dir, want_pixels, needs_text, report, tick)
        decode = None
    lab = clip.Labeled(lab.splits, lab.classes, lab.captions, [], [])  # d has the rows: let the Path list go
    report.images = len(d.paths)
    report.source = str(embeddings) if embeddings is not None else "images"
    index_dir = Path(embeddings) if embeddings is not None else None
    findings: list[dict] = []
    if "leakage" in chosen or "duplicates" in chosen:
        tick("near-duplicates")(0, 1)
        leak, dups = _near(d, th, sha, index_dir, report.notes, decode)
        findings += (leak if "leakage" in chosen else []) + (dups if "duplicates" in chosen else [])
        tick("near-duplicates")(1, 1)
    if "quality" in chosen:
        findings += _quality(d, th, report.unreadable, root)
    if "label" in chosen and needs_text and len(d.paths):
        tick("label")(0, 1)
        findings += _label(d, text, scale, folds, seed, report)
        tick("label")(1, 1)
    if "outlier" in chosen:
        tick("outliers")(0, 1)
        findings += _outliers(d, th, index_dir, report.notes)
        tick("outliers")(1, 1)
    if "captions" in chosen and needs_text and len(d.paths):
        findings += _captions(d, text, th, report)
    if "balance" in chosen:
        findings += _balance(counts, lab.classes, th)
    report.findings = findings
    _gate(report, gate_kinds, base, baseline)
    if html_path is not None:
        tick("map")(0, 1)
        report.map = _map(d, findings, seed)
        tick("map")(1, 1)
        from ..checkpage import write_page

        write_page(Path(html_path), report)  # thumbnails from layout / path: what d.paths holds
    report.seconds = time.perf_counter() - t0
    if json_path is not None:
        write_report(Path(json_path), json.dumps(report.to_dict(), indent=1, ensure_ascii=False) + "\n")
    return report


def _from_images(root: Path, lab: clip.Labeled, index: dict, spec: EngineSpec, cache_dir, want_pixels: bool,
                 needs_text: bool, report: CheckReport, tick):
    from ..embedding import embed_paths, measure_images, model_scalars
    from ..imagefiles import sha256_file
    from ..scoring import Classes, class_embeddings

    measure = quality.measure if want_pixels else None
    with embed_paths(spec, lab.images, cache_dir, tick("embedding"), measure) as emb:
        report.engine, report.cache_hits = emb.engine.describe(), emb.stats.cache_hits
        report.unreadable = {**emb.stats.unreadable, **emb.stats.failed}
        measured = dict(emb.stats.measured)
        rest = [p for p in emb.paths if str(p) not in measured] if want_pixels else []
        if rest:
            values, bad = measure_images(emb.engine, rest, quality.measure, spec, tick("measuring"))
            measured.update(values)
            report.unreadable.update(bad)
        if want_pixels:
            report.measured = {"pass": "in the embedding decode", "in_embedding_pass": len(emb.stats.measured),
                               "separate_pass": len(rest),
                               "why_separate": "cached embeddings: those images were not decoded to embed them"}
        text, scale = None, 100.0
        if needs_text:
            text = class_embeddings(emb.engine, Classes(lab.classes, [[c] for c in lab.captions]), emb.cache)
            _, scale, _ = model_scalars(emb.engine, emb.cache)
        keep = [i for i, p in enumerate(emb.paths) if str(p) in measured or not want_pixels]
        paths = [emb.paths[i] for i in keep]
        matrix = emb.matrix[keep]
    rows = [index[str(p)] for p in paths]
    d = _Data(root, lab.classes, lab.captions, report.splits, report.counts, paths,
              [p.relative_to(root).as_posix() for p in paths],
              np.array([report.splits.index(lab.image_splits[r]) for r in rows], np.int64),
              np.array([lab.labels[r] for r in rows], np.int64), matrix,
              [measured.get(str(p)) for p in paths])
    sha = _hashes([sha256_file(p) for p in paths]) if want_pixels else None
    return d, text, scale, sha


def _hashes(hexes: list[str]) -> np.ndarray:
    """SHA-256 hex digests as 64-byte strings in one array (64 MB at 1,000,000, not 180 MB of
    Python strings); an image without one gets a key no other row has."""
    return np.array([h.encode("ascii") if h else f"none{i}".encode() for i, h in enumerate(hexes)], "S64")


def _from_embeddings(root: Path, lab: clip.Labeled, folder, spec: EngineSpec, cache_dir, needs_text: bool,
                     report: CheckReport):
    """The layout's images matched to the rows of an embeddings folder by path."""
    from ..formats import embeddings as ef

    e = ef.read(folder)
    report.engine = f"{e.info.model} embeddings ({e.info.dtype}, {e.info.mode}) from {folder}"
    real = str(root.resolve())
    row_of: dict[str, int] = {}
    for r, p in enumerate(e.image_path):
        row_of.setdefault(p, r)
    pairs = []
    for i, p in enumerate(lab.images):  # embed writes resolved paths: the layout's root resolved, then the rest
        r = row_of.get(f"{real}/{p.relative_to(root).as_posix()}")
        if r is None:
            r = row_of.get(str(p))
        if r is not None:
            pairs.append((r, i))
    pairs.sort()  # the folder's row order: all rows in order need no copy of the matrix
    rows, keep = [r for r, _ in pairs], [i for _, i in pairs]
    missing = len(lab.images) - len(keep)
    if not keep:
        raise SourceError(f"none of the layout's {len(lab.images)} images is in this embeddings folder", file=folder,
                          hint=f"make it from the layout: clipdata embed {root} --out {folder}")
    if missing:
        report.notes.append(f"{missing} image(s) of the layout are not in {folder} and are not checked "
                            f"(run clipdata embed {root} --out {folder} again)")
    extra = len(e.image_path) - len(set(rows))
    if extra > 0:
        report.notes.append(f"{extra} row(s) of {folder} are not images of the layout; left out")
    rows_a = np.array(rows, np.int64)
    matrix = e.matrix[rows_a] if len(rows_a) != len(e.matrix) or not np.array_equal(rows_a, np.arange(len(e.matrix))) \
        else np.asarray(e.matrix)
    rel = [lab.images[i].relative_to(root).as_posix() for i in keep]
    d = _Data(root, lab.classes, lab.captions, report.splits, report.counts, _Under(root, rel), rel,
              np.array([report.splits.index(lab.image_splits[i]) for i in keep], np.int64),
              np.array([lab.labels[i] for i in keep], np.int64), matrix, [None] * len(rel))
    sha = _hashes([e.sha256[r] for r in rows])
    text, scale = None, 100.0
    if needs_text:
        text, scale = _text_for(e.info, lab, spec, cache_dir, folder)
    return d, text, scale, sha


def _text_for(info, lab: clip.Labeled, spec: EngineSpec, cache_dir, folder):
    """Caption embeddings from the model the folder was made with (its own, unless --model
    names another, which is refused: other models' vectors live in another space)."""
    from dataclasses import replace

    from ..embedding import Engine, model_scalars, open_cache
    from ..embedding.engine import DEFAULT_MODEL
    from ..formats import embeddings as ef
    from ..scoring import Classes, class_embeddings

    if spec.model == DEFAULT_MODEL and info.model != DEFAULT_MODEL:
        spec = replace(spec, model=info.model)
    engine = Engine(spec.check())
    if engine.identity.rsplit(":", 1)[0] != info.identity.rsplit(":", 1)[0]:
        raise OptionError(f"--model {spec.model} is not the model these embeddings were made with: "
                          f"{info.model} ({info.identity.rsplit(':', 1)[0]})", file=Path(folder) / ef.INFO_FILE,
                          hint=f"pass --model {info.model}, or leave --model out")
    with open_cache(engine, cache_dir) as cache:
        text = class_embeddings(engine, Classes(lab.classes, [[c] for c in lab.captions]), cache)
        _, scale, _ = model_scalars(engine, cache)
    return text, scale


def _decoder(d: _Data, spec: EngineSpec, report: CheckReport, progress):
    """Decode rows of an embeddings-folder check on demand (for their pixel measures)."""
    def decode(rows: list[int]) -> None:
        from ..images import Unreadable, open_image
        from PIL import ImageOps

        for n, i in enumerate(rows, 1):
            if d.measured[i] is None:
                try:
                    img = ImageOps.exif_transpose(open_image(d.paths[i]))
                    d.measured[i] = quality.measure(img.convert("RGB"), (img.height, img.width))
                except (Unreadable, OSError, ValueError) as e:
                    report.unreadable[str(d.paths[i])] = str(e).splitlines()[0] if str(e) else type(e).__name__
            if progress:
                progress(n, len(rows))
    return decode
