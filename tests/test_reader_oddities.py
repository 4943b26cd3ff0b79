"""Odd and hostile exports through `clipdata convert`, one table row per case, each run as a
user runs it: exit 0 with every box and image written or counted under a reason, or exit 1
with one line naming the file; never the catch-all "this is a bug" line; nothing written
outside OUT; the input untouched. Each row is a defect class found by hand (the fuzzers of
test_fuzz_readers.py draw well-formed values; these are the values they never draw)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import convert_case, make_image

HUGE = 10**400  # valid JSON, beyond a float
DIGITS = "9" * 5000  # valid JSON, beyond Python's int() (4,300 digits)


def put(root: Path, rel: str, data: str | bytes) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


def coco(root: Path, ann: dict | None = None, image: dict | None = None, cats=None, raw=None):
    """a.jpg with the annotation under test, good.jpg with a good box: a skipped item leaves
    something to convert."""
    make_image(root / "a.jpg", (16, 16))
    make_image(root / "good.jpg", (16, 16))
    doc = {"images": [{"id": 1, "file_name": "a.jpg", **(image or {})}, {"id": 2, "file_name": "good.jpg"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8], **(ann or {})},
                           {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 8, 8]}],
           "categories": cats or [{"id": 1, "name": "cat"}]}
    text = json.dumps(doc)
    return ["coco", str(put(root, "d.json", raw(text) if raw else text))]


def labelme(root: Path, shape: dict | None = None, raw=None, **extra):
    make_image(root / "a.jpg", (16, 16))
    rect = {"label": "cat", "points": [[1, 1], [9, 9]], "shape_type": "rectangle"}
    doc = {"shapes": [shape or rect], "imagePath": "a.jpg", "imageHeight": 16, "imageWidth": 16, **extra}
    put(root, "good.json", json.dumps({**doc, "shapes": [rect], "imagePath": "good.jpg"}))
    make_image(root / "good.jpg", (16, 16))
    text = json.dumps(doc)
    put(root, "a.json", raw(text) if raw else text)
    return ["labelme", str(root)]


def labelstudio(root: Path, value: dict | None = None, **region):
    make_image(root / "a.jpg", (16, 16))
    make_image(root / "good.jpg", (16, 16))

    def task(i, name, value):
        res = {"type": "rectanglelabels", "id": f"r{i}", "original_width": 16, "original_height": 16,
               "value": {"x": 10, "y": 10, "width": 40, "height": 40, "rectanglelabels": ["cat"], **value}}
        return {"id": i, "data": {"image": f"/data/local-files/?d={name}"},
                "annotations": [{"id": i, "result": [{**res, **(region if i == 1 else {})}]}]}
    return ["labelstudio", str(put(root, "export.json", json.dumps([task(1, "a.jpg", value or {}), task(2, "good.jpg", {})])))]


def createml(root: Path, coords: dict):
    make_image(root / "a.jpg", (16, 16))
    make_image(root / "good.jpg", (16, 16))
    box = {"x": 8, "y": 8, "width": 8, "height": 8}
    doc = [{"image": "a.jpg", "annotations": [{"label": "cat", "coordinates": {**box, **coords}}]},
           {"image": "good.jpg", "annotations": [{"label": "cat", "coordinates": box}]}]
    return ["createml", str(put(root, "ann.json", json.dumps(doc)))]


def yolo(root: Path, yaml: str, label: str = "0 0.5 0.5 0.5 0.5", split: str = ""):
    make_image(root / "images" / split / "a.jpg", (16, 16))
    put(root, f"labels/{split}/a.txt", label)
    return ["yolo", str(put(root, "data.yaml", yaml))]


def flat(root: Path, classes: str, label: str = "0 0.5 0.5 0.5 0.5") -> list[str]:
    """labelImg's flat folder: images, label files and classes.txt side by side."""
    make_image(root / "a.jpg", (16, 16))
    put(root, "a.txt", label)
    put(root, "classes.txt", classes)
    return ["yolo", str(root)]


def case_twin(args: list[str], image: Path) -> list[str]:
    image.rename(image.with_suffix(".JPG"))
    return args


def classes_one_down(root: Path, split: str) -> list[str]:
    for cls in ("cat", "dog"):
        make_image(root / f"{split}images" / cls / "a.jpg", (16, 16))
    return ["folder", str(root)]


def ls_no_image(root: Path) -> list[str]:
    args = labelstudio(root)
    tasks = json.loads(Path(args[1]).read_text())
    tasks[0]["data"] = {"image": None}
    Path(args[1]).write_text(json.dumps(tasks))
    return args


def cvat_utf16(root: Path) -> str:
    make_image(root / "images" / "a.jpg", (16, 16))
    xml = ('<?xml version="1.0" encoding="utf-16"?><annotations><image id="0" name="a.jpg" width="16" height="16">'
           '<box label="cat" xtl="1" ytl="1" xbr="9" ybr="9"/></image></annotations>')
    return str(put(root, "annotations.xml", xml.encode("utf-16")))


def voc_upper(root: Path) -> str:
    make_image(root / "JPEGImages" / "a.jpg", (16, 16))
    put(root, "Annotations/a.XML", "<annotation><filename>a.jpg</filename><object><name>cat</name><bndbox>"
                                   "<xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
    return str(root)


def yolo_upper(root: Path) -> str:
    Path(yolo(root, "train: images\nnames: [cat]\n")[1]).rename(root / "DATA.YAML")
    return str(root)


def ls_rotated(root: Path, sizes: bool) -> list[str]:
    """A photo stored 32x16 with EXIF orientation 6 (shown 16x32), a box in its lower half as shown."""
    from PIL import Image

    im = Image.new("RGB", (32, 16), (200, 30, 30))
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(root / "a.jpg", "JPEG", exif=exif)
    region = {"type": "rectanglelabels", "value": {"x": 10, "y": 55, "width": 80, "height": 40, "rectanglelabels": ["cat"]},
              **({"original_width": 16, "original_height": 32} if sizes else {})}
    task = {"id": 1, "data": {"image": "/data/local-files/?d=a.jpg"}, "annotations": [{"id": 1, "result": [region]}]}
    return ["labelstudio", str(put(root, "export.json", json.dumps([task])))]


# (name, build, expected): "error: <fragment>" exit 1 naming the file; "skipped: <reason>"
# exit 0 with the item counted; "note: <fragment>" exit 0 with that note; "ok" a clean run.
CASES = [
    # JSON integers beyond a float: OverflowError in float() was the catch-all "bug" line
    ("coco bbox 10**400", lambda r: coco(r, {"bbox": [HUGE, 1, 8, 8]}), "skipped: invalid_box"),
    ("coco polygon 10**400", lambda r: coco(r, {"bbox": None, "segmentation": [[1, 1, HUGE, 1, 5, 5]]}), "skipped: invalid_box"),
    ("coco RLE of size 10**400", lambda r: coco(r, {"bbox": None, "segmentation": {"size": [HUGE, 1], "counts": [0, HUGE]}}), "skipped: invalid_box"),
    ("coco width 10**400", lambda r: coco(r, image={"width": HUGE, "height": 16}), "error: width must be a positive integer"),
    ("labelme point 10**400", lambda r: labelme(r, {"label": "cat", "points": [[1, 1], [HUGE, 1], [3, 9]], "shape_type": "polygon"}), "skipped: invalid_box"),
    ("labelme imageWidth 10**400", lambda r: labelme(r, imageWidth=HUGE), "ok"),  # not a size: the image is measured
    ("labelstudio x 10**400", lambda r: labelstudio(r, {"x": HUGE}), "skipped: invalid_box"),
    ("labelstudio rotation 10**400", lambda r: labelstudio(r, {"rotation": HUGE}), "skipped: invalid_box"),
    ("labelstudio original_width 10**400", lambda r: labelstudio(r, original_width=HUGE), "ok"),
    # Label Studio's taxonomy holds paths of names; it was refused as "labels must be a list of names"
    ("labelstudio taxonomy", lambda r: labelstudio(r, {"taxonomy": [["animal", "cat"], ["plant"]]}, type="taxonomy"), "skipped: unsupported_shape"),
    ("labelstudio taxonomy path of numbers", lambda r: labelstudio(r, {"taxonomy": [[1, 2]]}, type="taxonomy"), "error: labels must be a list of names"),
    # `convert auto`: UTF-16 files were "could not tell"; a folder holding an annotation file
    # where no reader looks was read as folder-per-class (classes `photos`, `JPEGImages`, `labels`)
    ("auto: COCO in UTF-16", lambda r: ["auto", coco(r, raw=lambda t: t.encode("utf-16"))[1]], "error: UTF-16"),
    ("auto: CVAT XML in UTF-16", lambda r: ["auto", cvat_utf16(r)], "ok"),
    ("auto: Label Studio export beside its images", lambda r: ["auto", str(Path(labelstudio(r)[1]).parent)], "error: holds export.json (labelstudio) where no reader looks"),
    ("auto: VOC written a.XML", lambda r: ["auto", voc_upper(r)], "error: holds Annotations/a.XML (voc)"),
    ("auto: DATA.YAML", lambda r: ["auto", yolo_upper(r)], "error: holds DATA.YAML (yolo)"),
    ("auto: class folders beside a YAML without names", lambda r: ["auto", str(put(r, "card.yaml", "license: mit\n").parent)]
     if make_image(r / "cat" / "a.jpg", (16, 16)) else [], "skipped: not_in_class_folder"),
    # an EXIF-rotated phone photo: Label Studio draws on it as displayed; the boxes (on the
    # 16x32 picture shown) were cut from the 32x16 stored pixels, and clamped away
    ("labelstudio EXIF-rotated photo", lambda r: ls_rotated(r, sizes=True), "ok"),
    ("labelstudio EXIF-rotated photo, no original sizes", lambda r: ls_rotated(r, sizes=False), "ok"),
    # a blank line inside obj.names / classes.txt was dropped: every later class shifted by one
    ("classes.txt with a blank line between names", lambda r: flat(r, "cat\n\ndog\n", "2 0.5 0.5 0.5 0.5"), "error: classes.txt (line 2): a blank line before the last class name"),
    ("classes.txt starting with a blank line", lambda r: flat(r, "\ncat\n"), "error: classes.txt (line 1)"),
    ("classes.txt with blank lines at its end", lambda r: flat(r, "cat\r\ndog\r\n\r\n\n", "1 0.5 0.5 0.5 0.5"), "ok"),
    # an export made where names ignore case: the error said only "not found"
    ("coco a.jpg, a.JPG on disk", lambda r: case_twin(coco(r), r / "a.jpg"), "error: 'a.JPG' in"),
    ("labelme a.jpg, a.JPG on disk", lambda r: case_twin(labelme(r), r / "a.jpg"), "error: differs from 'a.jpg' only by case"),
    # the folder above the class folders passed: one class, "images", without a word
    ("folder images/<class>/", lambda r: classes_one_down(r, ""), "note: pass images/ as SOURCE"),
    ("folder <split>/images/<class>/", lambda r: classes_one_down(r, "train/"), "note: move them up into train/"),
    # a task whose data names no image: the error said "not found: 'tasks[0]'", and to pass --images
    ("labelstudio task without an image URL", lambda r: ls_no_image(r), "error: 'tasks[0] (no image URL in its data)'"),
    ("createml x 10**400", lambda r: createml(r, {"x": HUGE}), "skipped: invalid_box"),
    # integers beyond Python's int(): a ValueError from json.loads / PyYAML was the "bug" line
    ("coco 5000-digit number", lambda r: coco(r, raw=lambda t: t.replace("[1, 1, 8, 8]", f"[{DIGITS}, 1, 8, 8]", 1)), "error: (line 1, column 151): a number of more than 4,300 digits"),
    ("labelme 5000-digit number", lambda r: labelme(r, raw=lambda t: t.replace('"imageWidth": 16', f'"imageWidth": {DIGITS}')), "error: a number of more than 4,300 digits"),
    ("data.yaml 5000-digit nc", lambda r: yolo(r, f"train: images\nnames: [cat]\nnc: {DIGITS}\n"), "error: data.yaml (line 3, column 5): a number of 5,000 digits"),
    # data.yaml split values written on Windows or another machine: lists already read them
    ("data.yaml train: .\\images", lambda r: yolo(r, "train: .\\images\nnames: [cat]\n"), "ok"),
    ("data.yaml train: images\\train", lambda r: yolo(r, "train: images\\train\nnames: [cat]\n", split="train"), "ok"),
    ("data.yaml train: C:\\ path", lambda r: yolo(r, "train: C:\\Users\\them\\ds\\images\nnames: [cat]\n"), "ok"),
    ("data.yaml train: /home path", lambda r: yolo(r, "train: /home/them/ds/images\nnames: [cat]\n"), "ok"),
    ("data.yaml train: a folder not anywhere", lambda r: yolo(r, "train: C:\\data\\pictures\nnames: [cat]\n"), "error: 'C:\\\\data\\\\pictures' is not a folder"),
    ("data.yaml nc: 1.0", lambda r: yolo(r, "train: images\nnames: [cat]\nnc: 1.0\n"), "error: nc is 1.0, not an integer"),
]


@pytest.mark.parametrize("name,build,expected", CASES, ids=[c[0] for c in CASES])
def test_odd_export(tmp_path, name, build, expected):
    r, out = convert_case(tmp_path, build)
    output = " ".join(r.output.split())
    kind, _, fragment = expected.partition(": ")
    if kind == "error":
        assert r.exit_code == 1, output
        assert len([line for line in r.output.splitlines() if line.startswith("error:")]) == 1, r.output
        assert fragment in output and "/src" in output, output  # names the file or folder
        return
    assert r.exit_code == 0, output
    prov = json.loads((out / "clipdata.json").read_text())
    for tally in (prov["boxes"], prov["images"]):  # the conservation ledger
        assert tally["read"] == tally["written"] + sum(tally["skipped"].values()), tally
    if kind == "skipped":
        assert prov["skipped"].get(fragment, 0) >= 1, prov["skipped"]
    elif kind == "note":
        assert any(fragment in note for note in prov["notes"]), prov["notes"]
    else:
        assert not {k: v for k, v in prov["skipped"].items() if v}, prov["skipped"]
