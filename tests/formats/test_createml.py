"""Create ML JSON: Roboflow's export (datumaro's asset), centre-based boxes, images without
annotations, RGBA PNGs."""
import json

import numpy as np
from PIL import Image

from clipdata import convert
from clipdata.formats import createml
from helpers import FIXTURES, manifest

ROBOFLOW = FIXTURES / "datumaro" / "roboflow_createml"


def test_roboflow_export_splits_and_centre_based_boxes():
    """x, y are the box's centre (Apple's definition): {x 2, y 1, w 3, h 1} is (0.5, 0.5, 3, 1).
    datumaro's importer reads them as the top-left corner; its asset agrees only with itself."""
    src = createml.read(ROBOFLOW)
    assert [(s.split, s.name, [(l.name, l.box) for l in s.labels]) for s in src.samples] == [
        ("train", "train_001.jpg", [("label_0", (0.5, 0.5, 3.0, 1.0))]),
        ("train", "train_002.jpg", [("label_1", (-1.0, -2.0, 2.0, 4.0))]),
        ("valid", "val_001.jpg", [("label_0", (-0.5, -1.0, 1.0, 2.0)), ("label_1", (-4.5, -0.5, 9.0, 1.0))])]
    assert all(s.path is not None for s in src.samples) and src.classes == ["label_0", "label_1"]


def test_rgba_png_and_images_without_annotations(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: composited on white
    rgba[5:15, 10:20, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "empty.png")
    (tmp_path / "ann.json").write_text(json.dumps([
        {"image": "a.png", "annotations": [{"label": "red", "coordinates": {"x": 15, "y": 10, "width": 10, "height": 10}}]},
        {"image": "empty.png", "annotations": []}]))
    out = tmp_path / "out"
    report = convert(tmp_path / "ann.json", out, "createml", image_format="png", workers=1)
    (row,) = manifest(out)
    assert row["box"] == [10, 5, 10, 10] and report.ledger.to_dict()["images"]["skipped"] == {"no_labels": 1}
    assert Image.open(out / row["path"]).getpixel((0, 0)) == (200, 0, 0)
