"""Label Studio exports as a source: label-studio-converter's real exports (rectangles with
two annotations per task, rotated rectangles, polygons) and the quirks of real exports
(float noise on a half-pixel edge, cancelled annotations, upload prefixes, local-files
paths with spaces and parentheses, several choices controls, JSON_MIN)."""
import json
import math
from pathlib import Path

import pytest

from clipdata import convert
from clipdata.formats import labelstudio
from helpers import FIXTURES, make_image, manifest

EXPORTS = FIXTURES / "label-studio-converter" / "exports"


def test_real_exports_with_images_elsewhere(tmp_path):
    for name in ("image1", "image2"):  # the export gives the size (2800x2800): the pictures are not measured
        make_image(tmp_path / name, (16, 16), fmt="PNG")
    src = labelstudio.read(EXPORTS / "test_export_yolo_data.json", images=tmp_path)
    first = json.loads((EXPORTS / "test_export_yolo_data.json").read_text())[0]
    latest = max(first["annotations"], key=lambda a: a["updated_at"])  # annotation 2, the later one
    (a, b) = src.samples[0].labels
    v = latest["result"][0]["value"]
    assert a.name == "parasites" and a.box == pytest.approx((v["x"] * 28, v["y"] * 28, v["width"] * 28, v["height"] * 28))
    assert [len(s.labels) for s in src.samples] == [2, 2] and "several annotations" in " ".join(src.notes)


def test_rotated_rectangles_turn_around_their_top_left_corner():
    """data_obb.json: the converter's own OBB rule, (x, y) then (x + w cos, y + w sin)…"""
    src = labelstudio.read(EXPORTS / "test_export_yolo_data_obb.json", masks=True)
    r = json.loads((EXPORTS / "test_export_yolo_data_obb.json").read_text())[0]["annotations"][0]["result"][0]
    v, W, H = r["value"], r["original_width"], r["original_height"]
    x, y, w, h = v["x"] * W / 100, v["y"] * H / 100, v["width"] * W / 100, v["height"] * H / 100
    c, s = math.cos(math.radians(v["rotation"])), math.sin(math.radians(v["rotation"]))
    corners = [x, y, x + w * c, y + w * s, x + w * c - h * s, y + w * s + h * c, x - h * s, y + h * c]
    label = src.samples[0].labels[0]
    assert label.mask.polygons[0] == pytest.approx(corners, abs=1e-5)
    assert len(src.samples[0].labels) == 23


def test_polygons_in_percent(tmp_path):
    src = labelstudio.read(EXPORTS / "test_export_json_min_data.json", masks=True)
    (label,) = src.samples[0].labels
    assert src.samples[0].name == "example.png" and label.mask.polygons[0][:2] == pytest.approx((56.888889, 61.765079))


def task(image, results, **kw):
    return {"id": kw.pop("id", 1), "data": {"image": image},
            "annotations": kw.pop("annotations", [{"id": 1, "result": results, "was_cancelled": False,
                                                   "updated_at": "2024-01-01T00:00:00Z"}]), **kw}


def rect(x, y, w, h, label="cat", W=105, H=105, **v):
    return {"type": "rectanglelabels", "from_name": "label", "to_name": "image", "id": "r1",
            "original_width": W, "original_height": H,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label], **v}}


def test_float_noise_on_a_half_pixel_edge_rounds_stably(tmp_path):
    """9.999999999999998% of 105 px is 10.499999999999998 by floats: read as 10.5, so the
    crop starts at pixel 11 (halves up), as it would from the exact value."""
    make_image(tmp_path / "a.png", (105, 105), fmt="PNG")
    (tmp_path / "x.json").write_text(json.dumps([task("a.png", [rect(9.999999999999998, 10, 20, 20)])]))
    out = tmp_path / "out"
    convert(tmp_path / "x.json", out, "labelstudio", workers=1)
    assert manifest(out)[0]["box"] == [11, 11, 21, 21]  # 10.5 -> 11; 31.5 -> 32


def test_annotation_choice_and_paths(tmp_path):
    photos = tmp_path / "photos"
    make_image(photos / "my cat (1).jpg", (40, 40))
    make_image(photos / "b.jpg", (40, 40))
    make_image(photos / "c.jpg", (40, 40))
    old = {"id": 1, "result": [rect(0, 0, 50, 50, "dog", 40, 40)], "updated_at": "2024-01-01T00:00:00Z"}
    new = {"id": 2, "result": [rect(0, 0, 50, 50, "cat", 40, 40)], "updated_at": "2024-02-01T00:00:00Z"}
    cancelled = {"id": 3, "result": [rect(0, 0, 50, 50, "cow", 40, 40)], "updated_at": "2024-03-01T00:00:00Z",
                 "was_cancelled": True}
    choices = [{"type": "choices", "from_name": "kind", "value": {"choices": ["indoor"]}, "id": "c1"},
               {"type": "choices", "from_name": "tags", "value": {"choices": ["pet", "fluffy"]}, "id": "c2"},
               {"type": "textarea", "from_name": "note", "value": {"text": ["hello"]}, "id": "t1"}]
    tasks = [task("/data/local-files/?d=photos/my%20cat%20%281%29.jpg", None, annotations=[old, new, cancelled]),
             task("/data/upload/3/8f2a1b3c-b.jpg", choices, id=2),
             task("https://example.com/bucket/c.jpg?X-Amz=1", [], id=3, annotations=[cancelled]),
             task("c.jpg", [], id=4, annotations=[], predictions=[{"result": []}])]
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    src = labelstudio.read(tmp_path / "export.json", images=tmp_path)
    got = [(s.name, s.path and s.path.relative_to(tmp_path).as_posix(), [l.name for l in s.labels]) for s in src.samples]
    assert got == [("photos/my cat (1).jpg", "photos/my cat (1).jpg", ["cat"]),
                   ("8f2a1b3c-b.jpg", None, ["indoor", "pet", "fluffy"]),
                   ("c.jpg", None, []), ("c.jpg", None, [])]
    src = labelstudio.read(tmp_path / "export.json", images=photos)
    assert [s.path.name for s in src.samples[1:]] == ["b.jpg", "c.jpg", "c.jpg"]  # upload prefix; URL never fetched
    notes = " ".join(src.notes)
    assert "only cancelled" in notes and "predictions but no annotation" in notes and "textarea" in notes


def test_json_min_latest_record_per_task(tmp_path):
    make_image(tmp_path / "a.jpg", (50, 50))
    records = [
        {"image": "a.jpg", "id": 7, "label": [{"x": 10, "y": 10, "width": 20, "height": 20, "rotation": 0,
                                              "rectanglelabels": ["dog"], "original_width": 50, "original_height": 50}],
         "annotator": 1, "annotation_id": 1, "updated_at": "2024-01-01"},
        {"image": "a.jpg", "id": 7, "label": [{"x": 10, "y": 10, "width": 20, "height": 20, "rotation": 0,
                                              "rectanglelabels": ["cat"], "original_width": 50, "original_height": 50},
                                             {"points": [[1, 1], [50, 1], [20, 40]], "polygonlabels": ["cat"],
                                              "original_width": 50, "original_height": 50}],
         "choice": "indoor", "tags": {"choices": ["pet", "fluffy"]}, "annotator": 2, "annotation_id": 2,
         "updated_at": "2024-02-01"},
    ]
    (tmp_path / "min.json").write_text(json.dumps(records))
    src = labelstudio.read(tmp_path / "min.json", masks=True)
    (s,) = src.samples
    assert [(l.name, l.box is None, l.mask is not None) for l in s.labels] == [
        ("cat", False, False), ("cat", False, True), ("indoor", True, False), ("pet", True, False), ("fluffy", True, False)]
    assert s.labels[0].box == (5.0, 5.0, 10.0, 10.0)
    assert "several annotations" in " ".join(src.notes) and "choice" in " ".join(src.notes)


@pytest.mark.parametrize("name", ["test_export_yolo_data.json", "test_export_yolo_data_obb.json",
                                  "test_export_json_min_data.json"])
def test_json_min_written_by_the_converter_reads_as_the_full_export(name):
    """exports/json_min/ is label-studio-converter 0.0.59's own JSON_MIN of each full export."""
    full = labelstudio.read(EXPORTS / name, masks=True)
    minimal = labelstudio.read(EXPORTS / "json_min" / name, masks=True)
    shapes = lambda src: [(s.name, [(l.name, l.box, l.mask) for l in s.labels]) for s in src.samples]  # noqa: E731
    assert shapes(full) == shapes(minimal) and sum(len(s.labels) for s in full.samples) > 0
