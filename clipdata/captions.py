"""Captions: the template (`{}` and `{a}`), and the ontology file that renames, merges, drops
and captions classes. The schema is documented in formats/ontology.md."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .errors import ClassNameError, OptionError
from .names import is_utf8, quoted
from .yamlfile import ANY, KEYS, load_yaml

# Kept as Roboflow's CLIP export and CLIP's own ImageNet prompts write it ("a photo of a
# apple" included): changing it would change every existing layout's captions. `{a}` gives
# the article that fits; see formats/ontology.md.
DEFAULT_TEMPLATE = "a photo of a {}"


@lru_cache(maxsize=1)
def _inflect_engine():
    import inflect  # imported when `{a}` is first used: its import alone takes about a second

    return inflect.engine()


@lru_cache(maxsize=4096)
def article(name: str) -> str:
    """"a" or "an" for `name` as it is spoken: inflect's rules for sounds and acronyms
    ("an hour", "a unicorn", "an MRI", "a U-turn"); a leading number is read as words
    ("an 8-ball", "an 11th")."""
    words = name.split()
    if not words:
        return "a"
    word = words[0]  # the sound of the first word decides; inflect gives "" for odd white space
    engine = _inflect_engine()
    digits = re.match(r"\d+", word)
    if digits:
        word = engine.number_to_words(digits.group())
    found = engine.a(word).split(" ", 1)[0]
    return found if found in ("a", "an") else "a"


def with_article(name: str) -> str:
    """`name` preceded by "a" or "an"."""
    return f"{article(name)} {name}"


def line_break(text: str) -> str | None:
    """The first character at which `str.splitlines()` would split `text` (as "U+2028"), or
    None. Captions are one per line, so a name or caption holding one cannot be read back."""
    for ch in text:
        if len(f"a{ch}b".splitlines()) > 1:
            return f"U+{ord(ch):04X}"
    return None


def _one_line_problem(text: str) -> str | None:
    found = line_break(text)
    return f"it holds a line break ({found}), and captions are one per line" if found else None


def check_template(template: str) -> str:
    """Refuse a template without a placeholder, with a brace we would not fill, or that
    would not stay one line."""
    if "{}" not in template and "{a}" not in template:
        raise OptionError(
            f"template {template!r} has no {{}} or {{a}} for the class name",
            hint='write it like "a photo of a {}" or "{a} on a table"',
        )
    rest = template.replace("{}", "").replace("{a}", "")
    if "{" in rest or "}" in rest:
        raise OptionError(
            f"template {template!r} has a brace that is not {{}} or {{a}}",
            hint="only {} (the class name) and {a} (the name with a/an) are filled in",
        )
    problem = _one_line_problem(template)
    if problem:
        raise OptionError(f"template {template!r} cannot be used: {problem}", hint="write the template on one line")
    if not is_utf8(template):  # an undecodable byte (from argv or a Latin-1 file) would land in every caption as \xNN
        raise OptionError(f"template {quoted(template)} is not UTF-8 text", hint="write the template in UTF-8")
    return template


def render(template: str, name: str) -> str:
    # the a/an look-up (inflect) only where the template asks for it: it is slow to load
    if "{a}" in template:
        template = template.replace("{a}", with_article(name))
    return template.replace("{}", name)


def nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


@dataclass
class Ontology:
    """Per source class: a new name (rename or merge), a caption, or a drop."""

    renames: dict[str, str] = field(default_factory=dict)  # source -> target
    captions: dict[str, list[str]] = field(default_factory=dict)  # target -> captions (first: the layout's)
    drops: set[str] = field(default_factory=set)
    template: str | None = None
    file: str | None = None
    mentioned: set[str] = field(default_factory=set)  # source names the user wrote down

    def target(self, source_name: str) -> str | None:
        """The output class of a source class, or None when it is dropped."""
        name = nfc(source_name)
        if name in self.drops:
            return None
        return nfc(self.renames.get(name, name))

    def caption(self, target: str, template: str) -> str:
        """The class's caption in a layout: its first caption, else the template's."""
        return self.all_captions(target, template)[0]

    def all_captions(self, target: str, template: str) -> list[str]:
        """Every caption of a class, for prompt ensembling (label, eval). A class name that
        would break its caption into two lines is refused here, where the caption is made."""
        if target in self.captions:
            return self.captions[target]
        problem = _one_line_problem(target)
        if problem:
            raise ClassNameError(
                f"class name {target!r} cannot be captioned: {problem}",
                file=self.file, hint='rename it with --rename "OLD=NEW" or an --ontology file (formats/ontology.md)',
            )
        return [render(self.template or template, target)]

    def unknown(self, classes: list[str]) -> list[str]:
        """Source names the ontology mentions that the dataset does not have (typos)."""
        known = {nfc(c) for c in classes}
        return sorted(n for n in self.mentioned if n not in known)

    def add_rename(self, text: str) -> None:
        """Apply one `--rename OLD=NEW` option."""
        old, sep, new = text.partition("=")
        if not sep or not old.strip() or not new:
            raise OptionError(f"--rename {text!r} is not OLD=NEW", hint='e.g. --rename "tv=television"')
        problem = _one_line_problem(new)
        if problem:
            raise OptionError(f"--rename {text!r}: the new name cannot be used: {problem}")
        if not is_utf8(new):  # the class would be dropped as a non-UTF-8 name, with advice about folders
            raise OptionError(f"--rename {quoted(text)}: the new name is not UTF-8 text", hint="write it in UTF-8")
        self.renames[nfc(old)] = nfc(new)
        self.mentioned.add(nfc(old))


def _fail(file: str, where: str, message: str) -> OptionError:
    return OptionError(message, file=file, where=where, hint="see formats/ontology.md for the schema")


# Names and captions are read as written: a class called `yes` or `010` stays that text.
_AS_WRITTEN = (("classes", KEYS), ("classes", ANY, "name"), ("classes", ANY, "caption"),
               ("classes", ANY, "captions"), ("template",))


def load_ontology(path: str | Path) -> Ontology:
    """Read an ontology YAML file; every mistake is reported with the class it concerns."""
    file = str(path)
    data = load_yaml(path, OptionError, _AS_WRITTEN)
    if not isinstance(data, dict) or not isinstance(data.get("classes"), dict):
        raise _fail(file, "top level", "expected a mapping with a `classes:` mapping")
    extra = set(data) - {"classes", "template"}
    if extra:
        raise _fail(file, "top level", f"unknown key(s): {', '.join(sorted(map(str, extra)))}")
    onto = Ontology(file=file)
    if data.get("template") is not None:
        if not isinstance(data["template"], str):
            raise _fail(file, "template", "must be a string")
        try:
            onto.template = check_template(data["template"])
        except OptionError as e:
            raise _fail(file, "template", e.message) from None
    for raw_name, entry in data["classes"].items():
        name = nfc(raw_name)
        where = f"classes.{raw_name}"
        problem = _one_line_problem(name)
        if problem:
            raise _fail(file, where, f"class name {name!r}: {problem}")
        onto.mentioned.add(name)
        if entry is None:
            continue
        if isinstance(entry, (str, list)):
            entry = {"caption": entry}
        if not isinstance(entry, dict):
            raise _fail(file, where, "expected a caption string or a mapping")
        unknown = set(entry) - {"name", "caption", "captions", "drop"}
        if unknown:
            raise _fail(file, where, f"unknown key(s): {', '.join(sorted(map(str, unknown)))}")
        if not isinstance(entry.get("drop", False), bool):
            raise _fail(file, where, f"drop must be true or false, not {entry['drop']!r}")
        if entry.get("drop"):
            if set(entry) - {"drop"}:
                raise _fail(file, where, "a dropped class takes no name or caption")
            onto.drops.add(name)
            continue
        target = entry.get("name", name)
        if not isinstance(target, str):
            raise _fail(file, where, "name must be text")
        target = nfc(target)
        problem = _one_line_problem(target) or (None if target.strip() else "it is empty")
        if problem:
            raise _fail(file, where, f"name {target!r} cannot be a class: {problem}")
        if target != name:
            onto.renames[name] = target
        if "caption" in entry and "captions" in entry:
            raise _fail(file, where, "give caption or captions, not both")
        if "caption" in entry or "captions" in entry:
            given = entry.get("caption", entry.get("captions"))
            given = [given] if isinstance(given, str) else given
            if not isinstance(given, list) or not given or not all(
                    isinstance(c, str) and c.strip() and not line_break(c) for c in given):
                raise _fail(file, where, "caption must be one non-empty line of text (captions: a list of them)")
            previous = onto.captions.get(target)
            if previous is not None and previous != given:
                raise _fail(
                    file, where,
                    f"class {target!r} gets two different captions ({previous[0]!r} and {given[0]!r})",
                )
            onto.captions[target] = given
    return onto


# --- Roboflow's scene captions (formats/clip.md, "Scene mode") ----------------------------

MULTIPLE = "_multiple"


def _inflect():
    from pluralizer import Pluralizer  # the rules of npm `pluralize` 8.0.0, which Roboflow's words match

    return Pluralizer()


def scene_folder(counts: dict[str, int]) -> str:
    """Roboflow's folder for an image: its class names sorted, `_multiple` appended to a
    class seen more than once, joined by single spaces."""
    return " ".join(n + (MULTIPLE if counts[n] > 1 else "") for n in sorted(counts))


def join_items(items: list[str]) -> str:
    """Roboflow's joiner: a comma before "and" even for two items."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + ", and " + items[-1]


def scene_caption(project: str, counts: dict[str, int], group: str) -> str:
    """`An example picture from the {project} dataset depicting {items}`: one instance is
    "a " + singular (always "a"), several the plural; no object is "no " + plural(group)."""
    words = _inflect()
    if not counts:
        items = "no " + words.plural(group)
    else:
        items = join_items([("a " + words.singular(n)) if counts[n] == 1 else words.plural(n)
                            for n in sorted(counts)])
    return f"An example picture from the {project} dataset depicting {items}"


def background_folder(group: str) -> str:
    """The folder of images without objects: `no <plural(group)>`, which sorts where the
    "depicting no …" line sits in real exports (after `a…` folders, before `non…`)."""
    return "no " + _inflect().plural(group)


def default_project(source: Path) -> str:
    """The project name for scene captions: the title of Roboflow's README.roboflow.txt
    (`Rav - v9 2024-11-19 6:42pm` -> `Rav`) when the export has one, else the dataset
    folder's name (split, `annotations` and `images` folders skipped)."""
    base = source if source.is_dir() else source.parent
    base = base.resolve()
    while base.name.lower() in ("train", "valid", "val", "validation", "test", "annotations", "images") \
            and base.parent != base:
        base = base.parent
    for folder in (base, source if source.is_dir() else source.parent):
        readme = folder / "README.roboflow.txt"
        if readme.is_file():
            for line in readme.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.strip():
                    return re.sub(r"\s+-\s+v\d+\b.*$", "", line.strip())
    return base.name
