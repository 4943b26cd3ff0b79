from pathlib import Path

import pytest

from clipdata.errors import SourceError
from clipdata.formats import yolo
from helpers import FIXTURES, make_image


@pytest.mark.parametrize("image, label", [
    ("ds/train/images/a.jpg", "ds/train/labels/a.txt"),
    ("ds/images/train/a.jpg", "ds/labels/train/a.txt"),
    ("images/x/images/b.png", "images/x/labels/b.txt"),  # the last `images` component
    ("obj_train_data/1.jpg", "obj_train_data/1.txt"),  # no `images`: beside the image
    ("ds/myimages/c.jpeg", "ds/myimages/c.txt"),
])
def test_label_path(image, label):
    assert yolo.label_path(Path(image)) == Path(label)


@pytest.mark.parametrize("text, expected", [
    ("0 0.5 0.5 0.2 0.4", [(1, 0, (0.4, 0.3, 0.6, 0.7))]),
    ("1 0.5 0.5 0.2 0.4 0.93", [(1, 1, (0.4, 0.3, 0.6, 0.7))]),  # 6th column: confidence, ignored
    ("\n0 0.5 0.5 1 1\n\n", [(2, 0, (0.0, 0.0, 1.0, 1.0))]),  # blank lines; line numbers kept
    ("0 0.5 0.5 1.01 1.01", [(1, 0, (0.0, 0.0, 1.0, 1.0))]),  # within 1%: clamped
    ("1.0 0.5 0.5 0.2 0.2", [(1, 1, (0.4, 0.4, 0.6, 0.6))]),  # class written as a float
    # a file with any line over 6 columns holds polygons: every line is one
    ("0 0.1 0.2 0.3 0.2 0.2 0.6\n1 0.5 0.5 0.7 0.5", [(1, 0, (0.1, 0.2, 0.3, 0.6)), (2, 1, (0.5, 0.5, 0.7, 0.5))]),
    # 9 columns in a polygon file are a 4-point polygon, not an oriented box
    ("0 0.1 0.1 0.4 0.1 0.4 0.3 0.1 0.3", [(1, 0, (0.1, 0.1, 0.4, 0.3))]),
    ("", []),
])
def test_parse_labels(text, expected):
    boxes, skips = yolo.parse_labels(text, "l.txt", nc=2)
    assert [(n, c, tuple(round(v, 6) for v in b)) for n, c, b in boxes] == expected and skips == []


@pytest.mark.parametrize("text, reason", [
    ("0 0.5 0.5 1.2 1.2", "outside the image"),
    ("0 0.5 0.5 -0.1 0.2", "negative size"),
    ("0 nan 0.5 0.1 0.1", "outside the image"),
])
def test_parse_labels_skips(text, reason):
    boxes, skips = yolo.parse_labels(text, "l.txt", nc=1)
    assert boxes == [] and len(skips) == 1 and reason in skips[0].detail and skips[0].reason == "invalid_box"


@pytest.mark.parametrize("text, where, fragment", [
    ("0 0.5 0.5 0.1", "line 1", "got 4 value"),
    ("0 0.5 0.5 0.1 0.1\n0 a b c d", "line 2", "not a number"),
    ("3 0.5 0.5 0.1 0.1", "line 1", "class index 3 is out of range"),
    ("-1 0.5 0.5 0.1 0.1", "line 1", "out of range"),
    ("0.5 0.5 0.5 0.1 0.1", "line 1", "out of range"),
    ("0 0.1 0.1 0.2 0.2 0.3 0.3 0.4", "line 1", "x y pairs"),
])
def test_parse_labels_errors_name_file_and_line(text, where, fragment):
    with pytest.raises(SourceError) as e:
        yolo.parse_labels(text, "l.txt", nc=2)
    assert e.value.file == "l.txt" and e.value.where == where and fragment in e.value.message


def _dataset(root: Path, yaml_text: str, files: dict[str, str]) -> Path:
    for rel, label in files.items():
        make_image(root / rel, (20, 10))
        if label is not None:
            lab = yolo.label_path(root / rel)
            lab.parent.mkdir(parents=True, exist_ok=True)
            lab.write_text(label)
    (root / "data.yaml").write_text(yaml_text)
    return root / "data.yaml"


def test_ultralytics_yaml_names_dict_splits_and_background(tmp_path):
    f = _dataset(tmp_path, "path: .\ntrain: images/train\nval: images/val\nnames: {0: cat, 1: dog}\n", {
        "images/train/a.jpg": "1 0.5 0.5 0.5 0.5", "images/train/bg.jpg": None, "images/val/b.jpg": "0 0.25 0.5 0.5 1",
    })
    src = yolo.read(f)
    assert src.classes == ["cat", "dog"]
    got = {(s.split, s.name): [(l.name, l.box, l.id) for l in s.labels] for s in src.samples}
    assert got == {
        ("train", "images/train/a.jpg"): [("dog", (5.0, 2.5, 10.0, 5.0), 1)],
        ("train", "images/train/bg.jpg"): [],  # a background image: no label file
        ("valid", "images/val/b.jpg"): [("cat", (0.0, 0.0, 10.0, 10.0), 1)],
    }


def test_txt_lists_lists_of_folders_and_validation_key(tmp_path):
    f = _dataset(tmp_path, "train: [a/images, b/images]\nvalidation: val.txt\nnames: [x]\n", {
        "a/images/1.jpg": "0 0.5 0.5 0.5 0.5", "b/images/2.jpg": "0 0.5 0.5 0.5 0.5", "c/images/3.jpg": "0 0.5 0.5 0.5 0.5",
    })
    (tmp_path / "val.txt").write_text("# held out\n./c/images/3.jpg\n")
    src = yolo.read(f)
    assert sorted((s.split, s.name) for s in src.samples) == [
        ("train", "a/images/1.jpg"), ("train", "b/images/2.jpg"), ("valid", "c/images/3.jpg")]


def test_missing_image_in_a_list(tmp_path):
    f = _dataset(tmp_path, "train: train.txt\nnames: [x]\n", {})
    (tmp_path / "train.txt").write_text("images/gone.jpg\n")
    (s,) = yolo.read(f).samples
    assert s.path is None and s.name == "images/gone.jpg"


@pytest.mark.parametrize("yaml_text, fragment", [
    ("train: images\nnames: [a, b]\nnc: 3\n", "nc is 3 but names lists 2"),
    ("train: images\n", "no `names`"),
    ("train: images\nnames: {0: a, 2: b}\n", "without gaps"),
    ("names: [a]\n", "no train/val/test"),
    ("train: nowhere\nnames: [a]\n", "not a folder or a .txt list"),
    ("train: [images\n", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping"),
])
def test_bad_yaml(tmp_path, yaml_text, fragment):
    (tmp_path / "images").mkdir()
    (tmp_path / "data.yaml").write_text(yaml_text)
    with pytest.raises(SourceError, match=fragment):
        yolo.read(tmp_path / "data.yaml")


def test_non_utf8_yaml(tmp_path):
    (tmp_path / "data.yaml").write_bytes(b"names: [caf\xe9]\n")
    with pytest.raises(SourceError, match="not UTF-8"):
        yolo.read(tmp_path / "data.yaml")


def test_download_key_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    f = _dataset(tmp_path, f"train: images\nnames: [a]\ndownload: |\n  open({str(marker)!r}, 'w')\n",
                 {"images/1.jpg": "0 0.5 0.5 0.5 0.5"})
    yolo.read(f)
    assert not marker.exists()


def test_roboflow_yaml_with_dotdot_paths_and_val_folder():
    src = yolo.read(FIXTURES / "datumaro" / "roboflow_yolo")
    assert sorted((s.split, s.name, len(s.labels)) for s in src.samples) == [
        ("train", "train/images/train_001.jpg", 1), ("train", "train/images/train_002.jpg", 1),
        ("valid", "val/images/val_001.jpg", 2)]


def test_absolute_path_that_does_not_exist_falls_back_with_a_note():
    src = yolo.read(FIXTURES / "road-signs-classifier" / "dataset_split" / "data.yaml")
    assert any("does not exist" in n for n in src.notes)
    assert len(src.samples) == 37 and {s.split for s in src.samples} == {"train", "valid", "test"}
    assert src.classes[:3] == ["tunnel", "Speedlimit_50", "Speedlimit_100"]


def test_darknet_layout():
    src = yolo.read(FIXTURES / "datumaro" / "yolo_dataset" / "strict")
    (s,) = src.samples
    assert s.split == "train" and [l.name for l in s.labels] == ["label_2", "label_4"]
    assert len(src.classes) == 10


def test_flat_layouts_with_classes_txt_and_split_subfolders():
    src = yolo.read(FIXTURES / "label-studio-converter" / "test_import_yolo_data")
    assert src.classes == ["closed_door", "opened_door", "bus", "number"]
    assert len(src.samples) == 7 and sum(len(s.labels) for s in src.samples) == 25
    assert {Path(s.name).suffix for s in src.samples} == {".jpg", ".png", ".jpeg"}
    src = yolo.read(FIXTURES / "datumaro" / "yolo_dataset" / "labels")  # obj.names, images/<split>/, a README.txt
    assert sorted(s.split for s in src.samples) == ["train", "valid"]


def test_oriented_boxes_are_refused():
    with pytest.raises(SourceError, match="oriented boxes"):
        yolo.read(FIXTURES / "datumaro" / "roboflow_yolo_obb")
    with pytest.raises(SourceError, match="oriented boxes"):
        yolo.read(FIXTURES / "datumaro" / "roboflow_yolo_obb" / "data.yaml")


def test_folder_without_a_yolo_marker(tmp_path):
    with pytest.raises(SourceError, match="no data.yaml"):
        yolo.read(tmp_path)


# Image lists (`train: list.txt`, obj.data's train.txt): one rule for every spelling of an entry.
def _listed(root: Path, lines: dict[str, list[str]], extra_images=()) -> Path:
    """Images a, b (one box each) under images/, labels under labels/, and one list per split."""
    for n in ("a", "b", *extra_images):
        make_image(root / "images" / f"{n}.jpg", (20, 10))
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{n}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    for name, entries in lines.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("\n".join(e.replace("ROOT", str(root)) for e in entries) + "\n")
    keys = {"train.txt": "train", "val.txt": "val", "lists/train.txt": "train"}
    (root / "data.yaml").write_text("".join(f"{keys[n]}: {n}\n" for n in lines) + "names: [x]\n")
    return root / "data.yaml"


@pytest.mark.parametrize("case, lines", [
    ("plain", {"train.txt": ["images/a.jpg", "images/b.jpg"]}),
    ("./ in the list's folder", {"train.txt": ["./images/a.jpg", "./images/b.jpg"]}),
    ("./ from a list in a subfolder", {"lists/train.txt": ["./../images/a.jpg", "./../images/b.jpg"]}),
    ("absolute", {"train.txt": ["ROOT/images/a.jpg", "ROOT/images/b.jpg"]}),
    ("mixed spellings", {"train.txt": ["ROOT/images/a.jpg", "./images/b.jpg"]}),
    ("two lists sharing one labels folder", {"train.txt": ["ROOT/images/a.jpg"], "val.txt": ["./images/b.jpg"]}),
    ("Windows separators", {"train.txt": ["images\\a.jpg", ".\\images\\b.jpg"]}),
    ("written on another machine", {"train.txt": ["C:\\Users\\me\\ds\\images\\a.jpg", "/home/them/ds/images/b.jpg"]}),
    ("Darknet's data/ prefix", {"train.txt": ["data/images/a.jpg", "data/images/b.jpg"]}),
])
def test_every_spelling_of_a_list_entry_reads_each_box_once(tmp_path, case, lines):
    import clipdata
    f = _listed(tmp_path / "ds", lines)
    report = clipdata.convert(f, tmp_path / "out", format="yolo")
    assert report.crops == 2, case
    assert report.ledger.boxes.read == 2 and not report.skipped, (case, report.skipped)
    assert sorted(s["source_image"] for s in _rows(tmp_path / "out")) == ["images/a.jpg", "images/b.jpg"]


def _rows(out: Path) -> list[dict]:
    import json
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_a_listed_image_that_is_not_on_disk_is_missing_not_a_background_image(tmp_path):
    import clipdata
    from clipdata.errors import MissingImagesError
    f = _listed(tmp_path / "ds", {"train.txt": ["images/a.jpg", "images/b.jpg", "images\\gone.jpg"]})
    with pytest.raises(MissingImagesError, match=r"1 image\(s\) not found: 'images/gone.jpg'"):
        clipdata.convert(f, tmp_path / "out", format="yolo")
    report = clipdata.convert(f, tmp_path / "out", format="yolo", skip_missing=True)
    assert report.crops == 2 and report.skipped_by_reason == {"missing_image": 1}


def test_a_windows_list_whose_images_are_all_missing_names_them(tmp_path):
    import clipdata
    from clipdata.errors import MissingImagesError
    f = _listed(tmp_path / "ds", {"train.txt": ["pics\\a.jpg", "pics\\b.jpg"]})
    with pytest.raises(MissingImagesError, match=r"2 image\(s\) not found: 'pics/a.jpg', 'pics/b.jpg'"):
        clipdata.convert(f, tmp_path / "out", format="yolo")


@pytest.mark.parametrize("lines", [
    {"train.txt": ["images/a.jpg", "images/b.jpg", "./images/a.jpg"]},  # twice in one list
    {"train.txt": ["images/a.jpg", "images/b.jpg"], "val.txt": ["ROOT/images/a.jpg"]},  # in two splits
])
def test_an_image_listed_twice_is_read_once_with_a_note(tmp_path, lines):
    import clipdata
    f = _listed(tmp_path / "ds", lines)
    report = clipdata.convert(f, tmp_path / "out", format="yolo")
    assert report.crops == 2 and {r["split"] for r in _rows(tmp_path / "out")} == {"train"}
    (twice,) = report.skipped
    assert twice.reason == "listed_twice" and twice.item == "images/a.jpg" and "first: train.txt line 1" in twice.detail


def test_a_label_file_whose_image_no_list_names(tmp_path):
    import clipdata
    f = _listed(tmp_path / "ds", {"train.txt": ["images/a.jpg", "images/b.jpg"]}, extra_images=["c"])
    (tmp_path / "ds/labels/d.txt").write_text("0 0.5 0.5 0.5 0.5\n0 0.5 0.5 0.2 0.2\n")  # no image at all
    report = clipdata.convert(f, tmp_path / "out", format="yolo")
    assert {(k.reason, k.item, k.labels) for k in report.skipped} == {
        ("not_in_list", "labels/c.txt", 1), ("missing_image", "labels/d.txt", 2)}
    assert report.ledger.boxes.read == 5 and report.ledger.boxes.written == 2


def test_darknet_lists_follow_the_same_rule(tmp_path):
    import clipdata
    root = tmp_path / "ds"
    _listed(root, {"train.txt": ["data\\obj\\images\\a.jpg", "/elsewhere/images/b.jpg", "images/a.jpg"]})
    (root / "obj.names").write_text("x\n")
    (root / "obj.data").write_text("classes = 1\ntrain = data/train.txt\nnames = data/obj.names\n")
    (root / "data.yaml").unlink()
    report = clipdata.convert(root, tmp_path / "out", format="yolo")
    assert report.crops == 2 and report.skipped_by_reason == {"listed_twice": 1}


@pytest.mark.parametrize("marker", ["kpt_shape: [3, 3]\n", "task: pose\n"])
def test_pose_labels_read_as_boxes_with_their_keypoints_ignored(tmp_path, marker):
    # Ultralytics pose lines: class cx cy w h, then keypoints (x y v each). Read as polygons they
    # would be refused ("x y pairs") or give the wrong box; the YAML says what they are.
    kpts = "0.3 0.3 2 0.5 0.5 2 0.7 0.7 1"
    f = _dataset(tmp_path, f"train: images/train\nnames: [person]\n{marker}", {
        "images/train/a.jpg": f"0 0.5 0.5 0.4 0.6 {kpts}\n0 0.2 0.2 0.2 0.2 {kpts}",
    })
    src = yolo.read(f, masks=True)
    (sample,) = src.samples
    assert [(l.name, tuple(round(v, 6) for v in l.box), l.mask) for l in sample.labels] == [
        ("person", (6.0, 2.0, 8.0, 6.0), None), ("person", (2.0, 1.0, 4.0, 2.0), None)]  # 20x10 image
    assert any("keypoints are ignored" in n for n in src.notes)


def test_without_a_pose_marker_keypoint_lines_are_refused_as_polygons(tmp_path):
    f = _dataset(tmp_path, "train: images/train\nnames: [person]\n", {
        "images/train/a.jpg": "0 0.5 0.5 0.4 0.6 0.3 0.3 2 0.5 0.5 2 0.7 0.7 1",
    })
    with pytest.raises(SourceError, match="x y pairs"):
        yolo.read(f)
