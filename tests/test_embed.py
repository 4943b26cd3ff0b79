"""The embeddings folder (clip-retrieval's layout): written, read back by pyarrow and numpy
as other tools read it, and refused with one clear line when a part is missing or torn."""
from __future__ import annotations

import json

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
