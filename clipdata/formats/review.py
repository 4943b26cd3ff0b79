"""`clipdata label`'s output, written and read in one module. Written: predictions
(jsonl, csv), the review tree, the Label Studio import. Read back after review: the review
tree after a person moved files between class folders, a Label Studio JSON export, or an
edited predictions.csv (`final` column). Each yields whole-image labels; `clipdata review
apply` turns them into a layout. Format: formats/label.md and formats/review.md."""
from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

from ..errors import SourceError
from ..fsutil import copy_file, link_or_copy, write_text
from ..imagefiles import find_classes, walk_images
from ..records import Label, Sample, Skip, Source
from . import decisions
from .layout import write_tokenization

UNCERTAIN = "_uncertain"  # the review tree's folder of images the pre-labeler was unsure of
PREDICTIONS = "predictions.jsonl"
LOCAL_FILES = "/data/local-files/?d="  # Label Studio's local-files storage URL prefix


def review_name(rel: str) -> str:
    """Flatten a relative path into one file name: `a/b/c.jpg` -> `a__b__c.jpg`."""
    return rel.replace("/", "__")


def write_predictions(out: Path, rows: list[dict], meta: dict, top_k: int) -> None:
    """predictions.jsonl (one row per image) and predictions.csv (with an empty `final` column)."""
    write_text(out / PREDICTIONS, "".join(
        json.dumps({**r, "model": meta["model"]}, ensure_ascii=False) + "\n" for r in rows))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "decision", "uncertain"]
               + [f"{k}{n}" for n in range(1, top_k + 1) for k in ("class", "score")] + ["final"])
    for r in rows:
        cells = [c for t in r["top_k"] for c in (t["class"], f"{t['score']:.6f}")]
        w.writerow([r["path"], r["decision"] or "", "yes" if r["uncertain"] else "no"]
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
    write_text(out / "labelstudio.json", json.dumps(tasks, indent=1, ensure_ascii=False) + "\n")
    choices = "\n".join(f'    <Choice value="{html.escape(n, quote=True)}"/>' for n in names)
    write_text(out / "labelstudio_config.xml",
               f'<View>\n  <Image name="image" value="$image"/>\n'
               f'  <Choices name="class" toName="image" choice="single" showInLine="true">\n{choices}\n  </Choices>\n</View>\n')




def _meta(folder: Path) -> tuple[dict, dict[str, dict]]:
    """label.json and the predictions (by original path) of a label output folder."""
    meta_file = folder / "label.json"
    if not meta_file.is_file():
        raise SourceError("no label.json: not the output of clipdata label", file=folder,
                          hint="pass the folder `clipdata label --out` wrote")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    preds = {}
    pred_file = folder / PREDICTIONS
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


def _tree(folder: Path, preds: dict[str, dict]) -> list[tuple[str, Path, str | None]]:
    """(original path, file, class or None while still in _uncertain) for each image of the
    review tree; a file a reviewer added is named by its path under review/."""
    review = folder / "review"
    if not review.is_dir():
        raise SourceError("no review/ folder", file=folder)
    by_file = {r["review_file"].split("/", 2)[-1]: path for path, r in preds.items()}
    return [(by_file.get(p.name, p.relative_to(review).as_posix()), p, None if cls == UNCERTAIN else cls)
            for cls in find_classes(review) for p in walk_images(review / cls)]


def _inside(root: Path, rel: str) -> Path | None:
    """root/rel when it stays inside the image root (no `..`, no absolute path, no symlink
    out), else None."""
    p = (root / rel).resolve()
    r = root.resolve()
    return p if p == r or r in p.parents else None


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
    prefix = LOCAL_FILES
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


def read(path: str | Path, *, images: str | Path | None = None, split: str | None = None) -> Source:
    """Whole-image labels from the review tree, an export or a CSV, with the decisions of
    `clipdata review serve` (decisions.jsonl beside them) taking precedence: formats/review.md."""
    path = Path(path)
    split = split or "train"
    folder = path if path.is_dir() else path.parent
    meta, preds = _meta(folder)
    root = Path(images) if images else Path(meta.get("images_root", ""))
    src = Source(format="review", path=path, classes=[], samples=[])
    if path.is_dir():
        found = {name: (p, cls) for name, p, cls in _tree(path, preds)}
        why = "still in review/_uncertain"
    else:
        found = {rel: (_inside(root, rel), final) for rel, final in _final_labels(path, meta, preds)}
        why = "no final class"
    for name, cls in decisions.read(folder).items():
        if cls is None:  # taken back in the app: the other source decides
            continue
        if name not in found and name not in preds:
            src.skipped.append(Skip("not_listed", name, f"{decisions.FILE} names an image label did not list"))
            continue
        file = found[name][0] if name in found else _inside(root, name)
        found[name] = (file, cls)
    for name, (p, cls) in found.items():
        if cls is None:
            src.skipped.append(Skip("not_reviewed", name, why))
        elif cls == decisions.REJECTED:
            src.skipped.append(Skip("rejected", name, f"rejected in {decisions.FILE}"))
        elif p is None:
            src.skipped.append(Skip("outside_image_root", name, f"resolves outside {root}"))
        else:
            if cls not in src.classes:
                src.classes.append(cls)
            src.samples.append(Sample(name=name, path=p if p.is_file() else None, split=split,
                                      labels=[Label(cls)], searched=(str(root),)))
    if not src.samples:
        raise SourceError("no reviewed image found", file=path,
                          hint="review with clipdata review serve, move images out of review/_uncertain, "
                               "or fill the final column / Label Studio choices")
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
