"""Apple Create ML object-detection JSON reader: a list of `{"image": name, "annotations":
[{"label", "coordinates": {"x", "y", "width", "height"}}]}` with x, y the box's centre in
pixels; Roboflow exports it as `<split>/_annotations.createml.json` beside the images. The
rules and quirks are in formats/createml.md.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import SourceError
from ..records import Label, Sample, Skip, Source, split_name
from ..textfiles import load_json
from .shapes import ImageFinder, declare, images_folder, number

ROBOFLOW_JSON = "_annotations.createml.json"


def find_files(folder: Path) -> list[Path]:
    """Roboflow's `<split>/_annotations.createml.json` files, else the folder's only JSON."""
    found = sorted(folder.glob(f"*/{ROBOFLOW_JSON}")) + sorted(folder.glob(ROBOFLOW_JSON))
    if found:
        return found
    found = sorted(p for p in folder.glob("*.json") if p.is_file())
    if len(found) == 1:
        return found
    raise SourceError("no Create ML JSON in this folder" if not found else
                      f"{len(found)} JSON files: which one is the Create ML file?", file=folder,
                      hint=f"pass the JSON file itself, or a folder of <split>/{ROBOFLOW_JSON}")


def read(path: str | Path, *, images: str | Path | None = None, split: str | None = None) -> Source:
    path = Path(path)
    images_dir = images_folder(images)
    if path.is_dir():
        files = find_files(path)
    elif path.is_file():
        files = [path]
    else:
        raise SourceError("not found", file=path)
    src = Source(format="createml", path=path, classes=[], samples=[])
    finder = ImageFinder(path, images_dir)
    for file in files:
        layout = split_name(file.parent.name) if file.name == ROBOFLOW_JSON else None
        _read_file(file, split or layout or "train", finder, src)
    src.notes += finder.note()
    return src


def _read_file(file: Path, split: str, finder: ImageFinder, src: Source) -> None:
    data = load_json(file)
    if not isinstance(data, list):
        raise SourceError('expected a list of {"image", "annotations"} objects (Create ML)', file=file,
                          where="top level")
    for i, entry in enumerate(data):
        where = f"[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not entry["image"].strip():
            raise SourceError('each entry needs an "image" name', file=file, where=where)
        anns = entry.get("annotations") or []
        if not isinstance(anns, list):
            raise SourceError('"annotations" must be a list', file=file, where=where)
        name = entry["image"]
        path, searched = finder.find(name, file.parent)
        labels: list[Label] = []
        for j, a in enumerate(anns, 1):
            place = f"{where}.annotations[{j - 1}]"
            if not isinstance(a, dict):
                raise SourceError("an annotation must be an object", file=file, where=place)
            label = a.get("label")
            if not isinstance(label, str):
                raise SourceError('"label" must be a string', file=file, where=place)
            if not label.strip():
                src.skipped.append(Skip("no_label", name, f"{place}: an empty label", j))
                continue
            c = a.get("coordinates")
            v = [number(c.get(k)) if isinstance(c, dict) else None for k in ("x", "y", "width", "height")]
            if None in v:
                src.skipped.append(Skip("invalid_box", name, f"{place}: coordinates x, y, width, height must be "
                                        "finite numbers", j))
                continue
            x, y, w, h = v  # type: ignore[misc]
            if w < 0 or h < 0:
                src.skipped.append(Skip("invalid_box", name, f"{place}: negative width or height", j))
                continue
            labels.append(Label(label, (x - w / 2, y - h / 2, w, h), j))  # x, y: the box's centre
        declare(src, labels)
        src.samples.append(Sample(name=name, path=path, split=split, labels=labels, searched=searched))
