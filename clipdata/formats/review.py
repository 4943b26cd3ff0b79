"""`clipdata label`'s output, written and read in one module. Written: predictions
(jsonl, csv), the review tree, the Label Studio import. Read back after review: the review
tree after a person moved files between class folders, a Label Studio JSON export, or an
edited predictions.csv (`final` column). Each yields whole-image labels; `clipdata review
apply` turns them into a layout. Format: formats/label.md and formats/review.md."""
from __future__ import annotations

import csv
import html
import io
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import SourceError
from ..fsutil import copy_file, link_or_copy, write_text
from ..imagefiles import find_classes, walk_images
from ..records import Label, Sample, Skip, Source
from ..textfiles import load_json, loads, read_text, split_lines
from . import decisions
from .labelstudio import annotation_order
from .layout import write_tokenization
from ..names import dumps

UNCERTAIN = "_uncertain"  # the review tree's folder of images the pre-labeler was unsure of
PREDICTIONS = "predictions.jsonl"
LOCAL_FILES = "/data/local-files/?d="  # Label Studio's local-files storage URL prefix


def review_name(rel: str) -> str:
    """Flatten a relative path into one file name: `a/b/c.jpg` -> `a__b__c.jpg`."""
    return rel.replace("/", "__")


def write_predictions(out: Path, rows: list[dict], meta: dict, top_k: int) -> None:
    """predictions.jsonl (one row per image) and predictions.csv (with an empty `final` column)."""
    write_text(out / PREDICTIONS, "".join(
        dumps({**r, "model": meta["model"]}) + "\n" for r in rows))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "decision", "uncertain", "review_rank"]
               + [f"{k}{n}" for n in range(1, top_k + 1) for k in ("class", "score")] + ["final"])
    for r in rows:
        cells = [c for t in r["top_k"] for c in (t["class"], f"{t['score']:.6f}")]
        w.writerow([r["path"], r["decision"] or "", "yes" if r["uncertain"] else "no", r.get("review_rank", "")]
                   + cells + [""] * (2 * top_k - len(cells)) + [""])
    write_text(out / "predictions.csv", buf.getvalue())


def write_review(out: Path, root: Path, rows: list[dict], names: list[str], captions: dict[str, str], copy: bool) -> None:
    """The review tree: a folder per class (and _uncertain), each image linked (or copied) in."""
    review = out / "review"
    for name in names + [UNCERTAIN]:
        (review / name).mkdir(parents=True, exist_ok=True)  # every class: a place to move files to
    for r in rows:
        src, dst = root / r["path"], out / r["review_file"]
        if copy:
            copy_file(src, dst)
        else:
            link_or_copy(src, dst)
    write_tokenization(review, captions)


def write_labelstudio(out: Path, root: Path, rows: list[dict], names: list[str], model: str) -> None:
    """A Label Studio import (tasks with the pre-label as a prediction) and its labeling config."""
    tasks = []
    for r in rows:
        top = r["top_k"][0]
        tasks.append({
            "data": {"image": f"{LOCAL_FILES}{root.name}/{r['path']}"},
            "meta": {"path": r["path"], "uncertain": r["uncertain"]},
            "predictions": [{"model_version": f"clipdata {model}", "score": top["score"], "result": [{
                "from_name": "class", "to_name": "image", "type": "choices",
                "value": {"choices": [top["class"]]}}]}],
        })
    write_text(out / "labelstudio.json", dumps(tasks, indent=1) + "\n")
    choices = "\n".join(f'    <Choice value="{html.escape(n, quote=True)}"/>' for n in names)
    write_text(out / "labelstudio_config.xml",
               f'<View>\n  <Image name="image" value="$image"/>\n'
               f'  <Choices name="class" toName="image" choice="single" showInLine="true">\n{choices}\n  </Choices>\n</View>\n')




_META_FIELDS = {"classes": list, "images_root": str, "model": str, "model_identity": str, "preprocess": str, "dtype": str,
                "threshold": (int, float), "margin": (int, float), "captions": list}


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _meta_problem(meta: object) -> str | None:
    """What is wrong with label.json's content, or None."""
    if not isinstance(meta, dict):
        return f"expected an object, found {_kind(meta)}"
    for key, kind in _META_FIELDS.items():
        if key in meta and meta[key] is not None and (not isinstance(meta[key], kind) or isinstance(meta[key], bool)):
            return f'"{key}" is {_kind(meta[key])}'
        if isinstance(meta.get(key), float) and not math.isfinite(meta[key]):  # NaN: no JSON answer can carry it
            return f'"{key}" is {meta[key]}, not a finite number'
    if not all(isinstance(c, str) for c in meta.get("classes") or []):
        return '"classes" holds something other than names'
    if not all(isinstance(c, list) and all(isinstance(t, str) for t in c) for c in meta.get("captions") or []):
        return '"captions" is not a list of lists of captions'
    return None


def _row_problem(row: object) -> str | None:
    """What is wrong with a predictions.jsonl row, or None."""
    if not isinstance(row, dict):
        return f"expected an object, found {_kind(row)}"
    if not isinstance(row.get("path"), str) or not row["path"]:
        return '"path" is not a path'
    top = row.get("top_k")
    if not isinstance(top, list) or not top:
        return '"top_k" is not a non-empty list'
    for t in top:
        if not (isinstance(t, dict) and isinstance(t.get("class"), str) and isinstance(t.get("score"), (int, float))
                and not isinstance(t.get("score"), bool)):
            return '"top_k" holds something other than {"class", "score"}'
        if not math.isfinite(t["score"]):  # NaN or Infinity: no JSON answer can carry it
            return f'"top_k" holds the score {t["score"]}, not a finite number'
    if row.get("decision") is not None and not isinstance(row["decision"], str):
        return f'"decision" is {_kind(row["decision"])}'
    if "review_file" in row and not isinstance(row["review_file"], str):
        return f'"review_file" is {_kind(row["review_file"])}'
    if row.get("uncertain") is not None and not isinstance(row["uncertain"], bool):
        return f'"uncertain" is {_kind(row["uncertain"])}, not true/false'
    for key in ("review_rank", "width", "height"):
        if row.get(key) is not None and (not isinstance(row[key], int) or isinstance(row[key], bool)):
            return f'"{key}" is {_kind(row[key])}'
    return None


def label_meta(folder: Path) -> dict:
    """label.json of a label output folder, checked: a damaged one is one clear line."""
    meta_file = folder / "label.json"
    if not meta_file.is_file():
        raise SourceError("no label.json: not the output of clipdata label", file=folder,
                          hint="pass the folder `clipdata label --out` wrote (for an export saved elsewhere, "
                               "also pass --images with the image folder)")
    meta = load_json(meta_file)
    problem = _meta_problem(meta)
    if problem:
        raise SourceError(f"not the label.json clipdata label writes: {problem}", file=meta_file,
                          hint="rerun clipdata label (with --overwrite) to write it again")
    return meta  # type: ignore[return-value]


def read_predictions(folder: Path, *, required: bool = False) -> list[dict]:
    """predictions.jsonl's rows, each checked (a damaged row names its line); [] when the
    file is not there, unless `required`."""
    pred_file = folder / PREDICTIONS
    if not pred_file.is_file():
        if required:
            raise SourceError("no predictions.jsonl: not the output of clipdata label", file=folder,
                              hint="pass the folder `clipdata label --out` wrote")
        return []
    rows = []
    for n, line in enumerate(split_lines(read_text(pred_file)), 1):
        if line.strip():
            try:
                row = loads(line, pred_file)
            except SourceError as e:  # its place is the line of the file, not of the text
                raise SourceError(e.message, file=pred_file, where=f"line {n}",
                                  hint="rerun clipdata label; the file may have been cut short") from None
            problem = _row_problem(row)
            if problem:
                raise SourceError(f"not a prediction row: {problem}", file=pred_file, where=f"line {n}",
                                  hint="rerun clipdata label; the file may have been cut short")
            rows.append(row)
    return rows


def _meta(folder: Path) -> tuple[dict, dict[str, dict]]:
    """label.json and the predictions (by original path) of a label output folder."""
    meta = label_meta(folder)
    return meta, {row["path"]: row for row in read_predictions(folder)}


def predicted(row: dict | None) -> str | None:
    """What the pre-labeler proposed: its decision, else (uncertain) its top-1."""
    if not row:
        return None
    return row.get("decision") or row["top_k"][0]["class"]


def _tree(folder: Path, preds: dict[str, dict], notes: list[str]) -> dict[str, "_Found"]:
    """Each image of the review tree by its original path: its class (None while still in
    _uncertain), and whether it was moved from the folder label put it in. A file a
    reviewer added is named by its path under review/."""
    review = folder / "review"
    if not review.is_dir():
        raise SourceError("no review/ folder", file=folder)
    by_file = {r["review_file"].split("/", 2)[-1]: path for path, r in preds.items()
               if isinstance(r.get("review_file"), str)}
    found: dict[str, _Found] = {}
    twice = 0
    for cls in find_classes(review):
        for p in walk_images(review / cls):
            name = by_file.get(p.name, p.relative_to(review).as_posix())
            twice += name in found
            label_put = (preds.get(name) or {}).get("review_file", "").split("/")[1:2]
            how = "added" if name not in preds else "proposed" if label_put == [cls] else "moved"
            found[name] = _Found(p, None if cls == UNCERTAIN else cls, how)
    if twice:
        notes.append(f"{twice} image(s) are in more than one folder of {review}: the last folder by name was taken")
    return found


def _inside(root: Path, rel: str) -> Path | None:
    """root/rel when it stays inside the image root (no `..`, no absolute path, no symlink
    out), else None."""
    p = (root / rel).resolve()
    r = root.resolve()
    return p if p == r or r in p.parents else None


CLASS_KEY = "class"  # the Choices name of the labeling config label writes


@dataclass
class _Found:
    """One image of the reviewed source: its file, its class (None: no class given), and how
    the class came: "choice" (a person chose it: the app, an export, a CSV's `final`),
    "moved" (its file was moved to another folder of the review tree), "proposed" (left as
    label proposed: unmoved in the tree, or only the CSV's `decision`), "added" (a file a
    reviewer added to the tree), "cancelled" (a Label Studio task whose annotations were all
    cancelled)."""

    file: Path | None
    cls: str | None
    how: str


def _task_path(image: object, root_name: str) -> str:
    """The image's path under the image root, from a task's image URL."""
    rel = str(image or "")
    rel = rel[len(LOCAL_FILES):] if rel.startswith(LOCAL_FILES) else rel
    return rel[len(root_name) + 1:] if root_name and rel.startswith(root_name + "/") else rel


def _choice(value: object, file: Path, where: str) -> str | None:
    """The chosen class of a JSON_MIN or CSV export cell: a string for a single choice,
    {"choices": [...]} (in CSV, as JSON text) for several; the first one counts."""
    if isinstance(value, str) and value.startswith("{"):
        value = loads(value, file)
    if isinstance(value, dict):
        value = value.get("choices")
    if isinstance(value, list):
        value = value[0] if value else None
    if value is not None and not isinstance(value, str):
        raise SourceError(f"a choice is {type(value).__name__}, not a class name", file=file, where=where)
    return value.strip() or None if value else None


def _full_task(task: dict, file: Path, i: int, root_name: str, notes: Counter) -> tuple[str, str | None, str]:
    """(path, class, how) of one task of Label Studio's JSON export: the choice of its latest
    non-cancelled annotation (by time, as Label Studio's own converter takes it)."""
    rel = (task.get("meta") or {}).get("path") if isinstance(task.get("meta"), dict) else None
    if not isinstance(rel, str):
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        rel = _task_path(data.get("image"), root_name)
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        raise SourceError('"annotations" is not a list', file=file, where=f"[{i}]",
                          hint="export again as JSON from Label Studio")
    kept = []
    for a, ann in enumerate(annotations):
        if not isinstance(ann, dict) or not isinstance(ann.get("result") or [], list):
            raise SourceError("an annotation is not a Label Studio annotation object", file=file,
                              where=f"[{i}].annotations[{a}]", hint="export again as JSON from Label Studio")
        if not (ann.get("was_cancelled") or ann.get("skipped")):
            kept.append(ann)
    if annotations and not kept:
        return rel, None, "cancelled"
    notes["several"] += len(kept) > 1
    choice = None
    for res in (max(kept, key=annotation_order).get("result") or []) if kept else []:
        choices = (res.get("value") or {}).get("choices") if isinstance(res, dict) else None
        if isinstance(choices, list) and choices:
            choice = choices[0] if isinstance(choices[0], str) else None
    return rel, choice, "choice"


def _latest_records(rows: list[tuple[dict, str, str | None]], notes: Counter) -> list[tuple[str, str | None, str]]:
    """JSON_MIN and CSV exports hold one record per annotation, newest first: per task (its
    `id`, else its image) the latest by time; on a tie the first, as the export lists them."""
    best: dict[object, tuple[dict, str, str | None]] = {}
    several: set = set()
    for record, rel, cls in rows:
        key = record.get("id") or rel
        if key in best:
            several.add(key)
            if annotation_order(record) <= annotation_order(best[key][0]):
                continue
        best[key] = (record, rel, cls)
    notes["several"] += len(several)
    return [(rel, cls, "choice") for _, rel, cls in best.values()]


def _final_labels(path: Path, root_name: str, notes: Counter) -> list[tuple[str, str | None, str]]:
    """(original path, final class or None, how) from an edited predictions.csv, or a Label
    Studio export: JSON, JSON_MIN or CSV."""
    if path.suffix.lower() == ".csv":
        rows = csv.DictReader(io.StringIO(read_text(path), newline=""))
        header = set(rows.fieldnames or [])
        if {"path", "final"} <= header:  # predictions.csv, edited
            out = []
            for row in rows:
                final, decision = (row["final"] or "").strip(), (row.get("decision") or "").strip()
                out.append((row["path"], final or decision or None, "choice" if final else "proposed"))
            notes["predictions.csv"] = 1
            return out
        if "image" in header:  # Label Studio's CSV export
            return _latest_records([(row, _task_path(row["image"], root_name), _choice(row.get(CLASS_KEY), path,
                                                                                      f"line {n}"))
                                    for n, row in enumerate(rows, 2)], notes)
        raise SourceError("expected the columns of predictions.csv (path ... final) or of a Label Studio "
                          "CSV export (image, class)", file=path)
    tasks = load_json(path)
    if not isinstance(tasks, list):
        raise SourceError("expected a Label Studio JSON export (a list of tasks)", file=path)
    full, minimal = [], []
    for i, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise SourceError("a task is not an object", file=path, where=f"[{i}]")
        if "annotations" in task or "data" in task:
            full.append(_full_task(task, path, i, root_name, notes))
        else:  # JSON_MIN: the task's data and each result's value, flat, one record per annotation
            minimal.append((task, _task_path(task.get("image"), root_name), _choice(task.get(CLASS_KEY), path, f"[{i}]")))
    return full + _latest_records(minimal, notes)


ABSENT = {"tree": "not in review/ (its file was removed from the review tree)",
          "csv": "not in the CSV (its row was removed)",
          "export": "not in the export (Label Studio's JSON_MIN and CSV exports leave out a task whose "
                    "annotations were all cancelled)"}


def _gather(path: Path, images: str | Path | None) -> tuple[dict[str, _Found], list[Skip], list[str], Path]:
    """Every image the reviewed source and decisions.jsonl name, with its class and how it
    came; the skips of images the label run listed but neither names; notes; the image root."""
    folder = path if path.is_dir() else path.parent
    elsewhere = not path.is_dir() and images is not None and not (folder / "label.json").is_file()
    meta, preds = ({}, {}) if elsewhere else _meta(folder)  # an export saved outside the label folder
    root = Path(images) if images else Path(meta.get("images_root") or "")
    notes: list[str] = []
    skipped: list[Skip] = []
    seen: Counter = Counter()
    if path.is_dir():
        found = _tree(path, preds, notes)
        kind = "tree"
    else:
        found = {rel: _Found(_inside(root, rel), final, how) for rel, final, how in _final_labels(path, root.name, seen)}
        kind = "csv" if seen["predictions.csv"] else "export"
    if seen["several"]:
        notes.append(f"{seen['several']} task(s) have several annotations: the latest non-cancelled one was taken")
    for name, cls in ({} if elsewhere else decisions.read(folder)).items():
        if cls is None:  # taken back in the app: the other source decides
            continue
        if name not in found and name not in preds:
            skipped.append(Skip("not_listed", name, f"{decisions.FILE} names an image label did not list"))
            continue
        file = found[name].file if name in found else _inside(root, name)
        found[name] = _Found(file, cls, "choice")
    for name in preds:
        if name not in found:  # listed by label, in neither source: counted, never lost silently
            skipped.append(Skip("absent", name, ABSENT[kind]))
    return found, skipped, notes, root


def read(path: str | Path, *, images: str | Path | None = None, split: str | None = None) -> Source:
    """Whole-image labels from the review tree, an export or a CSV, with the decisions of
    `clipdata review serve` (decisions.jsonl beside them) taking precedence: formats/review.md."""
    path = Path(path)
    split = split or "train"
    if not path.exists():  # else its parent was named: "/tmp: no label.json" for a mistyped /tmp/lable
        raise SourceError("not found", file=path, hint="pass the folder `clipdata label --out` wrote, or a "
                                                        "reviewed export or CSV")
    found, skipped, notes, root = _gather(path, images)
    src = Source(format="review", path=path, classes=[], samples=[], skipped=skipped, notes=notes)
    why = "still in review/_uncertain" if path.is_dir() else "no final class"
    for name, f in found.items():
        if f.how == "cancelled":
            src.skipped.append(Skip("cancelled", name, "every annotation of its Label Studio task was cancelled"))
        elif f.cls is None:
            src.skipped.append(Skip("not_reviewed", name, why))
        elif f.cls == decisions.REJECTED:
            src.skipped.append(Skip("rejected", name, f"rejected in {decisions.FILE}"))
        elif f.file is None:
            src.skipped.append(Skip("outside_image_root", name, f"resolves outside {root}"))
        else:
            if f.cls not in src.classes:
                src.classes.append(f.cls)
            src.samples.append(Sample(name=name, path=f.file if f.file.is_file() else None, split=split,
                                      labels=[Label(f.cls)], searched=(str(root),)))
    if not src.samples:
        raise SourceError("no reviewed image found", file=path,
                          hint="review with clipdata review serve, move images out of review/_uncertain, "
                               "or fill the final column / Label Studio choices")
    src.classes.sort()
    return src


def changes(reviewed: str | Path, final: dict[str, str], *, images: str | Path | None = None) -> dict[str, dict[str, int]]:
    """Per proposed class, what happened to label's proposals among the applied images
    (`final`: each one's original path -> the class it ended in): `kept` and `changed` by a
    person's choice (the app, an export, a CSV's `final`), `moved` to another folder of the
    review tree (counted in `changed` too), and `unreviewed` (applied as label proposed,
    with no record that anyone looked). Only choices measure the pre-labeler's accuracy."""
    path = Path(reviewed)
    folder = path if path.is_dir() else path.parent
    if not path.is_dir() and not (folder / "label.json").is_file():
        return {}  # an export saved elsewhere: no proposals to compare with
    _, preds = _meta(folder)
    found = _gather(path, images)[0]
    stats: dict[str, dict[str, int]] = {}
    for name, cls in final.items():
        was = predicted(preds.get(name))
        if was is None:
            continue
        entry = stats.setdefault(was, {"kept": 0, "changed": 0, "moved": 0, "unreviewed": 0})
        how = found[name].how if name in found else "choice"
        if how == "proposed":
            entry["unreviewed"] += 1
        else:
            entry["kept" if cls == was else "changed"] += 1
            entry["moved"] += how == "moved"
    return dict(sorted(stats.items()))
