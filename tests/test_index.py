"""Neighbour search: the exact path against brute force, the approximate index against the
exact path, and the saved index reused, invalidated and rebuilt."""
from __future__ import annotations

import json

import numpy as np
import pytest

from clipdata import index
from clipdata.errors import OptionError


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def image_like(n, seed=0, d=64):
    """Clustered like image embeddings: noisy copies of 300 variants of 30 concepts."""
    rng = np.random.default_rng(seed)
    concepts = unit(rng.normal(size=(30, d)))
    variants = unit(np.repeat(concepts, 10, 0) + 0.8 * rng.normal(size=(300, d)) / np.sqrt(d))
    return unit(variants[rng.integers(0, 300, n)] + 0.7 * rng.normal(size=(n, d)) / np.sqrt(d))


def brute_nearest(emb, k):
    s = emb @ emb.T
    np.fill_diagonal(s, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, axis=1)


@pytest.mark.parametrize("n,k", [(2, 1), (7, 3), (50, 5), (50, 60), (300, 10)])
def test_exact_nearest_and_uniqueness_equal_brute_force(n, k):
    emb = unit(np.random.default_rng(n).normal(size=(n, 16)))
    idx, sim = index.nearest(emb, k, exact=True)
    ref_idx, ref_sim = brute_nearest(emb, min(k, n - 1))
    np.testing.assert_allclose(sim, ref_sim, atol=1e-5)
    assert (idx == ref_idx).mean() > 0.99  # ties aside, the same rows
    np.testing.assert_allclose(index.uniqueness(emb, k, exact=True), (1 - ref_sim).mean(axis=1), atol=1e-5)


def test_exact_near_pairs_and_groups_equal_brute_force():
    emb = image_like(400, d=16)
    emb[10] = emb[3]
    emb[200] = unit(emb[3:4] + 0.01)[0]
    s = emb @ emb.T
    ref = {(i, j) for i in range(400) for j in range(i + 1, 400) if 1 - s[i, j] <= 0.05}
    got = {(i, j) for i, j, _ in index.near_pairs(emb, 0.05, exact=True)}
    assert got == ref and (3, 10) in got
    groups = index._groups(400, sorted(got))
    assert [3, 10, 200] in groups or any({3, 10, 200} <= set(g) for g in groups)


def test_top_k_exact_matches_a_direct_ranking():
    emb = image_like(500)
    q = unit(np.random.default_rng(1).normal(size=(3, 64)))
    idx, sim = index.top_k(emb, q, 7)
    ref = np.argsort(-(q @ emb.T), axis=1, kind="stable")[:, :7]
    assert (idx == ref).all()
    np.testing.assert_allclose(sim, np.take_along_axis(q @ emb.T, ref, axis=1), atol=1e-6)





try:
    import faiss
except Exception:  # the index tests need it; the exact ones above do not
    faiss = None
needs_faiss = pytest.mark.skipif(faiss is None, reason="faiss-cpu is not installed")


def recall(approx, exact):
    return np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)])


@needs_faiss
def test_index_matches_exact_search_on_a_few_thousand_vectors():
    emb = image_like(4000)
    ex_idx, _ = index.nearest(emb, 10, exact=True)
    ap_idx, ap_sim = index.nearest(emb, 10, exact=False)
    assert recall(ap_idx, ex_idx) >= 0.95
    # every similarity from the index is the exact cosine of the pair it names
    np.testing.assert_allclose(ap_sim, np.einsum("nd,nkd->nk", emb, emb[ap_idx]), atol=1e-5)
    assert not (ap_idx == np.arange(4000)[:, None]).any()  # never its own neighbour
    q = emb[:300] + 0.01
    q = unit(q)
    t_ex, _ = index.top_k(emb, q, 10, exact=True)
    t_ap, _ = index.top_k(emb, q, 10, exact=False)
    assert recall(t_ap, t_ex) >= 0.95
    u_ex, u_ap = index.uniqueness(emb, 5, exact=True), index.uniqueness(emb, 5, exact=False)
    assert np.corrcoef(u_ex, u_ap)[0, 1] > 0.99


@needs_faiss
def test_index_finds_every_planted_duplicate_group():
    emb = image_like(5000)
    rng = np.random.default_rng(4)
    planted = [sorted(int(r) for r in rng.choice(5000, size, replace=False)) for size in (2, 3, 4, 5, 2, 3)]
    for g in planted:
        emb[g] = unit(emb[g[0]] + 0.05 * rng.normal(size=(len(g), 64)) / 8)
    exact = sorted(index.near_pairs(emb, 0.02, exact=True))
    approx = sorted(index.near_pairs(emb, 0.02, exact=False))
    assert [(i, j) for i, j, _ in approx] == [(i, j) for i, j, _ in exact]
    np.testing.assert_allclose([d for *_, d in approx], [d for *_, d in exact], atol=1e-5)
    groups = index._groups(5000, [(i, j) for i, j, _ in approx])
    for g in planted:
        assert any(set(g) <= set(found) for found in groups)


@needs_faiss
def test_saved_index_is_reused_and_rebuilt_when_the_embeddings_change(tmp_path):
    emb = image_like(3000)
    notes: list[str] = []
    first = index.nearest(emb, 5, index_dir=tmp_path, exact=False, notes=notes)
    saved = tmp_path / index.INDEX_FILE
    info = json.loads((tmp_path / index.INFO_FILE).read_text())
    assert saved.is_file() and info["count"] == 3000 and info["fingerprint"] == index.fingerprint(emb)
    stamp = saved.stat().st_mtime_ns, saved.stat().st_ino
    again = index.nearest(emb, 5, index_dir=tmp_path, exact=False, notes=notes)
    assert (saved.stat().st_mtime_ns, saved.stat().st_ino) == stamp and notes == []  # reused, silently
    assert (again[0] == first[0]).all()

    changed = emb.copy()
    changed[0] = changed[1]
    index.nearest(changed, 5, index_dir=tmp_path, exact=False, notes=notes)
    assert len(notes) == 1 and "changed" in notes[0]
    assert json.loads((tmp_path / index.INFO_FILE).read_text())["fingerprint"] == index.fingerprint(changed)


@needs_faiss
@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(b"not an index"),
    lambda p: p.write_bytes(p.read_bytes()[:1000]),  # truncated
    lambda p: p.write_bytes(b""),
])
def test_a_corrupt_index_file_is_rebuilt_with_a_note(tmp_path, damage):
    emb = image_like(3000)
    ref = index.nearest(emb, 5, index_dir=tmp_path, exact=False)
    damage(tmp_path / index.INDEX_FILE)
    notes: list[str] = []
    got = index.nearest(emb, 5, index_dir=tmp_path, exact=False, notes=notes)
    assert len(notes) == 1 and "unreadable" in notes[0] and "rebuilt" in notes[0]
    assert (got[0] == ref[0]).all()
    assert faiss.read_index(str(tmp_path / index.INDEX_FILE)).ntotal == 3000


@needs_faiss
def test_size_picks_the_path_and_exact_forces_it(tmp_path, monkeypatch):
    emb = image_like(3000)
    index.nearest(emb, 5, index_dir=tmp_path)  # below APPROX_FROM: exact, no index written
    assert not (tmp_path / index.INDEX_FILE).exists()
    monkeypatch.setattr(index, "APPROX_FROM", 1000)
    index.nearest(emb, 5, index_dir=tmp_path, exact=True)
    assert not (tmp_path / index.INDEX_FILE).exists()
    index.nearest(emb, 5, index_dir=tmp_path)
    assert (tmp_path / index.INDEX_FILE).exists()


def test_without_faiss_search_stays_exact_with_a_note_or_refuses_when_asked(monkeypatch):
    emb = image_like(2000)
    monkeypatch.setattr(index, "_faiss", lambda: None)
    monkeypatch.setattr(index, "APPROX_FROM", 1000)
    notes: list[str] = []
    idx, _ = index.nearest(emb, 5, notes=notes)
    assert (idx == index.nearest(emb, 5, exact=True)[0]).all()
    assert len(notes) == 1 and "pip install 'clipdata[index]'" in notes[0]
    with pytest.raises(OptionError, match="faiss") as e:
        list(index.near_pairs(emb, 0.02, exact=False))
    assert e.value.hint == "pip install 'clipdata[index]'"


def test_blockwise_search_equals_one_full_matrix(monkeypatch):
    emb = unit(np.random.default_rng(0).normal(size=(300, 16)))
    whole = index.nearest(emb, 4, exact=True)
    pairs = sorted(index.near_pairs(emb, 0.6, exact=True))
    monkeypatch.setattr(index, "BLOCK_BYTES", 4 * 300 * 7)  # blocks of 7 rows
    blocked = index.nearest(emb, 4, exact=True)
    assert (blocked[0] == whole[0]).all() and np.allclose(blocked[1], whole[1])
    again = sorted(index.near_pairs(emb, 0.6, exact=True))
    assert [(i, j) for i, j, _ in again] == [(i, j) for i, j, _ in pairs] and pairs
    np.testing.assert_allclose([d for *_, d in again], [d for *_, d in pairs], atol=1e-6)


@needs_faiss
def test_an_index_that_cannot_be_saved_still_answers_with_a_note(tmp_path):
    emb = image_like(3000)
    (tmp_path / "index").write_text("a file where the index folder goes")
    notes: list[str] = []
    idx, _ = index.nearest(emb, 5, index_dir=tmp_path, exact=False, notes=notes)
    assert len(notes) == 1 and "could not be saved" in notes[0]
    assert recall(idx, index.nearest(emb, 5, exact=True)[0]) >= 0.95
    assert (tmp_path / "index").read_text() == "a file where the index folder goes"
