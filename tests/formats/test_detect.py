"""convert auto: each real export is told by its names and first bytes; two formats at
once are refused, naming both; nothing recognisable is refused with the list of formats."""
import pytest

from clipdata import convert
from clipdata.errors import SourceError
from clipdata.formats.detect import detect
from helpers import FIXTURES, SAMPLES, make_image

D = FIXTURES / "datumaro"


@pytest.mark.parametrize("source, expected", [
    (D / "coco_dataset" / "coco" / "annotations" / "instances_train.json", "coco"),
    (D / "coco_dataset" / "coco", "coco"),
    (D / "coco_dataset" / "coco_roboflow", "coco"),
    (FIXTURES / "sahi" / "combined_coco.json", "coco"),
    (D / "roboflow_yolo", "yolo"),
    (D / "roboflow_yolo" / "data.yaml", "yolo"),
    (FIXTURES / "label-studio-converter" / "test_import_yolo_data", "yolo"),
    (D / "roboflow_voc", "voc"),
    (D / "cvat_dataset" / "for_images" / "export_project", "cvat"),
    (D / "cvat_dataset" / "for_images" / "export_task" / "train.xml", "cvat"),
    (D / "roboflow_createml", "createml"),
    (FIXTURES / "label-studio-converter" / "exports" / "test_export_yolo_data.json", "labelstudio"),
    (FIXTURES / "label-studio-converter" / "exports" / "json_min" / "test_export_yolo_data.json", "labelstudio"),
    (D / "imagenet_dataset", "folder"),
    (SAMPLES / "folder", "folder"),
])
def test_real_exports_are_detected(source, expected):
    assert detect(source) == expected


def test_labelme_is_detected_and_said(tmp_path):
    make_image(tmp_path / "a.jpg", (20, 20))
    (tmp_path / "a.json").write_text('{"version": "5.4.1", "flags": {}, "shapes": [{"label": "cat", "points": '
                                     '[[1, 1], [9, 9]], "shape_type": "rectangle"}], "imagePath": "a.jpg"}')
    report = convert(tmp_path, tmp_path / "out", "auto", workers=1)
    assert report.format == "labelme" and report.notes[0] == "format detected: labelme"


def test_two_formats_or_none_are_refused(tmp_path):
    (tmp_path / "data.yaml").write_text("train: images\nnames: [a]\n")
    (tmp_path / "annotations.xml").write_text("<annotations><version>1.1</version></annotations>")
    with pytest.raises(SourceError, match="more than one format matches: cvat, yolo"):
        detect(tmp_path)
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("hello")
    with pytest.raises(SourceError, match="could not tell which format"):
        detect(tmp_path / "none")
    with pytest.raises(SourceError, match="could not tell"):  # LabelMe's old XML is not Pascal VOC
        detect(D / "labelme")
