"""`clipdata convert auto`: which format a source is, told from its names and the first
bytes of its files, never by parsing them whole (a 450 MB COCO file is sniffed in
microseconds). Exactly one format must match; two matching is refused, naming both, so a
guess never decides what a dataset means. The rules are in formats/auto.md.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import SourceError
from ..imagefiles import IMAGE, walk

HEAD = 1 << 16  # bytes of a file read to sniff it
NAME_IT = "name it: clipdata convert FORMAT (folder, coco, yolo, voc, labelme, cvat, labelstudio, createml)"


def _head(path: Path) -> str:
    try:
        if not path.is_file():
            return ""
        with open(path, "rb") as f:
            data = f.read(HEAD)
    except OSError:
        return ""
    # UTF-16 (Windows tools write it; XML declares it): sniffed as text, so the reader can read
    # it (XML) or refuse it naming the encoding (JSON), instead of "could not tell"
    codec = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8"
    return data.decode(codec, "replace").lstrip("\ufeff \t\r\n")


def _keys(text: str) -> set[str]:
    return set(re.findall(r'"([A-Za-z_]+)"\s*:', text))


def json_kind(path: Path) -> str | None:
    """coco, labelme, labelstudio or createml, by the keys near the top of a JSON file."""
    text = _head(path)
    keys = _keys(text)
    if text.startswith("{"):
        if "shapes" in keys and ("imagePath" in keys or "imageData" in keys):
            return "labelme"
        if "images" in keys and ("annotations" in keys or "categories" in keys):
            return "coco"
    elif text.startswith("["):
        if "data" in keys and ("annotations" in keys or "completions" in keys):
            return "labelstudio"
        if "annotation_id" in keys or "annotator" in keys:
            return "labelstudio"  # JSON_MIN
        if "image" in keys and ("annotations" in keys or "coordinates" in keys):
            return "createml"
    return None


def _xml_root(path: Path) -> str | None:
    m = re.search(r"<([A-Za-z_][\w.-]*)[\s/>]", re.sub(r"<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>", "", _head(path),
                                                       flags=re.S))
    return m.group(1) if m else None


def _voc(path: Path) -> bool:
    """Pascal VOC's root is <annotation>; so is LabelMe's XML, which has <imagesize> or polygons."""
    head = _head(path)
    return _xml_root(path) == "annotation" and "<imagesize" not in head and "<polygon" not in head


def _file(path: Path) -> set[str]:
    name, suffix = path.name.lower(), path.suffix.lower()
    if name == "obj.data" or suffix in (".yaml", ".yml"):
        return {"yolo"}
    if suffix == ".json":
        kind = json_kind(path)
        return {kind} if kind else set()
    if suffix == ".xml":
        return {"cvat"} if _xml_root(path) == "annotations" else set()
    return set()


def _folder(path: Path) -> set[str]:
    found: set[str] = set()
    if any((path / n).is_file() for n in ("data.yaml", "data.yml", "obj.data", "classes.txt", "obj.names")):
        found.add("yolo")
    if (path / "annotations.xml").is_file() and _xml_root(path / "annotations.xml") == "annotations":
        found.add("cvat")
    if list(path.glob("*/_annotations.coco.json")) + list(path.glob("_annotations.coco.json")) or \
            list((path / "annotations").glob("instances_*.json")):
        found.add("coco")
    if list(path.glob("*/_annotations.createml.json")) + list(path.glob("_annotations.createml.json")):
        found.add("createml")
    xmls = [p for d in (path, path / "Annotations", path / "annotations") for p in sorted(d.glob("*.xml"))[:3]]
    if any(_voc(p) for p in xmls) or any(_voc(p) for p in sorted(path.glob("*/*.xml"))[:3]):
        found.add("voc")
    jsons = sorted(path.glob("*.json"))[:20] + sorted(path.glob("*/*.json"))[:20]
    if any(json_kind(p) == "labelme" for p in jsons):
        found.add("labelme")
    if not found and (stray := _annotation_files(path)):
        raise SourceError(f"could not tell which format this is: it holds {', '.join(stray)} where no reader looks, "
                          "so its sub-folders are not taken as classes", file=path,
                          hint=f"pass that file itself, or {NAME_IT}")
    if not found:  # only pictures in class folders: folder-per-class
        for e in walk(path, inside=path):
            if e.kind == IMAGE and e.path.parent != path:
                found.add("folder")
                break
    return found


def _annotation_files(path: Path) -> list[str]:
    """Annotation files at the top of a folder, or in its Annotations/, that matched no rule
    (a Label Studio export beside its images, `a.XML`, `DATA.YAML`): such a folder is no
    folder-per-class, and reading it as one would make classes of `images/`, `JPEGImages/`."""
    found = []
    for d in (path, path / "Annotations", path / "annotations"):
        try:
            files = sorted(p for p in d.iterdir() if p.is_file())[:1000]
        except OSError:
            continue
        for p in files:
            suffix, kind = p.suffix.lower(), None
            if suffix == ".json":
                kind = json_kind(p)
            elif suffix == ".xml":
                kind = {"annotation": "voc", "annotations": "cvat"}.get(_xml_root(p) or "")
            elif suffix in (".yaml", ".yml"):  # YOLO's when it has `names:`; not a dataset card's YAML
                kind = "yolo" if re.search(r"^names\s*:", _head(p), re.M) else None
            elif p.name.lower() in ("obj.data", "obj.names", "classes.txt") and d == path:
                kind = "yolo"
            if kind:
                found.append(f"{p.relative_to(path).as_posix()} ({kind})")
            if len(found) == 3:
                return found
    return found


def detect(source: str | Path) -> str:
    """The one format `source` is, or SourceError saying none or which ones match."""
    path = Path(source)
    if not path.exists():
        raise SourceError("not found", file=path)
    found = _folder(path) if path.is_dir() else _file(path)
    if len(found) == 1:
        return found.pop()
    if not found:
        raise SourceError("could not tell which format this is", file=path, hint=NAME_IT)
    raise SourceError(f"more than one format matches: {', '.join(sorted(found))}", file=path,
                      hint=f"name the one you mean: clipdata convert {sorted(found)[0]} …")
