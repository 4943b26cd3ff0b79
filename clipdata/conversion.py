"""convert: reader -> records -> transform (plan.py) -> CLIP layout writer.

(Named conversion so that `clipdata.convert` stays the API function.) Nothing here knows
which format a record came from. Every output name is planned before anything is written,
so names are deterministic and collision-free whatever the processing order.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from . import __version__, formats
from .captions import DEFAULT_TEMPLATE, Ontology, check_template, default_project, load_ontology
from .crops import Padding
from .errors import MissingImagesError, OptionError, OutputError, SourceError
from .formats import clip
from .fsutil import TMP_PREFIX, is_within, write_text, write_with
from .imagejobs import COPIED, Options, Result, Task, init, process
from .plan import Planned, allocate_names, parse_ratios, plan_crops, plan_scenes, resplit
from .records import SPLITS, Sample, Skip
from .workers import default_workers, run

Progress = Callable[[int, int], None]
MODES = ("crops", "scenes")
JOURNAL = ".clipdata-journal.jsonl"  # results of finished images, for --resume


@dataclass
class Report:
    """What a conversion did; `clipdata.json` is this, as JSON."""

    out: Path
    source: str
    format: str
    options: dict
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> images
    captions: dict[str, str] = field(default_factory=dict)  # class folder -> caption
    images: int = 0  # whole images written
    crops: int = 0
    skipped: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exported: list[str] = field(default_factory=list)  # hand-off files, relative to out
    per_image: dict[str, list[str]] = field(default_factory=dict)  # note -> images it concerns

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(s.reason for s in self.skipped).items()))

    @property
    def classes(self) -> list[str]:
        return sorted({c for per in self.counts.values() for c in per})

    def to_dict(self) -> dict:
        return {
            "clipdata_version": __version__,
            "command": "convert",
            "source": {"path": self.source, "format": self.format},
            "options": self.options,
            "totals": {"images": self.images, "crops": self.crops, "classes": len(self.classes)},
            "counts": self.counts,
            "captions": self.captions,
            "exports": self.exported,
            "skipped": self.skipped_by_reason,
            "skipped_items": [
                {k: v for k, v in asdict(s).items() if v not in ("", None)} for s in self.skipped
            ],
            "notes": self.notes,
        }


def _prepare_out(out: Path, overwrite: bool, inputs: list[Path]) -> None:
    for src in inputs:
        if is_within(src, out):
            raise OutputError("the output folder holds the source", file=out,
                              hint="choose an output folder outside the dataset")
    if out.exists() and not out.is_dir():
        raise OutputError("exists and is not a folder", file=out)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            if (out / JOURNAL).is_file():
                raise OutputError("holds an interrupted clipdata run", file=out,
                                  hint="pass --resume to finish it, or --overwrite to start again")
            raise OutputError("already holds files", file=out,
                              hint="choose an empty or new folder, or pass --overwrite to replace an earlier clipdata output")
        if not (out / clip.PROVENANCE).is_file() and not (out / JOURNAL).is_file():
            raise OutputError(
                f"holds files that clipdata did not write (no {clip.PROVENANCE}); --overwrite only replaces clipdata output",
                file=out, hint="choose an empty or new folder")
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _check_options(template: str, image_format: str, quality: int, min_size: int,
                   split: str | None, mode: str) -> None:
    check_template(template)
    if mode not in MODES:
        raise OptionError(f"--mode {mode!r} is not one of {', '.join(MODES)}")
    if image_format not in ("jpg", "png", "webp"):
        raise OptionError(f"--image-format {image_format!r} is not one of jpg, png, webp")
    if not 1 <= quality <= 100:
        raise OptionError(f"--quality {quality} must be between 1 and 100")
    if min_size < 1:
        raise OptionError(f"--min-size {min_size} must be at least 1")
    if split is not None and split not in SPLITS:
        raise OptionError(f"--split {split!r} is not one of {', '.join(SPLITS)}")


def _missing(samples: list[Sample], skip_missing: bool, source: Path, report: Report) -> list[Sample]:
    missing = sorted((s for s in samples if s.path is None), key=lambda s: (SPLITS.index(s.split), s.name))
    if missing and not skip_missing:
        shown = ", ".join(repr(s.name) for s in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        looked = "; ".join(missing[0].searched) or "nowhere"
        raise MissingImagesError(
            f"{len(missing)} image(s) not found: {shown}{more} (looked in: {looked})",
            file=source, hint="pass --images DIR, or --skip-missing to record them and go on")
    for s in missing:
        report.skipped.append(Skip("missing_image", s.name, f"looked in: {'; '.join(s.searched)}"))
    return [s for s in samples if s.path is not None]


def convert(
    source: str | Path,
    out: str | Path,
    format: str = "coco",
    *,
    mode: str = "crops",
    images: str | Path | None = None,
    split: str | None = None,
    split_ratios: str | Sequence[float] | None = None,
    seed: int = 0,
    template: str = DEFAULT_TEMPLATE,
    ontology: str | Path | None = None,
    rename: Sequence[str] = (),
    project_name: str | None = None,
    group_name: str | None = None,
    include_crowd: bool = False,
    skip_difficult: bool = False,
    min_size: int = 1,
    padding: str | float | None = None,
    square: bool = False,
    image_format: str = "jpg",
    quality: int = 95,
    link: bool = False,
    skip_missing: bool = False,
    export: str | Sequence[str] | None = None,
    openclip_relative: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Report:
    """Convert a dataset into the CLIP classification layout under `out`; see formats/clip.md."""
    fmt = formats.get(format).name
    if split is not None:
        split = formats.split_name(split) or split
    _check_options(template, image_format, quality, min_size, split, mode)
    ratios = parse_ratios(split_ratios) if split_ratios is not None else None
    exports = formats.parse_exports(export)
    pad = Padding.parse(padding)
    onto = load_ontology(ontology) if ontology is not None else Ontology()
    for r in rename:
        onto.add_rename(r)
    out = Path(out)
    src = formats.load(fmt).read(Path(source), images=images, split=split,
                                 include_crowd=include_crowd, skip_difficult=skip_difficult)
    project = project_name or default_project(Path(source))
    group = group_name or src.group or "objects"

    report = Report(
        out=out, source=str(source), format=fmt,
        options={
            "mode": mode, "images": str(images) if images is not None else None, "split": split,
            "split_ratios": list(ratios) if ratios else None, "seed": seed,
            "template": template, "ontology": str(ontology) if ontology is not None else None,
            "rename": list(rename), "include_crowd": include_crowd, "skip_difficult": skip_difficult,
            "min_size": min_size, "padding": str(pad), "square": square,
            "image_format": image_format, "quality": quality, "link": link,
            "skip_missing": skip_missing, "export": exports, "openclip_relative": openclip_relative,
            **({"project_name": project, "group_name": group} if mode == "scenes" else {}),
        },
        skipped=list(src.skipped), notes=list(src.notes),
    )
    unknown = onto.unknown(src.classes)
    if unknown:
        report.notes.append(f"ontology/--rename name(s) not in the source: {', '.join(map(repr, unknown))}")

    samples = src.samples if mode == "scenes" else [s for s in src.samples if s.labels]
    samples = _missing(samples, skip_missing, src.path, report)
    if ratios is not None:
        samples = resplit(samples, ratios, seed)
    samples.sort(key=lambda s: (SPLITS.index(s.split), s.name))
    if mode == "scenes":
        plan = plan_scenes(samples, onto, project, group, report.skipped)
    else:
        plan = plan_crops(samples, onto, template, image_format, report.skipped)
    planned = [p for _, jobs in plan for p in jobs]
    if not planned:
        reasons = ", ".join(f"{r} {n}" for r, n in Counter(k.reason for k in report.skipped).items())
        raise SourceError(
            f"nothing to convert: {len(src.samples)} image(s), no label left"
            + (f" (skipped: {reasons})" if reasons else ""),
            file=src.path, hint="check the annotations, --include-crowd, --skip-missing or the ontology's drops")
    targets = sorted({p.target for p in planned})
    renamed = set(onto.renames.values())
    clip.check_class_names(targets, file=(onto.file or "--rename") if any(
        clip.name_problem(t) and t in renamed for t in targets) else src.path)
    allocate_names(planned)

    if fmt == "folder" and is_within(out, src.path):
        raise OutputError("the output folder is inside the source folder", file=out,
                          hint="a later run would read the output as classes; choose a folder outside it")
    fingerprint = hashlib.sha256(json.dumps(
        [__version__, str(source), fmt, report.options], sort_keys=True).encode()).hexdigest()
    journaled = _resume(out, fingerprint) if resume else {}
    if not journaled:
        _prepare_out(out, overwrite or (resume and (out / JOURNAL).is_file()),
                     [src.path] + ([Path(images)] if images is not None else []))

    opts = Options(str(out), pad, square, min_size, image_format, quality, link)
    written = _execute(plan, journaled, out / JOURNAL, fingerprint, opts, workers, report, progress)
    ordered = sorted(written, key=lambda p: (SPLITS.index(p.sample.split), p.relpath))
    _finish(out, ordered, report)
    for name in exports:
        module = formats.load_export(name)
        rows = _rows(ordered)
        files = module.export(out, rows, relative=openclip_relative) if name == "openclip" else module.export(out, rows)
        report.exported += [f.relative_to(out).as_posix() for f in files]
    write_text(out / clip.PROVENANCE, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    (out / JOURNAL).unlink()
    return report


def _execute(plan: list[tuple[Sample, list[Planned]]], journaled: dict[int, Result], journal_path: Path,
             fingerprint: str, opts: Options, workers: int | None, report: Report,
             progress: Progress | None) -> list[Planned]:
    """Run the image tasks not in the journal, journal each result, and fold every result
    into the report in plan order (results arrive in task order, which is plan order)."""
    tasks = [Task(i, str(s.path), s.width, s.height, [(p.relpath, p.label.box) for p in jobs])
             for i, (s, jobs) in enumerate(plan) if jobs and i not in journaled]
    n_workers = max(1, min(workers or default_workers(), len(tasks) // 4))
    fresh = run(process, tasks, n_workers, init, (opts,))
    written: list[Planned] = []
    with open(journal_path, "a", encoding="utf-8") as journal:
        if not journaled:
            journal.write(json.dumps({"clipdata_journal": 1, "fingerprint": fingerprint}) + "\n")
        for i, (sample, jobs) in enumerate(plan):
            if jobs:
                result = journaled.pop(i, None)
                if result is None:
                    result = next(fresh)
                    journal.write(json.dumps(result.to_json()) + "\n")
                    journal.flush()
                written += _apply(result, sample, jobs, report)
            if progress:
                progress(i + 1, len(plan))
    return written


def _resume(out: Path, fingerprint: str) -> dict[int, Result]:
    """The results a killed run recorded, after checking it was the same command; temporary
    files it left are removed. An empty dict when there is nothing to resume."""
    journal = out / JOURNAL
    if not journal.is_file():
        if (out / clip.PROVENANCE).is_file():
            raise OutputError("holds a finished conversion: nothing to resume", file=out,
                              hint="pass --overwrite to convert again")
        return {}
    lines = journal.read_text(encoding="utf-8").split("\n")
    try:
        header = json.loads(lines[0])
    except (json.JSONDecodeError, IndexError):
        header = {}
    if header.get("fingerprint") != fingerprint:
        raise OutputError("the interrupted run in this folder used another source or other options",
                          file=out, hint="repeat the original command with --resume, or pass --overwrite")
    results: dict[int, Result] = {}
    for line in lines[1:]:
        try:
            r = Result.from_json(json.loads(line))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # the line being written when the run was killed
        results[r.index] = r
    for dirpath, _, filenames in os.walk(out):
        for f in filenames:
            if f.startswith(TMP_PREFIX):
                os.unlink(os.path.join(dirpath, f))
    return results


def _apply(result: Result, sample: Sample, jobs: list[Planned], report: Report) -> list[Planned]:
    """Fold one image's result into the report; return the outputs written."""
    if result.unreadable is not None:
        report.skipped += [Skip("unreadable_image", sample.name, result.unreadable, p.label.id) for p in jobs]
        return []
    for note in result.notes:
        if note == COPIED:
            report.notes.append(note)
        else:
            report.per_image.setdefault(note, []).append(sample.name)
    done = []
    for p, outcome in zip(jobs, result.outputs):
        if isinstance(outcome, str):
            report.skipped.append(Skip(outcome, sample.name, f"box {list(p.label.box)}", p.label.id))
            continue
        if outcome:
            p.region = tuple(outcome)  # type: ignore[assignment]
            report.crops += 1
        else:
            report.images += 1
        done.append(p)
    return done


def _finish(out: Path, ordered: list[Planned], report: Report) -> None:
    """Caption files and the manifest, each written atomically."""
    per_split: dict[str, dict[str, int]] = {}
    for p in ordered:
        per_split.setdefault(p.sample.split, {}).setdefault(p.target, 0)
        per_split[p.sample.split][p.target] += 1
        report.captions[p.target] = p.caption
    report.counts = {s: dict(sorted(per_split[s].items())) for s in SPLITS if s in per_split}
    report.captions = dict(sorted(report.captions.items()))
    for split, classes in report.counts.items():
        clip.write_tokenization(out / split, {c: report.captions[c] for c in classes})
    write_with(out / clip.MANIFEST,
               lambda f: f.writelines(clip.manifest_line(r).encode("utf-8") for r in _rows(ordered)))
    for note, names in report.per_image.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        report.notes.append(f"{len(names)} image(s): {note}: {shown}")
    report.notes = list(dict.fromkeys(report.notes))


def _rows(ordered: list[Planned]) -> Iterator[dict]:
    """Manifest rows, made one at a time (a row dict per crop would dominate memory)."""
    for p in ordered:
        box = None
        if p.region is not None:
            left, top, right, bottom = p.region
            box = [left, top, right - left, bottom - top]
        yield {"split": p.sample.split, "class": p.target, "path": p.relpath, "caption": p.caption,
               "source_image": p.sample.name, "box": box, "source_annotation_id": p.label.id}
