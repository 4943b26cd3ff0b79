import pytest

from clipdata.errors import SourceError
from clipdata.formats import voc
from helpers import FIXTURES, make_image


def xml(objects: str = "", size: str = "<size><width>20</width><height>10</height></size>", filename="a.jpg") -> bytes:
    return f"<annotation><filename>{filename}</filename>{size}{objects}</annotation>".encode()


def obj(name="cat", box=("1", "2", "3", "4"), order=("xmin", "ymin", "xmax", "ymax"), extra=""):
    values = dict(zip(("xmin", "ymin", "xmax", "ymax"), box))
    inner = "".join(f"<{t}>{values[t]}</{t}>" for t in order)
    return f"<object><name>{name}</name>{extra}<bndbox>{inner}</bndbox></object>"


@pytest.mark.parametrize("objects, expected", [
    # 1-based inclusive: pixel columns 1..3 are x 0, width 3
    (obj(), [("cat", (0.0, 1.0, 3.0, 3.0), 1)]),
    # tags by name, not position (Roboflow writes xmin, xmax, ymin, ymax)
    (obj(order=("xmin", "xmax", "ymin", "ymax")), [("cat", (0.0, 1.0, 3.0, 3.0), 1)]),
    (obj(box=("1.5", "2", "3.5", "4.0")), [("cat", (0.5, 1.0, 3.0, 3.0), 1)]),
    (obj(extra="<difficult>1</difficult>"), [("cat", (0.0, 1.0, 3.0, 3.0), 1)]),  # kept by default
    ("", []),
    (obj("a") + obj("b", ("5", "5", "5", "5")), [("a", (0.0, 1.0, 3.0, 3.0), 1), ("b", (4.0, 4.0, 1.0, 1.0), 2)]),
])
def test_parse_xml(objects, expected):
    filename, size, labels, skips = voc.parse_xml(xml(objects), "a.xml")
    assert filename == "a.jpg" and size == (20, 10) and skips == []
    assert [(l.name, l.box, l.id) for l in labels] == expected


def test_missing_size_and_difficult_skipped():
    _, size, labels, skips = voc.parse_xml(xml(obj(extra="<difficult>1</difficult>"), size=""), "a.xml", skip_difficult=True)
    assert size is None and labels == [] and [s.reason for s in skips] == ["difficult"]


@pytest.mark.parametrize("objects", [
    obj(box=("a", "2", "3", "4")), obj(box=("5", "2", "3", "4")), "<object><name>c</name></object>",
])
def test_bad_boxes_are_skipped(objects):
    _, _, labels, skips = voc.parse_xml(xml(objects), "a.xml")
    assert labels == [] and [s.reason for s in skips] == ["invalid_box"]


@pytest.mark.parametrize("data, fragment", [
    (b"<annotation><object>", "malformed XML"),
    (b"<root/>", "not a Pascal VOC file"),
    (b"<annotation><object><bndbox/></object></annotation>", "no <name>"),
    ((FIXTURES / "datumaro/labelme/img1.xml").read_bytes(), "LabelMe"),
])
def test_refused(data, fragment):
    with pytest.raises(SourceError, match=fragment):
        voc.parse_xml(data, "a.xml")


def test_voc_layout_with_imagesets_and_comment_lines():
    src = voc.read(FIXTURES / "datumaro/voc_dataset/voc_dataset3")  # "# a comment" in train.txt
    assert [(s.split, s.name) for s in src.samples] == [("train", "JPEGImages/2007_000001.jpg")]


def test_listed_id_without_xml_is_reported_not_fatal():
    src = voc.read(FIXTURES / "datumaro/voc_dataset/voc_dataset1")
    assert [(k.reason, k.item) for k in src.skipped] == [("missing_annotation", "2007_000002")]
    assert [s.name for s in src.samples] == ["JPEGImages/2007_000001.jpg"]
    assert src.samples[0].labels[1].box == (3.0, 4.0, 3.0, 3.0)  # <part> boxes are not objects


def test_listed_id_without_image_is_reported_not_fatal():
    src = voc.read(FIXTURES / "datumaro/voc_dataset/voc_dataset2")  # images absent
    assert src.samples == [] and {k.reason for k in src.skipped} == {"missing_image"}


def test_roboflow_split_folders():
    src = voc.read(FIXTURES / "datumaro/roboflow_voc")
    assert sorted((s.split, s.name) for s in src.samples) == [
        ("train", "train/train_001.jpg"), ("train", "train/train_002.jpg"), ("valid", "val/val_001.jpg")]
    assert src.classes == ["label_0", "label_1"]


def test_filename_fallback_and_flat_folder(tmp_path):
    make_image(tmp_path / "a.png", (20, 10), fmt="PNG")
    (tmp_path / "a.xml").write_bytes(xml(obj(), filename="renamed.jpg"))
    make_image(tmp_path / "b.jpg", (20, 10))
    (tmp_path / "b.xml").write_bytes(xml(obj("dog"), size="", filename="b.jpg"))
    src = voc.read(tmp_path, split="valid")
    assert sorted((s.split, s.name) for s in src.samples) == [("valid", "a.png"), ("valid", "b.jpg")]
    assert any("1 image(s) found by the XML file's name" in n for n in src.notes)


def test_glob_found_xml_with_missing_image_is_left_to_the_missing_rule(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "x.xml").write_bytes(xml(obj(), filename="x.jpg"))
    (s,) = voc.read(tmp_path).samples
    assert s.path is None and s.searched == (str(tmp_path / "JPEGImages"),)


def test_not_voc(tmp_path):
    with pytest.raises(SourceError, match="no VOC annotation"):
        voc.read(tmp_path)
