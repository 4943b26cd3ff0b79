"""The few-shot probe, out-of-fold probabilities, the confident-learning rule and prompt
selection, on synthetic unit embeddings: each figure is checked against a direct computation."""
import itertools
import math

import numpy as np
import pytest

pytest.importorskip("torch")

from clipdata import probe  # noqa: E402


def unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def clusters(k=4, d=16, per_class=12, noise=1.0, seed=0, centers=None):
    """Images scattered around one unit centre per class (noise: the expected norm of the
    offset); returns (features, labels, centres)."""
    rng = np.random.default_rng(seed)
    centers = unit(rng.normal(size=(k, d))) if centers is None else centers
    y = np.repeat(np.arange(k), per_class)
    x = unit(centers[y] + noise * rng.normal(size=(len(y), d)) / np.sqrt(d))
    return x, y, centers


def test_no_training_image_is_zero_shot_exactly():
    rng = np.random.default_rng(1)
    text, x = unit(rng.normal(size=(5, 8))), unit(rng.normal(size=(7, 8)))
    p = probe.fit_probe(np.zeros((0, 8)), np.zeros(0, int), text, 30.0)
    assert p.scorer == "zero-shot" and p.cv_accuracy is None
    logits = 30.0 * x @ text.T
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_array_equal(p.proba(x), p.zero_shot(x))
    np.testing.assert_allclose(p.proba(x), expected, rtol=1e-12)
    np.testing.assert_array_equal(p.weights, 30.0 * text)


def test_a_strong_penalty_keeps_the_zero_shot_decisions():
    x, y, centers = clusters(seed=2)
    text = unit(np.random.default_rng(3).normal(size=centers.shape))  # unrelated to the images
    w, b, (delta, _, alpha) = probe._fit(x, y, 20.0 * text, 1e6)
    # only the unpenalised scale of the text weights moves: the same argmax as zero-shot
    assert np.abs(delta).max() < 1e-4 and np.abs(b).max() < 1e-4
    np.testing.assert_allclose(w, alpha[0] * 20.0 * text, atol=1e-4)
    np.testing.assert_array_equal((x @ w.T + b).argmax(axis=1), (x @ text.T).argmax(axis=1))
    w, b, _ = probe._fit(x, y, 20.0 * text, 1e-3)
    assert (np.abs(x @ w.T + b).argmax(axis=1) != (x @ text.T).argmax(axis=1)).any()  # a weak one learns


def test_folds_are_stratified_and_seeded():
    y = np.repeat(np.arange(3), [7, 5, 9])
    f = probe.stratified_folds(y, 4, seed=0)
    for c in range(3):
        counts = np.bincount(f[y == c], minlength=4)
        assert counts.max() - counts.min() <= 1
    sizes = np.bincount(f, minlength=4)
    assert sizes.max() - sizes.min() <= 1
    np.testing.assert_array_equal(f, probe.stratified_folds(y, 4, seed=0))
    assert not np.array_equal(f, probe.stratified_folds(y, 4, seed=1))


def _direct_loss(x, y, w0, strength):
    """The penalised loss and its gradient in (D, b, alpha), written out."""
    n, k = len(y), len(w0)

    def f(theta):
        d, b, alpha = theta[:-k - 1].reshape(w0.shape), theta[-k - 1:-1], theta[-1]
        w = alpha * w0 + d
        logits = x @ w.T + b
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        loss = -np.log(p[np.arange(n), y]).mean() + strength / 2 * ((d ** 2).sum() + (b ** 2).sum())
        p[np.arange(n), y] -= 1
        gw = p.T @ x / n
        gb = p.sum(axis=0) / n + strength * b
        return loss, np.concatenate([(gw + strength * d).ravel(), gb, [(gw * w0).sum()]])

    return f


def _newton(f, theta, steps=60):
    """Damped Newton with a Hessian differenced from the gradient: an optimiser independent of
    the one under test (the loss is convex, so both reach the same minimum)."""
    for _ in range(steps):
        loss, g = f(theta)
        eps = 1e-6
        h = np.stack([(f(theta + eps * e)[1] - f(theta - eps * e)[1]) / (2 * eps) for e in np.eye(len(theta))])
        step = np.linalg.solve((h + h.T) / 2 + 1e-12 * np.eye(len(theta)), g)
        t = 1.0
        while f(theta - t * step)[0] > loss - 1e-4 * t * g @ step and t > 1e-8:
            t /= 2
        theta = theta - t * step
        if np.abs(g).max() < 1e-10:
            break
    return theta


def test_cv_accuracy_equals_a_direct_computation():
    x, y, centers = clusters(k=4, per_class=10, noise=2.0, seed=4)
    text = unit(centers + 0.8 * np.random.default_rng(5).normal(size=centers.shape))
    scale = 20.0
    p = probe.fit_probe(x, y, text, scale, folds=5)
    assert p.scorer != "zero-shot"
    zs = np.exp(scale * x @ text.T)
    zs /= zs.sum(axis=1, keepdims=True)
    hits = 0
    for f in range(5):
        tr, te = p.folds != f, p.folds == f
        w0 = scale * text
        theta = _newton(_direct_loss(x[tr], y[tr], w0, p.strength), np.concatenate([np.zeros(w0.size + 4), [1.0]]))
        w, b = theta[-1] * w0 + theta[:-5].reshape(w0.shape), theta[-5:-1]
        logits = x[te] @ w.T + b
        pr = np.exp(logits - logits.max(axis=1, keepdims=True))
        pr /= pr.sum(axis=1, keepdims=True)
        blend = (1 - p.weight) * zs[te] + p.weight * pr
        hits += int((blend.argmax(axis=1) == y[te]).sum())
    assert p.cv_accuracy == hits / len(y)
    theta = _newton(_direct_loss(x, y, scale * text, p.strength), np.concatenate([np.zeros(text.size + 4), [1.0]]))
    logits = x @ (theta[-1] * scale * text + theta[:-5].reshape(text.shape)).T + theta[-5:-1]
    direct = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(p.probe_proba(x), direct / direct.sum(axis=1, keepdims=True), atol=1e-4)
    assert p.cv_accuracies[p.scorer] == p.cv_accuracy == max(p.cv_accuracies.values())
    assert p.cv_accuracies["zero-shot"] == float((zs.argmax(axis=1) == y).mean())


def test_the_probe_learns_classes_whose_names_mean_nothing():
    x, y, centers = clusters(k=6, per_class=8, seed=6)
    xt, yt, _ = clusters(k=6, per_class=30, seed=7, centers=centers)
    text = unit(np.random.default_rng(8).normal(size=centers.shape))
    p = probe.fit_probe(x, y, text, 30.0)
    zero = (p.zero_shot(xt).argmax(axis=1) == yt).mean()
    assert p.scorer in ("probe", "blend")
    assert (p.proba(xt).argmax(axis=1) == yt).mean() >= 0.9 > zero + 0.3


def test_good_names_are_kept_when_the_data_add_nothing():
    x, y, centers = clusters(k=5, per_class=6, noise=1.2, seed=9)
    xt, yt, _ = clusters(k=5, per_class=40, noise=1.2, seed=10, centers=centers)
    p = probe.fit_probe(x, y, centers, 30.0)  # the text embeddings are the class centres
    zero = (p.zero_shot(xt).argmax(axis=1) == yt).mean()
    assert (p.proba(xt).argmax(axis=1) == yt).mean() >= zero - 0.01


def test_out_of_fold_rows_never_come_from_a_model_that_saw_them():
    x, y, centers = clusters(k=3, per_class=10, seed=11)
    text = unit(np.random.default_rng(12).normal(size=centers.shape))
    y_few = y.copy()
    y_few[0] = 2  # class 0 keeps 9; move one to make sure the counts change nothing else
    oof = probe.out_of_fold_proba(x, y_few, text, 25.0)
    p = probe.fit_probe(x, y_few, text, 25.0)
    np.testing.assert_allclose(oof, p.oof)
    # a class with a single image is scored zero-shot
    y_one = np.concatenate([y, [3]])
    x_one = np.concatenate([x, unit(np.ones((1, x.shape[1])))])
    text4 = np.concatenate([text, unit(np.ones((1, x.shape[1])))])
    oof = probe.out_of_fold_proba(x_one, y_one, text4, 25.0)
    np.testing.assert_allclose(oof[-1], probe.zero_shot_proba(x_one[-1:], text4, 25.0)[0])


def test_confident_learning_rule_by_hand():
    # thresholds: class 0 = mean(.9, .8, .2) = .633, class 1 = mean(.6, .7) = .65
    proba = np.array([[.9, .1], [.8, .2], [.2, .8], [.4, .6], [.3, .7]])
    labels = np.array([0, 0, 0, 1, 1])
    issues = probe.find_label_issues(proba, labels)
    by_index = {i.index: i for i in issues}
    assert [i.index for i in issues if i.flagged] == [2]   # .2 < .633 and .8 >= .65
    assert by_index[2].suggested == 1 and by_index[2].score == pytest.approx(0.6)
    assert not by_index[3].flagged                          # .6 < .65 but class 0's .4 < .633
    assert [i.index for i in issues] == [2, 3, 4, 1, 0]     # flagged, then by score


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_flips_are_found(seed):
    k, per_class = 16, 20
    x, y, centers = clusters(k=k, d=32, per_class=per_class, noise=1.2, seed=seed)
    text = unit(np.random.default_rng(seed + 100).normal(size=centers.shape))
    rng = np.random.default_rng(seed + 200)
    flipped = rng.choice(len(y), size=len(y) // 10, replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, k, size=len(flipped))) % k
    issues = probe.find_label_issues(probe.out_of_fold_proba(x, noisy, text, 30.0), noisy)
    top = {i.index for i in issues[:len(flipped)]}
    assert len(top & set(flipped.tolist())) / len(flipped) >= 0.8
    clean = probe.find_label_issues(probe.out_of_fold_proba(x, y, text, 30.0), y)
    assert sum(i.flagged for i in clean) < 0.03 * len(y)


def _prompt_problem(seed=0, k=3, m=3, d=8, per_class=12):
    x, y, centers = clusters(k=k, d=d, per_class=per_class, noise=2.0, seed=seed)
    rng = np.random.default_rng(seed + 50)
    options = [unit(centers[c] + rng.uniform(0.3, 2.0, size=(m, 1)) * rng.normal(size=(m, d))) for c in range(k)]
    sets = [[o] * k for o in range(m)]
    return x, y, options, sets


def _brute_choice(x, y, rows, options, combos, scale):
    """The combination with the best (accuracy, mean log-probability) on `rows`, first on ties."""
    best, key = None, None
    for combo in combos:
        text = np.stack([options[c][o] for c, o in enumerate(combo)])
        logits = scale * x[rows] @ text.T
        acc = float((logits.argmax(axis=1) == y[rows]).mean())
        ll = float(np.mean([logits[i, y[r]] - math.log(np.exp(logits[i]).sum()) for i, r in enumerate(rows)]))
        if key is None or (acc, ll) > key:
            best, key = list(combo), (acc, ll)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prompt_search_equals_brute_force_over_the_same_folds(seed):
    x, y, options, sets = _prompt_problem(seed)
    scale, folds = 10.0, 4
    got = probe.select_prompts(x, y, options, sets, scale=scale, folds=folds, seed=seed)
    fold = probe.stratified_folds(y, folds, seed)
    spaces = {"set": [tuple(s) for s in sets],
              "class": list(itertools.product(*[range(len(o)) for o in options]))}
    for mode, combos in spaces.items():
        hits = 0
        for f in range(folds):
            tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            choice = _brute_choice(x, y, tr, options, combos, scale)
            text = np.stack([options[c][o] for c, o in enumerate(choice)])
            hits += int(((x[te] @ text.T).argmax(axis=1) == y[te]).sum())
        assert got.cv_by_mode[mode] == hits / len(y)
    assert got.mode == max(("set", "class"), key=lambda m: (got.cv_by_mode[m], m == "set"))
    assert got.choice == _brute_choice(x, y, np.arange(len(y)), options, spaces[got.mode], scale)
    for s, acc in zip(sets, got.set_accuracy):
        text = np.stack([options[c][o] for c, o in enumerate(s)])
        assert acc == float(((x @ text.T).argmax(axis=1) == y).mean())


def test_large_option_spaces_end_at_a_local_optimum():
    x, y, options, sets = _prompt_problem(seed=3, k=5, m=6)  # 6**5 > the exhaustive limit
    assert 6 ** 5 > probe.EXHAUSTIVE_LIMIT
    start = sets[probe._best_set([x @ o.T for o in options], np.arange(len(y)), y, sets, 10.0)[0]]
    choice = probe._per_class([x @ o.T for o in options], np.arange(len(y)), y, list(start), 10.0)

    def key(combo):
        text = np.stack([options[c][o] for c, o in enumerate(combo)])
        logits = 10.0 * x @ text.T
        lse = np.log(np.exp(logits).sum(axis=1))
        return float((logits.argmax(axis=1) == y).mean()), float((logits[np.arange(len(y)), y] - lse).mean())

    assert key(choice) >= key(start)
    for c in range(5):
        for o in range(6):
            trial = list(choice)
            trial[c] = o
            assert key(trial) <= key(choice)


@pytest.mark.parametrize("seed, ties", [(0, False), (1, True), (2, True)])
def test_swapping_one_class_scores_as_the_full_objective(seed, ties):
    rng = np.random.default_rng(seed)
    n, k, m = 40, 5, 7
    base, y = rng.normal(size=(n, k)), rng.integers(0, k, n)
    for c in range(k):
        cand = rng.normal(size=(m, n))
        if ties:  # exact ties with the best other column: argmax takes the first
            cand[:, :10] = np.delete(base, c, axis=1).max(axis=1)[:10]
        full = np.repeat(base[None], m, axis=0)
        full[:, :, c] = cand
        acc, ll = probe._objective(full, y)
        got_acc, got_ll = probe._swap_objective(base, c, cand, y)
        np.testing.assert_array_equal(got_acc, acc)
        np.testing.assert_allclose(got_ll, ll)
