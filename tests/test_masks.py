"""Mask crops: the rasteriser against pycocotools bit for bit (real COCO polygons and RLE,
holes, self-touching polygons, polygons leaving the image), and `convert --mask` end to end:
the pixels outside the object are the fill colour or transparent, the ones inside are the
photo's, and the manifest names the mask."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipdata import convert
from clipdata.errors import OptionError
from clipdata.formats import coco, yolo
from clipdata.masks import Mask, check_rle, polygon_toggles, rle_counts, rle_from_rows, rle_string, window
from helpers import FIXTURES, make_image, manifest, write_coco

mask_api = pytest.importorskip("pycocotools.mask")

VAL2017 = FIXTURES / "cocoapi" / "instances_val2017_1img-sample.json"  # real COCO val2017 polygons + a crowd RLE


def reference(segm, h: int, w: int) -> np.ndarray:
    """pycocotools' own mask: frPyObjects, merged, decoded (the COCO API's annToMask)."""
    if isinstance(segm, dict) and isinstance(segm["counts"], str):  # compressed: decoded as it is (annToRLE)
        return mask_api.decode({"size": segm["size"], "counts": segm["counts"].encode()})
    rles = mask_api.frPyObjects(segm, h, w)
    return mask_api.decode(mask_api.merge(rles) if isinstance(rles, list) else rles)


def ours(mask: Mask, h: int, w: int, region=None) -> np.ndarray:
    region = region or (0, 0, w, h)
    m = window(mask, (w, h), region)
    if isinstance(m, str):
        return np.zeros((region[3] - region[1], region[2] - region[0]), np.uint8)
    return (np.asarray(m) > 0).astype(np.uint8)


def as_mask(segm) -> Mask:
    m = coco.segmentation(segm)
    assert isinstance(m, Mask), m
    return m


def test_real_coco_polygons_and_crowd_rle_equal_pycocotools():
    data = json.loads(VAL2017.read_text())
    h, w = data["images"][0]["height"], data["images"][0]["width"]
    for a in data["annotations"]:
        segm = a["segmentation"]
        ref = reference(segm, h, w)
        mask = as_mask(segm)
        assert (ours(mask, h, w) == ref).all(), a["id"]
        x, y, bw, bh = (int(round(v)) for v in a["bbox"])
        region = (max(0, x - 3), max(0, y - 3), min(w, x + bw + 3), min(h, y + bh + 3))
        assert (ours(mask, h, w, region) == ref[region[1]:region[3], region[0]:region[2]]).all(), a["id"]


@pytest.mark.parametrize("name, segm, h, w", [
    # datumaro's COCO assets: an uncompressed RLE of whole columns, and one of a square
    ("datumaro stuff_val", {"counts": [0, 20, 30], "size": [10, 5]}, 10, 5),
    ("datumaro stuff_train", {"counts": [10, 10, 5, 10, 15], "size": [5, 10]}, 5, 10),
    # a figure eight: two triangles touching at one vertex; a polygon whose edges cross itself
    ("self-touching", [[2, 2, 10, 10, 2, 18, 18, 2, 10, 10, 18, 18]], 20, 20),
    ("self-crossing", [[1, 1, 15, 15, 15, 1, 1, 15]], 16, 16),
    # half outside the image on every side; repeated and collinear points
    ("leaving the image", [[-6.3, 4, 12, -5.5, 30.2, 9, 14, 31.7]], 24, 26),
    ("repeated points", [[3, 3, 3, 3, 12.5, 3, 12.5, 3, 12.5, 9.5, 7, 9.5, 3, 9.5]], 14, 16),
    ("on half pixels", [[0.5, 0.5, 7.5, 0.5, 7.5, 7.5, 0.5, 7.5], [9.2, 1.1, 12.4, 6.6, 9.9, 6.9]], 10, 14),
])
def test_shapes_equal_pycocotools(name, segm, h, w):
    ref = reference(segm, h, w)
    assert (ours(as_mask(segm), h, w) == ref).all()


def test_rle_with_a_hole_and_random_polygons_equal_pycocotools():
    rng = np.random.default_rng(7)
    ring = np.zeros((30, 40), np.uint8, order="F")
    ring[5:25, 8:32] = 1
    ring[10:20, 14:26] = 0  # the hole
    rle = mask_api.encode(np.asfortranarray(ring))
    segm = {"size": [30, 40], "counts": rle["counts"].decode()}
    assert (ours(as_mask(segm), 30, 40) == ring).all()
    assert (ours(as_mask(segm), 30, 40, (12, 8, 30, 22)) == ring[8:22, 12:30]).all()
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(4, 50, 2))
        polys = [[float(v) for v in rng.uniform(-4, 1.1 * max(h, w), 2 * int(rng.integers(3, 9))).round(2)]
                 for _ in range(int(rng.integers(1, 3)))]
        assert (ours(as_mask(polys), h, w) == reference(polys, h, w)).all(), polys


def test_rle_strings_round_trip_and_cvat_rows():
    data = json.loads(VAL2017.read_text())
    crowd = data["annotations"][-1]["segmentation"]
    h, w = crowd["size"]
    compressed = mask_api.frPyObjects(crowd, h, w)["counts"].decode()
    assert check_rle(crowd) == (h, w, compressed)  # uncompressed counts become pycocotools' own string
    assert rle_string(rle_counts(compressed)) == compressed
    box = (np.arange(7 * 9).reshape(7, 9) % 3 == 0).astype(np.uint8)  # CVAT: row-major runs in a box
    runs, cur, n = [], 0, 0
    for v in box.flatten():
        if v != cur:
            runs.append(n)
            n, cur = 0, v
        n += 1
    runs.append(n)
    full = np.zeros((20, 30), np.uint8)
    full[5:12, 4:13] = box
    rh, rw, counts = rle_from_rows(runs, 4, 5, 9, 7, 20, 30)
    assert (mask_api.decode({"size": [rh, rw], "counts": counts.encode()}) == full).all()
    assert "outside" in rle_from_rows(runs, 25, 5, 9, 7, 20, 30)


def test_far_points_are_refused_not_looped_over():
    poly = (0.0, 0.0, 1e12, 5.0, 4.0, 8.0)
    assert "far outside the image" in window(Mask(polygons=(poly,)), (10, 10), (0, 0, 10, 10))
    assert len(polygon_toggles((1.0, 1.0, 8.0, 1.0, 8.0, 8.0), 10, 10)) > 0


# --- convert --mask ---------------------------------------------------------------------

def _scene(tmp_path: Path, anns: list[dict], size=(64, 48)) -> Path:
    make_image(tmp_path / "a.png", size, fmt="PNG")
    return write_coco(tmp_path / "d.json", [{"id": 1, "file_name": "a.png", "width": size[0], "height": size[1]}],
                      anns, [{"id": 1, "name": "cat"}])


TRIANGLE = [[10.0, 6.0, 40.5, 12.0, 20.0, 40.0]]


@pytest.mark.parametrize("padding, square", [(None, False), ("0.2", True), ("3px", False)])
def test_fill_crops_keep_the_object_and_fill_the_rest(tmp_path, padding, square):
    f = _scene(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 6, 30.5, 34], "segmentation": TRIANGLE}])
    out = tmp_path / "out"
    convert(f, out, "coco", mask="fill", image_format="png", padding=padding, square=square, workers=1)
    (row,) = manifest(out)
    x, y, bw, bh = row["box"]
    inside = reference(TRIANGLE, 48, 64)[y:y + bh, x:x + bw].astype(bool)
    crop = np.asarray(Image.open(out / row["path"]))
    photo = np.asarray(Image.open(tmp_path / "a.png").convert("RGB"))[y:y + bh, x:x + bw]
    assert (crop[inside] == photo[inside]).all()
    assert (crop[~inside] == (123, 117, 104)).all() and (~inside).any()
    assert row["segmentation"] == TRIANGLE  # traceable: pycocotools reads it as it is


def test_alpha_crops_carry_the_mask_and_default_to_png(tmp_path):
    rle = mask_api.encode(np.asfortranarray(np.pad(np.ones((10, 12), np.uint8), ((20, 18), (30, 22)))))
    segm = {"size": [48, 64], "counts": rle["counts"].decode()}
    f = _scene(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [28, 18, 16, 14], "segmentation": segm}])
    out = tmp_path / "out"
    report = convert(f, out, "coco", mask="alpha", workers=1)
    (row,) = manifest(out)
    assert row["path"].endswith(".png") and report.options["image_format"] == "png"
    crop = Image.open(out / row["path"])
    x, y, bw, bh = row["box"]
    assert crop.mode == "RGBA"
    assert (np.asarray(crop)[:, :, 3] == reference(segm, 48, 64)[y:y + bh, x:x + bw] * 255).all()
    assert row["segmentation"] == segm


def test_mask_outcomes_are_counted(tmp_path):
    """A box without a mask is cropped as a rectangle (a note counts it); a mask with no
    pixel in its crop is skipped (`mask_outside_image`); a bbox that disagrees with its
    polygon is noted; CVAT's iscrowd=1 masks are objects."""
    far = [[50.0, 40.0, 60.0, 40.0, 60.0, 46.0]]
    cvat = {"size": [48, 64], "counts": mask_api.encode(np.asfortranarray(
        np.pad(np.ones((4, 4), np.uint8), ((2, 42), (2, 58)))))["counts"].decode()}
    f = _scene(tmp_path, [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "segmentation": far},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [2, 2, 4, 4], "segmentation": cvat, "iscrowd": 1,
         "attributes": {"occluded": False}},
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [9, 5, 0, 34], "segmentation": TRIANGLE},
    ])
    out = tmp_path / "out"
    report = convert(f, out, "coco", mask="fill", workers=1)
    prov = json.loads((out / "clipdata.json").read_text())
    assert prov["boxes"] == {"read": 4, "written": 3, "skipped": {"mask_outside_image": 1}}
    assert sorted(r["source_annotation_id"] for r in manifest(out)) == [1, 3, 4]
    notes = " ".join(report.notes)
    assert "1 box(es) have no mask" in notes and "CVAT masks" in notes
    assert "disagrees with their segmentation" in notes and "(ids 2)" in notes
    assert "no usable bbox" in notes  # the zero-width bbox of 4: its polygon's extent
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert skipped[0]["reason"] == "mask_outside_image" and "no pixel" in skipped[0]["detail"]


def test_without_mask_the_output_is_unchanged_and_crowds_stay_crowds(tmp_path):
    f = _scene(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 6, 30.5, 34], "segmentation": TRIANGLE},
                          {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "iscrowd": 1,
                           "segmentation": {"size": [48, 64], "counts": [64, 4, 3004]}}])
    out = tmp_path / "out"
    report = convert(f, out, "coco", workers=1)
    (row,) = manifest(out)
    assert "segmentation" not in row and report.skipped_by_reason == {"crowd": 1}
    assert "mask" not in report.options


@pytest.mark.parametrize("kwargs, fragment", [
    ({"mask": "blur"}, "--mask 'blur'"),
    ({"mask": "fill", "mode": "scenes"}, "--mode scenes"),
    ({"mask": "alpha", "image_format": "jpg"}, "transparency"),
    ({"mask": "fill", "mask_fill": "1,2"}, "three numbers"),
    ({"mask": "fill", "mask_fill": "0,0,300"}, "three numbers"),
    ({"mask_fill": "0,0,0"}, "only with --mask fill"),
])
def test_mask_option_errors(tmp_path, kwargs, fragment):
    f = _scene(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8]}])
    with pytest.raises(OptionError, match=fragment):
        convert(f, tmp_path / "out", "coco", workers=1, **kwargs)


def test_mask_fill_colour_and_other_readers(tmp_path):
    """A VOC set has no masks: --mask fill crops its boxes as rectangles, said in a note."""
    make_image(tmp_path / "voc" / "JPEGImages" / "a.jpg", (20, 20))
    (tmp_path / "voc" / "Annotations").mkdir(parents=True)
    (tmp_path / "voc" / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><object><name>c</name><bndbox><xmin>2</xmin><ymin>2</ymin>"
        "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
    report = convert(tmp_path / "voc", tmp_path / "out", "voc", mask="fill", mask_fill="0,0,0", workers=1)
    assert report.crops == 1 and any("have no mask" in n for n in report.notes)
    assert report.options["mask_fill"] == [0, 0, 0]


# --- YOLO segments and oriented boxes ---------------------------------------------------

@pytest.mark.parametrize("text, box, poly", [
    # a segment: the extent and the polygon
    ("0 0.1 0.2 0.5 0.2 0.3 0.6", (0.1, 0.2, 0.5, 0.6), (0.1, 0.2, 0.5, 0.2, 0.3, 0.6)),
    # an oriented box with its corners crossed (0, 2, 1, 3): put in order around the centre
    ("0 0.2 0.2 0.6 0.6 0.6 0.2 0.2 0.6", (0.2, 0.2, 0.6, 0.6), (0.2, 0.2, 0.6, 0.2, 0.6, 0.6, 0.2, 0.6)),
    # DOTA-style corners a few percent outside the image: kept, the box clamped
    ("0 -0.04 0.1 0.5 -0.03 1.05 0.4 0.5 0.9", (0.0, 0.0, 1.0, 0.9), (-0.04, 0.1, 0.5, -0.03, 1.05, 0.4, 0.5, 0.9)),
    # a concave 4-point polygon is a polygon, never reordered
    ("0 0.1 0.1 0.9 0.1 0.5 0.3 0.1 0.9", (0.1, 0.1, 0.9, 0.9), (0.1, 0.1, 0.9, 0.1, 0.5, 0.3, 0.1, 0.9)),
])
def test_yolo_shapes(text, box, poly):
    (row,), skips = yolo.parse_shapes(text, "l.txt", 1)
    assert skips == [] and tuple(round(v, 6) for v in row[2]) == box and row[3] == poly


def test_yolo_segments_become_masks_in_pixels(tmp_path):
    make_image(tmp_path / "images" / "a.png", (40, 20), fmt="PNG")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.1 0.1 0.9 0.2 0.5 0.9\n0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("train: images\nnames: [cat]\ntask: segment\n")
    src = yolo.read(tmp_path / "data.yaml", masks=True)
    seg, box = src.samples[0].labels
    assert seg.mask.polygons == ((4.0, 2.0, 36.0, 4.0, 20.0, 18.0),) and seg.box == pytest.approx((4, 2, 32, 16))
    assert box.mask is None  # five columns in a segment file: Ultralytics' 2-point extent, no shape
    assert yolo.read(tmp_path / "data.yaml").samples[0].labels[0].mask is None  # masks only when asked
    out = tmp_path / "out"
    convert(tmp_path / "data.yaml", out, "yolo", mask="alpha", workers=1)
    rows = manifest(out)
    assert rows[0]["segmentation"] == [[4.0, 2.0, 36.0, 4.0, 20.0, 18.0]] and "segmentation" not in rows[1]
