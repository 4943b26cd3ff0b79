"""eval, search, unique, duplicates on a tiny random CLIP: every figure is checked against a
direct computation."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("transformers")

import clipdata  # noqa: E402
from clipdata.cli import app  # noqa: E402
from clipdata.errors import LayoutError, OptionError, SourceError  # noqa: E402
from clipdata.commands.rank import nearest, uniqueness  # noqa: E402
from conftest import SAMPLES  # noqa: E402


@pytest.fixture
def layout(tmp_path):
    out = tmp_path / "layout"
    clipdata.convert(SAMPLES / "folder", out, format="folder", template="a photo of {}")
    return out


def direct(tiny, paths, captions):
    """Probabilities straight from CLIPModel: the reference every test compares with."""
    import torch
    from transformers import CLIPModel, CLIPProcessor
    model, proc = CLIPModel.from_pretrained(tiny).eval(), CLIPProcessor.from_pretrained(tiny)
    with torch.no_grad():
        inputs = proc(text=captions, images=[Image.open(p) for p in paths], return_tensors="pt", padding=True)
        return model(**inputs).logits_per_image.softmax(-1).numpy()


def image_embeddings(tiny, paths):
    import torch
    from transformers import CLIPModel, CLIPProcessor
    model, proc = CLIPModel.from_pretrained(tiny).eval(), CLIPProcessor.from_pretrained(tiny)
    with torch.no_grad():
        f = model.get_image_features(pixel_values=proc(images=[Image.open(p) for p in paths], return_tensors="pt")["pixel_values"])
    f = getattr(f, "pooler_output", f).numpy()
    return f / np.linalg.norm(f, axis=1, keepdims=True)


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


def test_search_scores_are_direct_cosine_similarities(tiny, spec, tmp_path):
    photos = SAMPLES / "coco" / "images"
    r = clipdata.search(photos, ["a cat", "a rocket"], top=3, spec=spec, jsonl=tmp_path / "hits.jsonl",
                        copy_to=tmp_path / "hits", html_path=tmp_path / "hits.html")
    paths = sorted(photos.iterdir())
    emb = image_embeddings(tiny, paths)
    from clipdata.embedding import Engine
    text = Engine(spec).embed_texts(["a cat", "a rocket"])
    sims = emb @ text.T
    for qi, q in enumerate(["a cat", "a rocket"]):
        hits = [h for h in r.hits if h.query == q]
        order = np.argsort(-sims[:, qi], kind="stable")[:3]
        assert [h.path for h in hits] == [paths[i] for i in order]
        assert [h.score for h in hits] == pytest.approx([sims[i, qi] for i in order], abs=1e-5)
    rows = [json.loads(l) for l in (tmp_path / "hits.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and rows[0]["rank"] == 1
    assert sorted(p.name for p in (tmp_path / "hits" / "a_cat").iterdir())[0].startswith("001_")
    assert (tmp_path / "hits.html").read_text().count("<figure>") == 6


def test_image_to_image_search_finds_the_image_itself(spec):
    photos = SAMPLES / "coco" / "images"
    r = clipdata.search(photos, image=photos / "coffee.jpg", top=1, spec=spec)
    assert r.hits[0].path == photos / "coffee.jpg" and r.hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_uniqueness_matches_brute_force(tiny, spec):
    photos = SAMPLES / "coco" / "images"
    r = clipdata.unique(photos, k=2, spec=spec)
    paths = sorted(photos.iterdir())
    emb = image_embeddings(tiny, paths)
    dist = 1 - emb @ emb.T
    np.fill_diagonal(dist, np.inf)
    brute = np.sort(dist, axis=1)[:, :2].mean(1)
    expected = [paths[i] for i in np.argsort(-brute, kind="stable")]
    assert [p for p, _ in r.scores] == expected
    assert [v for _, v in r.scores] == pytest.approx(sorted(brute, reverse=True), abs=1e-5)


def test_blockwise_neighbours_equal_the_full_matrix(monkeypatch):
    import clipdata.commands.rank as rank
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    monkeypatch.setattr(rank, "BLOCK_BYTES", 4 * 300 * 7)  # blocks of 7 rows
    idx, sim = nearest(emb, 4)
    full = emb @ emb.T
    np.fill_diagonal(full, -np.inf)
    assert np.array_equal(idx, np.argsort(-full, axis=1, kind="stable")[:, :4])
    assert np.allclose(uniqueness(emb, 4), (1 - np.sort(full, axis=1)[:, ::-1][:, :4]).mean(1), atol=1e-6)


def test_unique_per_class(spec, layout):
    r = clipdata.unique(per_class=layout / "train", k=1, spec=spec)
    assert len(r.scores) == 9 and all(v >= 0 for _, v in r.scores)


def test_planted_duplicates_are_found(spec, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES / "coco" / "images", photos)
    shutil.copy(photos / "chelsea.jpg", photos / "chelsea_copy.jpg")  # exact
    Image.open(photos / "rocket.jpg").save(photos / "rocket_q60.jpg", quality=60)  # re-encoded
    # a random tiny model puts all photos within ~0.01 of each other; a re-encode is ~1e-5 away
    r = clipdata.duplicates(photos, threshold=0.001, spec=spec, jsonl=tmp_path / "d.jsonl")
    groups = {(g["kind"], tuple(Path(p).name for p in g["paths"])) for g in r.groups}
    assert ("exact", ("chelsea.jpg", "chelsea_copy.jpg")) in groups
    assert ("near", ("rocket.jpg", "rocket_q60.jpg")) in groups
    assert not any("coffee.jpg" in names for _, names in groups)
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == len(r.groups)


def test_queries_over_an_empty_folder(spec, tmp_path):
    (tmp_path / "empty").mkdir()
    for call in (lambda: clipdata.search(tmp_path / "empty", ["x"], spec=spec),
                 lambda: clipdata.unique(tmp_path / "empty", spec=spec),
                 lambda: clipdata.duplicates(tmp_path / "empty", spec=spec)):
        with pytest.raises(SourceError, match="no images"):
            call()
    with pytest.raises(OptionError, match="query"):
        clipdata.search(SAMPLES / "coco" / "images", spec=spec)


def test_cli_eval_search_duplicates(tiny, layout, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["eval", str(layout), "--model", str(tiny), "--template", "{}", "--workers", "0"])
    assert r.exit_code == 0, r.output
    assert "_tokenization.txt" in r.output and "top-1" in r.output and "per-class recall" in r.output
    r = runner.invoke(app, ["search", str(SAMPLES / "coco" / "images"), "a cat", "--top", "2", "--model", str(tiny)])
    assert r.exit_code == 0 and r.output.count("a cat") >= 2
    r = runner.invoke(app, ["duplicates", str(SAMPLES / "coco" / "images"), "--model", str(tiny), "-q",
                            "--threshold", "0.001", "--dtype", "float32"])
    assert r.exit_code == 0 and r.output.strip() == ""  # no duplicates among the samples
    (layout / "train/_tokenization.txt").write_text("x")
    r = runner.invoke(app, ["eval", str(layout), "--model", str(tiny)])
    assert r.exit_code == 1 and "error:" in r.output and "Traceback" not in r.output


def test_eval_plot(spec, layout, tmp_path):
    pytest.importorskip("matplotlib")
    clipdata.evaluate(layout, spec=spec, plot_path=tmp_path / "confusion.png")
    img = Image.open(tmp_path / "confusion.png")
    assert img.format == "PNG" and img.width > 200
