"""The transform between records and the layout writer: which output images a source gives,
their class folder, caption and file name. Nothing is written here, and nothing read but the
first bytes of a whole image whose name has no image extension (`_whole_name`).

Two modes: `crops` (a box becomes a crop, a box-less label the whole image) and `scenes`
(Roboflow's CLIP export: the whole image, in a folder named by the set of its classes).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from ..captions import Ontology, background_folder, scene_caption, scene_folder
from ..errors import OptionError
from ..fsutil import NAME_MAX, name_bytes, safe_name
from ..imagefiles import is_image_name, sniffed_extension
from ..records import SPLITS, Label, Sample, Skip


@dataclass(slots=True)
class Planned:
    """One output image: where it goes, its caption, and what it comes from."""

    sample: Sample
    label: Label  # for scenes: a box-less label named by the folder
    target: str  # class folder
    caption: str
    filename: str
    region: tuple[int, int, int, int] | None = None  # set when the crop is taken

    @property
    def relpath(self) -> str:
        return f"{self.sample.split}/{self.target}/{self.filename}"


def _safe_component(text: str) -> str:
    """A file-name component: separators and control characters become '_'; no leading dot."""
    out = "".join("_" if ch in "/\\" or ord(ch) < 32 or ord(ch) == 127 else ch for ch in text)
    return "_" + out if out.startswith(".") or out == "" else out


# Room kept below NAME_MAX for what allocate_names may add (`_` + 8 hex, then `-N`).
NAME_ROOM = NAME_MAX - 16


def _fit(name: str) -> str:
    """The name as it is when it fits; else its stem cut, with a short hash of the whole
    name, so that it fits and distinct long names stay distinct (decided: a 250-byte source
    name is converted, not refused; the manifest's source_image keeps the full name)."""
    if name_bytes(name) <= NAME_ROOM:
        return name
    stem, dot, ext = name.rpartition(".")
    stem, ext = (stem, "." + ext) if dot and name_bytes(ext) < 32 else (name, "")
    return safe_name(stem, suffix=ext, limit=NAME_ROOM)


def _whole_name(sample: Sample, base: str) -> str:
    """A whole image is copied byte for byte under its own name; a name without an image
    extension (a COCO `file_name` of `scan.txt` or `IMG_1`) gets its content's, so that
    loaders that go by extension (torchvision's ImageFolder, open_clip's CSV readers) do not
    pass it over: `scan.txt.png` (decided; formats/clip.md)."""
    if is_image_name(base) or sample.path is None or sample.embedded:
        return base
    ext = sniffed_extension(sample.path)
    return f"{base}.{ext}" if ext else base


def _file_name(sample: Sample, label: Label, fmt: str) -> str:
    base = PurePosixPath(sample.name.replace("\\", "/")).name
    if label.box is None:
        return _fit(_safe_component(_whole_name(sample, base)))
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return _fit(_safe_component(f"{stem}_{label.id}.{fmt}"))


def _kept(s: Sample, onto: Ontology, skipped: list[Skip]) -> list[tuple[Label, str]]:
    """The image's labels with their target classes; labels of dropped classes are skipped."""
    kept = []
    for label in s.labels:
        target = onto.target(label.name)
        if target is None:
            skipped.append(Skip("dropped_class", s.name, label.name, label.id))
        else:
            kept.append((label, target))
    return kept


def plan_crops(samples: list[Sample], onto: Ontology, template: str, fmt: str,
               skipped: list[Skip]) -> list[tuple[Sample, list[Planned]]]:
    """Per source image, one output per kept label: a crop for a box, else the whole image."""
    return [(s, [Planned(s, label, target, onto.caption(target, template), _file_name(s, label, fmt))
                 for label, target in _kept(s, onto, skipped)]) for s in samples]


def plan_scenes(samples: list[Sample], onto: Ontology, project: str, group: str,
                skipped: list[Skip]) -> list[tuple[Sample, list[Planned]]]:
    """Per source image, the whole image in the folder named by its classes and counts."""
    plan = []
    for s in samples:
        counts: dict[str, int] = {}
        for _, target in _kept(s, onto, skipped):
            counts[target] = counts.get(target, 0) + 1
        folder = scene_folder(counts) if counts else background_folder(group)
        label = Label(folder)
        plan.append((s, [Planned(s, label, folder, scene_caption(project, counts, group), _file_name(s, label, "jpg"))]))
    return plan


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


def parse_ratios(text: str | tuple[float, ...] | list[float]) -> tuple[float, float, float]:
    """`0.8,0.1,0.1` (train, valid, test) or `0.9,0.1`; non-negative, summing to 1."""
    try:
        values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise OptionError(f"--split-ratios {text!r} is not a list of numbers", hint="e.g. 0.8,0.1,0.1") from None
    if not 2 <= len(values) <= 3 or any(not math.isfinite(v) or v < 0 for v in values) \
            or abs(sum(values) - 1) > 1e-6:
        raise OptionError(f"--split-ratios {text!r} must be 2 or 3 non-negative numbers that sum to 1",
                          hint="train,valid[,test], e.g. 0.8,0.1,0.1")
    return tuple(values + [0.0] * (3 - len(values)))  # type: ignore[return-value]


def resplit(samples: list[Sample], ratios: tuple[float, float, float], seed: int) -> list[Sample]:
    """Deterministic re-split by source image (all crops of one photo land in one split):
    images ordered by a seeded hash of their source split and name, then cut by the ratios."""
    def key(s: Sample) -> str:
        return hashlib.sha256(f"{seed}\0{s.split}\0{s.name}".encode("utf-8")).hexdigest()

    ordered = sorted(samples, key=key)
    n = len(ordered)
    cuts = [round(n * ratios[0]), round(n * (ratios[0] + ratios[1]))]
    return [replace(s, split=SPLITS[0 if i < cuts[0] else 1 if i < cuts[1] else 2])
            for i, s in enumerate(ordered)]
