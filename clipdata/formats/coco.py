"""COCO object-detection reader.

Reads `images`, `annotations` and `categories` of a COCO instances file (or of every split
file in a Roboflow / mmdet / COCO export folder) into samples with one box label per
annotation. The rules, and every quirk handled, are in formats/coco.md.
"""
from __future__ import annotations

import gc
import re
from collections import Counter
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, NamedTuple

from ..errors import SourceError
from ..records import Label, Sample, Skip, Source, split_name
from ..crops import valid_box
from ..masks import Mask, check_polygon, check_rle
from .shapes import images_folder, number
from ..textfiles import check_regular, check_stream_nesting, decode, loads

ROBOFLOW_JSON = "_annotations.coco.json"
STREAM_BYTES = 32 << 20  # larger files are streamed with ijson instead of loaded whole
BOM = b"\xef\xbb\xbf"


def _err(file: Path, where: str, message: str, hint: str | None = None) -> SourceError:
    return SourceError(message, file=file, where=where, hint=hint)


def load_json(file: Path) -> dict:
    """The whole file with the standard library (exact line numbers in errors)."""
    check_regular(file)
    with open(file, "rb") as f:
        text = decode(f.read(), file)  # a byte-order mark is dropped; other encodings refused by byte
    with gc_paused():
        data = loads(text, file)  # 100,000-deep nesting is one clear line, not a RecursionError
    del text
    if not isinstance(data, dict):
        raise _err(file, "top level", "expected a JSON object with images, annotations and categories")
    return data


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's collector dominates the building of millions of small objects (a 450 MB
    COCO file: 12.1 s with it, 5.1 s without); nothing built here holds a cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


MISSING = object()


def _stream(file: Path, prefix: str) -> Iterator[object]:
    """Items under `prefix`, parsed incrementally by ijson's C backend: memory holds one
    item at a time, never the file."""
    import ijson

    try:
        with open(file, "rb") as f:
            head = f.read(4)
            if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
                decode(head, file)  # UTF-16/32: refused, named as such
            f.seek(3 if head.startswith(BOM) else 0)  # a UTF-8 byte-order mark is dropped
            yield from ijson.items(f, prefix, use_float=True)
    except ijson.JSONError as e:
        if "UTF8" in str(e):
            raise SourceError("not UTF-8 text", file=file, where="streamed parse",
                              hint="save it as UTF-8 (iconv -f CP1252 -t UTF-8 for a Windows-1252 file)") from None
        lines = str(e).strip().splitlines()
        near = f" near: {lines[1].strip()[:60]!r}" if len(lines) > 1 else ""
        raise _err(file, "streamed parse", f"malformed JSON: {lines[0] if lines else e}{near}") from None
    except UnicodeDecodeError as e:
        raise SourceError(f"not UTF-8 text (byte {e.start})", file=file) from None


def read_parts(file: Path) -> tuple[object, object, Iterable]:
    """(categories, images, annotations) of a COCO file. Small files are loaded whole; files
    over STREAM_BYTES are streamed in three passes, keeping only what a crop needs, since
    the order of the keys in the file is not guaranteed."""
    size = check_regular(file).st_size  # a pipe named x.json would block forever
    if size <= STREAM_BYTES:
        data = load_json(file)
        return data.get("categories", MISSING), data.get("images", MISSING), data.get("annotations", [])
    check_stream_nesting(file)  # deep nesting costs a streaming parser quadratic memory
    categories = next(_stream(file, "categories"), MISSING)
    with gc_paused():
        images = next(_stream(file, "images"), MISSING)
    return categories, images, _stream(file, "annotations.item")


def _is_id(value: object) -> bool:
    """Ids are integers or strings; JSON `true` (== 1 in Python) and `1.0` are not ids."""
    return type(value) is int or type(value) is str


def _crowd(value: object, file: Path, where: str) -> tuple[bool, bool]:
    """(crowd, written as a string): 0/1 and false/true, and "0"/"1" as those numbers —
    `bool("0")` would make every such box a crowd. Anything else is refused."""
    if type(value) in (int, bool) and value in (0, 1):
        return bool(value), False
    if value in ("0", "1"):
        return value == "1", True
    raise _err(file, where, f'"iscrowd" must be 0 or 1, not {value!r}')


def segmentation(segm: object) -> Mask | str:
    """A COCO segmentation as a Mask: a list of polygons, or an RLE (compressed or not).
    A reason string when it is not one; it starts with "empty:" for a polygon of fewer
    than three points."""
    if isinstance(segm, list):
        if not segm:
            return "an empty polygon list"
        polys = []
        for values in segm:
            poly = check_polygon(values)
            if isinstance(poly, str):
                return poly if poly.startswith("empty:") else "a polygon must be a list of at least 3 x, y pairs"
            polys.append(poly)
        return Mask(polygons=tuple(polys))
    if isinstance(segm, dict):
        rle = check_rle(segm)
        return rle if isinstance(rle, str) else Mask(rle=rle)
    return "segmentation must be polygons or an RLE"


def segmentation_box(segm: object) -> tuple[float, float, float, float] | None | str:
    """The box of a COCO segmentation, as pycocotools derives it: a polygon's extreme
    points; for RLE, the pixels set in the mask. None for an empty mask; a reason string
    when malformed."""
    mask = segmentation(segm)
    return mask if isinstance(mask, str) else mask.extent()


def _cvat_mask(a: dict) -> bool:
    """CVAT's COCO export writes every mask as `iscrowd: 1` with an RLE: those annotations
    carry CVAT's `attributes: {"occluded": …}`, which a real crowd region does not."""
    attrs = a.get("attributes")
    return isinstance(a.get("segmentation"), dict) and isinstance(attrs, dict) and "occluded" in attrs


def _disagree(box: tuple[float, float, float, float], extent: tuple[float, float, float, float]) -> bool:
    """Whether a bbox and its segmentation's extent differ by more than a pixel on a side
    (an RLE's extent counts whole pixels, a polygon's does not)."""
    (x, y, w, h), (ex, ey, ew, eh) = box, extent
    return max(abs(x - ex), abs(y - ey), abs(x + w - ex - ew), abs(y + h - ey - eh)) > 1


def _entry(item: object, where: str, file: Path, fields: tuple[str, ...]) -> dict:
    if not isinstance(item, dict):
        raise _err(file, where, "expected an object")
    for name in fields:
        if name not in item:
            raise _err(file, where, f'missing "{name}"')
        if name.endswith("id") and not _is_id(item[name]):
            raise _err(file, where, f'"{name}" must be an integer or a string, not {item[name]!r}')
    return item


def _top_list(value: object, key: str, file: Path) -> list:
    if value is MISSING:
        raise _err(file, "top level", f'no "{key}" list', "is this a COCO instances file?")
    if not isinstance(value, list):
        raise _err(file, key, f'"{key}" must be a list')
    return value


class Index(NamedTuple):
    """A checked COCO file, reduced to what conversion needs."""

    categories: dict[object, str]  # id -> name (Roboflow's placeholder removed)
    images: dict[object, tuple[str, int | None, int | None]]  # id -> (file_name, width, height)
    labels: dict[object, list[Label]]  # image id -> its kept labels
    skipped: list[Skip]
    notes: list[str]
    placeholder: str | None  # the dropped placeholder's name: Roboflow's annotation group


def index(categories_raw: object, images_raw: object, annotations: Iterable, file: Path,
          include_crowd: bool = False, masks: bool = False) -> Index:
    """Check and index a COCO file's parts; annotations are consumed once, as a stream.
    `masks`: keep each annotation's segmentation as its Mask. Raises SourceError naming the
    entry for anything inconsistent."""
    cats_list = _top_list(categories_raw, "categories", file)
    images_list = _top_list(images_raw, "images", file)
    if not isinstance(annotations, (list, Iterator)):
        raise _err(file, "annotations", '"annotations" must be a list')
    notes: list[str] = []
    categories: dict[object, str] = {}
    supers: dict[object, object] = {}
    names_seen: dict[str, object] = {}
    for i, c in enumerate(cats_list):
        c = _entry(c, f"categories[{i}]", file, ("id", "name"))
        if c["id"] in categories:
            raise _err(file, f"categories[{i}]", f"duplicate category id {c['id']!r}")
        if not isinstance(c["name"], str):
            raise _err(file, f"categories[{i}]", "category name must be a string")
        if c["name"] in names_seen:
            notes.append(f"categories {names_seen[c['name']]!r} and {c['id']!r} share the name {c['name']!r}; their boxes go to one class")
        names_seen.setdefault(c["name"], c["id"])
        categories[c["id"]] = c["name"]
        supers[c["id"]] = c.get("supercategory")

    images: dict[object, tuple[str, int | None, int | None]] = {}
    for i, im in enumerate(images_list):
        im = _entry(im, f"images[{i}]", file, ("id", "file_name"))
        if im["id"] in images:
            raise _err(file, f"images[{i}]", f"duplicate image id {im['id']!r}")
        if not isinstance(im["file_name"], str) or not im["file_name"].strip() or "\0" in im["file_name"]:
            raise _err(file, f"images[{i}]", "file_name must be a non-empty string")
        for key in ("width", "height"):
            v = im.get(key)
            n = number(v)  # None for true, NaN, infinities and integers beyond a float
            if v is not None and not (n is not None and n > 0 and n.is_integer()):
                raise _err(file, f"images[{i}]", f"{key} must be a positive integer, not {v!r}")
        w, h = im.get("width"), im.get("height")
        images[im["id"]] = (im["file_name"], int(w) if w else None, int(h) if h else None)
    del images_list

    labels: dict[object, list[Label]] = {}
    skipped: list[Skip] = []
    used: set[object] = set()
    unknown: dict[str, list[str]] = {"image": [], "category": []}
    ann_ids: set[object] = set()
    duplicates = crowd_text = from_segmentation = cvat_masks = unusable = 0
    disagree: list[object] = []
    with gc_paused():
        for i, a in enumerate(annotations):
            if i == 0 and isinstance(a, dict):
                if "segments_info" in a:
                    raise _err(file, "annotations", "this is a COCO panoptic file, which is not supported",
                               "convert the instances file of the same set")
                if "caption" in a and "bbox" not in a:
                    raise _err(file, "annotations", "this is a COCO captions file: it has no categories or boxes",
                               "convert the instances file of the same set")
            try:  # the fast path; anything odd goes through _entry for a precise error
                aid, iid, cid = a["id"], a["image_id"], a["category_id"]
                if not (_is_id(aid) and _is_id(iid) and _is_id(cid)):  # `true` would match id 1
                    raise TypeError
                image, name = images.get(iid), categories.get(cid)
            except (KeyError, TypeError):
                _entry(a, f"annotations[{i}]", file, ("id", "image_id", "category_id"))
                raise _err(file, f"annotations[{i}]", "ids must be integers or strings") from None
            if image is None:
                unknown["image"].append(f"annotations[{i}] (id {aid!r}) names image id {a['image_id']!r}")
            if name is None:
                unknown["category"].append(f"annotations[{i}] (id {aid!r}) names category id {a['category_id']!r}")
            if image is None or name is None:
                continue
            used.add(a["category_id"])
            duplicates += aid in ann_ids
            ann_ids.add(aid)
            flag = a.get("iscrowd", 0)
            if type(flag) is int and (flag == 0 or flag == 1):  # the fast path
                crowd = flag == 1
            else:
                crowd, as_text = _crowd(flag, file, f"annotations[{i}]")
                crowd_text += as_text
            if crowd and _cvat_mask(a):
                crowd = False
                cvat_masks += 1
            if crowd and not include_crowd:
                skipped.append(Skip("crowd", image[0], "iscrowd=1 (use --include-crowd)", aid))
                continue
            segm = a.get("segmentation")
            if "bbox" not in a and segm is None:
                # an image-level label (COCO "labels" files): the whole image
                labels.setdefault(a["image_id"], []).append(Label(name, None, aid, crowd))
                continue
            box = valid_box(a["bbox"]) if "bbox" in a else None
            mask: Mask | str | None = None
            if masks and segm is not None and segm != []:
                mask = segmentation(segm)
            if box is None or not (box[2] > 0 and box[3] > 0):
                # no usable bbox (none, malformed, or zero-sized): the segmentation's extent
                shape = mask if mask is not None else segmentation(segm) if segm is not None else None
                extent = shape.extent() if isinstance(shape, Mask) else None
                if extent is not None:
                    box = extent
                    from_segmentation += 1
                elif box is None:
                    if "bbox" in a:
                        skipped.append(Skip("invalid_box", image[0], f"annotations[{i}] bbox {a['bbox']!r}", aid))
                    else:
                        detail = shape if isinstance(shape, str) else "the mask is empty"
                        reason = "empty_polygon" if detail.startswith("empty:") else "invalid_box"
                        skipped.append(Skip(reason, image[0], f"annotations[{i}] segmentation: {detail}", aid))
                    continue
            elif isinstance(mask, Mask):
                extent = mask.extent()
                if extent is not None and _disagree(box, extent):
                    disagree.append(aid)
            if isinstance(mask, str):
                unusable += 1
                mask = None
            labels.setdefault(a["image_id"], []).append(Label(name, box, aid, crowd, mask))
    for what, problems in unknown.items():
        if problems:
            more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
            raise _err(file, "annotations", f"{len(problems)} annotation(s) name an unknown {what}: "
                       + "; ".join(problems[:3]) + more, "fix the ids or remove those annotations")
    if duplicates:
        notes.append(f"{duplicates} annotation id(s) are used more than once; their crops get a distinguishing suffix")
    if crowd_text:
        notes.append(f'{crowd_text} annotation(s) write "iscrowd" as a string ("0"/"1"); read as the number')
    if from_segmentation:
        notes.append(f"{from_segmentation} annotation(s) have a segmentation but no usable bbox (none, or zero "
                     "width or height); their box was derived from it (polygon extent, or the RLE mask's set pixels)")
    if cvat_masks:
        notes.append(f"{cvat_masks} annotation(s) are CVAT masks (iscrowd=1 with CVAT's \"attributes\"): "
                     "read as objects, not crowd regions")
    if disagree:
        shown = ", ".join(map(repr, disagree[:5])) + (f" and {len(disagree) - 5} more" if len(disagree) > 5 else "")
        notes.append(f"{len(disagree)} annotation(s) have a bbox that disagrees with their segmentation's extent "
                     f"by more than a pixel (ids {shown}); the bbox was used for the crop")
    if unusable:
        notes.append(f"{unusable} annotation(s) have a malformed or empty segmentation; cropped by their bbox, "
                     "without a mask")

    # Roboflow adds a placeholder category: supercategory "none", no annotations, and it is
    # the supercategory of every real class.
    placeholder = None
    per_super = Counter(s for s in supers.values() if isinstance(s, str))
    for cid, name in list(categories.items()):
        others = len(supers) - 1
        if (supers[cid] == "none" and cid not in used and others
                and per_super[name] - (name == "none") == others):
            del categories[cid]
            placeholder = name
            notes.append(f"dropped Roboflow's placeholder category {name!r} (id {cid!r}, owns no annotation)")
    return Index(categories, images, labels, skipped, notes, placeholder)


def parse(data: dict, file: Path, include_crowd: bool = False, masks: bool = False) -> Index:
    """`index` over an already loaded COCO dict."""
    return index(data.get("categories", MISSING), data.get("images", MISSING),
                 data.get("annotations", []), file, include_crowd, masks)


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
        if _is_file(Path(rel)):
            return Path(rel)
        rel = PurePosixPath(rel.name)
    tries = [rel] if rel.name == str(rel) else [rel, PurePosixPath(rel.name)]
    for d in dirs:
        for r in tries:
            p = d / r
            if _is_file(p):
                return p
    return None


def _is_file(path: Path) -> bool:
    """Whether a file is there; a name the file system cannot even look up (longer than its
    limit, say) is simply not there, and so counted as a missing image."""
    try:
        return path.is_file()
    except OSError:
        return False


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
    masks: bool = False,
) -> Source:
    path = Path(path)
    images_dir = images_folder(images)
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
        # Notes of a folder's files name the file by its place (`train/_annotations.coco.json`).
        label = file.relative_to(path).as_posix() if len(files) > 1 else None
        _read_file(file, images_dir, split, include_crowd, src, label, masks)
    if path.is_dir():
        src.unused_files += unused_json(path, files)
        if src.unused_files:
            src.notes.append(f"JSON file(s) not read (not instances files): {', '.join(src.unused_files[:5])}"
                             + (f" and {len(src.unused_files) - 5} more" if len(src.unused_files) > 5 else ""))
    return src


def unused_json(folder: Path, used: list[Path]) -> list[str]:
    """JSON files in an export folder (and one level down) that are not the files read:
    COCO's captions and keypoints files, a stray export, something the user should know of."""
    found = sorted(set(folder.glob("*.json")) | set(folder.glob("*/*.json")))
    return [f.relative_to(folder).as_posix() for f in found if f not in used and f.is_file()]


def _read_file(file: Path, images_dir: Path | None, split: str | None, include_crowd: bool,
               src: Source, label: str | None, masks: bool = False) -> None:
    categories, images, annotations = read_parts(file)
    idx = index(categories, images, annotations, file, include_crowd, masks)
    prefix = f"{label}: " if label else ""
    src.notes += [prefix + n for n in idx.notes]
    src.skipped += idx.skipped
    src.group = src.group or idx.placeholder
    layout_split = split_of(file)
    the_split = split or layout_split or "train"
    if split and layout_split and split != layout_split:
        src.notes.append(f"{prefix}--split {split} used, although the file's name or place says {layout_split}")
    for name in idx.categories.values():
        if name not in src.classes:
            src.classes.append(name)
    dirs = search_dirs(file, images_dir, the_split)
    searched = tuple(str(d) for d in dirs)
    for iid, (file_name, width, height) in idx.images.items():
        src.samples.append(Sample(  # no label: a background image (no crop, but a scene)
            name=file_name, path=locate(file_name, dirs), split=the_split,
            labels=idx.labels.get(iid, []), width=width, height=height, searched=searched,
        ))
