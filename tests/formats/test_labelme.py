"""LabelMe JSON: the quirks of files labelme itself writes (its own examples: group_id
objects of several polygons, the __ignore__ label, classification flags, imagePath naming
the JSON with the pixels in imageData, rectangles, circles, lines, points, masks). labelme
is GPL-3.0, so its example files are not copied here: these files have their structure,
key for key (formats/labelme.md says which example each quirk comes from)."""
import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from clipdata import convert
from clipdata.errors import SourceError
from clipdata.formats import labelme
from helpers import make_image, manifest


def shape(points, shape_type="polygon", label="cat", group_id=None):
    return {"label": label, "points": points, "group_id": group_id, "description": "", "shape_type": shape_type,
            "flags": {}, "mask": None}


def doc(shapes, image="a.jpg", flags=None, data=None, size=(32, 24)):
    return {"version": "5.5.0", "flags": flags or {}, "shapes": shapes, "imagePath": image, "imageData": data,
            "imageHeight": size[1], "imageWidth": size[0]}


def write(folder: Path, name: str, content) -> Path:
    p = folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(content))
    return p


TRI = [[2, 2], [20, 4], [8, 18]]


@pytest.mark.parametrize("name, shapes, flags, expected", [
    ("rectangle, corners in any order", [shape([[20, 18], [4, 2]], "rectangle")], None, [("cat", (4, 2, 16, 16), False)]),
    ("polygon: its extent and mask", [shape(TRI)], None, [("cat", (2, 2, 18, 16), True)]),
    ("no shape_type (labelme 2): a polygon", [{"label": "cat", "points": TRI}], None, [("cat", (2, 2, 18, 16), True)]),
    # instance_segmentation/2011_000006.json: a sofa drawn as four polygons with one group_id
    ("group_id: one object", [shape(TRI, group_id=0), shape([[24, 2], [30, 2], [30, 9]], group_id=0),
                              shape([[1, 20], [4, 20], [2, 23]], label="dog", group_id=0)], None,
     [("cat", (2, 2, 28, 16), True), ("dog", (1, 20, 3, 3), True)]),
    # classification/0001.json: {"__ignore__": false, "cat": true, "dog": false}
    ("one true flag: the whole image", [], {"__ignore__": False, "cat": True, "dog": False}, [("cat", None, False)]),
    ("several true flags: none", [], {"cat": True, "dog": True}, []),
    ("__ignore__ flagged: none", [], {"__ignore__": True, "cat": True}, []),
])
def test_shapes_and_flags(tmp_path, name, shapes, flags, expected):
    make_image(tmp_path / "a.jpg", (32, 24))
    write(tmp_path, "a.json", doc(shapes, flags=flags))
    src = labelme.read(tmp_path, masks=True)
    (s,) = src.samples
    assert [(l.name, l.box and tuple(round(v, 6) for v in l.box), l.mask is not None) for l in s.labels] == expected
    assert src.skipped == []


def test_skips_and_notes(tmp_path):
    """primitives.json's circle, line, point, linestrip and mask; 2011_000003's __ignore__."""
    make_image(tmp_path / "a.jpg", (32, 24))
    write(tmp_path, "a.json", doc([shape(TRI), shape([[5, 5], [9, 9]], "circle"), shape([[1, 1], [5, 5]], "line"),
                                   shape([[3, 3]], "point"), shape(TRI, "linestrip"), shape([[1, 1], [9, 9]], "mask"),
                                   shape(TRI, label="__ignore__"), shape(TRI, group_id=3), shape(TRI, group_id=3)],
                                  flags={"a": True, "b": True}))
    write(tmp_path, "sub/notes.json", {"what": "not a labelme file"})
    src = labelme.read(tmp_path)
    assert [(k.reason, k.detail) for k in src.skipped] == [
        ("unsupported_shape", "shapes[1]: shape_type 'circle'"), ("unsupported_shape", "shapes[2]: shape_type 'line'"),
        ("unsupported_shape", "shapes[3]: shape_type 'point'"), ("unsupported_shape", "shapes[4]: shape_type 'linestrip'"),
        ("unsupported_shape", "shapes[5]: shape_type 'mask'"), ("dropped_class", "shapes[6]: labelme's __ignore__ label")]
    assert len(src.samples[0].labels) == 2 and all(l.mask is None for l in src.samples[0].labels)  # masks when asked
    assert src.unused_files == ["sub/notes.json"]
    notes = " ".join(src.notes)
    assert "2 shapes sharing a label and a group_id were joined into 1 objects" in notes
    assert "several true flags" in notes and "not LabelMe files" in notes


def test_image_data_only(tmp_path):
    """tutorial/apc2016_obj3.json: imagePath names the JSON itself; the pixels are imageData."""
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 30)).save(buf, "PNG")
    write(tmp_path, "scene.json", doc([shape(TRI)], image="scene.json", data=base64.b64encode(buf.getvalue()).decode()))
    out = tmp_path / "out"
    report = convert(tmp_path, out, "labelme", workers=1)
    (row,) = manifest(out)
    assert report.crops == 1 and row["source_image"] == "scene.png" and row["box"] == [2, 2, 18, 16]
    assert Image.open(out / row["path"]).getpixel((5, 5)) == (10, 200, 30)
    # a whole-image label copies the embedded file itself
    write(tmp_path / "b", "flagged.json", doc([], image="flagged.json", flags={"cat": True},
                                              data=base64.b64encode(buf.getvalue()).decode()))
    convert(tmp_path / "b", tmp_path / "out2", "labelme", workers=1)
    assert (tmp_path / "out2" / "train" / "cat" / "flagged.png").read_bytes() == buf.getvalue()


def test_image_paths(tmp_path):
    """Windows separators and sibling folders inside the source; a path leaving it is never
    followed (only its file name is looked up); split folders; --images."""
    root = tmp_path / "ds"
    make_image(root / "images" / "a.jpg", (32, 24), color=(1, 2, 3))
    write(root, "train/ann/a.json", doc([shape(TRI)], image="..\\..\\images\\a.jpg"))
    make_image(tmp_path / "secret" / "b.jpg", (32, 24))
    make_image(root / "valid" / "b.jpg", (32, 24))
    write(root, "valid/b.json", doc([shape(TRI)], image="../../secret/b.jpg"))
    src = labelme.read(root)
    assert [(s.split, s.name) for s in src.samples] == [("train", "images/a.jpg"), ("valid", "valid/b.jpg")]
    assert "lead outside the source folder" in " ".join(src.notes) and "../../secret/b.jpg" in " ".join(src.notes)
    write(tmp_path / "only", "c.json", doc([shape(TRI)], image="c.jpg"))
    make_image(tmp_path / "pics" / "c.jpg", (32, 24))
    assert labelme.read(tmp_path / "only", images=tmp_path / "pics").samples[0].path == tmp_path / "pics" / "c.jpg"


@pytest.mark.parametrize("content, fragment", [
    ({"shapes": [{"label": "cat", "points": TRI}], "imagePath": 5}, '"imagePath" must be a string'),
    ({"shapes": ["x"], "imagePath": "a.jpg"}, "a shape must be an object"),
    ([1, 2], "not a LabelMe file"),
])
def test_malformed_entries_name_the_place(tmp_path, content, fragment):
    f = write(tmp_path, "a.json", content)
    with pytest.raises(SourceError, match=fragment) as e:
        labelme.read(f)
    assert e.value.file == str(f)


def test_an_empty_folder(tmp_path):
    with pytest.raises(SourceError, match="no LabelMe JSON file"):
        labelme.read(tmp_path)
