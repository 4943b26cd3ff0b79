"""The embeddings folder (clip-retrieval's layout): written, read back by pyarrow and numpy
as other tools read it, and refused with one clear line when a part is missing or torn."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from clipdata.errors import SourceError  # noqa: E402
from clipdata.formats import embeddings as ef  # noqa: E402


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_folder(root, sizes=(4, 3), dim=8):
    rng = np.random.default_rng(0)
    at = 0
    for i, n in enumerate(sizes):
        m = unit(rng.normal(size=(n, dim)))
        paths = [f"/data/img_{at + r}.jpg" for r in range(n)]
        ef.write_part(root, i, m, paths, [10 + r for r in range(n)], [20] * n, [f"{at + r:064x}" for r in range(n)])
        at += n
    ef.write_info(root, ef.EmbedInfo("m", "m@abc:float32", "float32", "processor", dim, at, len(sizes), 4))
    return root


def test_folder_round_trip_in_clip_retrievals_layout(tmp_path):
    root = make_folder(tmp_path / "emb")
    e = ef.read(root)
    assert e.matrix.shape == (7, 8) and e.matrix.dtype == np.float32
    assert e.image_path == [f"/data/img_{i}.jpg" for i in range(7)]
    assert e.width == [10, 11, 12, 13, 10, 11, 12] and e.height == [20] * 7 and e.sha256[6] == f"{6:064x}"
    # as numpy and pyarrow alone see it: unit float32 rows, metadata row for row
    for i, n in enumerate((4, 3)):
        m = np.load(root / "img_emb" / f"img_emb_{i}.npy")
        assert m.dtype == np.float32 and len(m) == n
        np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1, atol=1e-6)
        t = pq.read_table(root / "metadata" / f"metadata_{i}.parquet")
        assert t.column_names == ["image_path", "width", "height", "sha256"] and t.num_rows == n
    info = json.loads((root / "embed.json").read_text())
    assert info["model"] == "m" and info["count"] == 7 and info["parts"] == 2 and info["mode"] == "processor"


def test_writes_are_deterministic(tmp_path):
    a, b = make_folder(tmp_path / "a"), make_folder(tmp_path / "b")
    for rel in ("img_emb/img_emb_1.npy", "metadata/metadata_1.parquet", "embed.json"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()


def test_finished_parts_are_recognised(tmp_path):
    root = make_folder(tmp_path / "emb")
    assert ef.part_rows(root, 0) == 4 and ef.part_rows(root, 1) == 3 and ef.part_rows(root, 2) is None
    (root / "metadata" / "metadata_1.parquet").unlink()  # killed between the two files
    assert ef.part_rows(root, 1) is None


def _drop(rel):
    return lambda root: (root / rel).unlink()


def _write(rel, data):
    return lambda root: (root / rel).write_bytes(data)


def _info(**change):
    def edit(root):
        info = json.loads((root / "embed.json").read_text())
        info.update(change)
        (root / "embed.json").write_text(json.dumps(info))
    return edit


def _short_meta(root):
    t = pq.read_table(root / "metadata" / "metadata_0.parquet")
    pq.write_table(t.slice(0, 2), root / "metadata" / "metadata_0.parquet")


def _meta_without_sha(root):
    t = pq.read_table(root / "metadata" / "metadata_0.parquet")
    pq.write_table(t.drop(["sha256"]), root / "metadata" / "metadata_0.parquet")


BAD = [
    ("part missing", _drop("img_emb/img_emb_0.npy"), "part 0 is missing"),
    ("metadata missing", _drop("metadata/metadata_1.parquet"), "part 1 has vectors but no metadata"),
    ("npy/parquet row mismatch", _short_meta, "part 0: 4 vectors but 2 metadata rows"),
    ("metadata column missing", _meta_without_sha, "no column sha256"),
    ("parquet not parquet", _write("metadata/metadata_0.parquet", b"junk"), "not a readable Parquet file"),
    ("npy not an array", _write("img_emb/img_emb_1.npy", b"junk"), "not a readable .npy file"),
    ("npy wrong dtype", lambda r: np.save(r / "img_emb" / "img_emb_1.npy", np.zeros((3, 8))), "expected float32 rows"),
    ("npy wrong dim", lambda r: np.save(r / "img_emb" / "img_emb_1.npy", np.zeros((3, 9), np.float32)),
     "expected float32 rows of 8 values"),
    ("extra part", lambda r: np.save(r / "img_emb" / "img_emb_5.npy", np.zeros((1, 8), np.float32)),
     "3 vector part(s) on disk, embed.json lists 2"),
    ("no embed.json", _drop("embed.json"), "not an embeddings folder"),
    ("embed.json malformed", _write("embed.json", b"{\"model\": "), "malformed JSON"),
    ("embed.json not UTF-8", _write("embed.json", b"\xff\xfe{}"), "not UTF-8"),
    ("embed.json a list", _write("embed.json", b"[]"), "expected a JSON object"),
    ("embed.json count wrong", _info(count=9), "embed.json counts 9 rows, the parts hold 7"),
    ("embed.json count negative", _info(count=-1), "'count' is missing or not a non-negative integer"),
    ("embed.json model missing", _info(model=None), "'model' is missing"),
    ("embed.json parts a bool", _info(parts=True), "'parts' is missing"),
    ("embed.json future format", _info(format=2), "format 2 is not 1"),
]


@pytest.mark.parametrize("damage,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_damaged_folder_stops_with_one_clear_line(tmp_path, damage, message):
    root = make_folder(tmp_path / "emb")
    damage(root)
    with pytest.raises(SourceError) as e:
        ef.read(root)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert e.value.file is not None  # names the folder or the file at fault


# ---------------------------------------------------------------- clipdata embed and --embeddings

def _photos(tmp_path):
    import shutil

    from helpers import SAMPLES

    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES / "coco" / "images", photos)
    return photos


@pytest.fixture
def embedded(spec, tmp_path):
    from clipdata.commands.embed import embed

    photos = _photos(tmp_path)
    report = embed(photos, tmp_path / "emb", spec=spec, part_size=4)
    return photos, tmp_path / "emb", report


def test_embed_then_search_embeddings_equals_search_images(spec, embedded, tmp_path):
    import clipdata
    from helpers import image_embeddings

    photos, out, report = embedded
    assert (report.images, report.written, report.parts, report.parts_kept) == (6, 6, 2, 0)
    e = ef.read(out)
    files = sorted(photos.iterdir())
    assert e.image_path == [str(p.resolve()) for p in files]
    # the model's own embeddings (the fast default preprocessing differs from the processor's pixels slightly)
    assert (np.einsum("nd,nd->n", e.matrix, image_embeddings(spec.model, files)) > 0.999).all()
    np.testing.assert_allclose(np.linalg.norm(e.matrix, axis=1), 1, atol=1e-5)
    from PIL import Image
    assert [(w, h) for w, h in zip(e.width, e.height)] == [Image.open(p).size for p in files]
    from clipdata.imagefiles import sha256_file
    assert e.sha256 == [sha256_file(p) for p in files]
    info = json.loads((out / "embed.json").read_text())
    assert info["model"] == spec.model and info["dtype"] == "float32" and info["complete"] is True
    # how the run used the machine is on record (workers=0 in the test spec: decoding in this process)
    assert info["run"]["batch_size"] == spec.batch_size and info["run"]["loaders"] == 0
    assert info["run"]["cpu"] and isinstance(info["run"]["native_bfloat16"], bool)

    queries = ["a cat", "a rocket"]
    from_images = clipdata.search(photos, queries, top=6, spec=spec)
    from_folder = clipdata.search(None, queries, top=6, spec=spec, embeddings=out)
    assert [(h.query, h.rank, h.path.resolve()) for h in from_images.hits] == \
           [(h.query, h.rank, h.path) for h in from_folder.hits]
    np.testing.assert_allclose([h.score for h in from_images.hits], [h.score for h in from_folder.hits], atol=1e-5)

    u_img, u_emb = clipdata.unique(photos, k=2, spec=spec), clipdata.unique(embeddings=out, k=2, spec=spec)
    assert [p.resolve() for p, _ in u_img.scores] == [p for p, _ in u_emb.scores]
    d_img = clipdata.duplicates(photos, threshold=0.5, spec=spec)
    d_emb = clipdata.duplicates(None, threshold=0.5, embeddings=out)
    assert [[str(Path(p).resolve()) for p in g["paths"]] for g in d_img.groups] == [g["paths"] for g in d_emb.groups]


def test_a_second_embed_runs_no_model_and_a_killed_run_resumes(spec, embedded, tmp_path, monkeypatch):
    from clipdata.commands.embed import embed
    from clipdata.embedding.engine import Engine

    photos, out, _ = embedded
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    part0 = ef.npy_path(out, 0).stat().st_mtime_ns

    def no_model(self):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Engine, "_load", no_model)
    again = embed(photos, tmp_path / "emb2", spec=spec, part_size=4)  # a new folder, from the cache
    assert again.cache_hits == 6
    assert {p.relative_to(tmp_path / "emb2"): p.read_bytes() for p in (tmp_path / "emb2").rglob("*")
            if p.is_file()} == before

    ef.parquet_path(out, 1).unlink()  # killed while writing part 1
    resumed = embed(photos, out, spec=spec, part_size=4)
    assert resumed.parts_kept == 1 and ef.npy_path(out, 0).stat().st_mtime_ns == part0
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_embed_refuses_an_unrelated_or_mismatched_folder(spec, embedded, tmp_path):
    from clipdata.commands.embed import embed
    from clipdata.errors import OutputError

    photos, out, _ = embedded
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not an embeddings folder"):
        embed(photos, tmp_path / "other", spec=spec)
    with pytest.raises(OutputError, match="parts of 4"):
        embed(photos, out, spec=spec, part_size=3)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_a_query_needs_the_folders_model(spec, embedded, tmp_path):
    from dataclasses import replace

    import clipdata
    from clipdata.errors import OptionError
    from tiny_clip import make_tiny_clip

    _, out, _ = embedded
    other = make_tiny_clip(tmp_path / "other-clip", seed=1)
    with pytest.raises(OptionError) as e:
        clipdata.search(None, ["a cat"], spec=replace(spec, model=str(other)), embeddings=out)
    assert "not the model these embeddings were made with" in str(e.value) and spec.model in e.value.hint
    with pytest.raises(OptionError, match="not both"):
        clipdata.search(out, ["a cat"], spec=spec, embeddings=out)


def test_an_unfinished_folder_is_refused(spec, embedded):
    _, out, _ = embedded
    _info(complete=False)(out)
    with pytest.raises(SourceError, match="has not finished"):
        ef.read(out)


def test_cli_embed_and_search_embeddings(tiny, tmp_path):
    from typer.testing import CliRunner

    import clipdata.cli.embed  # noqa: F401  (registers the command)
    from clipdata.cli import app

    photos = _photos(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["embed", str(photos), "--out", str(tmp_path / "emb"), "--model", str(tiny),
                            "--workers", "0", "--dtype", "float32"])
    assert r.exit_code == 0, r.output
    assert "6 embeddings in 1 part(s)" in " ".join(r.output.split())  # the terminal may wrap
    r = runner.invoke(app, ["search", "--embeddings", str(tmp_path / "emb"), "a cat", "--top", "2",
                            "--model", str(tiny), "--dtype", "float32", "--exact", "--jsonl", str(tmp_path / "h.jsonl")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (tmp_path / "h.jsonl").read_text().splitlines()]
    assert [row["rank"] for row in rows] == [1, 2] and all(row["query"] == "a cat" for row in rows)
    assert all(Path(row["path"]).parent == photos.resolve() for row in rows)  # named by image_path
    r = runner.invoke(app, ["duplicates", "--embeddings", str(tmp_path / "emb"), "--threshold", "0.5"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["search", "--embeddings", str(tmp_path / "emb"), "a cat", "--model", str(photos)])
    assert r.exit_code == 1 and "error:" in r.output and "Traceback" not in r.output


# ---------------------------------------------------------------- search --copy-to names

def test_copy_to_names_stay_inside_the_folder(tmp_path):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from clipdata.commands.rank import Hit, RankReport, _copy_hits

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"x")
    (src / ("n" * 250 + ".jpg")).write_bytes(b"y")
    runs = iter(range(10**6))

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.text(st.characters(codec="utf-8"), min_size=0, max_size=300), min_size=1, max_size=4))
    def check(queries):
        dest = tmp_path / f"d{next(runs)}" / "hits"
        hits = [Hit(q, r + 1, p, 0.5) for q in queries for r, p in enumerate(sorted(src.iterdir()))]
        _copy_hits(RankReport(src, 2, hits=hits), src, dest, per_query=len(queries) > 1)
        written = [p for p in dest.parent.rglob("*") if p.is_file()]
        assert all(dest.resolve() in p.resolve().parents for p in written)
        assert len(written) == len({(h.query, h.rank) for h in hits})  # distinct queries never share a folder

    check()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("d")) == ["src"]


@pytest.mark.parametrize("query", ["..", ".", "../..", "/etc", "a/../../b", "\x00", "~", ".hidden"])
def test_hostile_query_names_become_safe_folders(tmp_path, query):
    from clipdata.commands.rank import Hit, RankReport, _copy_hits

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jpg").write_bytes(b"x")
    dest = tmp_path / "out" / "hits"
    hits = [Hit(q, 1, tmp_path / "src" / "a.jpg", 0.5) for q in (query, "other")]
    _copy_hits(RankReport(tmp_path / "src", 1, hits=hits), tmp_path / "src", dest, per_query=True)
    assert sorted(p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("*.jpg")) == \
           sorted([("out", "hits"), ("out", "hits"), ("src", "a.jpg")])


def test_slices_within_a_part_and_unreadable_images_are_counted(spec, embedded, tmp_path, monkeypatch):
    import clipdata.commands.embed as cmd

    photos, out, _ = embedded
    monkeypatch.setattr(cmd, "SLICE", 3)  # parts of 4 embedded 3 images at a time
    sliced = cmd.embed(photos, tmp_path / "sliced", spec=spec, part_size=4)
    assert sliced.written == 6
    for rel in ("img_emb/img_emb_0.npy", "img_emb/img_emb_1.npy", "metadata/metadata_0.parquet"):
        assert (tmp_path / "sliced" / rel).read_bytes() == (out / rel).read_bytes()
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    r = cmd.embed(photos, tmp_path / "with-bad", spec=spec, part_size=4)
    assert (r.images, r.written) == (7, 6) and list(r.unreadable) == [str((photos / "broken.jpg").resolve())]
    info = ef.read_info(tmp_path / "with-bad")
    assert info.unreadable == 1 and info.count == 6
    assert str((photos / "broken.jpg").resolve()) not in ef.read(tmp_path / "with-bad").image_path
