import pytest

from clipdata.errors import ClassNameError, LayoutError
from clipdata.formats import layout as clip
from helpers import make_image


@pytest.mark.parametrize("name, problem", [
    ("cat", None), ("sun flower", None), ("café", None), ("C++", None), ("a.b", None),
    ("", "empty"), (".", "special"), ("..", "special"), ("a/b", "separator"), ("a\\b", "separator"),
    ("a\0b", "control"), ("a\nb", "control"), (" cat", "white space"), ("cat ", "white space"),
    ("_tokenization.txt", "caption file"), (".dot thing", "starts with a dot"), (".hidden", "starts with a dot"),
    ("a\u2028b", "line break"), ("a\x85b", "line break"), ("a\u2029b", "line break"),
])
def test_name_problem(name, problem):
    found = clip.name_problem(name)
    assert (found is None) if problem is None else (problem in found)


def test_case_clash_and_bad_names_are_reported_together():
    with pytest.raises(ClassNameError) as e:
        clip.check_class_names(["Cat", "cat", "dog", "a/b"])
    msg = str(e.value)
    assert "'Cat' / 'cat'" in msg and "'a/b'" in msg and "--rename" in msg


def test_tokenization_order_is_sorted_folder_order():
    text = clip.tokenization_text({"b": "B", "a b": "AB", "B": "big B", "a": "A", "é": "E"})
    # Python sorted(): code point order, so upper case before lower, "a" < "a b" < "b" < "é"
    assert text == "big B\nA\nAB\nB\nE"
    assert not text.endswith("\n")


def test_read_layout_splits_and_single_split(tmp_path):
    for split in ("valid", "train"):
        make_image(tmp_path / split / "cat" / "1.jpg")
        (tmp_path / split / "_tokenization.txt").write_text("a cat")
    lay = clip.read_layout(tmp_path)
    assert [s.name for s in lay.splits] == ["train", "valid"]
    assert lay.splits[0].classes == ["cat"] and lay.splits[0].captions == ["a cat"]
    single = clip.read_layout(tmp_path / "train")
    assert [s.name for s in single.splits] == ["train"]


def test_read_layout_refuses_a_folder_without_splits(tmp_path):
    make_image(tmp_path / "cat" / "1.jpg")
    with pytest.raises(LayoutError, match="no split folder"):
        clip.read_layout(tmp_path)
