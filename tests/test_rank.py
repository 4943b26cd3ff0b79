"""search, unique, duplicates on a tiny random CLIP: every figure is checked against a
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
from clipdata.errors import OptionError, SourceError  # noqa: E402
from clipdata.index import nearest, uniqueness  # noqa: E402
from helpers import SAMPLES, image_embeddings  # noqa: E402


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
    import clipdata.index as rank
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




@pytest.mark.parametrize("command", [
    ["search", "{photos}", "a cat"], ["unique", "{photos}"], ["duplicates", "{photos}"],
    ["label", "{photos}", "--out", "{tmp}/labeled", "--classes", "cat,dog"],
])
def test_a_folder_of_unreadable_images_is_one_line_and_exit_1(tmp_path, tiny, command):
    """Not an empty table and exit 0: a script must tell "nothing matched" from "nothing read"."""
    from typer.testing import CliRunner

    from clipdata.cli import app

    photos = tmp_path / "photos"
    photos.mkdir()
    for n in ("a.jpg", "b.png", "c.jpg"):
        (photos / n).write_bytes(b"not an image")
    args = [a.format(photos=photos, tmp=tmp_path) for a in command]
    r = CliRunner().invoke(app, args + ["--model", str(tiny), "--dtype", "float32", "--workers", "0"])
    assert r.exit_code == 1, r.output
    assert "none of the 3 image(s) could be read" in r.output and len(r.output.strip().splitlines()) == 1
