"""Property tests: any input to a pure parser either parses or raises clipdata's own error —
never a TypeError, KeyError or the like that would surface as a traceback."""
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipdata.captions import load_ontology
from clipdata.crops import Padding, crop_region, valid_box
from clipdata.errors import ClipdataError
from clipdata.formats import coco, voc, yolo

PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=5)
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4), max_leaves=12)
ids = st.integers(-2, 3) | st.sampled_from(["1", "a"]) | st.none() | st.lists(st.integers(), max_size=1)
coco_like = st.fixed_dictionaries({}, optional={
    "categories": st.lists(st.fixed_dictionaries({}, optional={"id": ids, "name": scalars, "supercategory": scalars}) | json_values, max_size=3),
    "images": st.lists(st.fixed_dictionaries({}, optional={"id": ids, "file_name": scalars, "width": scalars, "height": scalars}) | json_values, max_size=3),
    "annotations": st.lists(st.fixed_dictionaries({}, optional={
        "id": ids, "image_id": ids, "category_id": ids, "iscrowd": scalars,
        "bbox": st.lists(scalars, max_size=5) | json_values}) | json_values, max_size=4) | json_values,
})


@PROPERTIES
@given(coco_like)
def test_coco_index(data):
    try:
        idx = coco.parse(data, Path("x.json"))
    except ClipdataError:
        return
    for labels in idx.labels.values():
        for label in labels:
            assert label.box is None or valid_box(list(label.box)) == label.box


@PROPERTIES
@given(st.text(alphabet="0123456789 .-e\nabn", max_size=60), st.integers(1, 4))
def test_yolo_label_lines(text, nc):
    try:
        boxes, _ = yolo.parse_labels(text, "l.txt", nc)
    except ClipdataError:
        return
    for _, c, (x0, y0, x1, y1) in boxes:
        assert 0 <= c < nc and 0 <= x0 <= 1 and 0 <= y1 <= 1


@PROPERTIES
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
       | st.builds(lambda body: f"<annotation>{body}</annotation>".encode(),
                   st.sampled_from(["", "<object/>", "<object><name>a</name><bndbox><xmin>x</xmin></bndbox></object>",
                                    "<size><width>-1</width></size>", "<object><name></name></object>"])))
def test_voc_xml(data):
    try:
        voc.parse_xml(data, "a.xml")
    except ClipdataError:
        pass


@PROPERTIES
@given(json_values)
def test_yaml_documents(value):
    """Any YAML document (JSON is YAML) given as data.yaml or as an ontology."""
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "data.yaml"
        f.write_text(json.dumps(value))
        for read in (yolo.read, load_ontology):
            try:
                read(f)
            except ClipdataError:
                pass


@PROPERTIES
@given(st.lists(st.floats(-1e6, 1e6), min_size=4, max_size=4), st.integers(1, 50), st.integers(1, 50),
       st.floats(0, 2), st.booleans(), st.integers(1, 10))
def test_crop_region_stays_inside(box, w, h, pad, square, min_size):
    box[2], box[3] = abs(box[2]), abs(box[3])
    region = crop_region(tuple(box), (w, h), padding=Padding(pad), square=square, min_size=min_size)
    if not isinstance(region, str):
        left, top, right, bottom = region
        assert 0 <= left < right <= w and 0 <= top < bottom <= h
        assert right - left >= min_size and bottom - top >= min_size
