import pytest

from clipdata.captions import Ontology, check_template, load_ontology, render, with_article
from clipdata.errors import OptionError


@pytest.mark.parametrize("name, expected", [
    ("apple", "an apple"), ("cat", "a cat"), ("elephant", "an elephant"), ("umbrella", "an umbrella"),
    ("unicorn", "a unicorn"), ("hour glass", "an hour glass"), ("one-way sign", "a one-way sign"),
    ("European robin", "a European robin"), ("Owl", "an Owl"), ("house", "a house"),
])
def test_with_article(name, expected):
    assert with_article(name) == expected


@pytest.mark.parametrize("template, name, expected", [
    ("a photo of a {}", "daisy", "a photo of a daisy"),
    ("{} flower", "daisy", "daisy flower"),
    ("a picture of {a}", "orchid", "a picture of an orchid"),
    ("{a}, a type of {}", "apple", "an apple, a type of apple"),
    ("{}", "sun flower", "sun flower"),
])
def test_render(template, name, expected):
    assert render(check_template(template), name) == expected


@pytest.mark.parametrize("template", ["a photo", "a {0} photo {}", "{name}", "a {}\nb", "{} }"])
def test_bad_templates(template):
    with pytest.raises(OptionError):
        check_template(template)


def test_ontology_renames_merges_drops_and_captions(tmp_path):
    f = tmp_path / "o.yaml"
    f.write_text("""
template: "a picture of {a}"
classes:
  daisy: a picture of a daisy flower
  tulip_red: {name: tulip, caption: a picture of a tulip}
  tulip_yellow: {name: tulip}
  background: {drop: true}
  "Café": {name: cafe}
""")
    o = load_ontology(f)
    assert o.target("daisy") == "daisy"
    assert o.target("tulip_red") == o.target("tulip_yellow") == "tulip"
    assert o.target("background") is None
    assert o.target("Cafe\u0301") == "cafe"  # decomposed é is the same class after NFC
    assert o.caption("daisy", "a photo of a {}") == "a picture of a daisy flower"
    assert o.caption("tulip", "a photo of a {}") == "a picture of a tulip"
    assert o.caption("orchid", "a photo of a {}") == "a picture of an orchid"  # file template
    assert o.unknown(["daisy", "tulip_red", "tulip_yellow"]) == ["Café", "background"]


@pytest.mark.parametrize("text, fragment", [
    ("[1, 2]", "classes"),
    ("classes: [a, b]", "classes"),
    ("classes: {a: 3}", "caption string or a mapping"),
    ("classes: {a: {colour: red}}", "unknown key"),
    ("classes: {a: {drop: true, name: b}}", "dropped class"),
    ("classes: {a: {caption: ''}}", "non-empty"),
    ("classes: {a: {name: x, caption: one}, b: {name: x, caption: two}}", "two different captions"),
    ("classes: {a: b}\nextra: 1", "unknown key"),
    ("template: no placeholder\nclasses: {}", "no {}"),
    ("classes: {a: [unclosed", "not valid YAML"),
])
def test_bad_ontology(tmp_path, text, fragment):
    f = tmp_path / "o.yaml"
    f.write_text(text)
    with pytest.raises(OptionError) as e:
        load_ontology(f)
    assert fragment in str(e.value)
    assert "o.yaml" in str(e.value)


def test_rename_option():
    o = Ontology()
    o.add_rename("tv=television")
    assert o.target("tv") == "television"
    for bad in ("tv", "=x", "tv="):
        with pytest.raises(OptionError):
            o.add_rename(bad)
