"""COCO object-detection reader.

Reads `images`, `annotations` and `categories` of a COCO instances file (or of every split
file in a Roboflow / mmdet / COCO export folder) into samples with one box label per
annotation. The rules, and every quirk handled, are in formats/coco.md.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from ..errors import SourceError
from ..records import Label, Sample, Skip, Source
from ..crops import valid_box
from . import split_name

ROBOFLOW_JSON = "_annotations.coco.json"


def _err(file: Path, where: str, message: str, hint: str | None = None) -> SourceError:
    return SourceError(message, file=file, where=where, hint=hint)


def load_json(file: Path) -> dict:
    try:
        with open(file, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise SourceError("file not found", file=file) from None
    except IsADirectoryError:
        raise SourceError("is a folder, not a JSON file", file=file) from None
    except UnicodeDecodeError as e:
        raise SourceError(f"not UTF-8 text (byte {e.start})", file=file) from None
    except json.JSONDecodeError as e:
        raise _err(file, f"line {e.lineno}, column {e.colno}", f"malformed JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise _err(file, "top level", "expected a JSON object with images, annotations and categories")
    return data


def _int_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list(data: dict, key: str, file: Path, required: bool = True) -> list:
    if key not in data:
        if required:
            raise _err(file, "top level", f'no "{key}" list', "is this a COCO instances file?")
        return []
    value = data[key]
    if not isinstance(value, list):
        raise _err(file, key, f'"{key}" must be a list')
    return value


def _entry(items: list, i: int, key: str, file: Path, fields: tuple[str, ...]) -> dict:
    item = items[i]
    if not isinstance(item, dict):
        raise _err(file, f"{key}[{i}]", "expected an object")
    for name in fields:
        if name not in item:
            raise _err(file, f"{key}[{i}]", f'missing "{name}"')
    return item


class Parsed(NamedTuple):
    categories: dict[object, str]  # id -> name
    images: dict[object, dict]  # id -> image entry
    annotations: list[dict]
    notes: list[str]
    placeholder: str | None  # the dropped Roboflow placeholder's name: the annotation group


def parse(data: dict, file: Path) -> Parsed:
    """Check and index a loaded COCO dict. Raises SourceError naming the entry for anything
    inconsistent."""
    notes: list[str] = []
    if "annotations" in data and isinstance(data["annotations"], list) and data["annotations"]:
        first = data["annotations"][0]
        if isinstance(first, dict) and "segments_info" in first:
            raise _err(file, "annotations", "this is a COCO panoptic file, which is not supported",
                       "convert the instances file of the same set")
        if isinstance(first, dict) and "caption" in first and "bbox" not in first:
            raise _err(file, "annotations", "this is a COCO captions file: it has no categories or boxes",
                       "convert the instances file of the same set")
    cats_raw = _list(data, "categories", file)
    images_raw = _list(data, "images", file)
    anns = _list(data, "annotations", file, required=False)

    categories: dict[object, str] = {}
    names_seen: dict[str, object] = {}
    for i in range(len(cats_raw)):
        c = _entry(cats_raw, i, "categories", file, ("id", "name"))
        if c["id"] in categories:
            raise _err(file, f"categories[{i}]", f"duplicate category id {c['id']!r}")
        if not isinstance(c["name"], str):
            raise _err(file, f"categories[{i}]", "category name must be a string")
        if c["name"] in names_seen:
            notes.append(f"categories {names_seen[c['name']]!r} and {c['id']!r} share the name {c['name']!r}; their boxes go to one class")
        names_seen.setdefault(c["name"], c["id"])
        categories[c["id"]] = c["name"]

    images: dict[object, dict] = {}
    for i in range(len(images_raw)):
        im = _entry(images_raw, i, "images", file, ("id", "file_name"))
        if im["id"] in images:
            raise _err(file, f"images[{i}]", f"duplicate image id {im['id']!r}")
        if not isinstance(im["file_name"], str) or not im["file_name"].strip():
            raise _err(file, f"images[{i}]", "file_name must be a non-empty string")
        for key in ("width", "height"):
            if im.get(key) is not None and not (_int_id(im[key]) and im[key] > 0):
                raise _err(file, f"images[{i}]", f"{key} must be a positive integer, not {im[key]!r}")
        images[im["id"]] = im

    used: set[object] = set()
    unknown_images: list[str] = []
    unknown_cats: list[str] = []
    ann_ids: set[object] = set()
    duplicates = 0
    for i in range(len(anns)):
        a = _entry(anns, i, "annotations", file, ("id", "image_id", "category_id"))
        if a["image_id"] not in images:
            unknown_images.append(f"annotations[{i}] (id {a['id']!r}) names image id {a['image_id']!r}")
        if a["category_id"] not in categories:
            unknown_cats.append(f"annotations[{i}] (id {a['id']!r}) names category id {a['category_id']!r}")
        used.add(a["category_id"])
        if a["id"] in ann_ids:
            duplicates += 1
        ann_ids.add(a["id"])
    for problems, what in ((unknown_images, "unknown image"), (unknown_cats, "unknown category")):
        if problems:
            more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
            raise _err(file, "annotations", f"{len(problems)} annotation(s) name an {what}: "
                       + "; ".join(problems[:3]) + more, "fix the ids or remove those annotations")
    if duplicates:
        notes.append(f"{duplicates} annotation id(s) are used more than once; their crops get a distinguishing suffix")

    # Roboflow adds a placeholder category: supercategory "none", no annotations, and it is
    # the supercategory of every real class.
    placeholder = None
    supers = {c["id"]: c.get("supercategory") for c in cats_raw}
    per_super = Counter(supers.values())
    for cid, name in list(categories.items()):
        others = len(supers) - 1
        if (supers[cid] == "none" and cid not in used and others
                and per_super[name] - (name == "none") == others):
            del categories[cid]
            placeholder = name
            notes.append(f"dropped Roboflow's placeholder category {name!r} (id {cid!r}, owns no annotation)")
    return Parsed(categories, images, anns, notes, placeholder)


def split_of(file: Path) -> str | None:
    """The split a COCO file's name or place implies: Roboflow's `<split>/_annotations.coco.json`,
    or a token of the file name (`instances_val2017.json` -> valid)."""
    if file.name == ROBOFLOW_JSON:
        return split_name(file.parent.name)
    for token in re.split(r"[_\-.]", file.stem):
        found = split_name(token)
        if found:
            return found
    return None


def search_dirs(file: Path, images: Path | None, split: str | None) -> list[Path]:
    """Folders to look for images in, in order: --images only when given; else next to the
    JSON, `images/`, `images/<split>/`, `<split>/`, and the same beside an `annotations/` folder."""
    if images is not None:
        return [images]
    here = file.parent
    tokens: list[str] = []
    for token in re.split(r"[_\-.]", file.stem):
        if split_name(token):
            tokens.append(token)
    aliases = {"train": ["train"], "valid": ["val", "valid", "validation"], "test": ["test"]}
    for t in aliases.get(split or "", []):
        if t not in tokens:
            tokens.append(t)
    bases = [here] + ([here.parent] if here.name == "annotations" else [])
    dirs = [here, here / "images"]
    for base in bases:
        for t in tokens:
            dirs += [base / "images" / t, base / t]
    if len(bases) > 1:
        dirs += [here.parent / "images", here.parent]
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def locate(file_name: str, dirs: list[Path]) -> Path | None:
    """The first existing file for a COCO file_name. Backslashes are read as Windows path
    separators; a file_name whose folders are not there is retried by its base name."""
    rel = PurePosixPath(file_name.replace("\\", "/"))
    if rel.is_absolute():
        if Path(rel).is_file():
            return Path(rel)
        rel = PurePosixPath(rel.name)
    tries = [rel] if rel.name == str(rel) else [rel, PurePosixPath(rel.name)]
    for d in dirs:
        for r in tries:
            p = d / r
            if p.is_file():
                return p
    return None


def find_annotation_files(folder: Path) -> list[Path]:
    """COCO files inside an export folder: Roboflow's `<split>/_annotations.coco.json`, or
    `annotations/instances_*.json` (COCO, mmdet)."""
    found = sorted(folder.glob(f"*/{ROBOFLOW_JSON}")) + sorted(folder.glob(ROBOFLOW_JSON))
    if not found:
        found = sorted((folder / "annotations").glob("instances_*.json"))
    return found


def read(
    path: str | Path,
    *,
    images: str | Path | None = None,
    split: str | None = None,
    include_crowd: bool = False,
    **_: object,
) -> Source:
    path = Path(path)
    images_dir = Path(images) if images is not None else None
    if images_dir is not None and not images_dir.is_dir():
        raise SourceError("--images folder not found", file=images_dir)
    if path.is_dir():
        files = find_annotation_files(path)
        if not files:
            raise SourceError(
                "no COCO annotation file found in this folder", file=path,
                hint=f"pass the JSON file itself, or a folder with <split>/{ROBOFLOW_JSON} or annotations/instances_*.json",
            )
    else:
        files = [path]
    src = Source(format="coco", path=path, classes=[], samples=[])
    for file in files:
        _read_file(file, images_dir, split, include_crowd, src, many=len(files) > 1)
    return src


def _read_file(file: Path, images_dir: Path | None, split: str | None, include_crowd: bool,
               src: Source, many: bool) -> None:
    categories, images, anns, notes, placeholder = parse(load_json(file), file)
    src.group = src.group or placeholder
    prefix = f"{file.name}: " if many else ""
    src.notes += [prefix + n for n in notes]
    layout_split = split_of(file)
    the_split = split or layout_split or "train"
    if split and layout_split and split != layout_split:
        src.notes.append(f"{prefix}--split {split} used, although the file's name or place says {layout_split}")
    for name in categories.values():
        if name not in src.classes:
            src.classes.append(name)
    dirs = search_dirs(file, images_dir, the_split)
    searched = tuple(str(d) for d in dirs)
    by_image: dict[object, list[Label]] = {iid: [] for iid in images}
    for i, a in enumerate(anns):
        name = categories.get(a["category_id"])
        image = images[a["image_id"]]["file_name"]
        if name is None:  # the dropped placeholder owns no annotations, so this cannot happen
            continue
        crowd = bool(a.get("iscrowd", 0))
        if crowd and not include_crowd:
            src.skipped.append(Skip("crowd", image, "iscrowd=1 (use --include-crowd)", a["id"]))
            continue
        if "bbox" not in a:  # an image-level label (COCO "labels" files): the whole image
            by_image[a["image_id"]].append(Label(name, None, a["id"], crowd))
            continue
        box = valid_box(a["bbox"])
        if box is None:
            src.skipped.append(Skip("invalid_box", image, f"annotations[{i}] bbox {a['bbox']!r}", a["id"]))
            continue
        by_image[a["image_id"]].append(Label(name, box, a["id"], crowd))
    for iid, im in images.items():
        labels = by_image[iid]  # may be empty: a background image (no crop, but a scene)
        src.samples.append(Sample(
            name=im["file_name"], path=locate(im["file_name"], dirs), split=the_split,
            labels=labels, width=im.get("width"), height=im.get("height"), searched=searched,
        ))
