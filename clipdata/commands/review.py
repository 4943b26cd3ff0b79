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
    # proposed class -> {"kept", "changed", "moved", "unreviewed"}: formats/review.md
    changes: dict[str, dict[str, int]]

    def _sum(self, key: str) -> int:
        return sum(c.get(key, 0) for c in self.changes.values())

    @property
    def reviewed(self) -> int:
        """Applied images whose class a person gave or confirmed (kept + changed)."""
        return self._sum("kept") + self._sum("changed")

    @property
    def unreviewed(self) -> int:
        """Applied as label proposed, with no record that anyone looked."""
        return self._sum("unreviewed")

    @property
    def moved(self) -> int:
        return self._sum("moved")

    @property
    def accuracy(self) -> float | None:
        """The pre-labels' accuracy on what a person chose (a move in the review tree says
        "wrong", but leaving a file says nothing, so moves are left out); None when nothing
        was chosen."""
        chosen = self.reviewed - self.moved
        return self._sum("kept") / chosen if chosen else None


def review_apply(reviewed: str | Path, out: str | Path, *, images: str | Path | None = None,
                 **options) -> ReviewReport:
    """`reviewed`: the label output folder (its review/ tree), a Label Studio JSON export, or
    an edited predictions.csv. Options are convert's (template, split, overwrite, ...)."""
    report = convert(reviewed, out, format="review", images=images, **options)
    final = {}  # what was applied, from the layout's own manifest: the source is read once
    for line in (Path(out) / clip.MANIFEST).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        final[row["source_image"]] = row["class"]
    return ReviewReport(report, review.changes(reviewed, final, images=images))
