"""CVAT for images 1.1 XML: datumaro's real CVAT exports (a project with Train/Validation/
Test tasks, a task with empty labels, a video export), and the elements CVAT writes
(rotated boxes, polygons, its own mask RLE, tags) against their geometry."""
from pathlib import Path

import numpy as np
import pytest

from clipdata import convert
from clipdata.errors import SourceError
from clipdata.formats import cvat
from helpers import FIXTURES, make_image, manifest

CVAT = FIXTURES / "datumaro" / "cvat_dataset"


def test_project_export_subsets_become_splits():
    src = cvat.read(CVAT / "for_images" / "export_project")
    assert src.classes == ["label1", "label2"]
    assert sorted({(s.split, s.name) for s in src.samples}) == [
        (split, name) for split in ("test", "train", "valid") for name in ("img0.jpg", "img1.jpg")]
    assert all(s.path is not None and s.path.parent.name.lower() in ("train", "test", "validation") for s in src.samples)
    assert {k.detail.split(", ")[1] for k in src.skipped} == {"polyline 2: not cropped", "points 2: not cropped"}
    box = next(l for s in src.samples if s.name == "img0.jpg" for l in s.labels)
    assert box.box == (0.0, 2.0, 4.0, 2.0)  # xtl 0 ytl 2 xbr 4 ybr 4


def test_task_export_with_empty_labels_and_video_refused(tmp_path):
    src = cvat.read(CVAT / "for_images" / "export_task" / "train.xml")
    assert [k.reason for k in src.skipped] == ["no_label", "no_label", "unsupported_shape"]
    with pytest.raises(SourceError, match="CVAT for video"):
        cvat.read(CVAT / "for_video")


def xml(images: str, meta: str = "<meta><task><name>t</name></task></meta>") -> str:
    return f'<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>{meta}{images}</annotations>'


def test_shapes_geometry_and_masks(tmp_path):
    make_image(tmp_path / "images" / "a.png", (40, 30), fmt="PNG")
    mask = np.zeros((5, 6), np.uint8)
    mask[1:4, 2:5] = 1
    runs, cur, n = [], 0, 0
    for v in mask.flatten():
        if v != cur:
            runs.append(n)
            n, cur = 0, v
        n += 1  # the last background run left out: CVAT's decoder fills the rest
    (tmp_path / "annotations.xml").write_text(xml(
        '<image id="0" name="a.png" width="40" height="30">'
        '<box label="car" occluded="1" xtl="2" ytl="3" xbr="12" ybr="9" z_order="0"><attribute name="a">x</attribute></box>'
        '<box label="car" xtl="10" ytl="10" xbr="20" ybr="14" rotation="90"/>'
        '<polygon label="7" points="1.5,1;9,2;4,8.25"/>'
        f'<mask label="dog" rle="{", ".join(map(str, runs))}" left="20" top="5" width="6" height="5"/>'
        '<tag label="street"/><ellipse label="car" cx="5" cy="5" rx="2" ry="2"/>'
        '</image>'))
    src = cvat.read(tmp_path, masks=True)
    (s,) = src.samples
    got = [(l.name, tuple(round(v, 6) for v in l.box) if l.box else None, l.mask is not None) for l in s.labels]
    assert got == [("car", (2, 3, 10, 6), False), ("car", (13, 7, 4, 10), True), ("7", (1.5, 1, 7.5, 7.25), True),
                   ("dog", (20, 5, 6, 5), True), ("street", None, False)]
    assert [k.reason for k in src.skipped] == ["unsupported_shape"] and "rotated box" in " ".join(src.notes)
    out = tmp_path / "out"
    convert(tmp_path, out, "cvat", mask="alpha", workers=1)
    from PIL import Image
    dog = next(r for r in manifest(out) if r["class"] == "dog")
    alpha = np.asarray(Image.open(out / dog["path"]))[:, :, 3]
    assert dog["box"] == [20, 5, 6, 5] and (alpha == mask * 255).all()
    assert (out / "train" / "street" / "a.png").read_bytes() == (tmp_path / "images" / "a.png").read_bytes()


def test_listed_but_absent_and_present_but_unlisted(tmp_path):
    make_image(tmp_path / "images" / "Москва.jpg", (10, 10))
    make_image(tmp_path / "images" / "a.jpg", (10, 10))
    (tmp_path / "annotations.xml").write_text(xml(
        '<image id="0" name="a.jpg" width="10" height="10"><box label="0" xtl="1" ytl="1" xbr="5" ybr="5"/></image>'
        '<image id="1" name="gone.jpg" width="10" height="10"><box label="0" xtl="1" ytl="1" xbr="5" ybr="5"/></image>'))
    src = cvat.read(tmp_path)
    assert [s.path is None for s in src.samples] == [False, True]
    assert any("not listed in the XML" in n and "Москва.jpg" in n for n in src.notes)
    report = convert(tmp_path, tmp_path / "out", "cvat", skip_missing=True, workers=1)
    assert report.ledger.to_dict()["boxes"] == {"read": 2, "written": 1, "skipped": {"missing_image": 1}}
