"""Names are bytes (clipdata/names.py): a file or folder named in cp1252 (`caf\\xe9`, what
unpacking a Windows archive on Linux gives) reaches every command that writes names. Each
finishes with its usual exit code, leaves that item out as `name_not_utf8` (counted), shows
it as `caf\\xe9`, and every file it writes is valid UTF-8."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipdata.cli import app
from clipdata.names import dumps, message, quoted, shown
from helpers import make_image

runner = CliRunner()
CAFE = os.fsdecode(b"caf\xe9")  # 'caf\udce9': how Python spells the cp1252 byte
SHOWN = "caf\\xe9"


def _img(path: Path, color=(200, 30, 30)) -> Path:
    return make_image(path, (32, 24), color)


def _all_utf8(*roots: Path) -> list[str]:
    """Every file under these folders (or these files) decodes as UTF-8 when it is text;
    returns the texts, for looking names up."""
    texts = []
    for root in roots:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for p in files:
            if p.suffix in (".json", ".jsonl", ".csv", ".txt", ".html", ".xml", ".yaml"):
                texts.append(p.read_bytes().decode("utf-8"))  # strict: raises on a raw byte
    return texts


def _run(args: list[str]):
    r = runner.invoke(app, args)
    assert "bug in clipdata" not in r.output and r.exception is None or isinstance(r.exception, SystemExit), r.output
    return r


# -- the rule itself ----------------------------------------------------------------------

def test_one_spelling_for_messages_json_and_text():
    assert shown(CAFE) == SHOWN and quoted(CAFE) == "'caf\\xe9'"
    assert message(f"{CAFE}: {CAFE!r}") == f"{SHOWN}: '{SHOWN}'"
    assert json.loads(dumps({"path": f"a/{CAFE}.jpg"})) == {"path": f"a/{SHOWN}.jpg"}
    assert dumps({"x": "café"}) == '{"x": "café"}'  # real non-ASCII text stays as it is
    assert shown("\ud800") == "\\ud800"  # a surrogate no byte stands for (from a JSON escape)


# -- convert, per reader --------------------------------------------------------------------

def _folder(root: Path) -> Path:
    _img(root / "tea" / "a.jpg")
    _img(root / "tea" / f"{CAFE}.jpg")  # a file name
    _img(root / CAFE / "b.jpg")  # a class folder
    return root


def _coco(root: Path) -> Path:
    _img(root / "a.jpg")
    _img(root / f"{CAFE}.jpg")
    data = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": f"{CAFE}.jpg"},
                       {"id": 3, "file_name": "\ud800.jpg"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 9, 9]},
                            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 9, 9]},
                            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 9, 9]},
                            {"id": 4, "image_id": 3, "category_id": 1, "bbox": [0, 0, 9, 9]}],
            "categories": [{"id": 1, "name": "tea"}, {"id": 2, "name": CAFE}]}  # escapes in the JSON text
    (root / "annotations.json").write_text(json.dumps(data))
    return root / "annotations.json"


def _yolo(root: Path) -> Path:
    for name in ("a", CAFE):
        _img(root / "images" / f"{name}.jpg")
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{name}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "classes.txt").write_text("tea\n")
    return root


def _voc(root: Path) -> Path:
    for name in ("a", CAFE):
        _img(root / "JPEGImages" / f"{name}.jpg")
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{name}.xml").write_text(
            "<annotation><size><width>32</width><height>24</height></size><object><name>tea</name>"
            "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
    return root


@pytest.mark.parametrize("fmt, build, skipped", [
    ("folder", _folder, 2), ("coco", _coco, 3), ("yolo", _yolo, 1), ("voc", _voc, 1),
])
def test_convert_leaves_out_what_it_cannot_name_and_says_so(tmp_path, fmt, build, skipped):
    source = build(tmp_path / "src")
    out = tmp_path / "out"
    r = _run(["convert", fmt, str(source), str(out), "--export", "hf,openclip,webdataset"])
    assert r.exit_code == 0, r.output
    _all_utf8(out)
    prov = json.loads((out / "clipdata.json").read_text(encoding="utf-8"))
    assert prov["skipped"].get("name_not_utf8") == skipped
    assert prov["boxes"]["read"] == prov["boxes"]["written"] + sum(prov["boxes"]["skipped"].values())
    rows = [json.loads(line) for line in (out / "skipped.jsonl").read_text(encoding="utf-8").splitlines()]
    assert any(SHOWN in row["item"] for row in rows) and SHOWN in r.output and "convmv" in r.output
    assert all(os.fsencode(p.name).decode("utf-8") for p in out.rglob("*"))  # no such name written


def test_rename_maps_a_class_that_is_not_utf8(tmp_path):
    source = _coco(tmp_path / "src")
    r = _run(["convert", "coco", str(source), str(tmp_path / "out"), "--rename", f"{CAFE}=cafe"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "train" / "cafe").is_dir()


def test_a_source_path_that_is_not_utf8_is_written_shown(tmp_path):
    """The user's own folder: its items are named relative to it, its path shown as typed."""
    source = tmp_path / CAFE
    _img(source / "tea" / "a.jpg")
    _img(source / "cup" / "b.jpg")
    out = tmp_path / "out"
    r = _run(["convert", "folder", str(source), str(out), "--export", "openclip"])
    assert r.exit_code == 0, r.output
    _all_utf8(out)
    assert json.loads((out / "clipdata.json").read_text())["source"]["path"].endswith(SHOWN)


def test_an_error_naming_such_a_file_is_one_line(tmp_path):
    bad = tmp_path / f"{CAFE}.json"
    bad.write_text("{")
    r = _run(["convert", "coco", str(bad), str(tmp_path / "out")])
    assert r.exit_code == 1 and f"{SHOWN}.json" in r.output and len(r.output.strip().splitlines()) == 1


# -- the commands that embed ---------------------------------------------------------------

@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    for i, c in enumerate([(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)]):
        _img(root / f"p{i}.jpg", c)
    _img(root / f"{CAFE}.jpg", (0, 250, 250))
    return root


def _engine(tiny) -> list[str]:
    return ["--model", str(tiny), "--dtype", "float32", "--workers", "0"]


def test_label_then_review_apply(tmp_path, tiny, photos):
    labeled, layout = tmp_path / "labeled", tmp_path / "layout"
    r = _run(["label", str(photos), "--out", str(labeled), "--classes", "red,green"] + _engine(tiny))
    assert r.exit_code == 0, r.output
    _all_utf8(labeled)
    meta = json.loads((labeled / "label.json").read_text())
    (why,) = meta["unreadable"].values()
    assert SHOWN in why and "not UTF-8" in why
    assert all(SHOWN not in line for line in (labeled / "predictions.jsonl").read_text().splitlines())
    # a reviewer drops a file named in cp1252 into a class folder of the review tree
    _img(labeled / "review" / "red" / f"{CAFE}2.jpg")
    r = _run(["review", "apply", str(labeled), str(layout)])
    assert r.exit_code == 0, r.output
    _all_utf8(layout)
    assert json.loads((layout / "clipdata.json").read_text())["skipped"] == {"name_not_utf8": 1}


@pytest.mark.parametrize("command", [
    ["search", "{photos}", "a red photo", "--copy-to", "{tmp}/hits", "--jsonl", "{tmp}/hits.jsonl", "--html", "{tmp}/h.html"],
    ["unique", "{photos}", "--jsonl", "{tmp}/u.jsonl"],
    ["duplicates", "{photos}", "--jsonl", "{tmp}/d.jsonl"],
    ["embed", "{photos}", "--out", "{tmp}/emb"],
])
def test_ranking_and_embedding_commands(tmp_path, tiny, photos, command):
    pytest.importorskip("pyarrow")
    args = [a.format(photos=photos, tmp=tmp_path) for a in command]
    r = _run(args + _engine(tiny))
    assert r.exit_code == 0, r.output
    assert SHOWN in r.output  # counted among the unreadable, shown as typed
    _all_utf8(*[p for p in tmp_path.iterdir() if p.name not in ("photos",)])
    if command[0] == "embed":
        import pyarrow.parquet as pq
        paths = pq.read_table(next((tmp_path / "emb" / "metadata").glob("*.parquet"))).column("image_path").to_pylist()
        assert len(paths) == 4 and not any("caf" in p for p in paths)


def test_layout_commands_on_a_layout_with_such_names(tmp_path, tiny):
    lay = tmp_path / "layout" / "test"
    for cls, c in (("red", (250, 0, 0)), ("green", (0, 250, 0))):
        _img(lay / cls / "a.jpg", c)
        _img(lay / cls / "b.jpg", c)
    _img(lay / "red" / f"{CAFE}.jpg")
    (lay / "_tokenization.txt").write_text("a green photo\na red photo")
    for args in (["eval", str(lay.parent), "--json", str(tmp_path / "e.json")],
                 ["audit", str(lay.parent), "--jsonl", str(tmp_path / "a.jsonl"), "--html", str(tmp_path / "a.html"),
                  "--folds", "2"],
                 ["inspect", str(lay.parent)]):
        r = _run(args + (_engine(tiny) if args[0] != "inspect" else []))
        assert r.exit_code == 0, (args[0], r.output)
    _all_utf8(*[p for p in tmp_path.iterdir() if p.is_file()])
