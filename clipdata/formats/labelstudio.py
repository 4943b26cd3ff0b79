"""Label Studio JSON export as a source: the full JSON (tasks with `annotations`) and
JSON_MIN (one flat record per annotation). `rectanglelabels` (percent units, `rotation`),
`polygonlabels` and `choices` (whole-image labels) are read; a task's latest non-cancelled
annotation is the one used. Image URLs (`/data/upload/…`, `/data/local-files/?d=…`, plain
paths, web URLs) are looked up under `--images` or beside the JSON, never fetched and never
outside those folders. The rules and quirks are in formats/labelstudio.md.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from ..errors import SourceError
from ..imagefiles import displayed_size
from ..records import Label, Sample, Skip, Source
from ..textfiles import load_json
from .shapes import ImageFinder, declare, flat_polygon, image_name, images_folder, keep, number, rectangle, shape_label

LOCAL_FILES = "/data/local-files/"
UPLOAD = re.compile(r"^/data/upload/\d+/")
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio prefixes uploaded files with 8 hex digits
REGIONS = {"rectanglelabels": "rectanglelabels", "rectangle": "labels", "polygonlabels": "polygonlabels",
           "polygon": "labels"}
SHAPED = ("keypointlabels", "ellipselabels", "brushlabels", "videorectangle", "ellipse", "keypoint", "brush",
          "labels", "paragraphlabels", "hypertextlabels", "timeserieslabels", "taxonomy")
META = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement", "drafts",
        "predictions", "meta", "inner_id"}
TOLERANCE = 1.0  # percent: float noise and a hair outside the image are clamped, not refused


def read(path: str | Path, *, images: str | Path | None = None, split: str | None = None,
         masks: bool = False) -> Source:
    path = Path(path)
    images_dir = images_folder(images)
    if not path.is_file():
        raise SourceError("not found" if not path.exists() else "expected Label Studio's exported JSON file",
                          file=path)
    data = load_json(path)
    if not isinstance(data, list):
        raise SourceError("expected a list of tasks (Label Studio's JSON or JSON_MIN export)", file=path,
                          where="top level")
    src = Source(format="labelstudio", path=path, classes=[], samples=[])
    finder = ImageFinder(path.parent, images_dir)
    notes: Counter = Counter()
    tasks = _tasks(data, path, notes)
    for where, image, results in tasks:
        src.samples.append(_sample(where, image, results, path, finder, split or "train", masks, src, notes))
    src.notes += finder.note()
    for key, text in (("several", "task(s) have several annotations: the latest non-cancelled one was read"),
                      ("cancelled", "task(s) have only cancelled (skipped) annotations: read without labels"),
                      ("predictions", "task(s) have predictions but no annotation: predictions are not labels"),
                      ("rotation", "image(s) were annotated rotated (image_rotation): the rotation is not undone")):
        if notes[key]:
            src.notes.append(f"{notes[key]} {text}")
    ignored = sorted(k.removeprefix("type:") for k in notes if k.startswith("type:"))
    if ignored:
        src.notes.append(f"results that are no labels were read past: {', '.join(ignored)}")
    choice_keys = sorted(k.removeprefix("choice:") for k in notes if k.startswith("choice:"))
    if choice_keys:
        src.notes.append(f"JSON_MIN text fields read as whole-image choices: {', '.join(choice_keys)}")
    return src


def annotation_order(a: dict) -> tuple:
    """Sorts a task's annotations (or JSON_MIN/CSV records) oldest first: by `updated_at`,
    else `created_at` (ISO times), then id; the latest is the largest."""
    return (str(a.get("updated_at") or a.get("created_at") or ""), str(a.get("id") or ""))


def _tasks(data: list, file: Path, notes: Counter) -> list[tuple[str, object, list[dict]]]:
    """(place, image URL, results) per task: the full export's latest non-cancelled
    annotation, or the latest JSON_MIN record of each task id, as uniform results."""
    out: list[tuple[str, object, list[dict]]] = []
    minimal: dict[object, tuple[str, dict]] = {}
    order: list[object] = []
    seen: Counter = Counter()
    for i, task in enumerate(data):
        where = f"tasks[{i}]"
        if not isinstance(task, dict):
            raise SourceError("a task must be an object", file=file, where=where)
        if isinstance(task.get("data"), dict) and ("annotations" in task or "completions" in task):
            anns = task.get("annotations", task.get("completions")) or []
            if not isinstance(anns, list):
                raise SourceError('"annotations" must be a list', file=file, where=where)
            kept = [a for a in anns if isinstance(a, dict) and not a.get("was_cancelled") and not a.get("skipped")]
            notes["several"] += len(kept) > 1
            notes["cancelled"] += bool(anns) and not kept
            notes["predictions"] += not anns and bool(task.get("predictions"))
            best = max(kept, key=annotation_order) if kept else {}
            results = best.get("result") or []
            if not isinstance(results, list):
                raise SourceError('"result" must be a list', file=file, where=where)
            out.append((where, _image_url(task["data"]), results))
        else:  # JSON_MIN: one record per annotation, several per task id
            key = task.get("id", i)
            if key in minimal:
                seen[key] += 1
                if annotation_order(task) <= annotation_order(minimal[key][1]):
                    continue
            else:
                order.append(key)
            minimal[key] = (where, task)
    notes["several"] += sum(1 for n in seen.values() if n)
    for key in order:
        where, record = minimal[key]
        out.append((where, _image_url(record), _min_results(record, notes)))
    return out


def _image_url(data: dict) -> object:
    if "image" in data:
        return data["image"]
    for v in data.values():  # another name for the image field: the first value that is an image
        if isinstance(v, str) and (image_name(urlsplit(v).path) or v.startswith(("/data/", "s3://", "gs://"))):
            return v
    return None


def _min_results(record: dict, notes: Counter) -> list[dict]:
    """JSON_MIN's fields as full-export results: a list of regions (each with its
    `*labels` key), a choice (a string) or several (`{"choices": [...]}`)."""
    image = _image_url(record)
    results = []
    for key, value in record.items():
        if key in META or value is image:
            continue
        if isinstance(value, str):
            notes["choice:" + key] += 1
            results.append({"type": "choices", "value": {"choices": [value]}, "id": key})
        elif isinstance(value, dict) and isinstance(value.get("choices"), list):
            results.append({"type": "choices", "value": value, "id": key})
        elif isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            for j, region in enumerate(value):
                kind = next((k for k in (*REGIONS, *SHAPED) if k in region), "unknown")
                results.append({"type": kind, "value": region, "id": f"{key}.{j}",
                                "original_width": region.get("original_width"),
                                "original_height": region.get("original_height")})
    return results


def _locate(url: object, file: Path, finder: ImageFinder) -> tuple[str, Path | None, tuple[str, ...]]:
    """(the image's name, its file or None, where it was looked for)."""
    if not isinstance(url, str) or not url.strip():
        return "", None, (str(file.parent),)
    near = file.parent
    if url.startswith(LOCAL_FILES):  # /data/local-files/?d=photos/a.jpg: relative to the storage root
        d = [unquote(p[2:]) for p in urlsplit(url).query.split("&") if p.startswith("d=")]
        name = d[0] if d else ""
        return (name, *finder.find(name, near)) if name else (url, None, (str(near),))
    parts = urlsplit(url)
    if parts.scheme in ("http", "https", "s3", "gs", "azure-blob") or UPLOAD.match(parts.path):
        name = unquote(PurePosixPath(parts.path).name)  # never fetched: the file name is looked up
        found, searched = finder.find(name, near)
        if found is None and UPLOAD_PREFIX.match(name):  # uploads are stored as <8 hex>-<name>
            found, searched = finder.find(name[9:], near)
        return name, found, searched
    return (unquote(url), *finder.find(unquote(url), near))


def _sample(where: str, url: object, results: list, file: Path, finder: ImageFinder, split: str,
            masks: bool, src: Source, notes: Counter) -> Sample:
    name, path, searched = _locate(url, file, finder)
    name = name or f"{where} (no image URL in its data)"  # named so the missing-image error says why
    measured: tuple[int, int] | None = None
    annotated: tuple[int, int] | None = None  # the size the regions were drawn on, for the crop step
    labels: list[Label] = []
    for j, r in enumerate(results):
        if not isinstance(r, dict) or not isinstance(r.get("value"), dict):
            raise SourceError("a result must be an object with a value", file=file, where=f"{where} result {j}")
        kind, value, rid = r.get("type"), r["value"], r.get("id", j)
        place = f"{where} result {rid!r}"
        if r.get("image_rotation"):
            notes["rotation"] += 1
        if kind == "choices":
            for choice in value.get("choices") or []:
                if isinstance(choice, str) and choice.strip():
                    labels.append(Label(choice, None, rid))
                else:
                    src.skipped.append(Skip("no_label", name, f"{place}: a choice that is no name", rid))
            continue
        if kind not in REGIONS and kind not in SHAPED:
            notes[f"type:{kind}"] += 1
            continue
        names = value.get(REGIONS.get(kind, kind)) or value.get("labels") or []
        if kind == "taxonomy" and isinstance(names, list):  # paths, [["animal", "cat"], …]: one name each
            names = [" / ".join(p) if isinstance(p, list) and all(isinstance(x, str) for x in p) else p for p in names]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SourceError("labels must be a list of names", file=file, where=place)
        names = [n for n in names if n.strip()]
        if not names:
            src.skipped.append(Skip("no_label", name, f"{place}: a {kind} region without a label", rid))
            continue
        if kind in SHAPED:
            for n in names:
                src.skipped.append(Skip("unsupported_shape", name, f"{place}: {kind}", rid))
            continue
        size = (number(r.get("original_width")), number(r.get("original_height")))
        if None in size:
            if measured is None and path is not None:
                try:
                    measured = displayed_size(path)
                except Exception:  # an unreadable image: the crop step says so
                    measured = None
            size = measured or (None, None)
        if annotated is None and all(v is not None and v >= 1 and float(v).is_integer() for v in size):
            annotated = (int(size[0]), int(size[1]))  # type: ignore[arg-type]
        for k, n in enumerate(names):
            keep(_region(kind, value, size, n, rid if len(names) == 1 else f"{rid}.{k}", masks),
                 labels, src, name, place, rid)
    declare(src, labels)
    # The size travels with the sample, as in every reader that knows it: Label Studio draws on
    # the picture as the browser shows it, EXIF orientation applied, and the crop step turns a
    # photo only when the annotated size says so (clip.md); without it boxes measured on the
    # turned picture were cut from the stored pixels.
    return Sample(name=name, path=path, split=split, labels=labels, searched=searched,
                  width=annotated[0] if annotated else None, height=annotated[1] if annotated else None)


def _px(pct: float, size: float) -> float:
    """Percent to pixels, rounded to a millionth of a pixel: 9.999999999999998% of 105 px is
    10.5, a half-pixel edge that must round the same way on every machine."""
    return round(pct * size / 100, 6)


def _region(kind: str, value: dict, size: tuple, name: str, rid: object, masks: bool) -> Label | str:
    w, h = size
    if not w or not h:
        return "invalid_box: no original_width/original_height, and the image cannot be measured"
    if kind.startswith("rectangle"):
        v = [number(value.get(k)) for k in ("x", "y", "width", "height")]
        rotation = number(value.get("rotation") or 0)
        if None in v or rotation is None:
            return "invalid_box: x, y, width, height must be finite numbers"
        x, y, bw, bh = v  # type: ignore[misc]
        if bw < 0 or bh < 0:
            return "invalid_box: negative width or height"
        if min(x, y) < -TOLERANCE or max(x + bw, y + bh) > 100 + TOLERANCE and not rotation % 360:
            return "invalid_box: percent coordinates outside 0-100"
        px = (_px(x, w), _px(y, h), _px(bw, w), _px(bh, h))
        if rotation % 360:  # Label Studio turns a rectangle clockwise around its top-left corner
            poly = rectangle(*px, rotation, px[0], px[1])
            return shape_label(name, [poly], rid, masks)
        return Label(name, px, rid)
    points = value.get("points")
    if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
        return "invalid_box: points must be a list of [x, y] percent pairs"
    flat = [number(c) for p in points for c in p]
    if None in flat:
        return "invalid_box: a coordinate is not a finite number"
    if any(c < -TOLERANCE or c > 100 + TOLERANCE for c in flat):  # type: ignore[operator]
        return "invalid_box: percent coordinates outside 0-100"
    poly = flat_polygon([_px(c, w if i % 2 == 0 else h) for i, c in enumerate(flat)])  # type: ignore[arg-type]
    return poly if isinstance(poly, str) else shape_label(name, [poly], rid, masks)
