"""clipdata label and review apply, on a tiny random CLIP model loaded from disk."""
import csv
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("transformers")

import clipdata  # noqa: E402
from clipdata.cli import app  # noqa: E402
from clipdata.embedding import Engine, EngineSpec, ModelError  # noqa: E402
from clipdata.errors import ClipdataError, OptionError, SourceError  # noqa: E402
from helpers import SAMPLES, make_image  # noqa: E402

CLASSES = ["brick wall", "grass", "gravel"]


@pytest.fixture
def photos(tmp_path):
    """The folder sample's 12 texture tiles, flattened into one unlabeled folder with a subfolder."""
    root = tmp_path / "photos"
    for i, p in enumerate(sorted((SAMPLES / "folder").rglob("*.jpg"))):
        dst = root / ("more" if i % 4 == 0 else "") / p.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst)
    return root


def rows(out):
    return [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]


def test_scores_equal_a_direct_clipmodel_forward(tiny, spec, photos, tmp_path):
    import torch
    from transformers import CLIPModel, CLIPProcessor

    out = tmp_path / "out"  # the processor's own pixels, so scores must match to rounding
    clipdata.label(photos, out, classes=CLASSES, spec=EngineSpec(**{**spec.__dict__, "exact_preprocess": True}), top_k=3)
    model, proc = CLIPModel.from_pretrained(tiny).eval(), CLIPProcessor.from_pretrained(tiny)
    captions = [f"a photo of a {c}" for c in CLASSES]
    for row in rows(out):
        with torch.no_grad():
            inputs = proc(text=captions, images=Image.open(photos / row["path"]), return_tensors="pt", padding=True)
            probs = model(**inputs).logits_per_image.softmax(-1)[0].numpy()
        got = {t["class"]: t["score"] for t in row["top_k"]}
        assert np.allclose([got[c] for c in CLASSES], probs, atol=1e-4)
        assert abs(sum(got.values()) - 1) < 1e-4


def test_second_run_hits_the_cache_and_skips_the_image_tower(spec, photos, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = clipdata.label(photos, out, classes=CLASSES, spec=spec)
    assert first.cache_hits == 0 and (out / "cache" / "embeddings.sqlite").is_file()
    calls = []
    monkeypatch.setattr(Engine, "_load", lambda self: calls.append(1) or pytest.fail("the model was loaded"))
    second = clipdata.label(photos, out, classes=CLASSES, spec=spec, overwrite=True)
    assert second.cache_hits == 12 and calls == [] and len(rows(out)) == 12
    assert rows(out) == [dict(r) for r in rows(out)] and second.counts == first.counts  # same answers
    # a new image: only it is embedded
    monkeypatch.undo()
    make_image(photos / "new.jpg", (40, 30))
    third = clipdata.label(photos, out, classes=CLASSES, spec=spec, overwrite=True)
    assert third.cache_hits == 12 and third.images == 13


def test_outputs_are_well_formed(spec, photos, tmp_path):
    (photos / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    report = clipdata.label(photos, out, classes=CLASSES, spec=spec, threshold=0.4, margin=0.0)
    got = rows(out)
    assert [r["path"] for r in got] == sorted(r["path"] for r in got)  # stable order
    assert len(got) == 12 == report.images and list(report.unreadable) == [str(photos / "broken.jpg")]
    for r in got:
        assert (out / r["review_file"]).is_file()
        assert (r["width"], r["height"]) == Image.open(photos / r["path"]).size
        assert r["uncertain"] == (r["decision"] is None)
        assert r["uncertain"] == (r["top_k"][0]["score"] < 0.4)
        assert os.path.samefile(out / r["review_file"], photos / r["path"])  # hard link
    assert (out / "review" / "_tokenization.txt").read_text() == "\n".join(f"a photo of a {c}" for c in CLASSES)
    assert sorted(p.name for p in (out / "review").iterdir() if p.is_dir()) == ["_uncertain"] + CLASSES
    with open(out / "predictions.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [t["path"] for t in table] == [r["path"] for r in got] and all(t["final"] == "" for t in table)
    config = ET.fromstring((out / "labelstudio_config.xml").read_text())
    names = {el.get("name") for el in config.iter() if el.get("name")}
    choices = [c.get("value") for c in config.iter("Choice")]
    assert choices == CLASSES
    tasks = json.loads((out / "labelstudio.json").read_text())
    assert len(tasks) == 12
    for task in tasks:
        pred = task["predictions"][0]
        res = pred["result"][0]
        assert {res["from_name"], res["to_name"]} <= names and res["value"]["choices"][0] in CLASSES
        assert 0 < pred["score"] <= 1 and task["data"]["image"].startswith("/data/local-files/?d=photos/")
    page = (out / "index.html").read_text()
    assert page.count("<figure>") == 12 and "http" not in page.replace("charset", "")  # no network
    for src in __import__("re").findall(r'src="([^"]+)"', page):
        assert (out / __import__("html").unescape(src)).is_file()


def test_review_tree_round_trip(spec, photos, tmp_path):
    out, layout = tmp_path / "out", tmp_path / "layout"
    clipdata.label(photos, out, classes=CLASSES, spec=spec, threshold=0.0, margin=0.0)
    got = rows(out)
    # the reviewer moves the first image to another class, and its prediction was wrong
    moved = got[0]
    wrong = next(c for c in CLASSES if c != moved["decision"])
    src = out / moved["review_file"]
    src.rename(out / "review" / wrong / src.name)
    result = clipdata.review_apply(out, layout)
    assert sum(c["changed"] for c in result.changes.values()) == result.moved == 1
    # the other 11 stay where label put them: nothing says anyone looked at them, and a move
    # alone measures no accuracy
    assert result.unreviewed == 11 and result.accuracy is None
    manifest = [json.loads(l) for l in (layout / "manifest.jsonl").read_text().splitlines()]
    assert {m["source_image"]: m["class"] for m in manifest}[moved["path"]] == wrong
    assert clipdata.inspect(layout).ok
    for m in manifest:  # copied byte for byte
        assert (layout / m["path"]).read_bytes() == (photos / m["source_image"]).read_bytes()


def test_review_from_csv_and_label_studio_export(spec, photos, tmp_path):
    out = tmp_path / "out"
    clipdata.label(photos, out, classes=CLASSES, spec=spec, threshold=0.99)  # everything uncertain
    with open(out / "predictions.csv", newline="") as f:
        table = list(csv.DictReader(f))
    for i, t in enumerate(table):
        t["final"] = CLASSES[i % 3] if i < 9 else ""
    with open(out / "reviewed.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    result = clipdata.review_apply(out / "reviewed.csv", tmp_path / "from_csv")
    assert result.layout.images == 9 and result.layout.skipped_by_reason == {"not_reviewed": 3}
    tasks = json.loads((out / "labelstudio.json").read_text())
    for i, task in enumerate(tasks):  # what Label Studio exports after review
        task["annotations"] = [{"result": [{"from_name": "class", "to_name": "image", "type": "choices",
                                            "value": {"choices": [CLASSES[(i + 1) % 3]]}}]}]
    export = out / "export.json"
    export.write_text(json.dumps(tasks))
    result = clipdata.review_apply(export, tmp_path / "from_ls", images=photos)
    assert result.layout.images == 12
    assert sorted(result.layout.counts["train"]) == CLASSES


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"classes": "cat"}, OptionError, "at least two"),
    ({"classes": "cat,dog,cat"}, OptionError, "duplicate"),
    ({}, OptionError, "one way"),
    ({"classes": "a,b", "ontology": "x.yaml"}, OptionError, "one way"),
    ({"classes": "a/b,c"}, ClipdataError, "path separator"),
    ({"classes": "a,b", "template": "no placeholder"}, OptionError, "has no {}"),
])
def test_bad_class_options(spec, photos, tmp_path, kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        clipdata.label(photos, tmp_path / "out", spec=spec, **kwargs)
    assert not (tmp_path / "out").exists()


def test_empty_folder_and_unknown_model(spec, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        clipdata.label(tmp_path / "empty", tmp_path / "out", classes="a,b", spec=spec)
    make_image(tmp_path / "imgs" / "a.jpg")
    with pytest.raises(ModelError) as e:
        clipdata.label(tmp_path / "imgs", tmp_path / "out2", classes="a,b",
                       spec=EngineSpec(model=str(tmp_path / "no-such-model")))
    assert "--model" in str(e.value) and "no such folder" in str(e.value) and "local model folder" in str(e.value)


def test_ontology_captions_are_ensembled(tiny, spec, photos, tmp_path):
    onto = tmp_path / "o.yaml"
    onto.write_text("classes:\n  grass: [a photo of grass, a close-up of a lawn]\n  gravel: a photo of gravel\n")
    out = tmp_path / "out"
    clipdata.label(photos, out, ontology=onto, spec=spec)
    meta = json.loads((out / "label.json").read_text())
    assert meta["classes"] == ["grass", "gravel"]
    assert meta["run"]["batch_size"] == spec.batch_size and meta["run"]["cpus"] >= 1  # the machine's plan, on record
    assert meta["captions"] == [["a photo of grass", "a close-up of a lawn"], ["a photo of gravel"]]
    engine = Engine(spec)
    t = engine.embed_texts(["a photo of grass", "a close-up of a lawn"])
    mean = t.mean(0) / np.linalg.norm(t.mean(0))
    from clipdata.scoring import class_embeddings
    from clipdata.commands.label import resolve_classes
    got = class_embeddings(engine, resolve_classes(ontology=onto))
    assert np.allclose(got[0], mean, atol=1e-6)


def test_from_layout(spec, photos, tmp_path):
    clipdata.convert(SAMPLES / "folder", tmp_path / "layout", format="folder", template="{} texture")
    out = tmp_path / "out"
    clipdata.label(photos, out, from_layout=tmp_path / "layout" / "train", spec=spec)
    assert (out / "review" / "_tokenization.txt").read_text() == "brick wall texture\ngrass texture\ngravel texture"


def test_exact_preprocessing_is_the_models_own_processor(tiny, spec, photos):
    import torch
    from transformers import CLIPModel, CLIPProcessor

    from clipdata.embedding import embed_images
    engine = Engine(EngineSpec(**{**spec.__dict__, "exact_preprocess": True}))
    paths = sorted(photos.rglob("*.jpg"))
    got, _ = embed_images(engine, paths)  # no cache
    model, proc = CLIPModel.from_pretrained(tiny).eval(), CLIPProcessor.from_pretrained(tiny)
    with torch.no_grad():
        feats = model.get_image_features(pixel_values=proc(images=[Image.open(p) for p in paths], return_tensors="pt")["pixel_values"])
    feats = getattr(feats, "pooler_output", feats).numpy()
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    assert np.allclose(got, feats, atol=1e-5)
    fast, _ = embed_images(Engine(spec), paths)  # the default: the fast path
    assert np.all((fast * got).sum(1) > 0.998)  # moves embeddings only a little (tests/test_preprocess.py)


def test_siglip_scores_are_independent_sigmoids():
    from clipdata.scoring import scores
    emb = np.array([[1.0, 0.0]])
    text = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert np.allclose(scores(emb, text, "siglip", 10.0, -5.0), [[1 / (1 + np.exp(-5)), 1 / (1 + np.exp(5))]])
    assert np.allclose(scores(emb, text, "clip", 10.0), [[1 / (1 + np.exp(-10)), 1 / (1 + np.exp(10))]])


def test_cli_label_and_review(tiny, photos, tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    r = runner.invoke(app, ["label", str(photos), "--out", str(out), "--classes", ",".join(CLASSES),
                            "--model", str(tiny), "--threshold", "0", "--margin", "0", "--workers", "0"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "12 images" in text and "cache hits 0" in text and "on cpu in" in text
    r = runner.invoke(app, ["review", "apply", str(out), str(tmp_path / "layout")])
    assert r.exit_code == 0, r.output
    # right after label nothing was reviewed: no accuracy is claimed
    said = " ".join(r.output.split())
    assert "nothing was reviewed: 12 applied as label proposed" in said and "right" not in said
    r = runner.invoke(app, ["label", str(photos), "--out", str(tmp_path / "o2"), "--classes", "a,b",
                            "--model", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "error:" in r.output and "Traceback" not in r.output


def test_without_torch_the_clip_commands_say_how_to_install(tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"
            "import clipdata\n"
            "from clipdata.errors import ClipdataError\n"
            "try:\n"
            f"    clipdata.label({str(SAMPLES / 'folder')!r}, {str(tmp_path / 'o')!r}, classes='a,b')\n"
            "except ClipdataError as e:\n"
            "    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'clipdata[clip]'" in r.stdout, r.stdout + r.stderr


SPECIAL_FILES = [
    ("a link to nothing", lambda d: os.symlink(d / "gone.jpg", d / "dangling.jpg"), "dangling.jpg", "link to nothing"),
    ("a pipe named like an image", lambda d: os.mkfifo(d / "pipe.jpg"), "pipe.jpg", "not a regular file"),
    ("a link to a pipe", lambda d: (os.mkfifo(d / "p"), os.symlink(d / "p", d / "to_pipe.png")), "to_pipe.png",
     "not a regular file"),
]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("name, make, file, reason", SPECIAL_FILES, ids=[c[0] for c in SPECIAL_FILES])
def test_files_that_are_not_images_on_disk_are_unreadable_never_opened(spec, photos, tmp_path, name, make, file, reason):
    make(photos)
    report = clipdata.label(photos, tmp_path / "out", classes="grass,gravel", spec=spec)
    assert report.images == 12  # the real images, and the run did not block on the pipe
    assert reason in report.unreadable[str(photos / file)]
    meta = json.loads((tmp_path / "out" / "label.json").read_text())
    assert str(photos / file) in meta["unreadable"]


def test_two_labels_into_one_folder_do_not_mix(spec, photos, tmp_path):
    from clipdata.errors import OutputError
    from clipdata.fsutil import locked
    out = tmp_path / "out"
    with locked(out):  # another run holds the folder
        with pytest.raises(OutputError, match="another clipdata run"):
            clipdata.label(photos, out, classes="grass,gravel", spec=spec)
    report = clipdata.label(photos, out, classes="grass,gravel", spec=spec)  # free again
    assert report.images == 12 and not (out / ".clipdata.lock").exists()
    again = clipdata.label(photos, out, classes="grass,gravel", spec=spec, overwrite=True)
    assert again.images == 12
