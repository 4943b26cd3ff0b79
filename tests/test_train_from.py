"""label --train-from on the tiny shapes CLIP (a probe fitted on a layout labels images whose
class names mean nothing), the review order, collision-free review file names, and eval on a
layout whose every image is unreadable."""
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from clipdata.commands.label import label, review_names, review_ranks  # noqa: E402
from clipdata.errors import OptionError  # noqa: E402
from helpers import needs_shapes_model as needs_model, shapes_spec, world  # noqa: E402

spec = pytest.fixture(scope="module", name="spec")(shapes_spec)


@pytest.fixture(scope="module")
def world_dirs(tmp_path_factory):
    """A 4-per-class layout whose classes are renamed k01..k16 (captions too), and 64 unlabeled images."""
    root = tmp_path_factory.mktemp("fewshot")
    world.write_layout(root / "named", {"train": 4}, seed=4001)
    codes = root / "codes" / "train"
    codes.mkdir(parents=True)
    code = {c: f"k{i + 1:02}" for i, c in enumerate(world.classes())}
    for c in world.classes():
        shutil.copytree(root / "named" / "train" / c, codes / code[c])
    (codes / "_tokenization.txt").write_text("\n".join(f"a photo of a {code[c]}" for c in world.classes()))
    truth = world.write_unlabeled(root / "unlabeled", 64, seed=4002)
    return root, code, truth


@needs_model
def test_train_from_learns_names_that_mean_nothing(spec, world_dirs, tmp_path):
    root, code, truth = world_dirs
    zs = label(root / "unlabeled", tmp_path / "zs", from_layout=root / "codes" / "train", spec=spec,
               cache_dir=tmp_path / "cache")
    r = label(root / "unlabeled", tmp_path / "fs", train_from=root / "codes", spec=spec, cache_dir=tmp_path / "cache")
    assert zs.scorer == "zero-shot" and r.scorer in ("probe", "blend")

    def accuracy(out):
        rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        return np.mean([row["top_k"][0]["class"] == code[truth[row["path"]]] for row in rows]), rows

    acc_zs, _ = accuracy(tmp_path / "zs")
    acc, rows = accuracy(tmp_path / "fs")
    assert acc >= 0.85 and acc > acc_zs + 0.5
    assert {row["scorer"] for row in rows} == {r.scorer}
    meta = json.loads((tmp_path / "fs" / "label.json").read_text())
    cv = meta["train_from"]["cv_accuracy"]
    assert meta["scorer"] == r.scorer and cv[r.scorer] == max(cv.values()) and meta["train_from"]["images"] == 64
    # review order: every rank once, the smallest top-2 margin first, Label Studio in that order
    assert sorted(row["review_rank"] for row in rows) == list(range(1, 65))
    margin = {row["path"]: row["top_k"][0]["score"] - row["top_k"][1]["score"] for row in rows}
    by_rank = [row["path"] for row in sorted(rows, key=lambda x: x["review_rank"])]
    assert [margin[p] for p in by_rank] == sorted(margin[p] for p in by_rank)
    tasks = json.loads((tmp_path / "fs" / "labelstudio.json").read_text())
    assert [t["meta"]["path"] for t in tasks] == by_rank


@needs_model
def test_train_from_with_classes_in_another_order_learns_the_same(spec, world_dirs, tmp_path):
    """--classes in an order other than the layout's sorted folders: the layout's labels are
    mapped by name (they once indexed the sorted names against text rows in the given order)."""
    root, code, truth = world_dirs
    names = sorted(code.values())
    runs = {}
    for tag, given in (("sorted", names), ("reversed", names[::-1])):
        label(root / "unlabeled", tmp_path / tag, classes=given, train_from=root / "codes", spec=spec,
              cache_dir=tmp_path / "cache")
        rows = [json.loads(line) for line in (tmp_path / tag / "predictions.jsonl").read_text().splitlines()]
        runs[tag] = {row["path"]: row["top_k"][0]["class"] for row in rows}
    assert runs["reversed"] == runs["sorted"]
    assert np.mean([c == code[truth[p]] for p, c in runs["sorted"].items()]) >= 0.85


@pytest.mark.parametrize("mend, words", [
    ("classes", "its classes differ from the ones given; not given: k16"),
    ("from_layout", "not both"),
])
@needs_model
def test_bad_train_from(spec, world_dirs, tmp_path, mend, words):
    root, code, _ = world_dirs
    kwargs = {"classes": list(code.values())[:-1]} if mend == "classes" else {"from_layout": root / "codes" / "train"}
    with pytest.raises(OptionError) as e:
        label(root / "unlabeled", tmp_path / "o", train_from=root / "codes", spec=spec, cache_dir=tmp_path / "c", **kwargs)
    assert words in str(e.value)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("rels", [
    ["a/b.jpg", "a__b.jpg"],                          # a real flat name and a nested one
    ["a/b.jpg", "a__b.jpg", "a/b/c.jpg", "a__b/c.jpg", "a/b__c.jpg"],
    ["A/b.jpg", "a__B.jpg"],                          # case-only twins on a case-insensitive disk
    ["x/" + "n" * 250 + ".jpg", "y/" + "n" * 250 + ".jpg"],  # too long once flattened
    ["a/b.tar.gz", "a__b.tar.gz", "noext/file"],
])
def test_review_names_are_flat_unique_and_deterministic(rels):
    names = review_names(rels)
    assert set(names) == set(rels)
    assert all("/" not in n and len(n.encode()) <= 255 for n in names.values())
    assert len({n.casefold() for n in names.values()}) == len(rels)
    assert review_names(list(reversed(rels))) == names
    for rel in rels:
        if "/" not in rel:
            assert names[rel] == rel  # top-level files keep their names
        assert names[rel].rsplit(".", 1)[-1] == rel.rsplit(".", 1)[-1] or "." not in rel.rsplit("/", 1)[-1]


def test_review_rank_table():
    probs = np.array([[.5, .4, .1], [.9, .05, .05], [.45, .45, .1], [.6, .3, .1]])
    # margins .1, .85, 0, .3 -> order 2, 0, 3, 1
    assert review_ranks(probs, ["a", "b", "c", "d"]) == [2, 4, 1, 3]
    # equal margins: by path
    assert review_ranks(np.array([[.6, .4], [.6, .4]]), ["z", "y"]) == [2, 1]


@needs_model
def test_eval_with_every_image_unreadable_is_one_clear_error(spec, tmp_path):
    from clipdata.commands.evaluate import evaluate
    from clipdata.errors import SourceError

    lay = tmp_path / "broken"
    world.write_layout(lay, {"test": 1}, seed=4003)
    for p in lay.rglob("*.jpg"):
        p.write_bytes(b"not a jpeg")
    with pytest.raises(SourceError) as e:
        evaluate(lay, spec=spec, cache_dir=tmp_path / "c")
    assert "none of the 16 image(s) could be read" in str(e.value) and "\n" not in str(e.value)


def _strict(text):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


@needs_model
def test_good_names_keep_zero_shot_decisions_and_label_json_is_strict(spec, world_dirs, tmp_path):
    root, _, _ = world_dirs
    zs = label(root / "unlabeled", tmp_path / "zs", from_layout=root / "named" / "train", spec=spec,
               cache_dir=tmp_path / "cache")
    fs = label(root / "unlabeled", tmp_path / "fs", train_from=root / "named", spec=spec, cache_dir=tmp_path / "cache")
    meta = _strict((tmp_path / "fs" / "label.json").read_text())
    assert meta["scorer"] == fs.scorer
    rows = {r["path"]: r for r in map(json.loads, (tmp_path / "fs" / "predictions.jsonl").read_text().splitlines())}
    zrows = {r["path"]: r for r in map(json.loads, (tmp_path / "zs" / "predictions.jsonl").read_text().splitlines())}
    assert rows.keys() == zrows.keys() and zs.scorer == "zero-shot"
    if fs.scorer == "zero-shot":  # the probe did not win: the decisions are zero-shot's, to the score
        assert meta["train_from"]["strength"] is None
        for p in rows:  # float64 here, float32 there: equal to the 6 decimals written, give or take one
            assert [t["class"] for t in rows[p]["top_k"]] == [t["class"] for t in zrows[p]["top_k"]]
            np.testing.assert_allclose([t["score"] for t in rows[p]["top_k"]],
                                       [t["score"] for t in zrows[p]["top_k"]], atol=2e-6)
    else:
        assert meta["train_from"]["cv_accuracy"][fs.scorer] > meta["train_from"]["cv_accuracy"]["zero-shot"]
