"""WebDataset shards (`--export webdataset`) read back with the real `webdataset` package, and
one class index across splits in every hand-off."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

import clipdata
from clipdata.errors import OptionError, OutputError
from clipdata.formats.exports import ExportOptions
from clipdata.formats.exports import webdataset as wds_export
from conftest import make_image, manifest

wds = pytest.importorskip("webdataset")

# Splits with different class subsets, so a per-split index would disagree with the global one;
# file names with dots and upper-case extensions, and every image type a copy keeps.
SOURCE = {
    "train/ant/a1.jpg": "JPEG", "train/bee/photo.v2.jpg": "JPEG", "train/bee/b2.png": "PNG",
    "train/cat/c1.JPG": "JPEG", "train/cat/c.2.tiff": "TIFF", "train/bée fly/x.jpg": "JPEG",
    "valid/bee/v1.jpeg": "JPEG", "valid/cat/v2.webp": "WEBP",
    "test/cat/t1.bmp": "BMP", "test/dog/t2.jpg": "JPEG",
}


def make_source(root: Path) -> Path:
    for i, (rel, fmt) in enumerate(sorted(SOURCE.items())):
        make_image(root / rel, (8 + i, 6), color=(0, 0, 20 * i), fmt=fmt)
    return root


@pytest.fixture
def converted(tmp_path) -> Path:
    out = tmp_path / "out"
    clipdata.convert(make_source(tmp_path / "src"), out, format="folder")
    return out


def global_classes(out: Path) -> list[str]:
    return json.loads((out / "clipdata.json").read_text())["classes"]


def export(out: Path, shard_size: int = 3) -> list[Path]:
    opts = ExportOptions(shard_size=shard_size, classes=tuple(global_classes(out)))
    return wds_export.export(out, manifest(out), opts)


def shards(out: Path, split: str) -> list[str]:
    return [str(p) for p in sorted((out / "webdataset").glob(f"{split}-*.tar"))]


def read_back(out: Path, split: str) -> list[dict]:
    return list(wds.WebDataset(shards(out, split), shardshuffle=False, empty_check=False))


def test_global_class_list_is_every_class_sorted(converted):
    assert global_classes(converted) == sorted({r["class"] for r in manifest(converted)})
    assert global_classes(converted) == ["ant", "bee", "bée fly", "cat", "dog"]


def test_every_sample_reads_back_with_its_image_caption_class_and_row(converted):
    export(converted)
    classes = global_classes(converted)
    for split in ("train", "valid", "test"):
        rows = [r for r in manifest(converted) if r["split"] == split]
        samples = read_back(converted, split)
        assert len(samples) == len(rows)
        for sample, row in zip(samples, rows):
            ext = Path(row["path"]).suffix.lower()[1:]
            # Exactly one sample per row: a dot in a name never splits a sample in two.
            assert {k for k in sample if not k.startswith("__")} == {"cls", ext, "json", "txt"}
            assert sample[ext] == (converted / row["path"]).read_bytes()  # the bytes as written
            assert sample["txt"].decode("utf-8") == row["caption"]
            assert classes[int(sample["cls"])] == row["class"]
            assert json.loads(sample["json"]) == row


def test_decoded_samples_give_pil_images_ints_and_text(converted):
    export(converted)
    for split in ("train", "valid", "test"):
        for sample in wds.WebDataset(shards(converted, split), shardshuffle=False).decode("pil"):
            row = sample["json"]
            image = next(v for k, v in sample.items() if k not in {"cls", "json", "txt"} and not k.startswith("__"))
            assert isinstance(image, Image.Image)
            assert image.size == Image.open(converted / row["path"]).size
            assert isinstance(sample["cls"], int) and sample["txt"] == row["caption"]


def test_class_indices_agree_across_splits(converted):
    export(converted)
    classes = global_classes(converted)
    index_of: dict[str, set[int]] = {}
    for split in ("train", "valid", "test"):
        for sample in read_back(converted, split):
            index_of.setdefault(json.loads(sample["json"])["class"], set()).add(int(sample["cls"]))
    assert index_of == {name: {i} for i, name in enumerate(classes)}
    # The per-split caption file numbers only its own classes: valid's line 0 is bee, globally 1.
    valid_lines = (converted / "valid" / "_tokenization.txt").read_text().split("\n")
    assert len(valid_lines) == 2 and "bee" in valid_lines[0] and classes.index("bee") == 1


def test_shards_hold_shard_size_samples_and_sizes_json_counts_them(converted):
    files = export(converted, shard_size=2)
    names = [p.relative_to(converted).as_posix() for p in files]
    assert names == ["webdataset/train-000000.tar", "webdataset/train-000001.tar", "webdataset/train-000002.tar",
                     "webdataset/valid-000000.tar", "webdataset/test-000000.tar", "webdataset/sizes.json"]
    sizes = json.loads((converted / "webdataset" / "sizes.json").read_text())
    per_split = {"train": 6, "valid": 2, "test": 2}
    for name, count in sizes.items():
        with tarfile.open(converted / "webdataset" / name) as tar:
            assert len(tar.getnames()) == 4 * count
    assert sizes == {"train-000000.tar": 2, "train-000001.tar": 2, "train-000002.tar": 2,
                     "valid-000000.tar": 2, "test-000000.tar": 2}
    assert sum(sizes.values()) == sum(per_split.values()) == len(manifest(converted))


def test_keys_are_unique_dotless_and_in_order(converted):
    export(converted, shard_size=4)
    keys = [s["__key__"] for split in ("train", "valid", "test") for s in read_back(converted, split)]
    assert len(set(keys)) == len(keys) == len(manifest(converted))
    assert all("." not in k and "/" not in k for k in keys)
    assert keys[:2] == ["train_000000000", "train_000000001"] and keys[-1] == "test_000000001"


def test_same_input_gives_identical_tar_bytes_with_fixed_member_metadata(tmp_path):
    src = make_source(tmp_path / "src")
    outs = []
    for name in ("a", "b"):
        clipdata.convert(src, tmp_path / name, format="folder", workers=1 if name == "a" else 2)
        export(tmp_path / name)
        outs.append({p.name: p.read_bytes() for p in sorted((tmp_path / name / "webdataset").iterdir())})
    assert outs[0] == outs[1] and len(outs[0]) == 5  # train x2, valid, test, sizes.json; no stray file
    with tarfile.open(fileobj=io.BytesIO(outs[0]["train-000000.tar"])) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode, m.type) for m in members} == {
        (0, 0, 0, "", "", 0o644, tarfile.REGTYPE)}


def test_an_image_missing_from_the_output_is_one_clear_error(converted):
    row = manifest(converted)[0]
    (converted / row["path"]).unlink()
    with pytest.raises(OutputError, match="missing from the output"):
        export(converted)
    assert not list((converted / "webdataset").glob(".clipdata-tmp-*"))  # no half-written shard left


@pytest.mark.parametrize("size", [0, -3])
def test_shard_size_must_be_positive(converted, size):
    with pytest.raises(OptionError, match="--shard-size"):
        export(converted, shard_size=size)


def test_open_clip_reads_the_shards(converted):
    try:
        import torch
        from open_clip_train.data import get_wds_dataset
    except Exception as e:  # any import failure: open_clip is optional
        pytest.skip(f"open_clip_train does not import: {e}")
    from importlib.metadata import requires
    from types import SimpleNamespace

    from packaging.requirements import Requirement
    wanted = [Requirement(r) for r in requires("open_clip_torch") or [] if r.startswith("webdataset")]
    if wanted and not wanted[0].specifier.contains(wds.__version__, prereleases=True):
        pytest.skip(f"open_clip's loader needs {wanted[0].name}{wanted[0].specifier}, not {wds.__version__}")
    export(converted, shard_size=2)
    # valid holds .jpeg and .webp, both images to open_clip (it skips train's .tiff, as documented).
    rows = [r for r in manifest(converted) if r["split"] == "valid"]
    args = SimpleNamespace(  # the options open_clip's trainer passes for --dataset-type webdataset
        train_data="::".join(shards(converted, "valid")), val_data=None, train_num_samples=None,
        dataset_resampled=False, train_data_upsampling_factors=None, seed=0, batch_size=len(rows),
        workers=0, world_size=1, distributed=False, rank=0)
    data = get_wds_dataset(args, lambda img: torch.tensor(img.size), is_train=True, tokenizer=lambda t: [t])
    assert data.dataloader.num_samples == len(rows)  # from sizes.json: no --train-num-samples needed
    batch = next(iter(data.dataloader))
    texts = batch["text"] if isinstance(batch, dict) else batch[1]
    assert sorted(texts) == sorted(r["caption"] for r in rows)


def test_convert_export_webdataset_end_to_end_through_the_cli(tmp_path):
    from typer.testing import CliRunner

    from clipdata.cli import app
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["convert", "folder", str(make_source(tmp_path / "src")), str(out), "--quiet",
                                 "--export", "webdataset", "--shard-size", "4"])
    assert r.exit_code == 0, r.output
    provenance = json.loads((out / "clipdata.json").read_text())
    assert provenance["exports"] == ["webdataset/train-000000.tar", "webdataset/train-000001.tar",
                                     "webdataset/valid-000000.tar", "webdataset/test-000000.tar",
                                     "webdataset/sizes.json"]
    urls = [url for split in ("train", "valid", "test") for url in shards(out, split)]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    rows = manifest(out)
    assert [s["json"] for s in samples] == [r for split in ("train", "valid", "test") for r in rows if r["split"] == split]
    assert [provenance["classes"][s["cls"]] for s in samples] == [s["json"]["class"] for s in samples]
    assert CliRunner().invoke(app, ["inspect", str(out)]).exit_code == 0  # the shards do not upset inspect


@pytest.mark.parametrize("size", ["0", "x"])
def test_cli_refuses_a_bad_shard_size_as_usage(tmp_path, size):
    from typer.testing import CliRunner

    from clipdata.cli import app
    r = CliRunner().invoke(app, ["convert", "folder", str(make_source(tmp_path / "src")), str(tmp_path / "out"),
                                 "--export", "webdataset", "--shard-size", size])
    assert r.exit_code == 2 and "--shard-size" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out" / "webdataset").exists()


def test_hf_split_share_one_class_label_when_loaded_with_the_global_names(tmp_path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "out"
    clipdata.convert(make_source(tmp_path / "src"), out, format="folder", export="hf")
    names = global_classes(out)
    # As formats/hf.md documents: the features, with ClassLabel(names=clipdata.json "classes").
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names),
                                  "text": datasets.Value("string")})
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), features=features, cache_dir=str(tmp_path / "cache"))
    split_of = {"train": "train", "validation": "valid", "test": "test"}
    assert set(ds) == set(split_of)
    for name, split in split_of.items():
        assert ds[name].features["label"].names == names
        assert list(ds[name]["label"]) == [names.index(r["class"]) for r in manifest(out) if r["split"] == split]


def test_review_apply_exports_webdataset_with_the_global_class_index(tmp_path):
    photos = tmp_path / "photos"
    tasks = []  # a Label Studio JSON_MIN export: the reviewer's class per image
    for i in range(6):
        make_image(photos / f"p{i}.jpg", (10, 8), color=(0, 0, i * 30))
        tasks.append({"image": f"p{i}.jpg", "class": ["cat", "dog", "ant"][i % 3]})
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    out = tmp_path / "out"
    result = clipdata.review_apply(tmp_path / "export.json", out, images=photos, split_ratios="0.5,0.5",
                                   export="webdataset", shard_size=2)
    assert result.layout.exported == ["webdataset/train-000000.tar", "webdataset/train-000001.tar",
                                      "webdataset/valid-000000.tar", "webdataset/valid-000001.tar",
                                      "webdataset/sizes.json"]
    classes = global_classes(out)
    samples = [s for split in ("train", "valid") for s in read_back(out, split)]
    assert [json.loads(s["json"]) for s in samples] == manifest(out)
    assert [classes[int(s["cls"])] for s in samples] == [r["class"] for r in manifest(out)]
