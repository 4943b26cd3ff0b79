"""The review files `review apply` reads besides the review tree: Label Studio's JSON,
JSON_MIN and CSV exports (as Label Studio 1.x writes them, for the labeling config `label`
writes: Choices named "class"), an edited predictions.csv, and their bad forms."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import clipdata
from clipdata.errors import SourceError
from test_serve import make_labeled

URL = "/data/local-files/?d=photos/"


def _apply(tmp_path: Path, reviewed: Path, **kw) -> tuple[dict[str, str], dict[str, int]]:
    result = clipdata.review_apply(reviewed, tmp_path / "layout", **kw)
    rows = [json.loads(l) for l in (tmp_path / "layout" / "manifest.jsonl").read_text().splitlines()]
    return {r["source_image"]: r["class"] for r in rows}, result.layout.skipped_by_reason


def _full(image: str, choice: str | None, **task) -> dict:
    ann = [{"id": 1, "result": [{"from_name": "class", "to_name": "image", "type": "choices",
                                 "value": {"choices": [choice]}}]}] if choice else []
    return {"id": 1, "data": {"image": URL + image}, "annotations": ann, **task}


EXPORTS = {
    "json": ("export.json", json.dumps([_full("a.jpg", "dog"), _full("sub/c.png", "fox"), _full("b.jpg", None)])),
    "json_min": ("export_min.json", json.dumps([
        {"image": URL + "a.jpg", "id": 1, "class": "dog", "annotator": 1, "annotation_id": 1, "lead_time": 2.5},
        {"image": URL + "sub/c.png", "id": 2, "class": {"choices": ["fox", "cat"]}, "annotator": 1},
        {"image": URL + "b.jpg", "id": 3}])),
    "csv": ("export.csv", "image,id,class,annotator,annotation_id,created_at,updated_at,lead_time\n"
                          f"{URL}a.jpg,1,dog,1,1,2026-01-01,2026-01-01,2.5\n"
                          f'{URL}sub/c.png,2,"{{""choices"": [""fox"", ""cat""]}}",1,2,,,\n'
                          f"{URL}b.jpg,3,,,,,,\n"),
    "csv_bom": ("export.csv", "\ufeffimage,id,class\n" f"{URL}a.jpg,1,dog\n{URL}sub/c.png,2,fox\n{URL}b.jpg,3,\n"),
}


@pytest.mark.parametrize("kind", sorted(EXPORTS))
def test_label_studio_exports(tmp_path, kind):
    labeled = make_labeled(tmp_path)
    name, text = EXPORTS[kind]
    (labeled / name).write_text(text, encoding="utf-8")
    applied, skipped = _apply(tmp_path, labeled / name)
    # d, e and link.jpg, listed by label, are in no export: counted as absent, never lost silently
    assert applied == {"a.jpg": "dog", "sub/c.png": "fox"} and skipped == {"not_reviewed": 1, "absent": 3}


@pytest.mark.parametrize("kind", ["json", "json_min", "csv"])
def test_an_export_saved_outside_the_label_folder_with_images(tmp_path, kind):
    make_labeled(tmp_path)  # the label folder the export came from (not passed: it is elsewhere)
    name, text = EXPORTS[kind]
    elsewhere = tmp_path / "downloads"
    elsewhere.mkdir()
    (elsewhere / name).write_text(text, encoding="utf-8")
    with pytest.raises(SourceError, match="--images"):
        clipdata.review_apply(elsewhere / name, tmp_path / "no")
    applied, _ = _apply(tmp_path, elsewhere / name, images=tmp_path / "photos")
    assert applied == {"a.jpg": "dog", "sub/c.png": "fox"}


@pytest.mark.parametrize("name, content, fragment", [
    ("export.json", '[{"data": {"image": "x"}, "annotations": ["cat"]}]', "annotation"),
    ("export.json", '[{"data": {"image": "x"}, "annotations": {"a": 1}}]', "annotation"),
    ("export.json", '[{"data": {"image": "x"}, "annotations": [{"result": "cat"}]}]', "annotation"),
    ("export.json", '{"tasks": []}', "list of tasks"),
    ("export.json", '["a.jpg"]', "not an object"),
    ("export.json", '[{"image": "a.jpg", "class": 3}]', "not a class name"),
    ("export.json", '[{"data": {"image": "x"}', "malformed"),
    ("export.csv", "file,label\na.jpg,cat\n", "expected the columns"),
    ("export.csv", b"image,class\na.jpg,caf\xe9\n", "UTF-8"),
])
def test_bad_exports_are_one_clear_error(tmp_path, name, content, fragment):
    labeled = make_labeled(tmp_path)
    f = labeled / name
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SourceError, match=fragment) as e:
        clipdata.review_apply(f, tmp_path / "layout")
    assert e.value.file and Path(e.value.file).name == name


@pytest.mark.parametrize("cut", ['{"path": "a.jpg", "top_', '{"nope": 1}', "[]"])
def test_a_damaged_predictions_file_names_its_line(tmp_path, cut):
    labeled = make_labeled(tmp_path)
    pred = labeled / "predictions.jsonl"
    pred.write_text(pred.read_text() + cut + "\n")
    (labeled / "export.json").write_text(EXPORTS["json"][1])
    with pytest.raises(SourceError) as e:
        clipdata.review_apply(labeled / "export.json", tmp_path / "layout")
    assert e.value.file.endswith("predictions.jsonl") and "7" in (e.value.where or "")


REAL = Path(__file__).parent / "fixtures" / "labelstudio" / "review-exports"


@pytest.mark.parametrize("name, b_skipped_as", [("export.json", "cancelled"), ("export_min.json", "absent"),
                                                 ("export.csv", "absent")])
def test_every_export_kind_takes_the_latest_annotation_and_counts_every_listed_image(tmp_path, name, b_skipped_as):
    """Real JSON_MIN and CSV exports list a task's annotations newest first (a.jpg: dog, then
    the older cat) and leave out a task whose annotations were all cancelled (b.jpg): the
    latest is taken in every kind, with a note, and every image label listed is accounted for."""
    labeled = make_labeled(tmp_path)
    (labeled / name).write_bytes((REAL / name).read_bytes())
    result = clipdata.review_apply(labeled / name, tmp_path / "layout")
    rows = [json.loads(l) for l in (tmp_path / "layout" / "manifest.jsonl").read_text().splitlines()]
    assert {r["source_image"]: r["class"] for r in rows} == {"a.jpg": "dog", "sub/c.png": "fox"}
    skipped = result.layout.skipped_by_reason
    # b: cancelled (the JSON export says so) or absent (the others leave it out); d: no choice;
    # e and link.jpg: label listed them, the export never had them
    assert skipped == ({b_skipped_as: 1, "not_reviewed": 1, "absent": 2} if b_skipped_as == "cancelled"
                       else {"not_reviewed": 1, "absent": 3})
    assert result.layout.images + sum(skipped.values()) == 6  # every image label listed
    assert any("1 task(s) have several annotations: the latest non-cancelled one was taken" in n
               for n in result.layout.notes)
    assert (result.reviewed, result.accuracy) == (2, 0.0)  # a: cat proposed, dog chosen; c: dog proposed, fox
