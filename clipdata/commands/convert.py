"""convert: reader -> records -> transform (pipeline.plan) -> CLIP layout writer.

Nothing here knows which format a record came from. Every output name is planned before
anything is written, so names are deterministic and collision-free whatever the processing
order. One frozen ConvertOptions serves the API, the CLI, clipdata.json and the resume
fingerprint.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Sequence

from .. import formats
from .._version import __version__
from ..captions import DEFAULT_TEMPLATE, Ontology, check_template, default_project, load_ontology
from ..crops import Padding, crop_region
from ..errors import MissingImagesError, OptionError, OutputError, SourceError
from ..formats import layout as clip
from ..formats.detect import detect
from ..formats.exports import ExportOptions, load_export, parse_exports
from ..fsutil import LOCK_NAME, check_name, is_within, locked, remove, write_text, write_with
from ..pipeline.jobs import COPIED, Options, Result, Task, init, process
from ..pipeline.journal import JOURNAL, Journal, fingerprint_inputs, replay, verify
from ..pipeline.ledger import SKIPPED_FILE, Ledger, sample_by_reason, write_skipped
from ..pipeline.plan import Planned, allocate_names, parse_ratios, plan_crops, plan_scenes, resplit
from ..pipeline.pool import default_workers, run
from ..procs import sigterm_as_interrupt
from ..names import NOT_UTF8, RENAME_HINT, is_utf8, problem, quoted, shown
from ..records import SPLITS, Sample, Skip, split_name
from ..names import dumps

Progress = Callable[[int, int], None]
MODES = ("crops", "scenes")
MASKS = ("none", "fill", "alpha")
# CLIP's normalisation mean (0.4815, 0.4578, 0.4082) in 8 bits: filled pixels normalise to ~0
CLIP_MEAN_RGB = (123, 117, 104)


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that decides a conversion's output (run controls such as --overwrite,
    --resume and --workers are not here: they never change the bytes)."""

    mode: str = "crops"
    images: str | Path | None = None
    split: str | None = None
    split_ratios: str | Sequence[float] | None = None
    seed: int = 0
    template: str = DEFAULT_TEMPLATE
    ontology: str | Path | None = None
    rename: Sequence[str] = ()
    project_name: str | None = None
    group_name: str | None = None
    include_crowd: bool = False
    skip_difficult: bool = False
    min_size: int = 1
    padding: str | float | None = None
    square: bool = False
    image_format: str | None = None  # jpg; png with --mask alpha
    quality: int = 95
    link: bool = False
    skip_missing: bool = False
    export: str | Sequence[str] | None = None
    openclip_relative: bool = False
    shard_size: int = 10_000
    mask: str = "none"
    mask_fill: str | Sequence[int] | None = None

    @classmethod
    def make(cls, options: "ConvertOptions | None" = None, **kwargs) -> "ConvertOptions":
        """`options` with `kwargs` on top; an unknown keyword is a usage error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"convert() got unknown option(s): {', '.join(unknown)}")
        return replace(options or cls(), **kwargs)

    def check(self) -> None:
        check_template(self.template)
        if self.mode not in MODES:
            raise OptionError(f"--mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.image_format not in (None, "jpg", "png", "webp"):
            raise OptionError(f"--image-format {self.image_format!r} is not one of jpg, png, webp")
        if self.mask not in MASKS:
            raise OptionError(f"--mask {self.mask!r} is not one of {', '.join(MASKS)}")
        if self.mask != "none" and self.mode == "scenes":
            raise OptionError("--mask applies to crops, not to --mode scenes")
        if self.mask == "alpha" and self.image_format == "jpg":
            raise OptionError("--mask alpha needs an image format with transparency",
                              hint="use --image-format png (the default with --mask alpha) or webp")
        if self.mask_fill is not None and self.mask != "fill":
            raise OptionError("--mask-fill applies only with --mask fill")
        self.fill_rgb()
        if not 1 <= self.quality <= 100:
            raise OptionError(f"--quality {self.quality} must be between 1 and 100")
        if self.min_size < 1:
            raise OptionError(f"--min-size {self.min_size} must be at least 1")
        if self.split is not None and self.split not in SPLITS:
            raise OptionError(f"--split {self.split!r} is not one of {', '.join(SPLITS)}")
        if self.shard_size < 1:
            raise OptionError(f"--shard-size {self.shard_size} must be at least 1")

    def read_options(self) -> formats.ReadOptions:
        return formats.ReadOptions(images=self.images, split=self.split, include_crowd=self.include_crowd,
                                   skip_difficult=self.skip_difficult, masks=self.mask != "none")

    @property
    def extension(self) -> str:
        """The crop format: as given, else PNG for --mask alpha (JPEG has no alpha), else JPEG."""
        return self.image_format or ("png" if self.mask == "alpha" else "jpg")

    def fill_rgb(self) -> tuple[int, int, int]:
        """--mask-fill as three 0-255 integers (`R,G,B`); CLIP's mean colour by default."""
        if self.mask_fill is None:
            return CLIP_MEAN_RGB
        text = self.mask_fill
        try:
            values = [int(v) for v in (text.split(",") if isinstance(text, str) else text)]
        except (TypeError, ValueError):
            values = []
        if len(values) != 3 or not all(0 <= v <= 255 for v in values):
            raise OptionError(f"--mask-fill {text!r} is not three numbers from 0 to 255",
                              hint="e.g. --mask-fill 0,0,0 for black")
        return values[0], values[1], values[2]


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
    ledger: Ledger = field(default_factory=Ledger)  # the conservation rule's counts
    unused_files: list[str] = field(default_factory=list)  # annotation files the reader found, not read
    # --resume (not in clipdata.json: a resumed run's file is the uninterrupted run's):
    resumed: int = 0  # images whose journaled outputs were found whole on disk and kept
    redone: int = 0  # images journaled as done whose files were missing or damaged: made again

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
            "classes": self.classes,  # the global class list: class index i is classes[i] in every split
            "counts": self.counts,
            "captions": self.captions,
            "exports": self.exported,
            **self.ledger.to_dict(),
            "skipped": self.skipped_by_reason,
            "skipped_items": sample_by_reason(self.skipped),  # all of them: skipped.jsonl
            "unused_files": self.unused_files,
            "notes": self.notes,
        }


def _prepare_out(out: Path, overwrite: bool, inputs: list[Path], read: list[Path]) -> None:
    """Check OUT is new, empty, or (with --overwrite) an earlier clipdata output, and empty it.
    `read`: every other file the run reads (the ontology): --overwrite never deletes one."""
    for src in inputs:
        if is_within(src, out):
            raise OutputError("the output folder holds the source", file=out,
                              hint="choose an output folder outside the dataset")
    if out.exists() and not out.is_dir():
        raise OutputError("exists and is not a folder", file=out)
    if out.is_dir() and any(c.name != LOCK_NAME for c in out.iterdir()):
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
        for path in read:
            if is_within(path, out):
                raise OutputError(f"--overwrite would delete {path}, which this run reads", file=out,
                                  hint="move that file out of the output folder first")
        for child in out.iterdir():
            if child.name != LOCK_NAME:
                remove(child)
    out.mkdir(parents=True, exist_ok=True)


def _check_targets(targets: list[str], onto: Ontology, source: Path) -> None:
    renamed = set(onto.renames.values())
    clip.check_class_names(targets, file=(onto.file or "--rename") if any(
        clip.name_problem(t) and t in renamed for t in targets) else source)


def _missing(samples: list[Sample], skip_missing: bool, source: Path, report: Report) -> list[Sample]:
    """Samples whose image is on disk; the others stop the run, or are skipped with their labels."""
    missing = sorted((s for s in samples if s.path is None), key=lambda s: (SPLITS.index(s.split), s.name))
    if missing and not skip_missing:
        shown = ", ".join(repr(s.name) for s in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        looked = "; ".join(missing[0].searched) or "nowhere"
        raise MissingImagesError(
            f"{len(missing)} image(s) not found: {shown}{more} (looked in: {looked}){_case_twin(missing[:5])}",
            file=source, hint="pass --images DIR, or --skip-missing to record them and go on")
    for s in missing:
        report.skipped.append(Skip("missing_image", s.name, f"looked in: {'; '.join(s.searched)}"
                                   + (f"; {len(s.labels)} label(s) lost with it" if s.labels else "")))
        report.ledger.lost_image("missing_image", len(s.labels))
    return [s for s in samples if s.path is not None]


def _case_twin(missing: list[Sample]) -> str:
    """A file whose name differs from a missing image's only by case (`a.JPG` for `a.jpg`):
    an export made where names ignore case (Windows, macOS) and read on Linux. Named, never
    taken: two such files would leave the choice to chance."""
    for s in missing:
        want = PurePosixPath(s.name.replace("\\", "/")).name.casefold()
        for folder in s.searched:
            try:
                twin = next((e for e in sorted(os.listdir(folder)) if e.casefold() == want), None)
            except OSError:
                continue
            if twin is not None:
                return f"; {twin!r} in {folder} differs from {s.name!r} only by case: rename one of them"
    return ""


def _undecodable(samples: list[Sample], onto: Ontology, report: Report) -> list[Sample]:
    """The rule of clipdata/names.py for every reader at once: an image whose name is not
    UTF-8 is left out (`name_not_utf8`) with its labels; so is a label whose class (after
    --rename and the ontology) or annotation id is not."""
    kept, names = [], []
    for s in samples:
        why = problem(s.name, "the image's name")
        if why:
            report.skipped.append(Skip(NOT_UTF8, shown(s.name), why + (f"; {len(s.labels)} label(s) lost with it"
                                                                      if s.labels else "")))
            report.ledger.lost_image(NOT_UTF8, len(s.labels))
            names.append(s.name)
            continue
        labels = []
        for lb in s.labels:
            target = onto.target(lb.name)
            why = (problem(target, "the class") if target is not None else None) \
                or (problem(lb.id, "the annotation id") if isinstance(lb.id, str) else None)
            if why:
                if target is not None and not is_utf8(target) and report.format != "review":  # no --rename there
                    why += f"; or map it: --rename $'{shown(target)}=NEW'"  # bash reads \xNN back as the byte
                names.append(target if target is not None and not is_utf8(target) else str(lb.id))
                report.skipped.append(Skip(NOT_UTF8, s.name, why, lb.id if is_utf8(str(lb.id)) else shown(str(lb.id))))
                report.ledger.lost_labels(NOT_UTF8, 1)
            else:
                labels.append(lb)
        if len(labels) != len(s.labels):
            s.labels[:] = labels
        kept.append(s)
    if names:
        report.notes.append(f"{len(names)} item(s) left out because a name is not UTF-8 (first: "
                            f"{quoted(names[0])}; all in skipped.jsonl): {RENAME_HINT}")
    return kept


def convert(
    source: str | Path,
    out: str | Path,
    format: str = "coco",
    *,
    options: ConvertOptions | None = None,
    overwrite: bool = False,
    resume: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    **kwargs,
) -> Report:
    """Convert a dataset into the CLIP classification layout under `out`; see formats/clip.md.
    `format` "auto" detects it (formats/auto.md).
    Options: a ConvertOptions, or its fields as keywords (template=..., padding=...)."""
    detected = format.lower() == "auto"
    fmt = detect(source) if detected else formats.get(format).name
    o = ConvertOptions.make(options, **kwargs)
    if o.split is not None:
        o = replace(o, split=split_name(o.split) or o.split)
    o.check()
    ratios = parse_ratios(o.split_ratios) if o.split_ratios is not None else None
    exports = parse_exports(o.export)
    pad = Padding.parse(o.padding)
    onto = load_ontology(o.ontology) if o.ontology is not None else Ontology()
    for r in o.rename:
        onto.add_rename(r)
    out = Path(out)
    src = formats.read(fmt, Path(source), o.read_options())
    project = o.project_name or default_project(Path(source))
    group = o.group_name or src.group or "objects"
    mode = o.mode

    report = Report(
        out=out, source=str(source), format=fmt,
        options={
            "mode": mode, "images": str(o.images) if o.images is not None else None, "split": o.split,
            "split_ratios": list(ratios) if ratios else None, "seed": o.seed,
            "template": o.template, "ontology": str(o.ontology) if o.ontology is not None else None,
            "rename": list(o.rename), "include_crowd": o.include_crowd, "skip_difficult": o.skip_difficult,
            "min_size": o.min_size, "padding": str(pad), "square": o.square,
            "image_format": o.extension, "quality": o.quality, "link": o.link,
            "skip_missing": o.skip_missing, "export": exports, "openclip_relative": o.openclip_relative,
            **({"shard_size": o.shard_size} if "webdataset" in exports else {}),
            **({"mask": o.mask} if o.mask != "none" else {}),
            **({"mask_fill": list(o.fill_rgb())} if o.mask == "fill" else {}),
            **({"project_name": project, "group_name": group} if mode == "scenes" else {}),
        },
        skipped=list(src.skipped), notes=([f"format detected: {fmt}"] if detected else []) + list(src.notes),
        unused_files=list(src.unused_files),
    )
    report.ledger.read(src)
    unknown = onto.unknown(src.classes)
    if unknown:
        report.notes.append(f"ontology/--rename name(s) not in the source: {', '.join(map(repr, unknown))}")

    # an image named but not on disk is missing, labeled or not (a listed background image
    # that is not there is not a background image)
    found = _missing(_undecodable(src.samples, onto, report), o.skip_missing, src.path, report)
    samples = found if mode == "scenes" else [s for s in found if s.labels]
    for _ in range(len(found) - len(samples)):
        report.ledger.lost_image("no_labels", 0)
    if ratios is not None:
        samples = resplit(samples, ratios, o.seed)
    samples.sort(key=lambda s: (SPLITS.index(s.split), s.name))
    # class names become folders and captions: refuse a bad one before any is planned, naming
    # the file it came from (the ontology or --rename when a rename made it)
    _check_targets(sorted({t for s in samples for lb in s.labels if (t := onto.target(lb.name)) is not None}),
                   onto, src.path)
    sizes = [len(s.labels) for s in samples]
    early: dict[int, list[str]] = {}  # sample index -> reasons of the boxes skipped before planning
    if mode == "scenes":
        plan = plan_scenes(samples, onto, project, group, report.skipped)
    else:
        early = _drop_outside(samples, pad, o.square, o.min_size, report)
        plan = plan_crops(samples, onto, o.template, o.extension, report.skipped)
        if o.mask != "none":
            unmasked = sum(1 for _, jobs in plan for p in jobs if p.label.box is not None and p.label.mask is None)
            if unmasked:
                report.notes.append(f"--mask {o.mask}: {unmasked} box(es) have no mask (a box, not a polygon or "
                                    "RLE, in the source); cropped as rectangles")
    # per image, the reasons of its labels that became no job, and its label count; then the
    # labels themselves are let go (the jobs keep theirs): memory follows what is kept
    lost = [["dropped_class"] * sum(1 for lb in s.labels if onto.target(lb.name) is None) + early.get(i, [])
            for i, (s, _) in enumerate(plan)]
    for s, _ in plan:
        s.labels.clear()
    planned = [p for _, jobs in plan for p in jobs]
    if not planned:
        reasons = ", ".join(f"{r} {n}" for r, n in Counter(k.reason for k in report.skipped).items())
        raise SourceError(
            f"nothing to convert: {len(src.samples)} image(s), no label left"
            + (f" (skipped: {reasons})" if reasons else ""), file=src.path,
            hint=RENAME_HINT if NOT_UTF8 in reasons else "check the annotations, "
            + ("--include-crowd, " if "include_crowd" in formats.get(fmt).options else "")
            + "--skip-missing or the ontology's drops")
    allocate_names(planned)
    _check_lengths(planned, mode, src.path)

    if fmt == "folder" and is_within(out, src.path):
        raise OutputError("the output folder is inside the source folder", file=out,
                          hint="a later run would read the output as classes; choose a folder outside it")
    # an image folder, and the label folder review apply reads, stay untouched too: a later
    # scan of the images (label, embed) would read the crops as images, and a later
    # `label --overwrite` of the label folder would delete the layout
    label_dir = (src.path if src.path.is_dir() else src.path.parent) if fmt == "review" else None
    for what, folder in (("the --images folder", o.images),
                         ("the label folder", label_dir if label_dir and (label_dir / "label.json").is_file() else None)):
        if folder is not None and is_within(out, Path(folder)):
            raise OutputError(f"the output folder is inside {what}", file=out,
                              hint="that folder stays untouched; choose an output folder outside it")
    fingerprint = hashlib.sha256(json.dumps(
        [__version__, str(source), fmt, report.options], sort_keys=True).encode()).hexdigest()
    read = [Path(o.ontology)] if o.ontology is not None else []
    with locked(out), sigterm_as_interrupt():
        inputs = fingerprint_inputs([Path(source)] + ([Path(source).parent] if Path(source).is_file() else [])
                                    + ([Path(o.images)] if o.images is not None else []) + read, out)
        journaled = replay(out, fingerprint, clip.PROVENANCE, inputs) if resume else {}
        if journaled:  # the disk, not the journal, has the last word
            report.redone = len(verify(out, journaled, lambda i: [p.relpath for p in plan[i][1]],
                                       workers or default_workers()))
            report.resumed = len(journaled)
        if not journaled:
            _prepare_out(out, overwrite or (resume and (out / JOURNAL).is_file()),
                         [src.path] + ([Path(o.images)] if o.images is not None else []), read)

        opts = Options(str(out), pad, o.square, o.min_size, o.extension, o.quality, o.link, o.mask, o.fill_rgb())
        journal = Journal(out, fingerprint, fresh=not journaled, inputs=inputs)
        try:
            written = _execute(plan, lost, sizes, journaled, journal, opts, workers, report, mode == "scenes",
                               progress)
        finally:
            journal.close()
        report.ledger.check()
        ordered = sorted(written, key=lambda p: (SPLITS.index(p.sample.split), p.relpath))
        _finish(out, ordered, report)
        export_options = ExportOptions(relative=o.openclip_relative, shard_size=o.shard_size,
                                       classes=tuple(report.classes))
        for name in exports:
            files = load_export(name).export(out, _rows(ordered), export_options)
            report.exported += [f.relative_to(out).as_posix() for f in files]
        write_skipped(out, report.skipped)
        write_text(out / clip.PROVENANCE, dumps(report.to_dict(), indent=2) + "\n")
        journal.finish([out / clip.MANIFEST, out / clip.PROVENANCE, out / SKIPPED_FILE]
                       + [out / s / clip.TOKENIZATION for s in report.counts] + [out / f for f in report.exported])
    return report


def _drop_outside(samples: list[Sample], pad: Padding, square: bool, min_size: int,
                  report: Report) -> dict[int, list[str]]:
    """Skip, before any pixel is read or any output planned, the boxes that can give no crop
    on their image's declared size (wholly outside it, or too small once clamped), so memory
    follows what is kept, not what a file throws away. Returns, per sample index, the reasons
    of the boxes dropped. The workers apply the same rule to the image's real size."""
    early: dict[int, list[str]] = {}
    for i, s in enumerate(samples):
        if not (s.width and s.height):
            continue
        kept = []
        for label in s.labels:
            why = None if label.box is None else crop_region(
                label.box, (s.width, s.height), padding=pad, square=square, min_size=min_size)
            if isinstance(why, str):
                report.skipped.append(Skip(why, s.name, f"box {list(label.box)}", label.id))
                early.setdefault(i, []).append(why)
            else:
                kept.append(label)
        if len(kept) != len(s.labels):
            s.labels[:] = kept
    return early


def _check_lengths(planned: list[Planned], mode: str, source: Path) -> None:
    """Every folder and file name fits a file system's 255 bytes, checked before anything is
    written, naming the class, scene or annotation that made a name too long."""
    seen: set[str] = set()
    for p in planned:
        if p.target not in seen:
            seen.add(p.target)
            what = f"the scene folder of image {p.sample.name!r}" if mode == "scenes" else f"class {p.target!r}"
            check_name(p.target, what=what, file=source)
        if p.label.box is not None:
            what = f"annotation id {p.label.id!r} of image {p.sample.name!r}"
        else:
            what = f"image {p.sample.name!r}"
        check_name(p.filename, what=what, file=source)


def _execute(plan: list[tuple[Sample, list[Planned]]], lost: list[list[str]], sizes: list[int],
             journaled: dict[int, Result], journal: Journal,
             opts: Options, workers: int | None, report: Report, scenes: bool,
             progress: Progress | None) -> list[Planned]:
    """Run the image tasks not in the journal, journal each result, and fold every result
    into the report in plan order (results arrive in task order, which is plan order)."""
    tasks = [Task(i, str(s.path), s.width, s.height, [(p.relpath, p.label.box, p.label.mask) for p in jobs],
                  s.embedded)
             for i, (s, jobs) in enumerate(plan) if jobs and i not in journaled]
    n_workers = max(1, min(workers or default_workers(), len(tasks) // 4))
    fresh = run(process, tasks, n_workers, init, (opts,))
    written: list[Planned] = []
    try:
        for i, (sample, jobs) in enumerate(plan):
            if jobs:
                result = journaled.pop(i, None)
                if result is None:
                    result = next(fresh)
                    journal.record(result, [p.relpath for p in jobs])
                written += _apply(result, sample, jobs, lost[i], sizes[i], scenes, report)
            else:  # every label dropped or skipped while planning
                report.ledger.image(lost[i], 0)
            if progress:
                progress(i + 1, len(plan))
        next(fresh, None)  # let the pool shut down in order
    finally:
        # an interrupt or error out here (journaling, the report) stops the workers now: left
        # to the garbage collector, the pool outlived the run into the interpreter's exit,
        # where concurrent.futures' own exit hook raced its manager thread (EBADF traceback)
        fresh.close()
    return written


def _apply(result: Result, sample: Sample, jobs: list[Planned], lost: list[str], n_labels: int,
           scenes: bool, report: Report) -> list[Planned]:
    """Fold one image's result into the report and the ledger; return the outputs written.
    `lost`: the reasons of this image's `n_labels` labels that never became a job."""
    kept = n_labels - len(lost)
    lost = list(lost)
    if result.unreadable is not None:
        report.skipped += [Skip("unreadable_image", sample.name, result.unreadable, p.label.id) for p in jobs]
        report.ledger.image(lost + ["unreadable_image"] * kept, 0, image_reason="unreadable_image")
        return []
    for note in result.notes:
        if note == COPIED:
            report.notes.append(note)
        else:
            report.per_image.setdefault(note, []).append(sample.name)
    done = []
    for p, outcome in zip(jobs, result.outputs):
        if isinstance(outcome, str):
            reason, _, why = outcome.partition(": ")
            report.skipped.append(Skip(reason, sample.name, f"box {list(p.label.box)}" + (f": {why}" if why else ""),
                                       p.label.id))
            lost.append(reason)
            continue
        if outcome:
            p.region = tuple(outcome)  # type: ignore[assignment]
            report.crops += 1
        else:
            report.images += 1
        done.append(p)
    report.ledger.image(lost, len(done), labels_written=(kept if done else 0) if scenes else None)
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
        row = {"split": p.sample.split, "class": p.target, "path": p.relpath, "caption": p.caption,
               "source_image": p.sample.name, "box": box, "source_annotation_id": p.label.id}
        if p.label.mask is not None and p.region is not None:
            row["segmentation"] = p.label.mask.coco()  # the object's own mask, in source pixels
        yield row
