"""End-to-end conversion: the layout contract, round trips, real files, bad input."""
import json
import os
from pathlib import Path

import pytest
from PIL import Image

import clipdata
from clipdata.errors import ClassNameError, MissingImagesError, OutputError, SourceError
from clipdata.formats import layout as clip
from helpers import FIXTURES, SAMPLES, make_image, manifest, tree_bytes, write_coco


# --- the layout contract ------------------------------------------------------------

def test_sample_coco(tmp_path):
    out = tmp_path / "out"
    report = clipdata.convert(SAMPLES / "coco" / "annotations.json", out, format="coco")
    source = json.loads((SAMPLES / "coco" / "annotations.json").read_text())
    assert report.crops == len(source["annotations"]) == 15
    names = sorted({c["name"] for c in source["categories"]})
    assert sorted(p.name for p in (out / "train").iterdir() if p.is_dir()) == names
    assert (out / "train" / "_tokenization.txt").read_text() == "\n".join(f"a photo of a {n}" for n in names)
    assert sorted(os.listdir(out)) == ["clipdata.json", "manifest.jsonl", "train"]


def test_manifest_rows_and_provenance(coco_set, tmp_path):
    out = tmp_path / "out"
    clipdata.convert(coco_set, out, format="coco")
    rows = manifest(out)
    assert rows == [
        {"split": "train", "class": "cat", "path": "train/cat/a_1.jpg", "caption": "a photo of a cat",
         "source_image": "a.jpg", "box": [4, 4, 20, 10], "source_annotation_id": 1},
        {"split": "train", "class": "dog", "path": "train/dog/a_2.jpg", "caption": "a photo of a dog",
         "source_image": "a.jpg", "box": [30, 11, 21, 20], "source_annotation_id": 2},
        {"split": "train", "class": "dog", "path": "train/dog/b_3.jpg", "caption": "a photo of a dog",
         "source_image": "b.png", "box": [0, 0, 40, 40], "source_annotation_id": 3},
    ]
    for row in rows:
        assert Image.open(out / row["path"]).size == tuple(row["box"][2:])
    prov = json.loads((out / "clipdata.json").read_text())
    assert prov["clipdata_version"] == clipdata.__version__
    assert prov["source"] == {"path": str(coco_set), "format": "coco"}
    assert prov["counts"] == {"train": {"cat": 1, "dog": 2}}
    assert prov["skipped"] == {"crowd": 1}
    assert prov["options"]["template"] == "a photo of a {}"
    # the unused category gets no folder and no caption line
    assert not (out / "train" / "unused").exists()


def test_same_command_gives_identical_bytes(coco_set, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    clipdata.convert(coco_set, a, format="coco")
    clipdata.convert(coco_set, b, format="coco")
    assert tree_bytes(a) == tree_bytes(b)


def test_round_trip_boxes_and_pixels(coco_set, tmp_path):
    """Convert, read the layout back, and compare with the source's labels, boxes and pixels."""
    out = tmp_path / "out"
    clipdata.convert(coco_set, out, format="coco", image_format="png")
    source = json.loads(coco_set.read_text())
    cats = {c["id"]: c["name"] for c in source["categories"]}
    files = {i["id"]: i["file_name"] for i in source["images"]}
    expected = sorted(
        (cats[a["category_id"]], files[a["image_id"]], a["id"])
        for a in source["annotations"] if not a["iscrowd"])
    layout = clip.read_layout(out)
    (split,) = layout.splits
    assert split.captions == [f"a photo of a {c}" for c in split.classes]
    rows = {r["path"]: r for r in manifest(out)}
    got = []
    for cls in split.classes:
        for path in split.images[cls]:
            row = rows[path.relative_to(out).as_posix()]
            got.append((cls, row["source_image"], row["source_annotation_id"]))
            x, y, w, h = row["box"]
            original = Image.open(coco_set.parent / row["source_image"]).convert("RGB")
            assert Image.open(path).tobytes() == original.crop((x, y, x + w, y + h)).tobytes()
    assert sorted(got) == expected


def test_splits_list_only_their_own_classes(tmp_path):
    src = tmp_path / "src"
    for f in ["train/a/1.jpg", "train/b/2.jpg", "val/b/3.jpg", "test/c/4.jpg"]:
        make_image(src / f, (8, 8))
    out = tmp_path / "out"
    report = clipdata.convert(src, out, format="folder", template="{a}")
    assert report.counts == {"train": {"a": 1, "b": 1}, "valid": {"b": 1}, "test": {"c": 1}}
    assert (out / "train" / "_tokenization.txt").read_text() == "an a\na b"
    assert (out / "valid" / "_tokenization.txt").read_text() == "a b"
    assert (out / "test" / "_tokenization.txt").read_text() == "a c"


def test_whole_images_are_copied_byte_for_byte_or_linked(tmp_path):
    src = tmp_path / "src"
    make_image(src / "cat" / "x.png", (8, 8), fmt="PNG")
    out = tmp_path / "out"
    clipdata.convert(src, out, format="folder")
    assert (out / "train/cat/x.png").read_bytes() == (src / "cat/x.png").read_bytes()
    assert manifest(out)[0]["box"] is None and manifest(out)[0]["source_annotation_id"] is None
    clipdata.convert(src, tmp_path / "linked", format="folder", link=True)
    assert os.path.samefile(tmp_path / "linked/train/cat/x.png", src / "cat/x.png")


def test_same_name_from_two_sources_gets_stable_suffixes(tmp_path):
    src = tmp_path / "src"
    for f in ["cat/x.jpg", "cat/more/x.jpg", "cat/X.JPG", "cat/y.jpg"]:
        make_image(src / f, (8, 8))
    out = tmp_path / "out"
    clipdata.convert(src, out, format="folder")
    names = sorted(p.name for p in (out / "train/cat").iterdir())
    assert len(names) == 4 and "y.jpg" in names
    assert len({n.casefold() for n in names}) == 4  # no clash even on case-insensitive disks
    assert sorted(r["source_image"] for r in manifest(out)) == ["cat/X.JPG", "cat/more/x.jpg", "cat/x.jpg", "cat/y.jpg"]
    again = tmp_path / "again"
    clipdata.convert(src, again, format="folder")
    assert tree_bytes(out) == tree_bytes(again)


def test_duplicate_annotation_ids_do_not_overwrite(tmp_path):
    make_image(tmp_path / "a.jpg")
    f = write_coco(tmp_path / "d.json", [{"id": 1, "file_name": "a.jpg"}], [
        {"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]},
        {"id": 7, "image_id": 1, "category_id": 1, "bbox": [5, 5, 5, 5]}], [{"id": 1, "name": "c"}])
    out = tmp_path / "out"
    report = clipdata.convert(f, out, format="coco")
    assert report.crops == 2 and len(list((out / "train/c").iterdir())) == 2


# --- captions and class names ----------------------------------------------------------

def test_ontology_rename_merge_drop_caption(coco_set, tmp_path):
    onto = tmp_path / "o.yaml"
    onto.write_text("classes:\n  cat: {name: pet, caption: a picture of a pet}\n"
                    "  dog: {name: pet}\n")
    out = tmp_path / "out"
    report = clipdata.convert(coco_set, out, format="coco", ontology=onto)
    assert report.counts == {"train": {"pet": 3}}
    assert (out / "train/_tokenization.txt").read_text() == "a picture of a pet"
    onto.write_text("classes:\n  dog: {drop: true}\n  cat: a cat, up close\n")
    report = clipdata.convert(coco_set, tmp_path / "o2", format="coco", ontology=onto)
    assert report.counts == {"train": {"cat": 1}}
    assert report.skipped_by_reason == {"crowd": 1, "dropped_class": 2}
    assert (tmp_path / "o2/train/_tokenization.txt").read_text() == "a cat, up close"


def test_rename_option(coco_set, tmp_path):
    report = clipdata.convert(coco_set, tmp_path / "out", format="coco", rename=["dog=hound", "cta=x"])
    assert report.counts == {"train": {"cat": 1, "hound": 2}}
    assert any("'cta'" in n for n in report.notes)  # a typo is pointed out


@pytest.mark.parametrize("names, fragment", [
    (["Cat", "cat"], "differ only by case"),
    (["../evil"], "path separator"),
    ([".."], "special folder"),
    ([".cat"], "starts with a dot"),
    ([" cat"], "white space"),
    (["_tokenization.txt"], "caption file"),
])
def test_bad_class_names_stop_before_writing(tmp_path, names, fragment):
    make_image(tmp_path / "a.jpg")
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    anns = [{"id": i + 1, "image_id": 1, "category_id": i + 1, "bbox": [0, 0, 4, 4]} for i in range(len(names))]
    f = write_coco(tmp_path / "d.json", [{"id": 1, "file_name": "a.jpg"}], anns, cats)
    with pytest.raises(ClassNameError, match=fragment):
        clipdata.convert(f, tmp_path / "out", format="coco")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "d.json"]


def test_class_names_are_nfc(tmp_path):
    make_image(tmp_path / "a.jpg")
    f = write_coco(tmp_path / "d.json", [{"id": 1, "file_name": "a.jpg"}],
                   [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]}],
                   [{"id": 1, "name": "Cafe\u0301 sign"}])
    report = clipdata.convert(f, tmp_path / "out", format="coco")
    assert report.classes == ["Caf\u00e9 sign"]
    assert (tmp_path / "out/train/Caf\u00e9 sign").is_dir()


# --- crops: geometry, colour, orientation ------------------------------------------------

def test_crop_options(coco_set, tmp_path):
    out = tmp_path / "out"
    clipdata.convert(coco_set, out, format="coco", padding="2px", square=True, min_size=21)
    rows = {r["source_annotation_id"]: r["box"] for r in manifest(out)}
    # ann 1 [4,4,20,10]: +2px -> [2,2,24,14] -> square 24 -> [2,-3,24,24] -> clamped [2,0,24,21]
    assert rows == {1: [2, 0, 24, 21], 2: [28, 8, 25, 25], 3: [0, 0, 40, 40]}


def test_out_of_range_boxes_are_clamped_or_skipped(tmp_path):
    make_image(tmp_path / "a.jpg", (20, 10))
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [-5, -5, 10, 10]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 5, 5]},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [15, 5, 100, 100]},
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 1, -3, 3]}]
    f = write_coco(tmp_path / "d.json", [{"id": 1, "file_name": "a.jpg"}], anns, [{"id": 1, "name": "c"}])
    report = clipdata.convert(f, tmp_path / "out", format="coco")
    assert {r["source_annotation_id"]: r["box"] for r in manifest(tmp_path / "out")} == {1: [0, 0, 5, 5], 3: [15, 5, 5, 5]}
    assert report.skipped_by_reason == {"empty_after_clamp": 1, "invalid_box": 1}


@pytest.mark.parametrize("mode, fmt, save", [
    ("P", "PNG", {"transparency": 0}),
    ("RGBA", "PNG", {}),
    ("LA", "PNG", {}),
    ("CMYK", "JPEG", {}),
    ("L", "JPEG", {}),
    ("I;16", "PNG", {}),
    ("1", "PNG", {}),
])
def test_any_image_mode_becomes_an_rgb_jpeg(tmp_path, mode, fmt, save):
    name = "a." + fmt.lower()
    make_image(tmp_path / name, (16, 16), mode=mode, fmt=fmt, **save)
    f = write_coco(tmp_path / "d.json", [{"id": 1, "file_name": name}],
                   [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 8, 8]}], [{"id": 1, "name": "c"}])
    clipdata.convert(f, tmp_path / "out", format="coco")
    crop = Image.open(tmp_path / "out/train/c/a_1.jpg")
    assert crop.format == "JPEG" and crop.mode == "RGB" and crop.size == (8, 8)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    img = Image.new("I;16", (8, 8), 32768)
    img.save(tmp_path / "a.png")
    f = write_coco(tmp_path / "d.json", [{"id": 1, "file_name": "a.png"}],
                   [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 8, 8]}], [{"id": 1, "name": "c"}])
    clipdata.convert(f, tmp_path / "out", format="coco", image_format="png")
    assert Image.open(tmp_path / "out/train/c/a_1.png").getpixel((3, 3)) == (128, 128, 128)


def _keyed(mode, key, colour):
    """An image whose left half is the colour key of a PNG tRNS chunk, the right half not."""
    img = Image.new(mode, (8, 8), colour)
    img.paste(key, (0, 0, 4, 8))
    img.info["transparency"] = key
    return img


@pytest.mark.parametrize("case, image", [
    ("alpha band", lambda: Image.new("RGBA", (8, 8), (255, 0, 0, 0))),
    ("RGB colour key (tRNS)", lambda: _keyed("RGB", (255, 0, 0), (0, 0, 255))),
    ("grey colour key (tRNS)", lambda: _keyed("L", 10, 200)),
    ("palette with a transparent index", lambda: _keyed("RGB", (255, 0, 0), (0, 0, 255)).convert("P")),
])
@pytest.mark.parametrize("image_format", ["png", "jpg"])
def test_transparent_pixels_become_white(tmp_path, case, image, image_format):
    img = image()
    img.save(tmp_path / "a.png", transparency=img.info.get("transparency")) if "transparency" in img.info \
        else img.save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").info.get("transparency") is not None or case == "alpha band"
    f = write_coco(tmp_path / "d.json", [{"id": 1, "file_name": "a.png"}],
                   [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 8, 8]}], [{"id": 1, "name": "c"}])
    clipdata.convert(f, tmp_path / "out", format="coco", image_format=image_format)
    crop = Image.open(tmp_path / f"out/train/c/a_1.{image_format}").convert("RGB")
    white = crop.getpixel((1, 3))
    assert all(v >= 250 for v in white), (case, white)  # JPEG may be off by a step
    if case != "alpha band":  # the opaque half keeps its colour
        assert crop.getpixel((6, 3)) != white


def _rotated_jpeg(path: Path) -> None:
    """Stored 40x20, left half black and right half white, EXIF orientation 6 (displayed
    rotated 90° clockwise: 20x40, top half black)."""
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, exif=exif.tobytes(), quality=100)


@pytest.mark.parametrize("size, expected_mean", [
    ((20, 40), 0),     # annotated on the displayed (rotated) picture: top 20x10 region is black
    ((40, 20), 255),   # annotated on the stored pixels: region [0,0,20,10] ... is black too
])
def test_exif_orientation_follows_the_annotated_size(tmp_path, size, expected_mean):
    _rotated_jpeg(tmp_path / "a.jpg")
    box = [0, 0, 20, 10] if size == (20, 40) else [20, 0, 20, 10]
    f = write_coco(tmp_path / "d.json", [{"id": 1, "file_name": "a.jpg", "width": size[0], "height": size[1]}],
                   [{"id": 1, "image_id": 1, "category_id": 1, "bbox": box}], [{"id": 1, "name": "c"}])
    report = clipdata.convert(f, tmp_path / "out", format="coco", image_format="png")
    crop = Image.open(tmp_path / "out/train/c/a_1.png").convert("L")
    mean = sum(crop.tobytes()) / (crop.width * crop.height)
    assert abs(mean - expected_mean) < 10
    assert any("EXIF orientation applied" in n for n in report.notes) == (size == (20, 40))


# --- real files ------------------------------------------------------------------------

def _pycocotools_crops(path: Path, root: Path) -> dict[str, int]:
    """Per class, the non-crowd boxes of images that exist, as pycocotools' index lists them."""
    from pycocotools.coco import COCO
    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()):
        index = COCO(str(path))
    counts: dict[str, int] = {}
    for img_id, img in index.imgs.items():
        if not any((d / img["file_name"]).is_file() for d in root):
            continue
        for a in index.loadAnns(index.getAnnIds(imgIds=[img_id], iscrowd=False)):
            name = index.cats[a["category_id"]]["name"]
            counts[name] = counts.get(name, 0) + 1
    return counts


COMPAT = [
    ("datumaro/coco_dataset/coco/annotations/instances_train.json", "images/train"),
    ("datumaro/coco_dataset/coco/annotations/instances_val.json", "images/val"),
    ("datumaro/coco_dataset/coco_instances/annotations/instances_val.json", "images/val"),
    ("datumaro/coco_dataset/coco_person_keypoints/annotations/person_keypoints_val.json", "images/val"),
    ("datumaro/coco_dataset/coco_stuff/annotations/stuff_train.json", "images/train"),
    ("datumaro/coco_dataset/mmdet_coco/annotations/instances_val.json", "val"),
    ("datumaro/coco_dataset/coco_roboflow/val/_annotations.coco.json", "."),
    ("sahi/combined_coco.json", "."),
    ("sahi/modified_terrain1_coco.json", "."),
    ("sahi/modified_terrain2_coco.json", "."),
    ("sahi/terrain1_coco.json", "."),
    ("sahi/terrain2_coco.json", "."),
    ("sahi/terrain_all_coco.json", "."),  # names terrain3.png, which is absent
]


@pytest.mark.parametrize("rel, images", COMPAT)
def test_real_coco_files_give_the_crops_pycocotools_implies(tmp_path, rel, images):
    pytest.importorskip("pycocotools")
    path = FIXTURES / rel
    base = path.parent.parent if path.parent.name == "annotations" else path.parent
    expected = _pycocotools_crops(path, [base / images])
    if not expected:  # e.g. only crowd boxes: refused before anything is written
        with pytest.raises(SourceError, match="nothing to convert"):
            clipdata.convert(path, tmp_path / "out", format="coco", skip_missing=True)
        return
    report = clipdata.convert(path, tmp_path / "out", format="coco", skip_missing=True)
    assert sum(report.counts[next(iter(report.counts))].values()) == sum(expected.values()) == report.crops
    (per_class,) = report.counts.values()
    assert per_class == dict(sorted(expected.items()))


def test_coco_labels_file_gives_whole_images(tmp_path):
    report = clipdata.convert(FIXTURES / "datumaro/coco_dataset/coco_labels/annotations/labels_train.json",
                              tmp_path / "out", format="coco")
    assert report.crops == 0 and report.images >= 1
    assert all(r["box"] is None for r in manifest(tmp_path / "out"))


@pytest.mark.parametrize("rel, fragment", [
    ("datumaro/coco_dataset/coco_captions/annotations/captions_train.json", "captions file"),
    ("datumaro/coco_dataset/coco_panoptic/annotations/panoptic_train.json", "panoptic"),
    ("datumaro/coco_dataset/coco_image_info/annotations/image_info_train.json", "nothing to convert"),
])
def test_other_coco_kinds_are_refused_clearly(tmp_path, rel, fragment):
    with pytest.raises(SourceError, match=fragment):
        clipdata.convert(FIXTURES / rel, tmp_path / "out", format="coco")
    assert not (tmp_path / "out").exists()


def test_missing_images_error_lists_them_and_where_it_looked(tmp_path):
    path = FIXTURES / "sahi/visdrone2019-det-train-first50image.json"
    with pytest.raises(MissingImagesError) as e:
        clipdata.convert(path, tmp_path / "out", format="coco")
    msg = str(e.value)
    # all 50 it lists: the 2 without a box are missing too (not background images)
    assert "50 image(s) not found" in msg and "'images/0000068_04169" in msg
    assert "and 45 more" in msg and "looked in:" in msg and "--skip-missing" in msg
    assert not (tmp_path / "out").exists()


def test_skip_missing_records_and_goes_on(tmp_path):
    report = clipdata.convert(FIXTURES / "sahi/terrain_all_coco.json", tmp_path / "out", format="coco", skip_missing=True)
    assert [s.item for s in report.skipped if s.reason == "missing_image"] == ["terrain3.png"]
    prov = json.loads((tmp_path / "out/clipdata.json").read_text())
    assert prov["skipped"]["missing_image"] == 1


# --- bad input loses nothing ------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", b"this is not an image", None])
def test_unreadable_images_are_skipped_and_recorded(tmp_path, content):
    make_image(tmp_path / "good.jpg")
    bad = tmp_path / "bad.jpg"
    if content is None:  # truncated JPEG
        make_image(bad, (64, 64))
        bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    else:
        bad.write_bytes(content)
    f = write_coco(tmp_path / "d.json", [{"id": 1, "file_name": "good.jpg"}, {"id": 2, "file_name": "bad.jpg"}],
                   [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]},
                    {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 4, 4]}], [{"id": 1, "name": "c"}])
    report = clipdata.convert(f, tmp_path / "out", format="coco")
    assert report.crops == 1
    assert [(s.reason, s.item) for s in report.skipped] == [("unreadable_image", "bad.jpg")]


def test_file_name_with_dotdot_never_writes_outside_out(tmp_path):
    src = tmp_path / "data" / "src"
    make_image(tmp_path / "data" / "evil.jpg")
    f = write_coco(src / "d.json", [{"id": 1, "file_name": "../evil.jpg"}],
                   [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]}], [{"id": 1, "name": "c"}])
    before = {p for p in tmp_path.rglob("*")}
    out = tmp_path / "out"
    clipdata.convert(f, out, format="coco")
    new = {p for p in tmp_path.rglob("*")} - before
    assert new and all(p == out or out in p.parents for p in new)


def test_output_folder_rules(coco_set, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="already holds files"):
        clipdata.convert(coco_set, out, format="coco")
    with pytest.raises(OutputError, match="did not write"):
        clipdata.convert(coco_set, out, format="coco", overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    clipdata.convert(coco_set, out, format="coco")
    first = tree_bytes(out)
    (out / "train" / "stale").mkdir()
    clipdata.convert(coco_set, out, format="coco", overwrite=True)
    assert tree_bytes(out) == first and not (out / "train" / "stale").exists()
    with pytest.raises(OutputError, match="holds the source"):
        clipdata.convert(coco_set, coco_set.parent.parent, format="coco", overwrite=True)
    with pytest.raises(OutputError, match="inside the source"):
        clipdata.convert(SAMPLES / "folder", SAMPLES / "folder" / "out", format="folder")
    assert not (SAMPLES / "folder" / "out").exists()


def test_no_temporary_files_are_left(coco_set, tmp_path):
    clipdata.convert(coco_set, tmp_path / "out", format="coco")
    assert not [p for p in (tmp_path / "out").rglob(".clipdata-tmp-*")]


def test_inputs_are_never_modified(tmp_path):
    src = tmp_path / "src"
    make_image(src / "cat" / "x.jpg")
    before = tree_bytes(src)
    stat = (src / "cat" / "x.jpg").stat()
    clipdata.convert(src, tmp_path / "out", format="folder")
    assert tree_bytes(src) == before and (src / "cat" / "x.jpg").stat().st_mtime_ns == stat.st_mtime_ns


def test_link_or_copy_falls_back_only_where_links_are_impossible(tmp_path, monkeypatch):
    import errno

    from clipdata import fsutil
    src = make_image(tmp_path / "a.jpg")
    assert fsutil.link_or_copy(src, tmp_path / "linked.jpg") and os.path.samefile(src, tmp_path / "linked.jpg")

    def no_link(a, b):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(os, "link", no_link)
    assert not fsutil.link_or_copy(src, tmp_path / "copied.jpg")  # another file system: a copy
    assert (tmp_path / "copied.jpg").read_bytes() == src.read_bytes()
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError):  # a missing source is an error, not a reason to copy
        fsutil.link_or_copy(tmp_path / "gone.jpg", tmp_path / "x.jpg")
    assert not list(tmp_path.glob(".clipdata-tmp-*"))


@pytest.mark.parametrize("file_name", ["x" * 300 + ".jpg", "d/" + "y" * 4000 + ".jpg", "/" + "z" * 300])
def test_an_image_name_the_file_system_cannot_look_up_is_a_missing_image(tmp_path, file_name):
    make_image(tmp_path / "a.jpg")
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": file_name}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 4, 4]}]
    f = write_coco(tmp_path / "d.json", images, anns, [{"id": 1, "name": "cat"}])
    report = clipdata.convert(f, tmp_path / "out", format="coco", skip_missing=True)
    assert report.crops == 1 and report.skipped_by_reason.get("missing_image") == 1
