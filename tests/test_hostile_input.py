"""Hostile and surprising input, one table per class of problem: values that are not what
they look like, names clipdata could write but not read back, denial of service, walks that
loop, text that is not UTF-8, and the layouts real tools write. Every case either reads the
value as written or stops with one clear line (a ClipdataError naming the file)."""
from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipdata import imagefiles, textfiles
from clipdata.captions import Ontology, check_template, line_break, load_ontology, with_article
from clipdata.errors import ClassNameError, OptionError, SourceError
from clipdata.formats import coco, folder, voc, yolo
from clipdata.yamlfile import load_yaml, parse_yaml
from helpers import convert_case, make_image, write_coco

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


# --- text that is not plain UTF-8 ---------------------------------------------------------

# (bytes, the lines read, or "error: fragment")
TEXT = [
    (b"cat\ndog\n", ["cat", "dog"]),
    (b"\xef\xbb\xbfcat\ndog", ["cat", "dog"]),  # Notepad / Excel "CSV UTF-8": the BOM is dropped
    (b"cat\r\ndog\r\n", ["cat", "dog"]),
    (b"caf\xc3\xa9\n", ["café"]),
    ("a\u2028b\nc".encode(), ["a\u2028b", "c"]),  # split at \n only: the odd name stays whole
    (b"one\x0ctwo", ["one\x0ctwo"]),
    (b"caf\xe9\n", "error: line 1, column 4, byte 3: 0xe9"),  # cp1252
    (b"ok\n\x80\n", "error: line 2"),
    # after a byte-order mark, the bad byte's own place (it was told 3 bytes early: found by fuzzing)
    (b"\xef\xbb\xbfabc\n/x/\xff.jpg\n", "error: line 2, column 4, byte 10: 0xff"),
    (b"\xef\xbb\xbf\xe9", "error: line 1, column 1, byte 3: 0xe9"),
    (b"\xff\xfec\x00a\x00t\x00", "error: UTF-16"),
    (b"\xfe\xff\x00c", "error: UTF-16"),
    (b"\xff\xfe\x00\x00c\x00\x00\x00", "error: UTF-32"),
]


@pytest.mark.parametrize("data, expected", TEXT, ids=[repr(t[0][:12]) for t in TEXT])
def test_text_encodings(tmp_path, data, expected):
    f = write(tmp_path / "classes.txt", data)
    if isinstance(expected, list):
        assert textfiles.read_lines(f) == expected
        return
    with pytest.raises(SourceError) as e:
        textfiles.read_lines(f)
    assert expected.removeprefix("error: ") in str(e.value)
    assert str(e.value).startswith(str(f)) and "iconv" in str(e.value)  # the file, and the fix


# --- denial of service ----------------------------------------------------------------------

def _fifo(root: Path) -> Path:
    os.mkfifo(root / "pipe.jpg")
    return root / "pipe.jpg"


def _alias_bomb(root: Path) -> Path:
    lines = ['a0: &a0 ["lol"]'] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return write(root / "data.yaml", "\n".join(lines) + "\nnames: [*a8]\n")


# (builder of the hostile file, reader, fragment of the one-line error)
DOS = [
    ("FIFO named like an image", _fifo, textfiles.read_text, "not a regular file"),
    ("a folder where a file is expected", lambda r: r, textfiles.read_text, "is a folder"),
    ("100,000-deep JSON", lambda r: write(r / "a.json", "[" * 100_000 + "]" * 100_000), textfiles.load_json,
     "nested 100000 levels deep"),
    ("deep JSON inside an object", lambda r: write(r / "a.json", '{"images": ' + "[" * 5000 + "]" * 5000 + "}"),
     textfiles.load_json, "line 1, column 111"),
    ("YAML alias bomb", _alias_bomb, lambda f: load_yaml(f, SourceError),
     "aliases (*name) are not accepted"),
    ("YAML alias of one scalar", lambda r: write(r / "d.yaml", "x: &n cat\nnames: [*n]\n"),
     lambda f: load_yaml(f, SourceError), "line 2, column 9"),
    ("100,000-deep YAML", lambda r: write(r / "d.yaml", "[" * 100_000 + "]" * 100_000),
     lambda f: load_yaml(f, SourceError), "nested too deep"),
    ("YAML merge key", lambda r: write(r / "d.yaml", "<<: {names: [a]}\n"),
     lambda f: load_yaml(f, SourceError), "merge keys"),
    ("YAML python tag", lambda r: write(r / "d.yaml", "names: !!python/object/apply:os.system [id]\n"),
     lambda f: load_yaml(f, SourceError), "could not determine a constructor"),
]


@pytest.mark.parametrize("name, build, read, fragment", DOS, ids=[d[0] for d in DOS])
def test_denial_of_service(tmp_path, name, build, read, fragment):
    f = build(tmp_path)
    with pytest.raises(SourceError) as e:
        read(f)
    assert fragment in str(e.value) and str(f) in str(e.value)


@FAST
@given(st.integers(1, 3000), st.sampled_from("[{"))
def test_json_nesting_never_escapes(depth, opener):
    """Any depth of nesting parses, or is refused with clipdata's own error."""
    closer = {"[": "]", "{": "}"}[opener]
    inner = '"k": ' if opener == "{" else ""
    text = (opener + inner) * (depth - 1) + opener + closer * depth
    try:
        textfiles.loads(text, "x.json")
    except SourceError as e:
        assert "nested" in str(e) or "malformed" in str(e)


# --- values that are not what they look like (YAML 1.1) ------------------------------------

NAMES = [("names",)]
YAML_VALUES = [
    ("names: [yes, no, on, off]", {"names": ["yes", "no", "on", "off"]}),
    ("names: [010, 0x1f, 1e3, .5, 1_000]", {"names": ["010", "0x1f", "1e3", ".5", "1_000"]}),
    ("names: [~, null, 'quoted', \"dq\"]", {"names": ["~", "null", "quoted", "dq"]}),
    ("names: {0: yes, 1: ~}", {"names": {"0": "yes", "1": "~"}}),
    ("names: {0: a, 01: b}", {"names": {"0": "a", "01": "b"}}),
    ("names:\n  - 2001-01-01\nnc: 1", {"names": ["2001-01-01"], "nc": 1}),
    ("nc: 010\nnames: [a]", {"nc": 8, "names": ["a"]}),  # outside `names`, YAML's own rules
    ("names: [a, b]\nnames: [c]", "error: appears twice"),
    ("names: {0: a, 0: b}", "error: appears twice"),
]


@pytest.mark.parametrize("text, expected", YAML_VALUES, ids=[t[0] for t in YAML_VALUES])
def test_yaml_names_as_written(text, expected):
    if isinstance(expected, str):
        with pytest.raises(SourceError, match=expected.removeprefix("error: ")):
            parse_yaml(text, "data.yaml", SourceError, NAMES)
    else:
        assert parse_yaml(text, "data.yaml", SourceError, NAMES) == expected


ONTOLOGY_VALUES = [
    ("classes:\n  yes: {name: no}\n", lambda o: o.renames == {"yes": "no"}),
    ("classes:\n  010: {caption: on}\n", lambda o: o.captions == {"010": ["on"]}),
    ("classes:\n  ~: {drop: true}\n", lambda o: o.drops == {"~"}),
    ("classes:\n  cat: {captions: [yes, a cat]}\n", lambda o: o.captions == {"cat": ["yes", "a cat"]}),
    ("classes:\n  cat: {drop: 'no'}\n", "drop must be true or false"),
    ("classes:\n  cat: {name: [a]}\n", "name must be text"),
    ("classes:\n  cat: {name: ''}\n", "it is empty"),
    ("classes:\n  \"a\\u2028b\": {}\n", "line break (U+2028)"),
    ("classes:\n  cat: {name: \"a\\fb\"}\n", "line break (U+000C)"),
    ("classes:\n  cat: {caption: \"a cat\\x85\"}\n", "one non-empty line"),
    ("template: \"a photo\\u2029of {}\"\nclasses: {}\n", "line break (U+2029)"),
    ("a: &x 1\nclasses: {cat: {caption: *x}}\n", "aliases"),
]


@pytest.mark.parametrize("text, expected", ONTOLOGY_VALUES, ids=[t[0].split("\n")[1] if "\n " in t[0] else t[0][:20]
                                                                  for t in ONTOLOGY_VALUES])
def test_ontology_values(tmp_path, text, expected):
    f = write(tmp_path / "o.yaml", text)
    if isinstance(expected, str):
        with pytest.raises(OptionError) as e:
            load_ontology(f)
        assert expected in str(e.value) and str(f) in str(e.value)
    else:
        assert expected(load_ontology(f))


yaml_scalars = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=12)


@FAST
@given(st.lists(yaml_scalars, min_size=1, max_size=5))
def test_yaml_names_round_trip(names):
    """Any class name, written as a plain or quoted YAML scalar, reads back as written."""
    import yaml

    text = yaml.safe_dump({"names": names}, allow_unicode=True)
    assert parse_yaml(text, "d.yaml", SourceError, NAMES)["names"] == names


@FAST
@given(st.text(max_size=60))
def test_yaml_any_text(text):
    """Arbitrary text is a document or one clear error, never another exception."""
    try:
        parse_yaml(text, "d.yaml", SourceError, NAMES)
    except SourceError:
        pass


# --- names clipdata could write but not read back -------------------------------------------

BREAKS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("ch", BREAKS, ids=[f"U+{ord(c):04X}" for c in BREAKS])
def test_line_breaks_refused(ch):
    assert line_break(f"a{ch}b") == f"U+{ord(ch):04X}"
    with pytest.raises(OptionError, match="one line|line break"):
        check_template(f"a photo{ch}of a {{}}")
    with pytest.raises(ClassNameError, match=f"U\\+{ord(ch):04X}"):
        Ontology().caption(f"red{ch}circle", "a photo of a {}")
    with pytest.raises(OptionError, match="line break"):
        Ontology().add_rename(f"cat=ca{ch}t")


@FAST
@given(st.text(max_size=20))
def test_captions_read_back(name):
    """A caption made from any accepted name is exactly one line when read back."""
    try:
        caption = Ontology().caption(name, "a photo of {a}")
    except ClassNameError:
        assert len(f"x{name}x".splitlines()) > 1
        return
    assert caption.splitlines() == [caption] or caption == ""


# --- the a/an rule ---------------------------------------------------------------------------

ARTICLES = [("apple", "an apple"), ("Apple", "an Apple"), ("MRI", "an MRI"), ("U-turn", "a U-turn"),
            ("FBI", "an FBI"), ("hour", "an hour"), ("unicorn", "a unicorn"), ("euro coin", "a euro coin"),
            ("one-way sign", "a one-way sign"), ("X-ray", "an X-ray"), ("honest face", "an honest face"),
            ("8-ball", "an 8-ball"), ("11th floor", "an 11th floor"), ("1st place", "a 1st place"),
            ("cat", "a cat"), ("red circle", "a red circle")]


@pytest.mark.parametrize("name, expected", ARTICLES, ids=[a[0] for a in ARTICLES])
def test_article(name, expected):
    assert with_article(name) == expected
    assert Ontology().caption(name, "a photo of {a}") == "a photo of " + expected


# --- readers: values that are not what they look like ------------------------------------

CAT = [{"id": 1, "name": "cat"}]


def _coco(root: Path, ann: dict, images=None) -> Path:
    make_image(root / "a.jpg", (64, 48))
    images = images or [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}]
    return write_coco(root / "d.json", images, [{"id": 7, "image_id": 1, "category_id": 1, **ann}], CAT)


def _labels(src) -> list:
    return [(l.name, l.box) for s in src.samples for l in s.labels]


def _skips(src) -> list[str]:
    return [k.reason for k in src.skipped]


RLE_2x3 = {"size": [2, 3], "counts": [2, 3, 1]}  # column-major, 2 rows: pixels 2..4 set -> columns 1..2, rows 0..1
COCO_VALUES = [
    ("image_id true is not id 1", {"image_id": True, "bbox": [0, 0, 4, 4]}, "error: \"image_id\" must be an integer or a string, not True"),
    ("category_id 1.0 is not id 1", {"category_id": 1.0, "bbox": [0, 0, 4, 4]}, "error: \"category_id\" must be an integer"),
    ("id false", {"id": False, "bbox": [0, 0, 4, 4]}, "error: \"id\" must be an integer"),
    ('iscrowd "0" is no crowd', {"iscrowd": "0", "bbox": [0, 0, 4, 4]}, [("cat", (0.0, 0.0, 4.0, 4.0))]),
    ('iscrowd "1" is a crowd', {"iscrowd": "1", "bbox": [0, 0, 4, 4]}, "skipped: crowd"),
    ("iscrowd false", {"iscrowd": False, "bbox": [0, 0, 4, 4]}, [("cat", (0.0, 0.0, 4.0, 4.0))]),
    ("iscrowd 2", {"iscrowd": 2, "bbox": [0, 0, 4, 4]}, "error: \"iscrowd\" must be 0 or 1, not 2"),
    ('iscrowd "no"', {"iscrowd": "no", "bbox": [0, 0, 4, 4]}, "error: must be 0 or 1"),
    ("polygon without bbox", {"segmentation": [[10, 5, 30.5, 5, 20, 25]]}, [("cat", (10.0, 5.0, 20.5, 20.0))]),
    ("two polygons", {"segmentation": [[1, 1, 2, 1, 2, 2], [40, 30, 41, 31, 40, 32]]}, [("cat", (1.0, 1.0, 40.0, 31.0))]),
    ("uncompressed RLE", {"segmentation": RLE_2x3}, [("cat", (1.0, 0.0, 2.0, 2.0))]),
    ("compressed RLE", {"segmentation": {"size": [48, 64], "counts": "0:0O"}}, "skipped: invalid_box"),
    ("empty RLE", {"segmentation": {"size": [2, 2], "counts": [4]}}, "skipped: invalid_box"),
    ("RLE not covering its size", {"segmentation": {"size": [2, 2], "counts": [1, 1]}}, "skipped: invalid_box"),
    ("polygon of two points", {"segmentation": [[1, 1, 5, 5]]}, "skipped: empty_polygon"),
    ("segmentation a number", {"segmentation": 5}, "skipped: invalid_box"),
    ("neither bbox nor segmentation", {}, [("cat", None)]),  # an image-level label, documented
]


@pytest.mark.parametrize("name, ann, expected", COCO_VALUES, ids=[c[0] for c in COCO_VALUES])
def test_coco_values(tmp_path, name, ann, expected):
    f = _coco(tmp_path, ann)
    if isinstance(expected, str) and expected.startswith("error: "):
        with pytest.raises(SourceError) as e:
            coco.read(f)
        assert expected.removeprefix("error: ") in str(e.value) and "annotations[0]" in str(e.value)
        return
    src = coco.read(f)
    if isinstance(expected, str):
        assert _skips(src) == [expected.removeprefix("skipped: ")] and _labels(src) == []
    else:
        assert _labels(src) == expected and src.skipped == []


def test_rle_box_matches_pycocotools():
    """The RLE rule against pycocotools' own toBbox, on masks it encodes itself."""
    mask = pytest.importorskip("pycocotools.mask")
    import numpy as np

    rng = np.random.default_rng(11)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = np.zeros((h, w), np.uint8, order="F")
        for _ in range(int(rng.integers(1, 4))):
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            m[y:y + int(rng.integers(1, 12)), x:x + int(rng.integers(1, 12))] = 1
        rle = mask.encode(np.asfortranarray(m))
        got = coco.segmentation_box({"size": [h, w], "counts": rle["counts"].decode()})
        assert list(got) == list(mask.toBbox(rle))


def _yolo(root: Path, yaml_text: str | bytes) -> Path:
    make_image(root / "images" / "a.jpg", (16, 16))
    write(root / "labels" / "a.txt", "0 0.5 0.5 0.5 0.5\n")
    return write(root / "data.yaml", yaml_text)


YOLO_NAMES = [
    ("train: images\nnames: [yes, no, 010, ~]\n", ["yes", "no", "010", "~"]),
    ("train: images\nnames: {0: on, 1: 'off'}\n", ["on", "off"]),
    ("train: images\nnames: {1: b, 0: a}\nnc: 2\n", ["a", "b"]),
    ("train: images\nnames: [0, 1.5]\n", ["0", "1.5"]),
    ("\ufefftrain: images\nnames: [cat]\n", ["cat"]),
    ("train: images\nnames: {0: a, 01: b}\n", "error: `names` key '01' is not a class index"),
    ("train: images\nnames: {0: a, -1: b}\n", "error: `names` key '-1'"),
    ("train: images\nnames: {0: a, 2: b}\n", "error: without gaps"),
    ("train: images\nnames: [[a, b]]\n", "error: class 0 is a list"),
    ("train: images\nnames: [a]\nnc: '1'\n", "error: nc is '1'"),
    ("train: images\nx: &a [cat]\nnames: *a\n", "error: aliases"),
]


@pytest.mark.parametrize("text, expected", YOLO_NAMES, ids=[t[0].split("\n")[1] + (t[0].split("\n")[2] if t[0].count("\n") > 2 else "") for t in YOLO_NAMES])
def test_yolo_names_as_written(tmp_path, text, expected):
    f = _yolo(tmp_path, text)
    if isinstance(expected, str):
        with pytest.raises(SourceError) as e:
            yolo.read(f)
        assert expected.removeprefix("error: ") in str(e.value) and str(f) in str(e.value)
    else:
        assert yolo.read(f).classes == expected


@pytest.mark.parametrize("data, names", [
    (b"\xef\xbb\xbfcat\ndog\n", ["cat", "dog"]),
    (b"cat\r\ndog\r\n", ["cat", "dog"]),
    ("red\u2028circle\nstar\n".encode(), ["red\u2028circle", "star"]),  # one name, refused later by the name check
])
@pytest.mark.parametrize("file", ["classes.txt", "obj.names"])
def test_yolo_names_files(tmp_path, file, data, names):
    make_image(tmp_path / "images" / "a.jpg", (16, 16))
    write(tmp_path / "labels" / "a.txt", "1 0.5 0.5 0.5 0.5\n")
    write(tmp_path / file, data)
    src = yolo.read(tmp_path)
    assert src.classes == names and _labels(src)[0][0] == names[1]


@pytest.mark.parametrize("size, expected", [
    ("<width>20</width><height>10</height>", (20, 10)),
    ("<width>inf</width><height>10</height>", None),
    ("<width>1e400</width><height>10</height>", None),
    ("<width>nan</width><height>10</height>", None),
    ("<width>-5</width><height>10</height>", None),
    ("<width>0.5</width><height>10</height>", None),
    ("<width>twenty</width><height>10</height>", None),
    ("<width>20.0</width><height>10</height>", (20, 10)),
])
def test_voc_size_values(size, expected):
    data = f"<annotation><filename>a.jpg</filename><size>{size}</size></annotation>".encode()
    assert voc.parse_xml(data, "a.xml")[1] == expected


# --- readers: text that is not UTF-8 ------------------------------------------------------

CP1252 = "caf\xe9".encode("cp1252")
UTF16 = "cat\n".encode("utf-16")


def _darknet(root: Path, names: bytes = b"cat\n", train: bytes = b"data/obj/a.jpg\n", data: bytes | None = None) -> Path:
    make_image(root / "obj" / "a.jpg", (16, 16))
    write(root / "obj" / "a.txt", "0 0.5 0.5 0.5 0.5\n")
    write(root / "obj.names", names)
    write(root / "train.txt", train)
    return write(root / "obj.data", data or b"classes = 1\ntrain = data/train.txt\nnames = data/obj.names\n")


def _voc_lists(root: Path, listing: bytes) -> Path:
    make_image(root / "JPEGImages" / "a.jpg", (16, 16))
    write(root / "Annotations" / "a.xml", "<annotation><filename>a.jpg</filename></annotation>")
    write(root / "ImageSets" / "Main" / "train.txt", listing)
    return root


ENCODINGS = [
    ("obj.names in cp1252", lambda r: yolo.read(_darknet(r, names=CP1252 + b"\n")), "obj.names (line 1, column 4"),
    ("image list in cp1252", lambda r: yolo.read(_darknet(r, train=b"data/obj/" + CP1252 + b".jpg\n")), "train.txt (line 1"),
    ("obj.data in UTF-16", lambda r: yolo.read(_darknet(r, data="train = data/train.txt\n".encode("utf-16"))), "UTF-16"),
    ("classes.txt in UTF-16", lambda r: yolo.read(write(r / "classes.txt", UTF16).parent), "classes.txt: not UTF-8"),
    ("label file in cp1252", lambda r: yolo.read(write(_yolo(r, "train: images\nnames: [cat]\n").parent / "labels" / "a.txt",
                                                       b"0 0.5 0.5 0.5 0.5 \x96\n").parent.parent / "data.yaml"), "a.txt (line 1, column 19"),
    ("data.yaml in cp1252", lambda r: yolo.read(_yolo(r, b"train: images\nnames: [" + CP1252 + b"]\n")), "data.yaml (line 2"),
    ("ImageSets list in cp1252", lambda r: voc.read(_voc_lists(r, b"a\n" + CP1252 + b"\n")), "train.txt (line 2"),
    ("COCO JSON in cp1252", lambda r: coco.read(write(r / "d.json", b'{"images": "' + CP1252 + b'"}')), "d.json (line 1, column 16"),
    ("COCO JSON in UTF-16", lambda r: coco.read(write(r / "d.json", '{"images": []}'.encode("utf-16"))), "UTF-16"),
    ("ontology in cp1252", lambda r: load_ontology(write(r / "o.yaml", b"classes: {" + CP1252 + b": {}}")), "o.yaml (line 1"),
]


@pytest.mark.parametrize("name, run, fragment", ENCODINGS, ids=[e[0] for e in ENCODINGS])
def test_not_utf8_is_one_line(tmp_path, name, run, fragment):
    with pytest.raises((SourceError, OptionError)) as e:
        run(tmp_path)
    message = str(e.value)
    assert fragment in message and "UTF-8" in message and "\n" not in message, message


def test_coco_json_with_bom_reads(tmp_path):
    f = _coco(tmp_path, {"bbox": [0, 0, 4, 4]})
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    assert _labels(coco.read(f)) == [("cat", (0.0, 0.0, 4.0, 4.0))]


# --- readers: denial of service -------------------------------------------------------------

READER_DOS = [
    ("COCO file that is a FIFO", lambda r: coco.read(_fifo(r)), "not a regular file"),
    ("100,000-deep COCO file", lambda r: coco.read(write(r / "d.json", "[" * 100_000 + "]" * 100_000)), "nested 100000 levels deep"),
    ("data.yaml alias bomb", lambda r: yolo.read(_alias_bomb(r)), "aliases"),
    ("ontology alias bomb", lambda r: load_ontology(write(r / "o.yaml", _alias_bomb(r).read_text().replace("names:", "classes:"))), "aliases"),
]


@pytest.mark.parametrize("name, run, fragment", READER_DOS, ids=[d[0] for d in READER_DOS])
def test_reader_denial_of_service(tmp_path, name, run, fragment):
    with pytest.raises((SourceError, OptionError)) as e:
        run(tmp_path)
    assert fragment in str(e.value)


def test_voc_xml_that_is_a_fifo_is_skipped_unopened(tmp_path):
    make_image(tmp_path / "a.jpg", (16, 16))
    write(tmp_path / "a.xml", "<annotation><filename>a.jpg</filename></annotation>")
    os.mkfifo(tmp_path / "b.xml")
    src = voc.read(tmp_path)  # would block forever if opened
    assert [s.name for s in src.samples] == ["a.jpg"] and _skips(src) == ["not_a_regular_file"]


# --- walks that loop ---------------------------------------------------------------------------

def _tree(root: Path, links: dict[str, str], images=("cat/a.jpg", "cat/sub/b.jpg", "dog/c.jpg")) -> Path:
    for rel in images:
        make_image(root / rel, (8, 8))
    for rel, target in links.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / rel)
    return root


WALKS = [
    ("a link back to its class", {"cat/sub/up": ".."}, {"cat": ["a.jpg", "sub/b.jpg"], "dog": ["c.jpg"]}, {"outside_class": 0}),
    ("a link to itself", {"cat/sub/me": "."}, {"cat": ["a.jpg", "sub/b.jpg"], "dog": ["c.jpg"]}, {}),
    ("two links to the root", {"cat/x": "..", "cat/y": ".."}, {"cat": ["a.jpg", "sub/b.jpg"], "dog": ["c.jpg"]}, {"outside_class": 2}),
    ("a link into another class", {"cat/sub/dogs": "../../dog"}, {"cat": ["a.jpg", "sub/b.jpg"], "dog": ["c.jpg"]}, {"outside_class": 1}),
    ("a file link into another class", {"cat/c.jpg": "../dog/c.jpg"}, {"cat": ["a.jpg", "sub/b.jpg"], "dog": ["c.jpg"]}, {"outside_class": 1}),
    ("a link inside the class", {"cat/again": "sub"}, {"cat": ["a.jpg", "sub/b.jpg"], "dog": ["c.jpg"]}, {}),
    ("a broken link", {"cat/gone.jpg": "nowhere.jpg"}, {"cat": ["a.jpg", "sub/b.jpg"], "dog": ["c.jpg"]}, {"broken_link": 1}),
    ("a link cycle of two", {"cat/sub/p": "../q", "cat/q": "sub"}, {"cat": ["a.jpg", "sub/b.jpg"], "dog": ["c.jpg"]}, {}),
]


@pytest.mark.parametrize("name, links, expected, skips", WALKS, ids=[w[0] for w in WALKS])
def test_folder_walks(tmp_path, name, links, expected, skips):
    root = _tree(tmp_path / "src", links)
    src = folder.read(root)
    got: dict[str, list[str]] = {}  # class -> the real files it holds, each once
    for s in src.samples:
        real = Path(os.path.realpath(s.path)).relative_to(os.path.realpath(root / s.labels[0].name))
        got.setdefault(s.labels[0].name, []).append(real.as_posix())
    assert {c: sorted(v) for c, v in got.items()} == expected
    for reason, n in skips.items():
        assert _skips(src).count(reason) == n, src.skipped


def test_fifo_in_a_class_folder_is_never_opened(tmp_path):
    root = _tree(tmp_path / "src", {})
    os.mkfifo(root / "cat" / "pipe.jpg")
    src = folder.read(root)  # would block forever if opened
    assert "not_a_regular_file" in _skips(src) and "cat/pipe.jpg" not in [s.name for s in src.samples]


@contextmanager
def deep_tree(root: Path, depth: int = 1100):
    """root/cat/d/d/…/z.jpg, `depth` folders deep (beyond Python's recursion limit), and
    root/cat/y.jpg; removed on the way out."""
    here = root / "cat"
    here.mkdir(parents=True)
    make_image(here / "y.jpg", (4, 4))
    cwd = os.getcwd()
    try:
        os.chdir(here)
        for _ in range(depth):
            os.mkdir("d")
            os.chdir("d")
        make_image(Path("z.jpg").absolute(), (4, 4))
        os.chdir(cwd)
        yield root
    finally:
        os.chdir(cwd)
        # pytest's own clean-up (shutil.rmtree) recurses per level: remove the tree here
        subprocess.run(["rm", "-rf", str(here)], check=True)


def test_deep_tree_walks_without_recursion(tmp_path):
    with deep_tree(tmp_path) as root:
        assert len(imagefiles.walk_images(root)) == 2


def test_deep_tree_converts_in_lookups_proportional_to_its_depth(tmp_path, monkeypatch):
    """Resolving each folder's whole path (the walk's inside check, the resume fingerprint's
    skip) made lookups grow with depth squared: minutes for a 1,100-deep tree of 2 images."""
    import clipdata

    calls = [0]
    lstat = os.lstat

    def counted(*a, **k):
        calls[0] += 1
        return lstat(*a, **k)

    with deep_tree(tmp_path / "src") as root:
        monkeypatch.setattr(os, "lstat", counted)
        report = clipdata.convert(root, tmp_path / "out", "folder", workers=1)
        monkeypatch.undo()
    assert report.images == 2
    assert calls[0] < 5_000, calls[0]  # depth² is 1.2 million


@FAST
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=6))
def test_walk_visits_each_real_image_once(links):
    """Any set of folder links (cycles included): the walk ends, and yields every real image
    reachable exactly once."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dirs = [root, root / "a", root / "a" / "b", root / "c"]
        for d in dirs[1:]:
            d.mkdir(parents=True, exist_ok=True)
            (d / "x.jpg").write_bytes(b"")
        for n, (frm, to) in enumerate(links):
            os.symlink(dirs[to], dirs[frm] / f"link{n}")
        found = [os.path.realpath(p) for p in imagefiles.walk_images(root)]
        assert sorted(found) == sorted({os.path.realpath(d / "x.jpg") for d in dirs[1:]})


# --- layouts real tools write --------------------------------------------------------------

def _voc_xml(name: str, n: int = 1) -> str:
    objs = "".join("<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object>"
                   for _ in range(n))
    return f"<annotation><filename>{name}</filename>{objs}</annotation>"


def _labelimg(root: Path) -> Path:
    make_image(root / "images" / "a.jpg", (16, 16))
    write(root / "annotations" / "a.xml", _voc_xml("a.jpg", 2))
    return root


def _roboflow_mixed(root: Path) -> Path:
    for i in range(3):
        make_image(root / "train" / "JPEGImages" / f"t{i}.jpg", (16, 16))
        write(root / "train" / "Annotations" / f"t{i}.xml", _voc_xml(f"t{i}.jpg", 3))
    make_image(root / "valid" / "v.jpg", (16, 16))
    write(root / "valid" / "v.xml", _voc_xml("v.jpg", 2))
    return root


def _images_elsewhere(root: Path) -> Path:
    make_image(root / "pictures" / "a.jpg", (16, 16))
    write(root / "set" / "Annotations" / "a.xml", _voc_xml("a.jpg"))
    return root / "set"


LAYOUTS = [
    ("labelImg annotations/ + images/", _labelimg, {}, {"train": 2}),
    ("Roboflow VOC: train/Annotations beside a flat valid/", _roboflow_mixed, {}, {"train": 9, "valid": 2}),
    ("VOC with --images elsewhere", _images_elsewhere, {"images": "pictures"}, {"train": 1}),
]


@pytest.mark.parametrize("name, build, options, boxes", LAYOUTS, ids=[l[0] for l in LAYOUTS])
def test_voc_layouts(tmp_path, name, build, options, boxes):
    root = build(tmp_path)
    opts = {k: tmp_path / v for k, v in options.items()}
    src = voc.read(root, **opts)
    got: dict[str, int] = {}
    for s in src.samples:
        assert s.path is not None and s.path.is_file()
        got[s.split] = got.get(s.split, 0) + len(s.labels)
    assert got == boxes and src.skipped == []


def test_voc_images_folder_must_exist(tmp_path):
    with pytest.raises(SourceError, match="--images folder not found"):
        voc.read(_labelimg(tmp_path), images=tmp_path / "nope")


def _roboflow_coco(root: Path) -> Path:
    for split in ("train", "valid", "test"):
        make_image(root / split / "a.jpg", (16, 16))
        write_coco(root / split / "_annotations.coco.json", [{"id": 1, "file_name": "a.jpg"}],
                   [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]}],
                   [{"id": 0, "name": "things", "supercategory": "none"}, {"id": 1, "name": "cat", "supercategory": "things"}])
    return root


def test_roboflow_coco_notes_name_the_split(tmp_path):
    notes = coco.read(_roboflow_coco(tmp_path)).notes
    placeholder = [n for n in notes if "placeholder" in n]
    assert [n.split(":")[0] for n in placeholder] == [f"{s}/_annotations.coco.json" for s in ("test", "train", "valid")]


UNUSED = [
    ("COCO captions beside instances", lambda r: coco.read(_coco_export(r)), ["annotations/captions_val2017.json"]),
    ("VOC XML in no ImageSets list", lambda r: voc.read(_unlisted(r)), ["Annotations/b.xml"]),
    ("VOC XML beside split folders", lambda r: voc.read(write(_roboflow_mixed(r) / "stray.xml", _voc_xml("x.jpg")).parent), ["stray.xml"]),
    ("YOLO classes.txt beside data.yaml", lambda r: yolo.read(write(_yolo(r, "train: images\nnames: [cat]\n").parent / "classes.txt", "dog\n").parent), ["classes.txt"]),
    ("YOLO obj.names beside classes.txt", lambda r: yolo.read(_flat_both(r)), ["obj.names"]),
]


def _coco_export(root: Path) -> Path:
    make_image(root / "val2017" / "a.jpg", (16, 16))
    write_coco(root / "annotations" / "instances_val2017.json", [{"id": 1, "file_name": "a.jpg"}],
               [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]}], CAT)
    write(root / "annotations" / "captions_val2017.json", '{"annotations": []}')
    return root


def _unlisted(root: Path) -> Path:
    _voc_lists(root, b"a\n")
    make_image(root / "JPEGImages" / "b.jpg", (16, 16))
    write(root / "Annotations" / "b.xml", _voc_xml("b.jpg"))
    return root


def _flat_both(root: Path) -> Path:
    make_image(root / "images" / "a.jpg", (16, 16))
    write(root / "labels" / "a.txt", "0 0.5 0.5 0.5 0.5\n")
    write(root / "classes.txt", "cat\n")
    write(root / "obj.names", "cat\n")
    return root


@pytest.mark.parametrize("name, run, unused", UNUSED, ids=[u[0] for u in UNUSED])
def test_unused_files_are_named(tmp_path, name, run, unused):
    src = run(tmp_path)
    assert src.unused_files == unused
    assert any(unused[0].split("/")[-1] in n for n in src.notes)


# --- large COCO files, streamed: the same rules ---------------------------------------------

STREAMED = [
    ("a byte-order mark", lambda d: b"\xef\xbb\xbf" + d, None),
    ("UTF-16", lambda d: d.decode().encode("utf-16"), "UTF-16"),
    ("cp1252", lambda d: d.replace(b'"cat"', b'"caf\xe9"'), "not UTF-8 text"),
    ("100,000-deep", lambda d: d[:-1] + b', "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested more than 64 levels"),
]


@pytest.mark.parametrize("name, change, fragment", STREAMED, ids=[s[0] for s in STREAMED])
def test_streamed_coco(tmp_path, monkeypatch, name, change, fragment):
    monkeypatch.setattr(coco, "STREAM_BYTES", 0)  # stream even a small file
    f = _coco(tmp_path, {"bbox": [0, 0, 4, 4]})
    f.write_bytes(change(f.read_bytes()))
    if fragment is None:
        assert _labels(coco.read(f)) == [("cat", (0.0, 0.0, 4.0, 4.0))]
        return
    with pytest.raises(SourceError) as e:
        coco.read(f)  # the deep file is refused before the streaming parser sees it
    assert fragment in str(e.value) and str(f) in str(e.value)


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


tricky_text = st.text(st.sampled_from('ab[]{}"\\\\/'), max_size=6)
nested = st.recursive(tricky_text | st.integers(), lambda kids: st.lists(kids, max_size=3)
                      | st.dictionaries(tricky_text, kids, max_size=3), max_leaves=20)


@FAST
@given(nested, st.integers(1, 6))
def test_stream_nesting_check_is_exact(tmp_path_factory, value, limit):
    """The byte-level nesting check agrees with the real depth, whatever the strings hold
    (brackets, quotes, backslashes), at any chunk size."""
    f = tmp_path_factory.mktemp("n") / "x.json"
    f.write_text(json.dumps(value))
    for chunk in (1, 3, 1 << 20):
        if _depth(value) > limit:
            with pytest.raises(SourceError):
                textfiles.check_stream_nesting(f, limit=limit, chunk=chunk)
        else:
            textfiles.check_stream_nesting(f, limit=limit, chunk=chunk)


# --- through the command line: one line, exit 1, nothing written ----------------------------

def _cli_coco(root: Path, name: str = "cat", template: str | None = None) -> list[str]:
    make_image(root / "a.jpg", (16, 16))
    write_coco(root / "d.json", [{"id": 1, "file_name": "a.jpg"}],
               [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 8, 8]}], [{"id": 1, "name": name}])
    return ["coco", str(root / "d.json")] + (["--template", template] if template else [])


CLI = [
    ("class name with U+2028", lambda r: _cli_coco(r, "red\u2028circle"), "U+2028"),
    ("class name with U+0085", lambda r: _cli_coco(r, "red\x85circle"), "U+0085"),
    ("template with a form feed", lambda r: _cli_coco(r, template="a photo\x0cof {}"), "U+000C"),
    ("template with U+2029", lambda r: _cli_coco(r, template="a photo of {}\u2029"), "U+2029"),
    ("ontology alias bomb", lambda r: _cli_coco(r) + ["--ontology", str(write(r / "o.yaml", _alias_bomb(r).read_text().replace("names:", "classes:")))], "aliases"),
    ("data.yaml alias bomb", lambda r: ["yolo", str(_alias_bomb(r))], "aliases"),
    ("YOLO names keys 0 and 01", lambda r: ["yolo", str(_yolo(r, "train: images\nnames: {0: a, 01: b}\n"))], "'01'"),
    ("COCO image_id true", lambda r: ["coco", str(_coco(r, {"image_id": True, "bbox": [0, 0, 4, 4]}))], "not True"),
    ("obj.names in cp1252", lambda r: ["yolo", str(_darknet(r, names=CP1252 + b"\n"))], "iconv"),
    ("100,000-deep COCO", lambda r: ["coco", str(write(r / "d.json", "[" * 100_000 + "]" * 100_000))], "levels deep"),
]


OPTION_VALUE_ROWS = {"template with a form feed", "template with U+2029"}  # --template's value, not a file


@pytest.mark.parametrize("name, build, fragment", CLI, ids=[c[0] for c in CLI])
def test_command_line(tmp_path, name, build, fragment):
    r, out = convert_case(tmp_path, build)
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert r.exit_code == (2 if name in OPTION_VALUE_ROWS else 1), r.output  # a bad option value is usage
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert fragment in lines[0], lines[0]
    assert not (out / "clipdata.json").exists()


@pytest.mark.parametrize("listed", ["../../secret", "sub/../../secret", "..\\secret"])
def test_voc_list_ids_never_leave_annotations(tmp_path, listed):
    write(tmp_path / "secret.xml", _voc_xml("a.jpg"))  # outside the dataset
    root = _voc_lists(tmp_path / "set", f"a\n{listed}\n".encode())
    src = voc.read(root)
    assert [s.name for s in src.samples] == ["JPEGImages/a.jpg"]
    assert [(k.reason, k.item) for k in src.skipped] == [("missing_annotation", listed)]


def test_yolo_special_files_are_skipped_unopened(tmp_path):
    f = _yolo(tmp_path, "train: images\nnames: [cat]\n")
    make_image(tmp_path / "images" / "b.jpg", (16, 16))
    os.mkfifo(tmp_path / "labels" / "b.txt")  # b's label file: a pipe
    os.mkfifo(tmp_path / "images" / "pipe.jpg")
    os.symlink("gone.jpg", tmp_path / "images" / "dangling.jpg")
    src = yolo.read(f)
    assert [s.name for s in src.samples] == ["images/a.jpg"]
    assert sorted((k.reason, k.item) for k in src.skipped) == [
        ("broken_link", "images/dangling.jpg"), ("not_a_regular_file", "images/b.jpg"),
        ("not_a_regular_file", "images/pipe.jpg")]


def test_walk_images_reports_what_it_cannot_open(tmp_path):
    make_image(tmp_path / "a.jpg", (4, 4))
    os.mkfifo(tmp_path / "pipe.jpg")
    os.symlink("gone.png", tmp_path / "dangling.png")
    os.mkfifo(tmp_path / "notes.fifo")  # not named like an image: not an image's concern
    rejected: list = []
    assert imagefiles.walk_images(tmp_path, rejected=rejected) == [tmp_path / "a.jpg"]
    assert sorted((e.path.name, e.kind) for e in rejected) == [("dangling.png", imagefiles.BROKEN),
                                                               ("pipe.jpg", imagefiles.SPECIAL)]


@FAST
@given(st.text(max_size=12))
def test_article_of_any_text(name):
    """Any name gets "a" or "an" (inflect alone answers "" for names with odd white space)."""
    assert with_article(name).split(" ", 1)[0] in ("a", "an")
