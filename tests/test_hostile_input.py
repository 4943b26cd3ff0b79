"""Hostile and surprising input, one table per class of problem: values that are not what
they look like, names clipdata could write but not read back, denial of service, walks that
loop, text that is not UTF-8, and the layouts real tools write. Every case either reads the
value as written or stops with one clear line (a ClipdataError naming the file)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipdata import textfiles
from clipdata.captions import check_template, line_break, load_ontology, with_article, Ontology
from clipdata.errors import ClassNameError, ClipdataError, OptionError, SourceError
from clipdata.yamlfile import ANY, KEYS, parse_yaml

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
    ("YAML alias bomb", _alias_bomb, lambda f: __import__("clipdata.yamlfile").yamlfile.load_yaml(f, SourceError),
     "aliases (*name) are not accepted"),
    ("YAML alias of one scalar", lambda r: write(r / "d.yaml", "x: &n cat\nnames: [*n]\n"),
     lambda f: __import__("clipdata.yamlfile").yamlfile.load_yaml(f, SourceError), "line 2, column 9"),
    ("100,000-deep YAML", lambda r: write(r / "d.yaml", "[" * 100_000 + "]" * 100_000),
     lambda f: __import__("clipdata.yamlfile").yamlfile.load_yaml(f, SourceError), "nested too deep"),
    ("YAML merge key", lambda r: write(r / "d.yaml", "<<: {names: [a]}\n"),
     lambda f: __import__("clipdata.yamlfile").yamlfile.load_yaml(f, SourceError), "merge keys"),
    ("YAML python tag", lambda r: write(r / "d.yaml", "names: !!python/object/apply:os.system [id]\n"),
     lambda f: __import__("clipdata.yamlfile").yamlfile.load_yaml(f, SourceError), "could not determine a constructor"),
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
