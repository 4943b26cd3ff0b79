"""inspect: check any CLIP layout (clipdata's or Roboflow's) against the layout contract.

Errors make the layout unusable (misaligned captions, empty class folders, unreadable
images); warnings are worth a look (the same file in two splits, stray files).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..formats import layout as clip
from ..imagefiles import sha256_file


@dataclass
class ClassRow:
    split: str
    name: str
    images: int
    caption: str | None


@dataclass
class InspectReport:
    root: Path
    rows: list[ClassRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def inspect(layout: str | Path, *, verify_images: bool = True,
            progress: Callable[[int, int], None] | None = None) -> InspectReport:
    """Check a layout; `report.ok` is False when it is broken."""
    from ..images import Unreadable, open_image

    lay = clip.read_layout(layout)
    report = InspectReport(root=lay.root)
    total = sum(len(v) for sl in lay.splits for v in sl.images.values())
    seen: dict[str, list[str]] = {}
    done = 0
    for sl in lay.splits:
        tok = sl.folder / clip.TOKENIZATION
        if sl.captions is None:
            report.errors.append(f"{sl.name}: no {clip.TOKENIZATION}")
        elif len(sl.captions) != len(sl.classes):
            report.errors.append(
                f"{sl.name}: {tok.name} has {len(sl.captions)} caption line(s) for {len(sl.classes)} class folder(s); "
                "line i must caption the i-th folder in sorted() order")
        if sl.trailing_newline:
            report.warnings.append(f"{sl.name}: {tok.name} ends with a newline (readers that split on \\n get an empty last caption)")
        if sl.captions and any(not c.strip() for c in sl.captions):
            report.errors.append(f"{sl.name}: {tok.name} has an empty caption line")
        for path in sl.stray:
            report.warnings.append(f"{sl.name}: stray file {path.name} beside the class folders")
        for path in sl.other_files:
            report.warnings.append(f"{sl.name}: non-image file {path.relative_to(sl.folder).as_posix()}")
        for i, cls in enumerate(sl.classes):
            files = sl.images[cls]
            caption = sl.captions[i] if sl.captions is not None and i < len(sl.captions) else None
            report.rows.append(ClassRow(sl.name, cls, len(files), caption))
            if not files:
                report.errors.append(f"{sl.name}/{cls}: empty class folder")
            for path in files:
                rel = path.relative_to(lay.root).as_posix()
                if verify_images:
                    try:
                        open_image(path)
                    except Unreadable as e:
                        report.errors.append(f"{rel}: unreadable image ({e})")
                seen.setdefault(sha256_file(path), []).append(rel)
                done += 1
                if progress:
                    progress(done, total)
    for paths in seen.values():
        splits = sorted({p.split("/", 1)[0] for p in paths})
        if len(splits) > 1 and len(lay.splits) > 1:
            report.warnings.append(f"same file in {' and '.join(splits)}: {', '.join(paths)} (train/test leakage)")
    return report
