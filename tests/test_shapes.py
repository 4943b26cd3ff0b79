"""End-to-end correctness with the tiny CLIP trained on the shapes world (samples/models/
shapes-clip): labels must be right, not only well-formed. Every image here is freshly
generated with seeds the model never saw."""
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("transformers")

import clipdata  # noqa: E402
from helpers import SAMPLES, needs_shapes_model, shapes_spec, world  # noqa: E402

pytestmark = needs_shapes_model
spec = pytest.fixture(scope="module", name="spec")(shapes_spec)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """A fresh labeled layout (5 images per class) and a fresh unlabeled folder with its truth."""
    root = tmp_path_factory.mktemp("shapes")
    world.write_layout(root / "layout", {"test": 5}, seed=1001)
    truth = world.write_unlabeled(root / "unlabeled", 96, seed=1002)
    return root, truth


def test_zero_shot_accuracy_and_wording(spec, held_out, tmp_path):
    root, _ = held_out
    shapes_only = tmp_path / "shapes_only.yaml"  # captions that leave the colour out
    shapes_only.write_text("classes:\n" + "".join(f"  {c}: a photo of a {c.split()[1]}\n" for c in world.classes()))
    r = clipdata.evaluate(root / "layout", templates=["a photo of a {}"], ontologies=[shapes_only],
                          spec=spec, cache_dir=False)
    acc = {s.name: s.top1 for s in r.sets}
    assert acc["a photo of a {}"] >= 0.9 and acc["_tokenization.txt"] >= 0.9
    assert acc["shapes_only.yaml"] <= 0.4  # the prompt-wording effect, on our own model
    assert r.sets[0].top5 >= 0.99


def test_label_puts_images_in_the_right_class(spec, held_out, tmp_path):
    root, truth = held_out
    out = tmp_path / "labeled"
    report = clipdata.label(root / "unlabeled", out, classes=world.classes(), spec=spec, threshold=0.5, margin=0.1)
    rows = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    top1 = sum(r["top_k"][0]["class"] == truth[r["path"]] for r in rows) / len(rows)
    decided = [r for r in rows if r["decision"]]
    assert top1 >= 0.9
    assert sum(r["decision"] == truth[r["path"]] for r in decided) / len(decided) >= 0.95
    assert report.images == 96

    # the reviewer only sorts out review/_uncertain, then applies
    for r in rows:
        if r["uncertain"]:
            f = out / r["review_file"]
            f.rename(out / "review" / truth[r["path"]] / f.name)
    result = clipdata.review_apply(out, tmp_path / "layout")
    manifest = [json.loads(l) for l in (tmp_path / "layout" / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 96
    correct = sum(m["class"] == truth[m["source_image"]] for m in manifest) / 96
    assert correct >= 0.97
    # sorting _uncertain is all the review there was: moves in the tree are counted, and no
    # accuracy is claimed from files nobody chose (left in place says nothing)
    uncertain = sum(bool(r["uncertain"]) for r in rows)
    assert result.moved == uncertain and result.reviewed + result.unreviewed == 96
    assert result.accuracy is None


def test_search_a_green_triangle(spec, held_out):
    root, truth = held_out
    r = clipdata.search(root / "unlabeled", ["a green triangle"], top=4, spec=spec, cache_dir=False)
    assert [truth[h.path.name] for h in r.hits] == ["green triangle"] * 4


def test_duplicates_find_a_planted_copy(spec, held_out, tmp_path):
    root, _ = held_out
    photos = tmp_path / "photos"
    shutil.copytree(root / "unlabeled", photos)
    Image.open(photos / "img_0007.jpg").save(photos / "img_0007_requality.jpg", quality=95)
    # this model packs a class tightly (distinct red circles can be 0.002 apart), so the
    # threshold is tight too; a re-encode at another quality stays far closer
    dups = clipdata.duplicates(photos, threshold=0.0008, spec=spec, cache_dir=False)
    names = [sorted(Path(p).name for p in g["paths"]) for g in dups.groups]
    assert names == [["img_0007.jpg", "img_0007_requality.jpg"]]


def test_unique_puts_an_out_of_world_photo_first(spec, tmp_path):
    """Eight images of every class, and one real photo: every shape has five close
    neighbours of its class, the photo none. (Of the sample photos, the flower is the one
    this tiny model places farthest from its world; the cat and the rocket land near a class.)"""
    world.write_layout(tmp_path / "layout", {"test": 8}, seed=1003)
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in (tmp_path / "layout" / "test").rglob("*.jpg"):
        shutil.copy(p, photos / p.name)
    shutil.copy(SAMPLES / "coco" / "images" / "flower.jpg", photos / "flower.jpg")
    u = clipdata.unique(photos, k=5, spec=spec, cache_dir=False)
    assert u.scores[0][0].name == "flower.jpg"


def test_the_shipped_samples_tour(spec, tmp_path):
    """The README's offline tour, on the files that ship."""
    shapes = SAMPLES / "shapes"
    crops = clipdata.convert(shapes / "scenes" / "annotations.json", tmp_path / "crops", format="coco",
                             template="a photo of a {}", padding=0.25, square=True)
    ev = clipdata.evaluate(tmp_path / "crops", spec=spec, cache_dir=False)
    assert ev.sets[0].top1 >= 0.9  # crops with some context, like the pictures the model learnt from
    truth = json.loads((shapes / "unlabeled_truth.json").read_text())
    clipdata.label(shapes / "unlabeled", tmp_path / "labeled", classes=world.classes(), spec=spec)
    rows = [json.loads(l) for l in (tmp_path / "labeled" / "predictions.jsonl").read_text().splitlines()]
    assert sum(r["top_k"][0]["class"] == truth[r["path"]] for r in rows) / len(rows) >= 0.9
    assert crops.crops == len(json.loads((shapes / "scenes" / "annotations.json").read_text())["annotations"])
