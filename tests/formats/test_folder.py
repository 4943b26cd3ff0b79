from pathlib import Path

import pytest

from clipdata.errors import SourceError
from clipdata.formats import folder
from helpers import FIXTURES, make_image


def build(root: Path, files: list[str]) -> Path:
    for f in files:
        p = root / f
        if f.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
        elif f.lower().endswith((".jpg", ".png", ".jpeg")):
            make_image(p, (8, 8), fmt="JPEG" if f.lower().endswith(("jpg", "jpeg")) else "PNG")
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("x")
    return root


def labels(src):
    return sorted((s.split, s.labels[0].name, s.name) for s in src.samples)


@pytest.mark.parametrize("files, expected", [
    # plain class folders: one split, train
    (["b/1.jpg", "a/2.jpg"], [("train", "a", "a/2.jpg"), ("train", "b", "b/1.jpg")]),
    # extensions match case-insensitively; images found recursively, labeled by the top folder
    (["cat/X.JPG", "cat/deep/er/y.Png"], [("train", "cat", "cat/X.JPG"), ("train", "cat", "cat/deep/er/y.Png")]),
    # split folders; val becomes valid
    (["train/a/1.jpg", "val/a/2.jpg", "test/b/3.jpg"],
     [("test", "b", "test/b/3.jpg"), ("train", "a", "train/a/1.jpg"), ("valid", "a", "val/a/2.jpg")]),
    (["Validation/a/2.jpg", "train/a/1.jpg"], [("train", "a", "train/a/1.jpg"), ("valid", "a", "Validation/a/2.jpg")]),
    # a class that happens to be called "test" beside other classes stays a class
    (["test/1.jpg", "cat/2.jpg"], [("train", "cat", "cat/2.jpg"), ("train", "test", "test/1.jpg")]),
    # spaces and unicode kept
    (["sun flower/1.jpg", "café/2.jpg"], [("train", "café", "café/2.jpg"), ("train", "sun flower", "sun flower/1.jpg")]),
])
def test_layouts(tmp_path, files, expected):
    assert labels(folder.read(build(tmp_path, files))) == expected


def test_skips_loose_hidden_and_non_image_files(tmp_path):
    build(tmp_path, ["a/1.jpg", "a/notes.txt", "readme.md", ".DS_Store", "a/.hidden.jpg",
                     ".ipynb_checkpoints/x.jpg", "a/.cache/y.jpg", "empty/"])
    src = folder.read(tmp_path)
    assert labels(src) == [("train", "a", "a/1.jpg")]
    reasons = {(s.reason, s.item) for s in src.skipped}
    assert ("not_an_image", "a/notes.txt") in reasons
    assert ("not_in_class_folder", "readme.md") in reasons
    assert ("hidden", ".DS_Store") in reasons
    assert ("hidden", "a/.hidden.jpg") in reasons
    assert ("hidden", ".ipynb_checkpoints/") in reasons
    assert ("hidden", "a/.cache/") in reasons
    assert any("empty/" in n for n in src.notes)
    assert "empty" in src.classes  # declared, but it will get no output folder


def test_split_option_for_splitless_source(tmp_path):
    build(tmp_path, ["a/1.jpg"])
    assert labels(folder.read(tmp_path, split="test")) == [("test", "a", "a/1.jpg")]


def test_two_folders_for_one_split_is_an_error(tmp_path):
    build(tmp_path, ["val/a/1.jpg", "valid/a/2.jpg"])
    with pytest.raises(SourceError, match="both the valid split"):
        folder.read(tmp_path)


@pytest.mark.parametrize("files", [[], ["readme.txt"], ["a/readme.txt"]])
def test_no_images_is_an_error(tmp_path, files):
    build(tmp_path, files)
    with pytest.raises(SourceError, match="no images"):
        folder.read(tmp_path)


def test_not_a_folder(tmp_path):
    with pytest.raises(SourceError, match="not a folder"):
        folder.read(tmp_path / "nope")


def test_datumaro_imagenet_fixture():
    """An image at the root (not labeled), one in a class folder, one two levels deep."""
    src = folder.read(FIXTURES / "datumaro" / "imagenet_dataset")
    assert labels(src) == [
        ("train", "label_0", "label_0/label_0_1.jpg"),
        ("train", "label_1", "label_1/label_1_1.jpg"),
        ("train", "label_1", "label_1/label_1_1/label_1_1.jpg"),
    ]
    assert [s.item for s in src.skipped if s.reason == "not_in_class_folder"] == ["label_0_2.jpg"]
