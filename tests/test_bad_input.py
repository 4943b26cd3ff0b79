"""A corpus of broken inputs across every reader. For each: no traceback, a message naming
the file and the problem, exit code 1 or the item recorded as skipped, nothing written
outside OUT, and the input untouched."""
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from helpers import convert_case, make_image, write_coco

CAT = [{"id": 1, "name": "cat"}]


def coco(root: Path, bbox=(0, 0, 8, 8), image: str = "a.jpg", make=True, anns=None, cats=CAT):
    """Image 1 is the one under test; unless `anns` is given, image 2 is a good one, so a
    skipped item leaves something to convert."""
    if make:
        make_image(root / image, (16, 16))
    images = [{"id": 1, "file_name": image}]
    if anns is None:
        make_image(root / "good.jpg", (16, 16))
        images.append({"id": 2, "file_name": "good.jpg"})
        anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": list(bbox)},
                {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 8, 8]}]
    return ["coco", str(write_coco(root / "d.json", images, anns, cats))]


def coco_with_image(root: Path, data: bytes | None = None, image: Image.Image | None = None):
    args = coco(root, make=False)
    if image is not None:
        image.save(root / "a.jpg", "PNG")
    else:
        (root / "a.jpg").write_bytes(data)
    return args


def text(root: Path, name: str, content: str | bytes) -> Path:
    p = root / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


def yolo(root: Path, label: str | bytes = "0 0.5 0.5 0.5 0.5", yaml: str | bytes = "train: images\nnames: [cat]\n"):
    make_image(root / "images" / "a.jpg", (16, 16))
    text(root, "labels/a.txt", label)
    return ["yolo", str(text(root, "data.yaml", yaml))]


def voc(root: Path, xml: str | bytes):
    make_image(root / "JPEGImages" / "a.jpg", (16, 16))
    text(root, "Annotations/a.xml", xml)
    return ["voc", str(root)]


def folder(root: Path, files: dict[str, bytes | None]):
    for rel, data in files.items():
        if data is None:
            make_image(root / rel, (8, 8))
        else:
            text(root, rel, data)
    return ["folder", str(root)]


def bomb(root: Path):
    Image.new("1", (14000, 14000)).save(root / "a.jpg", "PNG")  # 196 Mpx, small on disk
    return coco(root, make=False)


def outside_link(root: Path):
    make_image(root.parent / "secret.jpg", (8, 8))
    args = folder(root, {"cat/ok.jpg": None})
    os.symlink(root.parent / "secret.jpg", root / "cat" / "link.jpg")
    return args


def many_classes(root: Path):
    cats = [{"id": i, "name": f"class {i:05}"} for i in range(10000)]
    anns = [{"id": i, "image_id": 1, "category_id": i * 1000, "bbox": [0, 0, 4, 4]} for i in range(10)]
    return coco(root, anns=anns, cats=cats)


# (name, builder, expected): "error: <fragment>" means exit 1 with that in the message;
# "skipped: <reason>" means exit 0 with the item recorded; "ok" means a clean run.
CASES = [
    ("coco truncated JSON", lambda r: ["coco", str(text(r, "d.json", '{"images": [{"id": 1, "file_'))], "error: malformed JSON"),
    ("coco empty file", lambda r: ["coco", str(text(r, "d.json", ""))], "error: malformed JSON"),
    ("coco empty object", lambda r: ["coco", str(text(r, "d.json", "{}"))], 'error: no "categories" list'),
    ("coco not UTF-8", lambda r: ["coco", str(text(r, "d.json", b'{"images": "\xff"}'))], "error: not UTF-8"),
    ("coco list at top", lambda r: ["coco", str(text(r, "d.json", "[]"))], "error: expected a JSON object"),
    ("coco bbox of strings", lambda r: coco(r, bbox=("a", 1, 2, 3)), "skipped: invalid_box"),
    ("coco bbox of 3 numbers", lambda r: coco(r, bbox=(1, 2, 3)), "skipped: invalid_box"),
    ("coco NaN coordinates", lambda r: coco(r, bbox=(float("nan"), 0, 4, 4)), "skipped: invalid_box"),
    ("coco negative size", lambda r: coco(r, bbox=(0, 0, -4, 4)), "skipped: invalid_box"),
    ("coco huge coordinates", lambda r: coco(r, bbox=(1e30, 1e30, 5, 5)), "skipped: empty_after_clamp"),
    ("coco negative coordinates", lambda r: coco(r, bbox=(-100, -100, 50, 50)), "skipped: empty_after_clamp"),
    ("coco unknown category", lambda r: coco(r, anns=[{"id": 1, "image_id": 1, "category_id": 9, "bbox": [0, 0, 4, 4]}]), "error: unknown category"),
    ("coco category id a list", lambda r: coco(r, cats=[{"id": [1], "name": "cat"}]), "error: integer or a string"),
    ("coco unknown image", lambda r: coco(r, anns=[{"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 4, 4]}]), "error: unknown image"),
    ("coco duplicate annotation ids", lambda r: coco(r, anns=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]}] * 2), "ok"),
    ("coco duplicate image ids", lambda r: ["coco", str(write_coco(r / "d.json", [{"id": 1, "file_name": "a"}, {"id": 1, "file_name": "b"}], [], CAT))], "error: duplicate image id"),
    ("coco width is a string", lambda r: ["coco", str(write_coco(r / "d.json", [{"id": 1, "file_name": "a", "width": "wide"}], [], CAT))], "error: positive integer"),
    ("coco missing image", lambda r: coco(r, make=False), "error: 1 image(s) not found"),
    ("coco truncated JPEG", lambda r: coco_with_image(r, make_image(r / "x.jpg", (64, 64)).read_bytes()[:300]), "skipped: unreadable_image"),
    ("coco zero-byte image", lambda r: coco_with_image(r, b""), "skipped: unreadable_image"),
    ("coco text file as image", lambda r: coco_with_image(r, b"hello, I am not a picture\n"), "skipped: unreadable_image"),
    ("coco decompression bomb", bomb, "skipped: unreadable_image"),
    ("coco ../ in file_name", lambda r: coco(r, image="../outside.jpg"), "ok"),
    ("coco ../ in class name", lambda r: coco(r, cats=[{"id": 1, "name": "../../evil"}]), "error: path separator"),
    ("coco class name with newline", lambda r: coco(r, cats=[{"id": 1, "name": "a\nb"}]), "error: control character"),
    ("coco classes that differ by case", lambda r: coco(r, cats=[{"id": 1, "name": "Cat"}, {"id": 2, "name": "cat"}], anns=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]}, {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 4, 4]}]), "error: differ only by case"),
    ("coco 10,000 classes", many_classes, "ok"),
    ("coco only crowd boxes", lambda r: coco(r, anns=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "iscrowd": 1}]), "error: nothing to convert"),
    ("yolo YAML not UTF-8", lambda r: yolo(r, yaml=b"train: images\nnames: [caf\xe9]\n"), "error: not UTF-8"),
    ("yolo unreadable YAML", lambda r: yolo(r, yaml="train: [images\nnames: ]["), "error: not valid YAML"),
    ("yolo class out of range", lambda r: yolo(r, label="0 0.5 0.5 0.5 0.5\n5 0.5 0.5 0.1 0.1"), "error: line 2"),
    ("yolo malformed line", lambda r: yolo(r, label="0 0.5 0.5"), "error: got 3 value"),
    ("yolo label not UTF-8", lambda r: yolo(r, label=b"0 0.5 0.5 0.5 \xff"), "error: not UTF-8"),
    ("yolo box far outside", lambda r: yolo(r, label="0 1.5 1.5 0.2 0.2\n0 0.5 0.5 0.2 0.2"), "skipped: invalid_box"),
    ("yolo label for a listed image that is missing", lambda r: yolo(r, yaml="train: list.txt\nnames: [cat]\n") if text(r, "list.txt", "images/a.jpg\nimages/gone.jpg\n") and text(r, "labels/gone.txt", "0 0.5 0.5 0.2 0.2") else None, "error: 1 image(s) not found: 'images/gone.jpg'"),
    ("yolo label file without its image", lambda r: yolo(r) if text(r, "labels/orphan.txt", "0 0.5 0.5 0.2 0.2") else None, "skipped: missing_image"),
    ("yolo oriented boxes", lambda r: yolo(r) if (r / "labelTxt").mkdir() is None else None, "error: oriented boxes"),
    ("voc malformed XML", lambda r: voc(r, "<annotation><object>"), "error: malformed XML"),
    ("voc LabelMe XML", lambda r: voc(r, "<annotation><imagesize/><object><name>x</name><polygon/></object></annotation>"), "error: LabelMe"),
    ("voc other root", lambda r: voc(r, "<svg/>"), "error: not a Pascal VOC file"),
    ("voc inverted box", lambda r: voc(r, "<annotation><filename>a.jpg</filename><object><name>c</name><bndbox><xmin>9</xmin><ymin>1</ymin><xmax>2</xmax><ymax>5</ymax></bndbox></object><object><name>c</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>"), "skipped: invalid_box"),
    ("folder symlink out of the source", outside_link, "skipped: outside_source"),
    ("folder of non-images", lambda r: folder(r, {"cat/a.txt": b"x", "dog/b.json": b"{}"}), "error: no images"),
    ("folder corrupt image", lambda r: folder(r, {"cat/ok.jpg": None, "cat/bad.jpg": b"\xff\xd8\xff broken"}), "skipped: unreadable_image"),
    ("ontology not UTF-8", lambda r: coco(r) + ["--ontology", str(text(r, "o.yaml", b"classes: {cat: caf\xe9}"))], "error: not UTF-8"),
    ("ontology renames out of OUT", lambda r: coco(r) + ["--ontology", str(text(r, "o.yaml", "classes: {cat: {name: ../x}}"))], "error: path separator"),
]


RECT = {"label": "cat", "points": [[1, 1], [9, 9]], "group_id": None, "shape_type": "rectangle", "flags": {}}


def labelme(root: Path, shapes=None, image: str = "a.jpg", make=True, raw: str | bytes | None = None, **extra):
    """a.json (the case under test) names a.jpg; good.json a good picture, so a skipped item
    leaves something to convert. The structure is labelme 5's (`version`, `flags`, `shapes`,
    `imagePath`, `imageData`, `imageHeight`, `imageWidth`)."""
    if make:
        make_image(root / image, (16, 16))
    make_image(root / "good.jpg", (16, 16))
    doc = {"version": "5.4.1", "flags": {}, "shapes": [RECT], "imagePath": "good.jpg", "imageData": None,
           "imageHeight": 16, "imageWidth": 16}
    text(root, "good.json", json.dumps(doc))
    doc = {**doc, "shapes": [RECT] if shapes is None else shapes, "imagePath": image, **extra}
    text(root, "a.json", raw if raw is not None else json.dumps(doc))
    return ["labelme", str(root)]


def lm_shape(points, shape_type="polygon", label="cat", **kw):
    return {"label": label, "points": points, "group_id": None, "shape_type": shape_type, "flags": {}, **kw}


def lm_outside(root: Path):
    make_image(root.parent / "secret.jpg", (8, 8))
    return labelme(root, image="../../secret.jpg", make=False)


def lm_fifo(root: Path):
    args = labelme(root)
    os.mkfifo(root / "pipe.json")
    return args


LABELME_CASES = [
    ("labelme malformed JSON", lambda r: labelme(r, raw='{"shapes": [\n  {"label": "cat",, }]}'), "error: malformed JSON"),
    ("labelme not UTF-8", lambda r: labelme(r, raw=b'{"shapes": [], "imagePath": "caf\xe9.jpg"}'), "error: not UTF-8"),
    ("labelme image missing", lambda r: labelme(r, make=False), "error: 1 image(s) not found"),
    ("labelme polygon of two points", lambda r: labelme(r, [lm_shape([[1, 1], [5, 5]])]), "skipped: empty_polygon"),
    ("labelme NaN coordinates", lambda r: labelme(r, raw=json.dumps({"shapes": [lm_shape([[1, 1], [5, 1], [3, 9]])],
                                                                     "imagePath": "a.jpg"}).replace("9]", "NaN]")), "skipped: invalid_box"),
    ("labelme infinite coordinates", lambda r: labelme(r, [lm_shape([[1, 1], [1e400, 1], [3, 9]])]), "skipped: invalid_box"),
    ("labelme outside the image", lambda r: labelme(r, [lm_shape([[100, 100], [120, 100], [110, 130]])]), "skipped: empty_after_clamp"),
    ("labelme unknown shape type", lambda r: labelme(r, [lm_shape([[1, 1], [5, 5]], "cuboid")]), "skipped: unsupported_shape"),
    ("labelme circle", lambda r: labelme(r, [lm_shape([[8, 8], [12, 8]], "circle")]), "skipped: unsupported_shape"),
    ("labelme label with a line break", lambda r: labelme(r, [{**RECT, "label": "a\nb"}]), "error: control character"),
    ("labelme label starting with a dot", lambda r: labelme(r, [{**RECT, "label": ".cat"}]), "error: starts with a dot"),
    ("labelme empty label", lambda r: labelme(r, [{**RECT, "label": ""}]), "skipped: no_label"),
    ("labelme label not a string", lambda r: labelme(r, [{**RECT, "label": 5}]), 'error: "label" must be a string'),
    ("labelme imagePath leaving the root", lm_outside, "error: 1 image(s) not found"),
    ("labelme imageData not an image", lambda r: labelme(r, make=False, image="a.json", imageData="aGVsbG8gd29ybGQ="), "skipped: unreadable_image"),
    ("labelme imageData not base64", lambda r: labelme(r, make=False, image="a.json", imageData="%%%not base64%%%"), "skipped: unreadable_image"),
    ("labelme points not pairs", lambda r: labelme(r, [lm_shape([1, 2, 3])]), "skipped: invalid_box"),
    ("labelme a pipe named x.json", lm_fifo, "skipped: not_a_regular_file"),
]
CASES += LABELME_CASES


CVAT_BOX = '<box label="cat" xtl="1" ytl="1" xbr="9" ybr="9"/>'
BOMB = ('<!DOCTYPE annotations [<!ENTITY a "aaaaaaaaaa">' + "".join(
    f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8)) + ']>')
EXTERNAL = '<!DOCTYPE annotations [<!ENTITY x SYSTEM "file:///etc/passwd">]>'


def cvat(root: Path, shapes: str = CVAT_BOX, image: str = "a.jpg", make=True, raw: str | bytes | None = None,
         doctype: str = "", label_text: str = ""):
    """annotations.xml as CVAT for images 1.1 writes it; image a.jpg under test, good.jpg good."""
    if make:
        make_image(root / "images" / image, (16, 16))
    make_image(root / "images" / "good.jpg", (16, 16))
    body = (f'<?xml version="1.0" encoding="utf-8"?>\n{doctype}<annotations><version>1.1</version>'
            f'<meta><task><labels><label><name>cat</name></label></labels></task></meta>'
            f'<image id="0" name="{image}" width="16" height="16">{shapes}</image>'
            f'<image id="1" name="good.jpg" width="16" height="16">{CVAT_BOX}</image>{label_text}</annotations>')
    text(root, "annotations.xml", raw if raw is not None else body)
    return ["cvat", str(root)]


CVAT_CASES = [
    ("cvat malformed XML", lambda r: cvat(r, raw='<annotations><image name="a.jpg"><box></annotations>'), "error: malformed XML"),
    ("cvat not UTF-8", lambda r: cvat(r, raw=b'<?xml version="1.0" encoding="utf-8"?><annotations><image name="caf\xe9.jpg"/></annotations>'), "error: malformed XML"),
    ("cvat entity bomb", lambda r: cvat(r, doctype=BOMB, shapes='<tag label="&i;"/>'), "error: declares entities"),
    ("cvat external entity", lambda r: cvat(r, doctype=EXTERNAL, shapes='<tag label="&x;"/>'), "error: declares entities"),
    ("cvat other root", lambda r: cvat(r, raw="<annotation><filename>a.jpg</filename></annotation>"), "error: not a CVAT XML"),
    ("cvat image missing", lambda r: cvat(r, make=False), "error: 1 image(s) not found"),
    ("cvat polygon of two points", lambda r: cvat(r, '<polygon label="cat" points="1,1;5,5"/>'), "skipped: empty_polygon"),
    ("cvat NaN coordinates", lambda r: cvat(r, '<box label="cat" xtl="nan" ytl="1" xbr="9" ybr="9"/>'), "skipped: invalid_box"),
    ("cvat infinite coordinates", lambda r: cvat(r, '<polygon label="cat" points="1,1;inf,5;3,9"/>'), "skipped: invalid_box"),
    ("cvat outside the image", lambda r: cvat(r, '<box label="cat" xtl="100" ytl="100" xbr="120" ybr="120"/>'), "skipped: empty_after_clamp"),
    ("cvat unknown shape", lambda r: cvat(r, '<cuboid label="cat" xtl1="1"/>'), "skipped: unsupported_shape"),
    ("cvat label with a line break", lambda r: cvat(r, '<tag label="a&#10;b"/>'), "error: control character"),
    ("cvat label starting with a dot", lambda r: cvat(r, '<box label=".cat" xtl="1" ytl="1" xbr="9" ybr="9"/>'), "error: starts with a dot"),
    ("cvat empty label", lambda r: cvat(r, '<box label="" xtl="1" ytl="1" xbr="9" ybr="9"/>'), "skipped: no_label"),
    ("cvat name leaving the image root", lambda r: cvat(r, image="../../../etc/passwd", make=False), "error: 1 image(s) not found"),
    ("cvat mask outside the image", lambda r: cvat(r, '<mask label="cat" rle="0, 4" left="14" top="1" width="4" height="1"/>') + ["--mask", "fill"], "skipped: mask_outside_image"),
    ("cvat mask runs not numbers", lambda r: cvat(r, '<mask label="cat" rle="a, b" left="1" top="1" width="4" height="1"/>'), "skipped: invalid_box"),
    ("cvat video export", lambda r: cvat(r, raw='<annotations><track id="0" label="cat"/></annotations>'), "error: CVAT for video"),
]
CASES += CVAT_CASES
CASES += [("voc entity bomb", lambda r: voc(r, BOMB.replace("annotations", "annotation") + "<annotation><filename>&i;</filename></annotation>"), "error: declares entities"),
          ("voc external entity", lambda r: voc(r, EXTERNAL.replace("annotations", "annotation") + "<annotation><filename>&x;</filename></annotation>"), "error: declares entities")]


def ls_rect(x=10, y=10, w=40, h=40, label="cat", kind="rectanglelabels", **value):
    return {"type": kind, "from_name": "label", "to_name": "image", "id": "r1", "original_width": 16,
            "original_height": 16, "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, kind: [label], **value}}


def labelstudio(root: Path, results=None, image: str = "a.jpg", make=True, raw: str | bytes | None = None):
    """A Label Studio JSON export (tasks with annotations); a.jpg under test, good.jpg good."""
    if make:
        make_image(root / "photos" / image, (16, 16))
    make_image(root / "photos" / "good.jpg", (16, 16))
    tasks = [{"id": i, "data": {"image": f"/data/local-files/?d=photos/{name}"},
              "annotations": [{"id": i, "result": res, "was_cancelled": False}]}
             for i, (name, res) in enumerate([(image, [ls_rect()] if results is None else results),
                                              ("good.jpg", [ls_rect()])])]
    return ["labelstudio", str(text(root, "export.json", raw if raw is not None else json.dumps(tasks)))]


def ls_poly(points, label="cat"):
    return {"type": "polygonlabels", "id": "p1", "original_width": 16, "original_height": 16,
            "value": {"points": points, "polygonlabels": [label]}}


def ls_nan(root: Path):
    args = labelstudio(root, [ls_rect(x=12.25)])
    export = root / "export.json"
    export.write_text(export.read_text().replace("12.25", "NaN"))  # Python's json writes and reads NaN
    return args


LABELSTUDIO_CASES = [
    ("labelstudio malformed JSON", lambda r: labelstudio(r, raw='[{"id": 1, "data": {"image": "a.jpg"},,}]'), "error: malformed JSON"),
    ("labelstudio not UTF-8", lambda r: labelstudio(r, raw=b'[{"data": {"image": "caf\xe9.jpg"}}]'), "error: not UTF-8"),
    ("labelstudio not a list", lambda r: labelstudio(r, raw='{"tasks": []}'), "error: expected a list of tasks"),
    ("labelstudio image missing", lambda r: labelstudio(r, make=False), "error: 1 image(s) not found"),
    ("labelstudio polygon of two points", lambda r: labelstudio(r, [ls_poly([[1, 1], [50, 50]])]), "skipped: empty_polygon"),
    ("labelstudio NaN coordinates", lambda r: ls_nan(r), "skipped: invalid_box"),
    ("labelstudio NaN in a polygon", lambda r: labelstudio(r, [ls_poly([[1, 1], [50, 1e400], [20, 40]])]), "skipped: invalid_box"),
    ("labelstudio percent above 100", lambda r: labelstudio(r, [ls_rect(x=90, w=60)]), "skipped: invalid_box"),
    ("labelstudio unknown region type", lambda r: labelstudio(r, [ls_rect(kind="keypointlabels")]), "skipped: unsupported_shape"),
    ("labelstudio label with a line break", lambda r: labelstudio(r, [ls_rect(label="a\nb")]), "error: control character"),
    ("labelstudio label starting with a dot", lambda r: labelstudio(r, [ls_rect(label=".cat")]), "error: starts with a dot"),
    ("labelstudio region without a label", lambda r: labelstudio(r, [ls_rect(label=" ")]), "skipped: no_label"),
    ("labelstudio local-files leaving the root", lambda r: labelstudio(r, image="../../../etc/passwd", make=False), "error: 1 image(s) not found"),
    ("labelstudio result not an object", lambda r: labelstudio(r, ["x"]), "error: a result must be an object"),
]
CASES += LABELSTUDIO_CASES


def createml(root: Path, annotations=None, image: str = "a.jpg", make=True, raw: str | bytes | None = None):
    """A Create ML JSON list; a.jpg under test, good.jpg good."""
    if make:
        make_image(root / image, (16, 16))
    make_image(root / "good.jpg", (16, 16))
    box = {"label": "cat", "coordinates": {"x": 8, "y": 8, "width": 8, "height": 8}}
    doc = [{"image": image, "annotations": [box] if annotations is None else annotations},
           {"image": "good.jpg", "annotations": [box]}]
    return ["createml", str(text(root, "ann.json", raw if raw is not None else json.dumps(doc)))]


def cm_box(x=8, y=8, w=8, h=8, label="cat"):
    return {"label": label, "coordinates": {"x": x, "y": y, "width": w, "height": h}}


CREATEML_CASES = [
    ("createml malformed JSON", lambda r: createml(r, raw='[{"image": "a.jpg",, }]'), "error: malformed JSON"),
    ("createml not UTF-8", lambda r: createml(r, raw=b'[{"image": "caf\xe9.jpg"}]'), "error: not UTF-8"),
    ("createml not a list", lambda r: createml(r, raw='{"image": "a.jpg"}'), "error: expected a list"),
    ("createml image missing", lambda r: createml(r, make=False), "error: 1 image(s) not found"),
    ("createml NaN coordinates", lambda r: createml(r, [cm_box(x=float("nan"))]), "skipped: invalid_box"),
    ("createml coordinates as text", lambda r: createml(r, [cm_box(x="8")]), "skipped: invalid_box"),
    ("createml negative size", lambda r: createml(r, [cm_box(w=-3)]), "skipped: invalid_box"),
    ("createml outside the image", lambda r: createml(r, [cm_box(x=100, y=100)]), "skipped: empty_after_clamp"),
    ("createml label with a line break", lambda r: createml(r, [cm_box(label="a\nb")]), "error: control character"),
    ("createml label starting with a dot", lambda r: createml(r, [cm_box(label=".cat")]), "error: starts with a dot"),
    ("createml empty label", lambda r: createml(r, [cm_box(label="")]), "skipped: no_label"),
    ("createml label not a string", lambda r: createml(r, [cm_box(label=3)]), 'error: "label" must be a string'),
    ("createml image leaving the root", lambda r: createml(r, image="../../etc/passwd", make=False), "error: 1 image(s) not found"),
]
CASES += CREATEML_CASES


@pytest.mark.parametrize("name, build, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, name, build, expected):
    r, out = convert_case(tmp_path, build)  # input untouched, nothing outside OUT, no traceback
    output = " ".join(r.output.split())
    kind, _, fragment = expected.partition(": ")
    if kind == "error":
        assert r.exit_code == 1, output
        assert output.startswith("error: ") and fragment in output, output
        assert ("src/" in output) or (str(tmp_path) in output), output  # names the file
        assert not out.exists() or not (out / "clipdata.json").exists()
    else:
        assert r.exit_code == 0, output
        prov = json.loads((out / "clipdata.json").read_text())
        if kind == "skipped":
            assert prov["skipped"].get(fragment, 0) >= 1, prov["skipped"]
            assert any(fragment in line for line in r.output.splitlines() if line.startswith("skipped:"))


def test_corpus_is_large_enough():
    assert len(CASES) >= 30
