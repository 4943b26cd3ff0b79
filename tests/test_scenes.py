"""Scene mode: Roboflow's own CLIP export, reproduced byte for byte."""
import json

import pytest

import clipdata
from clipdata.captions import MULTIPLE, default_project, scene_caption, scene_folder
from clipdata.formats import layout as clip
from helpers import FIXTURES, make_image, manifest, write_coco

ROBOFLOW = FIXTURES / "roboflow-clip"


def counts_of(folder: str, vocab: list[str]) -> dict[str, int]:
    """Split a real export's folder name back into classes, longest class name first."""
    counts, rest = {}, folder
    words = sorted(vocab, key=len, reverse=True)
    while rest:
        for v in words:
            for suffix, n in ((MULTIPLE, 2), ("", 1)):
                token = v + suffix
                if rest == token or rest.startswith(token + " "):
                    counts[v] = n
                    rest = rest[len(token):].lstrip(" ")
                    break
            else:
                continue
            break
        else:
            raise AssertionError(f"cannot split {folder!r}")
    return counts


@pytest.mark.parametrize("name", ["cloud", "rps", "test", "train", "valid", "waste"])
def test_real_roboflow_exports_byte_for_byte(name):
    spec = json.loads((ROBOFLOW / f"spec_{name}.json").read_text())
    captions = {}
    for folder in spec["folders"]:
        counts = counts_of(folder, spec["vocab"])
        assert scene_folder(counts) == folder
        captions[folder] = scene_caption(spec["project"], counts, "objects")
    assert clip.tokenization_text(captions).encode("utf-8") == (ROBOFLOW / spec["expected"]).read_bytes()


@pytest.mark.parametrize("counts, group, expected", [
    ({"mug": 2, "table": 1, "water bottle": 3}, "objects", "mugs, a table, and water bottles"),
    ({"blanket": 1, "chopstick": 1}, "objects", "a blanket, and a chopstick"),
    ({"apple": 1}, "objects", "a apple"),  # Roboflow always writes "a"
    ({"matches": 1, "Stratus": 2}, "objects", "Strati, and a match"),  # sorted(): upper case first
    ({}, "None-Bevel", "no None-Bevels"),
    ({}, "-accident-", "no -accident-s"),
])
def test_caption_grammar(counts, group, expected):
    assert scene_caption("P", counts, group) == f"An example picture from the P dataset depicting {expected}"


def test_scene_conversion(tmp_path):
    for n in ("a", "b", "c"):
        make_image(tmp_path / f"{n}.jpg", (16, 16), color=(0, 0, ord(n)))
    cats = [{"id": 0, "name": "desk-things", "supercategory": "none"},
            {"id": 1, "name": "mug", "supercategory": "desk-things"},
            {"id": 2, "name": "table", "supercategory": "desk-things"}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [4, 4, 4, 4]},
            {"id": 3, "image_id": 1, "category_id": 2, "bbox": [0, 0, 9, 9]},
            {"id": 4, "image_id": 2, "category_id": 2, "bbox": [0, 0, 9, 9]}]
    images = [{"id": i, "file_name": f"{n}.jpg"} for i, n in ((1, "a"), (2, "b"), (3, "c"))]
    f = write_coco(tmp_path / "src" / "_annotations.coco.json", images, anns, cats)
    for n in ("a", "b", "c"):
        (tmp_path / f"{n}.jpg").rename(tmp_path / "src" / f"{n}.jpg")
    out = tmp_path / "out"
    report = clipdata.convert(f, out, format="coco", mode="scenes", project_name="Desk")
    assert report.counts == {"train": {"mug_multiple table": 1, "no desk-things": 1, "table": 1}}
    assert (out / "train/_tokenization.txt").read_text() == "\n".join([
        "An example picture from the Desk dataset depicting mugs, and a table",
        "An example picture from the Desk dataset depicting no desk-things",  # Roboflow's group
        "An example picture from the Desk dataset depicting a table"])
    assert (out / "train/mug_multiple table/a.jpg").read_bytes() == (tmp_path / "src/a.jpg").read_bytes()
    assert [r["box"] for r in manifest(out)] == [None, None, None]


def test_default_project_name(tmp_path):
    (tmp_path / "Rav.v9" / "train").mkdir(parents=True)
    assert default_project(tmp_path / "Rav.v9" / "train" / "_annotations.coco.json") == "Rav.v9"
    (tmp_path / "Rav.v9" / "README.roboflow.txt").write_text("\nRav - v9 2024-11-19 6:42pm\n=====\n")
    assert default_project(tmp_path / "Rav.v9" / "train" / "_annotations.coco.json") == "Rav"
