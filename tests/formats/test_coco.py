from pathlib import Path

import pytest

from clipdata.errors import SourceError
from clipdata.formats import coco
from helpers import FIXTURES, make_image, write_coco

CATS = [{"id": 1, "name": "cat"}]
IMGS = [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}]


def ann(i=1, image=1, cat=1, bbox=(0, 0, 4, 4), **kw):
    return {"id": i, "image_id": image, "category_id": cat, "bbox": list(bbox) if bbox is not None else None, **kw}


def parse(data):
    return coco.parse(data, Path("x.json"))


# --- what parse accepts -------------------------------------------------------------

def test_noncontiguous_ids_from_zero_and_missing_optional_keys():
    idx = parse({
        "categories": [{"id": 0, "name": "a"}, {"id": 4, "name": "b"}],
        "images": [{"id": 77, "file_name": "sub/a.jpg"}],  # no width/height, no info/licenses
        "annotations": [ann(5, 77, 4), ann(6, 77, 0)],
    })
    assert idx.categories == {0: "a", 4: "b"}
    assert idx.images == {77: ("sub/a.jpg", None, None)}
    assert [(l.name, l.id) for l in idx.labels[77]] == [("b", 5), ("a", 6)]
    assert idx.notes == []


def test_roboflow_placeholder_category_is_dropped():
    idx = parse({
        "categories": [{"id": 0, "name": "signs", "supercategory": "none"},
                       {"id": 1, "name": "stop", "supercategory": "signs"},
                       {"id": 2, "name": "yield", "supercategory": "signs"}],
        "images": IMGS, "annotations": [ann(cat=1)],
    })
    assert idx.categories == {1: "stop", 2: "yield"}
    assert any("placeholder" in n and "signs" in n for n in idx.notes)
    assert idx.placeholder == "signs"  # the annotation group, used by scene captions


@pytest.mark.parametrize("categories, used", [
    # the "none" category owns annotations: a real class
    ([{"id": 0, "name": "signs", "supercategory": "none"}, {"id": 1, "name": "stop", "supercategory": "signs"}], 0),
    # other classes do not hang under it
    ([{"id": 0, "name": "signs", "supercategory": "none"}, {"id": 1, "name": "stop", "supercategory": "road"}], 1),
])
def test_placeholder_rule_is_strict(categories, used):
    idx = parse({"categories": categories, "images": IMGS, "annotations": [ann(cat=used)]})
    assert 0 in idx.categories


@pytest.mark.parametrize("data, where, fragment", [
    ({"images": [], "annotations": []}, "top level", 'no "categories"'),
    ({"categories": [], "annotations": []}, "top level", 'no "images"'),
    ({"categories": {}, "images": []}, "categories", "must be a list"),
    ({"categories": [{"id": 1}], "images": []}, "categories[0]", 'missing "name"'),
    ({"categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}], "images": []}, "categories[1]", "duplicate category id"),
    ({"categories": CATS, "images": [IMGS[0], IMGS[0]]}, "images[1]", "duplicate image id"),
    ({"categories": CATS, "images": [{"id": 1}]}, "images[0]", 'missing "file_name"'),
    ({"categories": CATS, "images": [{"id": 1, "file_name": "a", "width": -3}]}, "images[0]", "positive integer"),
    ({"categories": CATS, "images": IMGS, "annotations": [ann(image=9)]}, "annotations", "unknown image"),
    ({"categories": CATS, "images": IMGS, "annotations": [ann(cat=9)]}, "annotations", "unknown category"),
    ({"categories": CATS, "images": IMGS, "annotations": [{"image_id": 1, "category_id": 1}]}, "annotations[0]", 'missing "id"'),
    ({"categories": CATS, "images": IMGS, "annotations": ["x"]}, "annotations[0]", "expected an object"),
    ({"categories": [], "images": IMGS, "annotations": [{"id": 1, "image_id": 1, "category_id": 0, "caption": "a cat"}]}, "annotations", "captions file"),
    ({"categories": CATS, "images": IMGS, "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": []}]}, "annotations", "panoptic"),
    ({"categories": CATS, "images": IMGS, "annotations": {"a": 1}}, "annotations", "must be a list"),
    ({"categories": [{"id": [1], "name": "a"}], "images": []}, "categories[0]", "integer or a string"),
    ({"categories": CATS, "images": [{"id": 1, "file_name": "a", "width": 2.5}]}, "images[0]", "positive integer"),
    ({"categories": CATS, "images": IMGS, "annotations": [ann(image=None)]}, "annotations[0]", "integer or a string"),
])
def test_parse_errors_name_the_place(data, where, fragment):
    with pytest.raises(SourceError) as e:
        parse(data)
    assert e.value.where == where
    assert fragment in e.value.message
    assert str(e.value).startswith("x.json (")


def test_duplicate_annotation_ids_and_shared_names_are_notes():
    idx = parse({"categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "a"}],
                 "images": IMGS, "annotations": [ann(1), ann(1, cat=2)]})
    assert any("used more than once" in n for n in idx.notes)
    assert any("share the name" in n for n in idx.notes)


@pytest.mark.parametrize("text, where", [
    ('{"images": [', "line 1, column 13"),
    ('{\n  "images": [],\n  "categories": [}\n', "line 3, column 18"),
    ("", "line 1, column 1"),
])
def test_malformed_json_gives_line(tmp_path, text, where):
    f = tmp_path / "bad.json"
    f.write_text(text)
    with pytest.raises(SourceError) as e:
        coco.load_json(f)
    assert e.value.where == where and "malformed JSON" in e.value.message


@pytest.mark.parametrize("content, fragment", [(b"\xff\xfe{}", "not UTF-8"), (b"[1, 2]", "JSON object")])
def test_not_a_coco_object(tmp_path, content, fragment):
    f = tmp_path / "bad.json"
    f.write_bytes(content)
    with pytest.raises(SourceError, match=fragment):
        coco.load_json(f)


# --- where splits and images come from -------------------------------------------

@pytest.mark.parametrize("path, split", [
    ("ds/train/_annotations.coco.json", "train"),
    ("ds/valid/_annotations.coco.json", "valid"),
    ("ds/val/_annotations.coco.json", "valid"),
    ("ds/test/_annotations.coco.json", "test"),
    ("coco/annotations/instances_val2017.json", "valid"),
    ("coco/annotations/instances_train2017.json", "train"),
    ("ann/instances_test-dev.json", "test"),
    ("labels_validation.json", "valid"),
    ("annotations.json", None),
    ("trainer.json", None),
])
def test_split_of(path, split):
    assert coco.split_of(Path(path)) == split


def test_locate_rules(tmp_path):
    make_image(tmp_path / "images" / "a.jpg")
    make_image(tmp_path / "sub" / "b.jpg")
    dirs = coco.search_dirs(tmp_path / "x.json", None, "train")
    assert coco.locate("a.jpg", dirs) == tmp_path / "images" / "a.jpg"
    assert coco.locate("sub\\b.jpg", dirs) == tmp_path / "sub" / "b.jpg"  # Windows separator
    assert coco.locate("elsewhere/a.jpg", dirs) == tmp_path / "images" / "a.jpg"  # by base name
    assert coco.locate(str(tmp_path / "sub" / "b.jpg"), dirs) == tmp_path / "sub" / "b.jpg"  # absolute
    assert coco.locate("/no/such/dir/a.jpg", dirs) == tmp_path / "images" / "a.jpg"
    assert coco.locate("missing.jpg", dirs) is None


@pytest.mark.parametrize("layout, json_path, split", [
    ("datumaro/coco_dataset/coco", "annotations/instances_train.json", "train"),  # images/<split>/
    ("datumaro/coco_dataset/coco", "annotations/instances_val.json", "valid"),
    ("datumaro/coco_dataset/mmdet_coco", "annotations/instances_val.json", "valid"),  # <split>/ beside annotations/
    ("datumaro/coco_dataset/coco_roboflow", "val/_annotations.coco.json", "valid"),  # images beside the JSON
    ("datumaro/roboflow_coco", "train/_annotations.coco.json", "train"),
])
def test_real_layouts_find_their_images(layout, json_path, split):
    src = coco.read(FIXTURES / layout / json_path)
    assert src.samples and all(s.path is not None and s.path.is_file() for s in src.samples)
    assert {s.split for s in src.samples} == {split}


def test_export_folder_reads_every_split_file():
    src = coco.read(FIXTURES / "datumaro" / "roboflow_coco")
    assert sorted({s.split for s in src.samples}) == ["train", "valid"]
    src = coco.read(FIXTURES / "datumaro" / "coco_dataset" / "mmdet_coco")
    assert sorted({s.split for s in src.samples}) == ["train", "valid"]


def test_folder_without_coco_files(tmp_path):
    with pytest.raises(SourceError, match="no COCO annotation file"):
        coco.read(tmp_path)


def test_missing_image_remembers_where_it_looked(tmp_path):
    f = write_coco(tmp_path / "d.json", IMGS, [ann()], CATS)
    (s,) = coco.read(f).samples
    assert s.path is None and str(tmp_path) in s.searched and str(tmp_path / "images") in s.searched


def test_images_option_is_the_only_place_looked(tmp_path):
    make_image(tmp_path / "a.jpg")
    (tmp_path / "pics").mkdir()
    f = write_coco(tmp_path / "d.json", IMGS, [ann()], CATS)
    (s,) = coco.read(f, images=tmp_path / "pics").samples
    assert s.path is None and s.searched == (str(tmp_path / "pics"),)


def test_labels_crowd_and_invalid_boxes(tmp_path):
    f = write_coco(tmp_path / "d.json", IMGS, [
        ann(1), ann(2, iscrowd=1), ann(3, bbox=(0, 0, -1, 2)), ann(4, bbox=None),
        {"id": 5, "image_id": 1, "category_id": 1},  # no bbox: an image-level label
    ], CATS)
    src = coco.read(f)
    (s,) = src.samples
    assert [(l.id, l.box) for l in s.labels] == [(1, (0.0, 0.0, 4.0, 4.0)), (5, None)]
    assert sorted((k.reason, k.annotation_id) for k in src.skipped) == [
        ("crowd", 2), ("invalid_box", 3), ("invalid_box", 4)]
    (s,) = coco.read(f, include_crowd=True).samples
    assert [l.id for l in s.labels] == [1, 2, 5] and s.labels[1].iscrowd


def test_split_option_wins_over_layout_with_a_note():
    src = coco.read(FIXTURES / "datumaro/coco_dataset/coco/annotations/instances_val.json", split="test")
    assert {s.split for s in src.samples} == {"test"}
    assert any("--split test used" in n for n in src.notes)
