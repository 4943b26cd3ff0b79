"""eval on a tiny random CLIP: every figure is checked against a
direct computation."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("transformers")

import clipdata  # noqa: E402
from clipdata.errors import LayoutError, OptionError  # noqa: E402
from helpers import direct  # noqa: E402


def test_eval_accuracy_equals_a_direct_computation(tiny, spec, layout, tmp_path):
    templates = ["{}", "a picture of {} texture"]
    report = clipdata.evaluate(layout, templates=templates, spec=spec, json_path=tmp_path / "eval.json")
    assert report.splits == ["train", "valid"] and report.images == 12  # no test split: all splits
    classes = ["brick wall", "grass", "gravel"]
    paths, truth = [], []
    for split in ("train", "valid"):
        for i, c in enumerate(classes):
            for p in sorted((layout / split / c).iterdir()):
                paths.append(p)
                truth.append(i)
    truth = np.array(truth)
    captions = {"_tokenization.txt": [f"a photo of {c}" for c in classes],
                "{}": classes, "a picture of {} texture": [f"a picture of {c} texture" for c in classes]}
    data = json.loads((tmp_path / "eval.json").read_text())
    assert [s["name"] for s in data["prompt_sets"]] == list(captions)
    for entry in data["prompt_sets"]:
        probs = direct(tiny, paths, captions[entry["name"]])
        pred = probs.argmax(1)
        assert entry["top1"] == pytest.approx((pred == truth).mean())
        recalls = [(pred[truth == i] == i).mean() for i in range(3)]
        assert entry["mean_per_class_recall"] == pytest.approx(np.mean(recalls))
        assert entry["per_class_recall"] == pytest.approx(dict(zip(classes, recalls)))
        assert np.array(entry["confusion_matrix"]).sum() == 12 and entry["top5"] is None  # 3 classes
        assert entry["captions"] == [[c] for c in captions[entry["name"]]]
    assert data["best"] == report.best.name


def test_eval_embeds_images_once_for_all_prompt_sets(spec, layout, monkeypatch, tmp_path):
    from clipdata.embedding import Engine
    calls = []
    real = Engine.embed_pixels
    monkeypatch.setattr(Engine, "embed_pixels", lambda self, px: calls.append(len(px)) or real(self, px))
    clipdata.evaluate(layout, templates=["{}", "{} texture", "a {}"], spec=spec, cache_dir=False)
    assert sum(calls) == 12  # one pass of the image tower for four prompt sets
    calls.clear()
    clipdata.evaluate(layout, spec=spec, cache_dir=tmp_path / "cache")  # the first run fills it
    clipdata.evaluate(layout, templates=["{} again"], spec=spec, cache_dir=tmp_path / "cache")
    assert sum(calls) == 12  # the second run took every image from the cache


def test_eval_split_choice_and_flips(spec, layout):
    r = clipdata.evaluate(layout, split="valid", templates=["{}"], spec=spec)
    assert r.splits == ["valid"] and r.images == 3
    for f in r.flipped:
        assert f[r.sets[0].name] != f[r.sets[1].name] or r.sets[0] is r.sets[1]


@pytest.mark.parametrize("mutate, error, fragment", [
    (lambda l: (l / "train/_tokenization.txt").write_text("one\ntwo"), LayoutError, "2 caption line(s) for 3 class folder(s)"),
    (lambda l: [shutil.rmtree(l / "valid"), [p.unlink() for p in (l / "train").rglob("*.jpg")]], LayoutError, "no images"),
    (lambda l: None, OptionError, "has no {}"),
])
def test_eval_bad_inputs(spec, layout, mutate, error, fragment):
    mutate(layout)
    templates = ["no placeholder"] if fragment == "has no {}" else []
    with pytest.raises(error, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        clipdata.evaluate(layout, templates=templates, spec=spec)


def test_eval_misaligned_is_an_error_before_any_embedding(spec, layout, monkeypatch):
    (layout / "valid/_tokenization.txt").write_text("a\nb")
    from clipdata.embedding import Engine
    monkeypatch.setattr(Engine, "__init__", lambda *a, **k: pytest.fail("the model was touched"))
    with pytest.raises(LayoutError, match="sorted"):
        clipdata.evaluate(layout, split="valid", spec=spec)


def test_eval_plot(spec, layout, tmp_path):
    pytest.importorskip("matplotlib")
    clipdata.evaluate(layout, spec=spec, plot_path=tmp_path / "confusion.png")
    img = Image.open(tmp_path / "confusion.png")
    assert img.format == "PNG" and img.width > 200
