"""Reader of a reviewed `clipdata label` output: the review tree after a person moved files
between class folders, a Label Studio JSON export, or an edited predictions.csv (`final`
column). Each yields whole-image labels; `clipdata review apply` turns them into a layout.
Format: formats/label.md."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from ..errors import SourceError
from ..records import Label, Sample, Skip, Source
from . import is_image_name

UNCERTAIN = "_uncertain"


def _meta(folder: Path) -> tuple[dict, dict[str, dict]]:
    """label.json and the predictions (by original path) of a label output folder."""
    meta_file = folder / "label.json"
    if not meta_file.is_file():
        raise SourceError("no label.json: not the output of clipdata label", file=folder,
                          hint="pass the folder `clipdata label --out` wrote")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    preds = {}
    pred_file = folder / "predictions.jsonl"
    if pred_file.is_file():
        for line in pred_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                preds[row["path"]] = row
    return meta, preds


def predicted(row: dict | None) -> str | None:
    """What the pre-labeler proposed: its decision, else (uncertain) its top-1."""
    if not row:
        return None
    return row.get("decision") or row["top_k"][0]["class"]


def _tree(folder: Path, preds: dict[str, dict], split: str, src: Source) -> None:
    review = folder / "review"
    if not review.is_dir():
        raise SourceError("no review/ folder", file=folder)
    by_file = {r["review_file"].split("/", 2)[-1]: path for path, r in preds.items()}
    for cls in sorted(e.name for e in os.scandir(review) if e.is_dir() and not e.name.startswith(".")):
        for dirpath, dirnames, filenames in os.walk(review / cls):
            dirnames.sort()
            for f in sorted(filenames):
                p = Path(dirpath) / f
                if not is_image_name(f) or f.startswith("."):
                    continue
                name = by_file.get(f, p.relative_to(review).as_posix())
                if cls == UNCERTAIN:
                    src.skipped.append(Skip("not_reviewed", name, "still in review/_uncertain"))
                    continue
                if cls not in src.classes:
                    src.classes.append(cls)
                src.samples.append(Sample(name=name, path=p, split=split, labels=[Label(cls)]))


def _final_labels(path: Path, meta: dict, preds: dict[str, dict]) -> list[tuple[str, str | None]]:
    """(original path, final class or None) from a Label Studio export or an edited CSV."""
    out = []
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.DictReader(f), 2):
                if "path" not in row or "final" not in row:
                    raise SourceError("expected the columns of predictions.csv (path ... final)", file=path)
                out.append((row["path"], (row["final"] or "").strip() or (row.get("decision") or "").strip() or None))
        return out
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SourceError(f"malformed JSON: {e.msg}", file=path, where=f"line {e.lineno}, column {e.colno}") from None
    if not isinstance(tasks, list):
        raise SourceError("expected a Label Studio JSON export (a list of tasks)", file=path)
    prefix = "/data/local-files/?d="
    root_name = Path(meta.get("images_root", "")).name
    for i, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise SourceError("a task is not an object", file=path, where=f"[{i}]")
        rel = (task.get("meta") or {}).get("path")
        if rel is None:
            image = str((task.get("data") or {}).get("image", ""))
            rel = image[len(prefix):] if image.startswith(prefix) else image
            rel = rel[len(root_name) + 1:] if root_name and rel.startswith(root_name + "/") else rel
        choice = None
        for ann in task.get("annotations") or []:
            if ann.get("was_cancelled"):
                continue
            for res in ann.get("result") or []:
                choices = (res.get("value") or {}).get("choices")
                if choices:
                    choice = choices[0]
        out.append((rel, choice))
    return out


def read(path: str | Path, *, images: str | Path | None = None, split: str | None = None,
         **_: object) -> Source:
    path = Path(path)
    split = split or "train"
    folder = path if path.is_dir() else path.parent
    meta, preds = _meta(folder)
    src = Source(format="review", path=path, classes=[], samples=[])
    if path.is_dir():
        _tree(path, preds, split, src)
    else:
        root = Path(images) if images else Path(meta.get("images_root", ""))
        for rel, final in _final_labels(path, meta, preds):
            if final is None:
                src.skipped.append(Skip("not_reviewed", rel, "no final class"))
                continue
            if final not in src.classes:
                src.classes.append(final)
            p = root / rel
            src.samples.append(Sample(name=rel, path=p if p.is_file() else None, split=split,
                                      labels=[Label(final)], searched=(str(root),)))
    if not src.samples:
        raise SourceError("no reviewed image found", file=path,
                          hint="move images out of review/_uncertain, or fill the final column / Label Studio choices")
    src.classes.sort()
    return src


def changes(reviewed: str | Path, final: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per proposed class: how many images the reviewer kept, and how many they moved.
    `final` maps each applied image (its original path) to the class it ended in."""
    path = Path(reviewed)
    _, preds = _meta(path if path.is_dir() else path.parent)
    stats: dict[str, dict[str, int]] = {}
    for name, cls in final.items():
        was = predicted(preds.get(name))
        if was is None:
            continue
        entry = stats.setdefault(was, {"kept": 0, "changed": 0})
        entry["kept" if cls == was else "changed"] += 1
    return dict(sorted(stats.items()))
