import pytest

import clipdata
from clipdata.errors import LayoutError
from helpers import make_image


def layout(root, classes=("paper", "rock", "scissors"), captions=None, split="test"):
    for c in classes:
        make_image(root / split / c / f"{c}.jpg", (8, 8), color=(0, 0, len(c) * 20))
    text = "\n".join(captions if captions is not None else [f"a {c} hand" for c in sorted(classes)])
    (root / split / "_tokenization.txt").write_text(text)
    return root


def test_a_good_layout(tmp_path):
    r = clipdata.inspect(layout(tmp_path))
    assert r.ok and not r.warnings
    assert [(x.name, x.images, x.caption) for x in r.rows] == [
        ("paper", 1, "a paper hand"), ("rock", 1, "a rock hand"), ("scissors", 1, "a scissors hand")]


def test_caption_count_must_match_folders(tmp_path):
    r = clipdata.inspect(layout(tmp_path, captions=["a", "b"]))
    assert not r.ok and "2 caption line(s) for 3 class folder(s)" in r.errors[0]


def test_missing_caption_file_and_empty_line(tmp_path):
    layout(tmp_path, captions=["a", "", "c"])
    make_image(tmp_path / "train" / "x" / "1.jpg")
    r = clipdata.inspect(tmp_path)
    assert any("train: no _tokenization.txt" in e for e in r.errors)
    assert any("empty caption line" in e for e in r.errors)


def test_empty_class_folder_and_unreadable_image(tmp_path):
    layout(tmp_path)
    (tmp_path / "test" / "zebra").mkdir()
    (tmp_path / "test" / "rock" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "test" / "_tokenization.txt").write_text("a\nb\nc\nd")
    r = clipdata.inspect(tmp_path)
    assert "test/zebra: empty class folder" in r.errors
    assert any(e.startswith("test/rock/broken.jpg: unreadable image") for e in r.errors)


def test_leakage_and_stray_files_are_warnings(tmp_path):
    layout(tmp_path, split="train")
    layout(tmp_path, split="test")
    (tmp_path / "train" / "notes.txt").write_text("x")
    (tmp_path / "train" / "_tokenization.txt").write_text("a\nb\nc\n")
    r = clipdata.inspect(tmp_path)
    assert r.ok
    assert sum("train/test leakage" in w for w in r.warnings) == 3
    assert any("stray file notes.txt" in w for w in r.warnings)
    assert any("ends with a newline" in w for w in r.warnings)


def test_roboflow_export_is_read(tmp_path):
    """Roboflow's CLIP export: spaces in folder names, captions in sorted folder order."""
    layout(tmp_path, classes=("dry waste", "wet waste"), split="train", captions=[
        "An example picture from the dry and wet waste dataset depicting a dry waste",
        "An example picture from the dry and wet waste dataset depicting a wet waste"])
    assert clipdata.inspect(tmp_path).ok


def test_not_a_layout(tmp_path):
    with pytest.raises(LayoutError):
        clipdata.inspect(tmp_path)


def test_our_output_passes(tmp_path):
    from helpers import SAMPLES
    clipdata.convert(SAMPLES / "folder", tmp_path / "out", format="folder")
    assert clipdata.inspect(tmp_path / "out").ok
