"""Learning from labeled images on their cached CLIP embeddings: a text-initialised few-shot
probe, out-of-fold probabilities with the confident-learning rule for label audits, and
prompt selection by cross-validation. Pure arithmetic on unit embeddings; no model here.

The probe is multinomial logistic regression, logits = X W^T + b, whose weights start at the
class text embeddings times CLIP's logit scale (W0 = scale * T) and are penalised towards them:

    W = alpha * W0 + D,   loss = mean cross-entropy + strength / 2 * (|D|^2 + |b|^2)

The scalar alpha (starting at 1) is free: it only rescales the zero-shot logits, which changes
no zero-shot decision but lets the data turn down text that misleads. An infinite strength
(or no training image) leaves W = W0, b = 0: exactly zero-shot. The
strength and a blend weight w, p = (1 - w) * zero-shot + w * probe (a mixture of the two
probability vectors), are chosen together by stratified k-fold cross-validation: the pair with
the best out-of-fold accuracy; zero-shot wins a tie (no evidence to move off it), other ties go
to the lower out-of-fold log-loss. w = 0 is zero-shot,
w = 1 the probe alone, anything between a blend; that name is the probe's `scorer`.
Zero-shot here is a softmax over scale * cosine (for SigLIP the argmax is the same).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

# Penalty strengths tried, strongest first (each fit warm-starts from the previous one).
STRENGTHS: tuple[float, ...] = tuple(10.0 ** e for e in range(1, -6, -1))  # 10 .. 1e-5
BLEND_WEIGHTS: tuple[float, ...] = tuple(i / 10 for i in range(11))
MIN_PER_CLASS = 2  # audit: a class with fewer labeled images is scored zero-shot


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def zero_shot_proba(features: np.ndarray, text: np.ndarray, scale: float) -> np.ndarray:
    return _softmax(scale * (np.asarray(features, np.float64) @ np.asarray(text, np.float64).T))


def stratified_folds(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Fold index per image: each class shuffled (seeded) and dealt round-robin, continuing
    the deal across classes so that fold sizes differ by at most one."""
    labels = np.asarray(labels)
    out = np.zeros(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    dealt = 0
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        out[idx] = (dealt + np.arange(len(idx))) % folds
        dealt += len(idx)
    return out


def _fit(x: np.ndarray, y: np.ndarray, w0: np.ndarray, strength: float, start: tuple | None = None
         ) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """Full-batch L-BFGS (torch, float64) of the penalised loss; returns (W, b, state), the
    state warm-starting the next, weaker, fit."""
    if not len(y) or math.isinf(strength):
        return w0.copy(), np.zeros(w0.shape[0]), None
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: faster here, and far faster on a shared machine
    try:
        return _lbfgs(torch, x, y, w0, strength, start)
    finally:
        torch.set_num_threads(threads)


def _lbfgs(torch, x, y, w0, strength, start):
    """W = alpha * W0 + D: D and b are penalised, the scalar alpha is not, so the data can
    turn down text embeddings that mislead (names that mean nothing) without paying for it;
    it only rescales the zero-shot logits, so it cannot change a zero-shot decision."""
    k = w0.shape[0]
    xt, yt, w0t = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w0)
    if start is None:
        start = (np.zeros_like(w0), np.zeros(k), np.ones(1))
    delta, bias, alpha = (torch.from_numpy(a.copy()).requires_grad_(True) for a in start)
    opt = torch.optim.LBFGS([delta, bias, alpha], lr=1.0, max_iter=300, history_size=20, tolerance_grad=1e-5,
                            tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = xt @ (alpha * w0t + delta).T + bias
        loss = torch.nn.functional.cross_entropy(logits, yt) + strength / 2 * (delta.square().sum() + bias.square().sum())
        loss.backward()
        return loss

    opt.step(closure)
    state = tuple(t.detach().numpy().copy() for t in (delta, bias, alpha))
    return (alpha * w0t + delta).detach().numpy(), bias.detach().numpy(), state


@dataclass
class Probe:
    """A fitted few-shot scorer. `proba` gives per-image class probabilities."""

    text: np.ndarray          # (k, d) unit class text embeddings
    scale: float
    weights: np.ndarray       # (k, d) probe weights (scale * text when untrained)
    bias: np.ndarray          # (k,)
    strength: float           # chosen penalty; inf = zero-shot
    weight: float             # chosen blend weight of the probe (0 = zero-shot)
    cv_accuracy: float | None  # the chosen scorer's out-of-fold accuracy; None without images
    cv_accuracies: dict[str, float] = field(default_factory=dict)  # best of each scorer kind
    oof: np.ndarray | None = None     # (n, k) out-of-fold probabilities of the chosen scorer
    folds: np.ndarray | None = None   # fold index per training image

    @property
    def scorer(self) -> str:
        if self.weight == 0 or math.isinf(self.strength):
            return "zero-shot"
        return "probe" if self.weight == 1 else "blend"

    def zero_shot(self, features: np.ndarray) -> np.ndarray:
        return zero_shot_proba(features, self.text, self.scale)

    def probe_proba(self, features: np.ndarray) -> np.ndarray:
        return _softmax(np.asarray(features, np.float64) @ self.weights.T + self.bias)

    def proba(self, features: np.ndarray) -> np.ndarray:
        """(n, k) probabilities of the chosen scorer: (1 - weight) * zero-shot + weight * probe."""
        if self.scorer == "zero-shot":
            return self.zero_shot(features)
        return (1 - self.weight) * self.zero_shot(features) + self.weight * self.probe_proba(features)


def _kind(strength: float, weight: float) -> str:
    if weight == 0 or math.isinf(strength):
        return "zero-shot"
    return "probe" if weight == 1 else "blend"


def check_folds(folds: int) -> None:
    """Folds are a user's option (--folds): fewer than two hold nothing out. Said before any
    image is embedded, never clamped silently."""
    from .errors import OptionError

    if folds < 2:
        raise OptionError(f"--folds {folds} must be at least 2 (cross-validation holds one fold out)")


def fit_probe(features: np.ndarray, labels: np.ndarray, text: np.ndarray, scale: float, *,
              strengths: Sequence[float] | None = None, folds: int = 5, seed: int = 0,
              blend_weights: Sequence[float] = BLEND_WEIGHTS) -> Probe:
    """Fit the text-initialised probe; strength and blend weight chosen by stratified k-fold CV.
    With no image it is zero-shot exactly; with one image there is nothing to hold out, so the
    strength and weight are the defaults' strongest (closest to zero-shot) and no CV is reported."""
    x = np.asarray(features, np.float64).reshape(len(labels), -1) if len(labels) else np.zeros((0, text.shape[1]))
    y = np.asarray(labels, np.int64)
    t = np.asarray(text, np.float64)
    w0 = scale * t
    grid = sorted(strengths if strengths is not None else STRENGTHS, reverse=True)
    n = len(y)
    if n < 2:
        return Probe(t, scale, w0.copy(), np.zeros(len(t)), math.inf, 0.0, None)
    k_folds = max(2, min(folds, n))
    fold = stratified_folds(y, k_folds, seed)
    zs = zero_shot_proba(x, t, scale)
    oof = {s: np.empty_like(zs) for s in grid}
    for f in range(k_folds):
        tr, te = fold != f, fold == f
        state = None
        for s in grid:  # strongest first, each warm-started from the last
            w, b, state = _fit(x[tr], y[tr], w0, s, state)
            oof[s][te] = _softmax(x[te] @ w.T + b)
    rows = np.arange(n)
    best: dict[str, tuple] = {}
    chosen = None
    for s in [math.inf] + grid:
        for w in blend_weights:
            p = zs if math.isinf(s) else (1 - w) * zs + w * oof[s]
            acc = float((p.argmax(axis=1) == y).mean())
            loss = float(-np.log(np.clip(p[rows, y], 1e-12, None)).mean())
            kind = _kind(s, w)
            key = (acc, kind == "zero-shot", -loss)  # zero-shot stays unless beaten on accuracy
            if kind not in best or key > best[kind][0]:
                best[kind] = (key, s, w, p)
            if chosen is None or key > chosen[0]:
                chosen = (key, s, w, p)
            if math.isinf(s):
                break  # every weight gives zero-shot
    (acc, _, _), s, w, p = chosen
    wt, bias, _ = _fit(x, y, w0, s)
    return Probe(t, scale, wt, bias, s, w, acc, {k: v[0][0] for k, v in best.items()}, p, fold)


def out_of_fold_proba(features: np.ndarray, labels: np.ndarray, text: np.ndarray, scale: float, *,
                      folds: int = 5, seed: int = 0, min_per_class: int = MIN_PER_CLASS,
                      fitted: Probe | None = None) -> np.ndarray:
    """(n, k) probabilities for each image from a scorer that never saw it (the probe's CV;
    `fitted`: that probe, already fitted on these images). Images of a class with fewer than
    `min_per_class` images get zero-shot probabilities."""
    y = np.asarray(labels, np.int64)
    probe = fitted or fit_probe(features, y, text, scale, folds=folds, seed=seed)
    zs = zero_shot_proba(features, text, scale)
    p = zs if probe.oof is None else probe.oof.copy()
    counts = np.bincount(y, minlength=len(text))
    few = counts[y] < min_per_class
    p[few] = zs[few]
    return p


@dataclass
class LabelIssue:
    index: int
    label: int
    suggested: int
    score: float    # best other class's probability minus the given label's: higher is more suspicious
    flagged: bool   # the confident-learning rule says the label is probably wrong


def class_thresholds(proba: np.ndarray, labels: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(sum of p[y == j, j], count of y == j) per class j: confident learning's thresholds are
    their ratio. Sums add up over chunks, so a set too large for one matrix is done in parts."""
    p = np.asarray(proba, np.float64)
    y = np.asarray(labels, np.int64)
    k = p.shape[1] if k is None else k
    return (np.bincount(y, weights=p[np.arange(len(y)), y], minlength=k), np.bincount(y, minlength=k).astype(np.float64))


def find_label_issues(proba: np.ndarray, labels: np.ndarray, thresholds: np.ndarray | None = None,
                      offset: int = 0) -> list[LabelIssue]:
    """Confident learning (Northcutt et al., cleanlab's find_label_issues): class j's threshold
    is the mean probability of j over the images labeled j. An image is flagged when its given
    label is below that label's threshold and another class reaches its own threshold; the
    suggestion is the most probable such class (else the most probable other class). Every
    image is returned, flagged first, then by score, both most suspicious first. `thresholds`
    (from `class_thresholds` over every part) and `offset` (the first row's index) let a large
    set be judged part by part."""
    p = np.asarray(proba, np.float64)
    y = np.asarray(labels, np.int64)
    n, k = p.shape
    rows = np.arange(n)
    if thresholds is None:
        sums, counts = class_thresholds(p, y, k)
        thresholds = np.divide(sums, counts, out=np.full(k, np.inf), where=counts > 0)
    own = p[rows, y]
    other = p.copy()
    other[rows, y] = -np.inf
    confident = np.where(other >= thresholds[None, :], other, -np.inf)
    has_confident = np.isfinite(confident.max(axis=1))
    suggested = np.where(has_confident, confident.argmax(axis=1), other.argmax(axis=1))
    flagged = (own < thresholds[y]) & has_confident
    score = other.max(axis=1) - own
    order = sorted(range(n), key=lambda i: (not flagged[i], -score[i], i))
    return [LabelIssue(offset + i, int(y[i]), int(suggested[i]), float(score[i]), bool(flagged[i])) for i in order]


# --- prompt selection -------------------------------------------------------------------------

EXHAUSTIVE_LIMIT = 4096  # per-class choices searched exhaustively up to this many combinations


@dataclass
class PromptChoice:
    """The chosen option per class (an index into that class's options)."""

    choice: list[int]
    mode: str                     # "set": one prompt set for all classes; "class": chosen per class
    cv_accuracy: float            # the selection procedure's accuracy on held-out folds
    cv_by_mode: dict[str, float]  # held-out accuracy of each procedure
    set_accuracy: list[float]     # each prompt set's accuracy on all the images (no choosing involved)
    swap_accuracy: list[list[float]]  # accuracy with class c's option o swapped into the final choice


def _objective(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, mean log-probability of the true class) over the last two axes (…, n, k)."""
    acc = (logits.argmax(axis=-1) == y).mean(axis=-1)
    m = logits.max(axis=-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(logits - m).sum(axis=-1))
    true = np.take_along_axis(logits, np.broadcast_to(y[:, None], logits.shape[:-1] + (1,)), axis=-1)[..., 0]
    return acc, (true - lse).mean(axis=-1)


def _swap_objective(base: np.ndarray, c: int, cand: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_objective` of `base` (n, k) with column c replaced by each row of `cand` (m, n), in
    O(m n) rather than O(m n k): the other columns' max and log-sum-exp are computed once."""
    rest = np.delete(base, c, axis=1)
    rest_max, rest_arg = rest.max(axis=1), rest.argmax(axis=1)
    rest_arg = rest_arg + (rest_arg >= c)  # back to column indices of base
    rest_lse = rest_max + np.log(np.exp(rest - rest_max[:, None]).sum(axis=1))
    is_c = y == c
    # argmax takes the first of equal maxima: column c wins a tie against later columns only
    wins = np.where(rest_arg > c, cand >= rest_max, cand > rest_max)
    hit = np.where(is_c, wins, (rest_arg == y) & ~wins)
    m = np.maximum(rest_lse, cand)
    lse = m + np.log(np.exp(rest_lse - m) + np.exp(cand - m))
    true = np.where(is_c, cand, base[np.arange(len(y)), y])
    return hit.mean(axis=1), (true - lse).mean(axis=1)


def _logits(sims: list[np.ndarray], rows: np.ndarray, choice: Sequence[int], scale: float) -> np.ndarray:
    return scale * np.stack([sims[c][rows, o] for c, o in enumerate(choice)], axis=1)


def _best_set(sims, rows, y, sets, scale) -> tuple[int, list[tuple[float, float]]]:
    keys = []
    for s in sets:
        acc, ll = _objective(_logits(sims, rows, s, scale), y)
        keys.append((float(acc), float(ll)))
    return max(range(len(sets)), key=lambda i: (keys[i], -i)), keys


def _per_class(sims, rows, y, start: list[int], scale: float) -> list[int]:
    """Maximise (accuracy, log-likelihood) over per-class options: exhaustively when the product
    of option counts is small, else by coordinate ascent from `start` (strict improvements only)."""
    sizes = [s.shape[1] for s in sims]
    if math.prod(sizes) <= EXHAUSTIVE_LIMIT:
        best, key = list(start), None
        for combo in itertools.product(*map(range, sizes)):
            acc, ll = _objective(_logits(sims, rows, combo, scale), y)
            if key is None or (float(acc), float(ll)) > key:
                best, key = list(combo), (float(acc), float(ll))
        return best
    choice = list(start)
    base = _logits(sims, rows, choice, scale)
    acc, ll = _objective(base, y)
    key = (float(acc), float(ll))
    for _ in range(20):
        changed = False
        for c, s in enumerate(sims):
            cand = scale * s[rows].T  # (m, n): class c's logits under each of its options
            accs, lls = _swap_objective(base, c, cand, y)
            o = max(range(s.shape[1]), key=lambda i: ((float(accs[i]), float(lls[i])), -i))
            if (float(accs[o]), float(lls[o])) > key:
                base = base.copy()
                base[:, c] = cand[o]
                choice[c], key, changed = o, (float(accs[o]), float(lls[o])), True
        if not changed:
            break
    return choice


def _select(sims, rows, y, sets, scale, mode: str) -> list[int]:
    i, _ = _best_set(sims, rows, y, sets, scale)
    return list(sets[i]) if mode == "set" else _per_class(sims, rows, y, list(sets[i]), scale)


def select_prompts(features: np.ndarray, labels: np.ndarray, options: Sequence[np.ndarray],
                   sets: Sequence[Sequence[int]], *, scale: float = 100.0, folds: int = 5,
                   seed: int = 0, per_class: bool = True) -> PromptChoice:
    """Choose class embeddings by cross-validation. `options[c]` is an (m_c, d) array of unit
    candidate embeddings of class c (single captions or normalised means of several); `sets`
    are the uniform prompt sets, each an option index per class. A procedure ("set": the best
    prompt set; "class": then per-class choices) is scored by rerunning it on each fold's
    training part and counting hits on the held-out part; the better procedure (ties: "set")
    is rerun on all the images for the final choice. The objective is top-1 accuracy, ties
    broken by the true class's mean log-probability."""
    x = np.asarray(features, np.float64)
    y = np.asarray(labels, np.int64)
    sims = [x @ np.asarray(o, np.float64).T for o in options]
    n = len(y)
    k_folds = max(2, min(folds, n))
    fold = stratified_folds(y, k_folds, seed)
    modes = ["set", "class"] if per_class else ["set"]
    hits = {m: 0 for m in modes}
    for f in range(k_folds):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        if not len(te):
            continue
        for m in modes:
            choice = _select(sims, tr, y[tr], sets, scale, m)
            hits[m] += int((_logits(sims, te, choice, scale).argmax(axis=1) == y[te]).sum())
    cv = {m: hits[m] / n for m in modes}
    mode = max(modes, key=lambda m: (cv[m], m == "set"))
    rows = np.arange(n)
    choice = _select(sims, rows, y, sets, scale, mode)
    _, keys = _best_set(sims, rows, y, sets, scale)
    swap = []
    for c, s in enumerate(sims):
        accs = []
        for o in range(s.shape[1]):
            trial = list(choice)
            trial[c] = o
            accs.append(float((_logits(sims, rows, trial, scale).argmax(axis=1) == y).mean()))
        swap.append(accs)
    return PromptChoice(choice, mode, cv[mode], cv, [k[0] for k in keys], swap)
