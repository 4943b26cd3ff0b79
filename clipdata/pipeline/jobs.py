"""The per-image work of a conversion, run in worker processes: open one source image once,
write all its crops and copies atomically, report what was written.

Tasks and results are small and picklable (and results JSON-able, for the resume journal);
options reach each worker once through `init`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..crops import Padding, crop_region
from ..fsutil import copy_file, file_digest, link_or_copy, write_bytes, write_with
from ..masks import Mask


@dataclass(frozen=True)
class Options:
    out: str
    padding: Padding
    square: bool
    min_size: int
    image_format: str
    quality: int
    link: bool
    mask: str = "none"  # none, fill (outside the mask: `fill`), alpha (the mask as alpha)
    fill: tuple[int, int, int] = (0, 0, 0)


@dataclass(slots=True)
class Task:
    index: int
    path: str
    width: int | None
    height: int | None
    # (relpath, box or None, mask or None): a box is cropped, None copies the whole image
    outputs: list[tuple[str, tuple[float, float, float, float] | None, Mask | None]]
    embedded: bool = False  # `path` is a LabelMe JSON holding the image (base64 imageData)


@dataclass(slots=True)
class Result:
    """Per output: the crop region taken, [] for a whole image, or the skip reason (with a
    detail after ": " where the box alone does not say why); and, per output written, its
    [size, sha256] on disk (None for a skipped one), which a resume checks before relying on
    the file."""

    index: int
    outputs: list[list[int] | str] = field(default_factory=list)
    unreadable: str | None = None
    notes: list[str] = field(default_factory=list)  # keys of per-image notes
    files: list[list | None] = field(default_factory=list)  # per output: [size, sha256] or None

    def to_json(self) -> dict:
        return {"i": self.index, "o": self.outputs, "u": self.unreadable, "n": self.notes, "f": self.files}

    @classmethod
    def from_json(cls, d: dict) -> "Result":
        r = cls(d["i"], d["o"], d["u"], d["n"], d["f"])
        if not isinstance(r.index, int) or not isinstance(r.outputs, list) or not isinstance(r.files, list) \
                or len(r.files) != len(r.outputs):
            raise TypeError("not a journal result")
        return r

    def written(self) -> list[int]:
        """The positions of the outputs this task wrote."""
        return [k for k, o in enumerate(self.outputs) if not isinstance(o, str)]


ROTATED = "EXIF orientation applied (the annotated size is the rotated size)"
MISMATCH = "annotated width/height differ from the image's; boxes were clamped to the image"
COPIED = "--link: hard links are not possible here; files were copied"

_options: Options | None = None


def init(options: Options) -> None:
    global _options
    _options = options


def process(task: Task) -> Result:
    from ..images import Unreadable, open_embedded, open_image, orient, save, to_rgb

    opts = _options
    assert opts is not None, "init() first"
    out = Path(opts.out)
    result = Result(task.index)
    try:
        img = open_embedded(Path(task.path)) if task.embedded else open_image(Path(task.path))
    except Unreadable as e:
        result.unreadable = str(e)
        return result
    rgb = None
    for relpath, box, mask in task.outputs:
        if box is None:
            result.outputs.append([])
            continue
        if rgb is None:
            oriented, applied = orient(img, task.width, task.height)
            if applied:
                result.notes.append(ROTATED)
            if task.width and task.height and (task.width, task.height) != oriented.size:
                result.notes.append(MISMATCH)
            rgb = to_rgb(oriented)
        region = crop_region(box, rgb.size, padding=opts.padding, square=opts.square, min_size=opts.min_size)
        if isinstance(region, str):
            result.outputs.append(region)
            continue
        crop = rgb.crop(region)
        if mask is not None and opts.mask != "none":
            crop = _masked(crop, mask, rgb.size, region, opts)
            if isinstance(crop, str):
                result.outputs.append(f"mask_outside_image: {crop}")
                continue
        if "icc_profile" in rgb.info:
            crop.info["icc_profile"] = rgb.info["icc_profile"]
        write_with(out / relpath, lambda f: save(crop, f, opts.image_format, opts.quality))
        result.outputs.append(list(region))
    for (relpath, box, _), done in zip(task.outputs, result.outputs):
        if box is None:
            if task.embedded:  # the image file itself, as the JSON carries it
                from ..images import embedded_bytes

                write_bytes(out / relpath, embedded_bytes(Path(task.path)))
            else:
                _copy(Path(task.path), out / relpath, opts.link, result)
    result.files = [None if isinstance(done, str) else list(file_digest(out / relpath))
                    for (relpath, _, _), done in zip(task.outputs, result.outputs)]
    return result


def _masked(crop, mask: Mask, size: tuple[int, int], region: tuple[int, int, int, int], opts: Options):
    """The crop with its outside filled (`fill`) or made transparent (`alpha`); the reason
    when the mask cannot be cut (no pixel in the crop, a mask of another size)."""
    from PIL import Image

    from ..masks import window

    inside = window(mask, size, region)
    if isinstance(inside, str):
        return inside
    if opts.mask == "fill":
        return Image.composite(crop, Image.new("RGB", crop.size, opts.fill), inside)
    crop = crop.convert("RGBA")
    crop.putalpha(inside)
    return crop


def _copy(src: Path, dst: Path, link: bool, result: Result) -> None:
    if not link:
        copy_file(src, dst)
    elif not link_or_copy(src, dst) and COPIED not in result.notes:
        result.notes.append(COPIED)
