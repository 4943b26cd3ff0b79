"""convert (named conversion so that `clipdata.convert` stays the function): reader -> records -> crop/caption transform -> CLIP layout writer.

Nothing here knows which format a record came from: a label with a box becomes a crop, a
label without one the whole image. Every output name is planned before anything is written,
so names are deterministic and collision-free whatever the processing order.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from . import __version__
from . import formats
from .captions import DEFAULT_TEMPLATE, Ontology, check_template, load_ontology
from .crops import Padding, crop_region
from .errors import MissingImagesError, OptionError, OutputError, SourceError
from .formats import clip
from .fsutil import copy_file, is_within, link_file, write_bytes, write_text
from .records import SPLITS, Label, Sample, Skip

Progress = Callable[[int, int], None]


@dataclass
class Planned:
    """One output image: where it goes and what it comes from."""

    sample: Sample
    label: Label
    target: str  # output class folder
    filename: str
    region: tuple[int, int, int, int] | None = None  # filled when the crop is taken

    @property
    def relpath(self) -> str:
        return f"{self.sample.split}/{self.target}/{self.filename}"


@dataclass
class Report:
    """What a conversion did; `clipdata.json` is this, as JSON."""

    out: Path
    source: str
    format: str
    options: dict
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> images
    captions: dict[str, str] = field(default_factory=dict)  # class -> caption
    images: int = 0  # whole images written
    crops: int = 0
    skipped: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
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
            "skipped": self.skipped_by_reason,
            "skipped_items": [
                {k: v for k, v in asdict(s).items() if v not in ("", None)} for s in self.skipped
            ],
            "notes": self.notes,
        }


def _safe_component(text: str) -> str:
    """A file-name component: separators and control characters become '_'; no leading dot."""
    out = "".join("_" if ch in "/\\" or ord(ch) < 32 or ord(ch) == 127 else ch for ch in text)
    return "_" + out if out.startswith(".") or out == "" else out


def _base_name(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).name


def _planned_name(sample: Sample, label: Label, fmt: str) -> str:
    base = _base_name(sample.name)
    if label.box is None:
        return _safe_component(base)
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return _safe_component(f"{stem}_{label.id}.{fmt}")


def allocate_names(planned: list[Planned]) -> None:
    """Make file names unique per class folder, case-insensitively (macOS, Windows). Every
    member of a clashing group gets a short hash of its source name and annotation id, so a
    name never depends on which file was read first."""
    groups: dict[tuple, list[Planned]] = {}
    for p in planned:
        groups.setdefault((p.sample.split, p.target, p.filename.casefold()), []).append(p)
    for group in groups.values():
        if len(group) > 1:
            for p in group:
                key = f"{p.sample.name}\0{p.label.id}".encode("utf-8")
                stem, dot, ext = p.filename.rpartition(".")
                stem, ext = (stem, "." + ext) if dot else (p.filename, "")
                p.filename = f"{stem}_{hashlib.sha1(key).hexdigest()[:8]}{ext}"
    seen: set[tuple] = set()
    for p in planned:  # identical source name and id twice: number them in planning order
        stem, dot, ext = p.filename.rpartition(".")
        stem, ext = (stem, "." + ext) if dot else (p.filename, "")
        n = 1
        while (key := (p.sample.split, p.target, p.filename.casefold())) in seen:
            n += 1
            p.filename = f"{stem}-{n}{ext}"
        seen.add(key)


def _prepare_out(out: Path, overwrite: bool, inputs: list[Path]) -> None:
    for src in inputs:
        if is_within(src, out):
            raise OutputError("the output folder holds the source", file=out,
                              hint="choose an output folder outside the dataset")
    if out.exists() and not out.is_dir():
        raise OutputError("exists and is not a folder", file=out)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputError("already holds files", file=out,
                              hint="choose an empty or new folder, or pass --overwrite to replace an earlier clipdata output")
        if not (out / clip.PROVENANCE).is_file():
            raise OutputError(
                f"holds files that clipdata did not write (no {clip.PROVENANCE}); --overwrite only replaces clipdata output",
                file=out, hint="choose an empty or new folder")
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _check_options(template: str, image_format: str, quality: int, min_size: int, split: str | None) -> None:
    check_template(template)
    if image_format not in ("jpg", "png", "webp"):
        raise OptionError(f"--image-format {image_format!r} is not one of jpg, png, webp")
    if not 1 <= quality <= 100:
        raise OptionError(f"--quality {quality} must be between 1 and 100")
    if min_size < 1:
        raise OptionError(f"--min-size {min_size} must be at least 1")
    if split is not None and formats.split_name(split) != split:
        raise OptionError(f"--split {split!r} is not one of {', '.join(SPLITS)}")


def convert(
    source: str | Path,
    out: str | Path,
    format: str = "coco",
    *,
    images: str | Path | None = None,
    split: str | None = None,
    template: str = DEFAULT_TEMPLATE,
    ontology: str | Path | None = None,
    rename: list[str] | tuple[str, ...] = (),
    include_crowd: bool = False,
    min_size: int = 1,
    padding: str | float | None = None,
    square: bool = False,
    image_format: str = "jpg",
    quality: int = 95,
    link: bool = False,
    skip_missing: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Report:
    """Convert a dataset into the CLIP classification layout under `out`; see formats/clip.md."""
    fmt = formats.get(format).name
    if split is not None:
        split = formats.split_name(split) or split
    _check_options(template, image_format, quality, min_size, split)
    pad = Padding.parse(padding)
    onto = load_ontology(ontology) if ontology is not None else Ontology()
    for r in rename:
        onto.add_rename(r)
    out = Path(out)
    src = formats.load(fmt).read(Path(source), images=images, split=split, include_crowd=include_crowd)

    report = Report(
        out=out, source=str(source), format=fmt,
        options={
            "images": str(images) if images is not None else None, "split": split,
            "template": template, "ontology": str(ontology) if ontology is not None else None,
            "rename": list(rename), "include_crowd": include_crowd, "min_size": min_size,
            "padding": str(pad), "square": square, "image_format": image_format,
            "quality": quality, "link": link, "skip_missing": skip_missing,
        },
        skipped=list(src.skipped), notes=list(src.notes),
    )
    unknown = onto.unknown(src.classes)
    if unknown:
        report.notes.append(f"ontology/--rename name(s) not in the source: {', '.join(map(repr, unknown))}")

    samples = sorted(src.samples, key=lambda s: (SPLITS.index(s.split), s.name))
    missing = [s for s in samples if s.path is None]
    if missing and not skip_missing:
        shown = ", ".join(repr(s.name) for s in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        looked = "; ".join(missing[0].searched) or "nowhere"
        raise MissingImagesError(
            f"{len(missing)} image(s) not found: {shown}{more} (looked in: {looked})",
            file=src.path, hint="pass --images DIR, or --skip-missing to record them and go on")
    for s in missing:
        report.skipped.append(Skip("missing_image", s.name, f"looked in: {'; '.join(s.searched)}"))
    samples = [s for s in samples if s.path is not None]

    planned: list[Planned] = []
    by_sample: list[list[Planned]] = []
    for s in samples:
        jobs = []
        for label in s.labels:
            target = onto.target(label.name)
            if target is None:
                report.skipped.append(Skip("dropped_class", s.name, label.name, label.id))
                continue
            jobs.append(Planned(s, label, target, _planned_name(s, label, image_format)))
        planned += jobs
        by_sample.append(jobs)
    if not planned:
        reasons = ", ".join(f"{r} {n}" for r, n in Counter(k.reason for k in report.skipped).items())
        raise SourceError(
            f"nothing to convert: {len(src.samples)} image(s), no label left"
            + (f" (skipped: {reasons})" if reasons else ""),
            file=src.path, hint="check the annotations, --include-crowd, --skip-missing or the ontology's drops")
    clip.check_class_names(sorted({p.target for p in planned}))
    allocate_names(planned)

    inputs = [src.path] + ([Path(images)] if images is not None else [])
    if fmt == "folder" and is_within(out, src.path):
        raise OutputError("the output folder is inside the source folder", file=out,
                          hint="a later run would read the output as classes; choose a folder outside it")
    _prepare_out(out, overwrite, inputs)

    written: list[Planned] = []
    state = {"link_failed": False}
    for done, (sample, jobs) in enumerate(zip(samples, by_sample), 1):
        if jobs:
            written += _process(sample, jobs, out, report, pad, square, min_size,
                                image_format, quality, link, state)
        if progress:
            progress(done, len(samples))
    _finish(out, written, onto, template, report)
    return report


def _process(sample: Sample, jobs: list[Planned], out: Path, report: Report, pad: Padding,
             square: bool, min_size: int, image_format: str, quality: int, link: bool,
             state: dict) -> list[Planned]:
    """Write every output of one source image, opening it once."""
    from .images import Unreadable, encode, open_image, orient, to_rgb

    assert sample.path is not None
    try:
        img = open_image(sample.path)
    except Unreadable as e:
        for p in jobs:
            report.skipped.append(Skip("unreadable_image", sample.name, str(e), p.label.id))
        return []
    done: list[Planned] = []
    crops = [p for p in jobs if p.label.box is not None]
    if crops:
        oriented, applied = orient(img, sample.width, sample.height)
        if applied:
            report.per_image.setdefault(
                "EXIF orientation applied (the annotated size is the rotated size)", []).append(sample.name)
        if sample.width and sample.height and (sample.width, sample.height) != oriented.size:
            report.per_image.setdefault(
                "annotated width/height differ from the image's; boxes were clamped to the image",
                []).append(sample.name)
        rgb = to_rgb(oriented)
        for p in crops:
            region = crop_region(p.label.box, rgb.size, padding=pad, square=square, min_size=min_size)
            if isinstance(region, str):
                report.skipped.append(Skip(region, sample.name, f"box {list(p.label.box)}", p.label.id))
                continue
            crop = rgb.crop(region)
            if "icc_profile" in rgb.info:
                crop.info["icc_profile"] = rgb.info["icc_profile"]
            write_bytes(out / p.relpath, encode(crop, image_format, quality))
            p.region = region
            report.crops += 1
            done.append(p)
    for p in (p for p in jobs if p.label.box is None):
        dst = out / p.relpath
        if link and not state["link_failed"]:
            try:
                link_file(sample.path, dst)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise
                state["link_failed"] = True
                report.notes.append(f"--link: hard links are not possible here ({e.strerror}); files were copied")
        if not link or state["link_failed"]:
            copy_file(sample.path, dst)
        report.images += 1
        done.append(p)
    return done


def _finish(out: Path, written: list[Planned], onto: Ontology, template: str, report: Report) -> None:
    """Caption files, manifest and provenance, written last (each atomically)."""
    per_split: dict[str, dict[str, int]] = {}
    for p in written:
        per_split.setdefault(p.sample.split, {}).setdefault(p.target, 0)
        per_split[p.sample.split][p.target] += 1
    report.counts = {s: dict(sorted(per_split[s].items())) for s in SPLITS if s in per_split}
    report.captions = {c: onto.caption(c, template) for c in report.classes}
    for split, classes in report.counts.items():
        clip.write_tokenization(out / split, {c: report.captions[c] for c in classes})
    rows = sorted(written, key=lambda p: (SPLITS.index(p.sample.split), p.relpath))
    lines = []
    for p in rows:
        box = None
        if p.region is not None:
            left, top, right, bottom = p.region
            box = [left, top, right - left, bottom - top]
        lines.append(clip.manifest_line({
            "split": p.sample.split, "class": p.target, "path": p.relpath,
            "caption": report.captions[p.target], "source_image": p.sample.name,
            "box": box, "source_annotation_id": p.label.id,
        }))
    write_text(out / clip.MANIFEST, "".join(lines))
    for note, names in report.per_image.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        report.notes.append(f"{len(names)} image(s): {note}: {shown}")
    report.notes = list(dict.fromkeys(report.notes))
    write_text(out / clip.PROVENANCE, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
