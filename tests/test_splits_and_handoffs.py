"""Re-splitting, and the hand-off files other training tools load."""
import csv
import json
import os

import pytest

import clipdata
from clipdata.errors import OptionError
from clipdata.pipeline.plan import parse_ratios
from helpers import make_image, manifest, tree_bytes, write_coco


def many_boxes(tmp_path, n_images=40):
    images, anns = [], []
    for i in range(n_images):
        make_image(tmp_path / "src" / f"{i:03}.jpg", (12, 12), color=(0, 0, i * 6))
        images.append({"id": i, "file_name": f"{i:03}.jpg"})
        for k in range(3):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1 + (i + k) % 2, "bbox": [k, k, 6, 6]})
    return write_coco(tmp_path / "src" / "ann.json", images, anns, [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}])


def test_resplit_is_by_source_image_and_deterministic(tmp_path):
    f = many_boxes(tmp_path)
    a = clipdata.convert(f, tmp_path / "a", format="coco", split_ratios="0.5,0.25,0.25", seed=7)
    clipdata.convert(f, tmp_path / "b", format="coco", split_ratios=(0.5, 0.25, 0.25), seed=7)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    per_split = {s: sum(c.values()) for s, c in a.counts.items()}
    assert per_split == {"train": 60, "valid": 30, "test": 30}  # 20/10/10 images, 3 crops each
    split_of = {}
    for row in manifest(tmp_path / "a"):
        assert split_of.setdefault(row["source_image"], row["split"]) == row["split"]  # no photo in two splits
    clipdata.convert(f, tmp_path / "c", format="coco", split_ratios="0.5,0.25,0.25", seed=8)
    assert {r["path"] for r in manifest(tmp_path / "c")} != {r["path"] for r in manifest(tmp_path / "a")}
    assert clipdata.inspect(tmp_path / "a").warnings == []  # no leakage


@pytest.mark.parametrize("text, expected", [
    ("0.8,0.1,0.1", (0.8, 0.1, 0.1)), ("0.9,0.1", (0.9, 0.1, 0.0)), ([1, 0, 0], (1.0, 0.0, 0.0)),
])
def test_parse_ratios(text, expected):
    assert parse_ratios(text) == expected


@pytest.mark.parametrize("text", ["0.8,0.1", "1", "0.5,0.5,0.5", "a,b", "-0.2,1.2", "0.2,0.2,0.2,0.4"])
def test_bad_ratios(text):
    with pytest.raises(OptionError):
        parse_ratios(text)


@pytest.fixture
def exported(tmp_path):
    f = many_boxes(tmp_path, n_images=6)
    out = tmp_path / "out"
    clipdata.convert(f, out, format="coco", split_ratios="0.5,0.5", export="hf,openclip",
                     template="a photo of a {}, \"quoted\"\tand tabbed")
    return out


def test_openclip_csv(exported):
    for split in ("train", "valid"):
        path = exported / f"openclip_{split}.csv"
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        assert [r["filepath"] for r in rows] == [str((exported / m["path"]).resolve()) for m in manifest(exported) if m["split"] == split]
        assert all(os.path.isabs(r["filepath"]) and os.path.isfile(r["filepath"]) for r in rows)
        assert {r["title"] for r in rows} == {'a photo of a cat, "quoted"\tand tabbed', 'a photo of a dog, "quoted"\tand tabbed'}


def test_openclip_csv_reads_in_pandas_as_open_clip_does(exported):
    pd = pytest.importorskip("pandas")
    df = pd.read_csv(exported / "openclip_train.csv", sep="\t")  # open_clip's CsvDataset
    assert list(df.columns) == ["filepath", "title"] and df["title"].str.startswith("a photo of a ").all()


def test_hf_imagefolder_loads_images_labels_and_text(exported, tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("imagefolder", data_dir=str(exported), cache_dir=str(tmp_path / "cache"))
    assert set(ds) == {"train", "validation"}
    rows = manifest(exported)
    for hf_split, split in (("train", "train"), ("validation", "valid")):
        part = ds[hf_split]
        assert part.num_rows == sum(r["split"] == split for r in rows)
        assert sorted(zip(part["label"], part["text"])) == sorted((r["class"], r["caption"]) for r in rows if r["split"] == split)
        assert part[0]["image"].size == (6, 6)


def test_hf_metadata_rows(exported):
    lines = [json.loads(l) for l in (exported / "train/metadata.jsonl").read_text().splitlines()]
    assert lines and all((exported / "train" / l["file_name"]).is_file() for l in lines)
    assert clipdata.inspect(exported).ok and not clipdata.inspect(exported).warnings


def test_torchvision_imagefolder_indices_match_caption_lines(exported):
    tv = pytest.importorskip("torchvision.datasets")
    ds = tv.ImageFolder(str(exported / "train"))
    captions = (exported / "train/_tokenization.txt").read_text().split("\n")
    assert len(captions) == len(ds.classes)
    for path, index in ds.samples:
        row = next(r for r in manifest(exported) if str(exported / r["path"]) == path)
        assert captions[index] == row["caption"]


def test_unknown_export(tmp_path):
    with pytest.raises(OptionError, match="--export"):
        clipdata.convert(many_boxes(tmp_path, 1), tmp_path / "o", format="coco", export="tfrecord")


def test_open_clip_csv_dataset_loads_the_file(exported):
    data = pytest.importorskip("open_clip_train.data")
    ds = data.CsvDataset(str(exported / "openclip_train.csv"), transforms=lambda im: im.size,
                         img_key="filepath", caption_key="title", tokenizer=lambda texts: texts)
    rows = [r for r in manifest(exported) if r["split"] == "train"]
    assert len(ds) == len(rows)
    size, texts = ds[0]
    assert size == (6, 6) and texts == rows[0]["caption"]  # quotes and tabs survive
