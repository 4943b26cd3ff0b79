"""review apply: the reviewed pre-labels become a CLIP layout (the convert contract), and
the reviewer's corrections measure the pre-labeler's real accuracy."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..formats import layout as clip, review
from .convert import Report, convert


@dataclass
class ReviewReport:
    layout: Report
    changes: dict[str, dict[str, int]]  # proposed class -> {"kept": n, "changed": n}

    @property
    def accuracy(self) -> float | None:
        kept = sum(c["kept"] for c in self.changes.values())
        total = kept + sum(c["changed"] for c in self.changes.values())
        return kept / total if total else None


def review_apply(reviewed: str | Path, out: str | Path, *, images: str | Path | None = None,
                 **options) -> ReviewReport:
    """`reviewed`: the label output folder (its review/ tree), a Label Studio JSON export, or
    an edited predictions.csv. Options are convert's (template, split, overwrite, ...)."""
    report = convert(reviewed, out, format="review", images=images, **options)
    final = {}  # what was applied, from the layout's own manifest: the source is read once
    for line in (Path(out) / clip.MANIFEST).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        final[row["source_image"]] = row["class"]
    return ReviewReport(report, review.changes(reviewed, final))
