"""The conservation rule of a conversion: every box and every image read is written or
counted under a skip reason, `read == written + sum(skipped)`, checked at the end of every
run and written to clipdata.json. Skipped items: all of them in OUT/skipped.jsonl, a bounded
sample per reason in clipdata.json (a file that drops 200,000 boxes stays readable)."""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import ClipdataError
from ..fsutil import write_with
from ..names import dumps
from ..records import Skip, Source

SKIPPED_FILE = "skipped.jsonl"
SAMPLE_PER_REASON = 20
# Reader reasons that concern one annotation (a box, or a whole-image label) rather than a file.
BOX_REASONS = frozenset({"crowd", "invalid_box", "difficult", "dropped_class", "empty_after_clamp",
                         "smaller_than_min_size", "outside_image", "segmentation_only", "no_box",
                         "unsupported_shape", "empty_polygon", "mask_outside_image", "no_label"})


def is_box_skip(skip: Skip) -> bool:
    return skip.reason in BOX_REASONS


@dataclass
class Tally:
    read: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)

    @property
    def balanced(self) -> bool:
        return self.read == self.written + sum(self.skipped.values())

    def to_dict(self) -> dict:
        return {"read": self.read, "written": self.written, "skipped": dict(sorted(self.skipped.items()))}


@dataclass
class Ledger:
    """Labels are counted as boxes (a box-less label, the whole image, counts as one)."""

    boxes: Tally = field(default_factory=Tally)
    images: Tally = field(default_factory=Tally)

    def read(self, src: Source) -> None:
        """What the reader gave: its samples and labels, and what it left out itself."""
        self.images.read += len(src.samples)
        self.boxes.read += sum(len(s.labels) for s in src.samples)
        for k in src.skipped:
            tally = self.boxes if is_box_skip(k) else self.images
            tally.read += 1
            tally.skipped[k.reason] += 1
            if k.labels and not is_box_skip(k):  # the boxes that went with an image left out
                self.boxes.read += k.labels
                self.boxes.skipped[k.reason] += k.labels

    def image(self, reasons: Iterable[str], written: int, labels_written: int | None = None,
              image_reason: str | None = None) -> None:
        """One source image: `written` outputs made from it, and the reason of each of its
        labels that made none. `labels_written` when outputs are not one per label (scenes);
        `image_reason` when the image itself failed (unreadable)."""
        reasons = list(reasons)
        self.boxes.written += written if labels_written is None else labels_written
        self.boxes.skipped.update(reasons)
        if written:
            self.images.written += 1
        else:
            self.images.skipped[image_reason or (reasons[0] if reasons else "no_labels")] += 1

    def lost_image(self, reason: str, n_labels: int) -> None:
        """An image left out whole (missing on disk, unreadable): its labels go with it."""
        self.images.skipped[reason] += 1
        self.boxes.skipped[reason] += n_labels

    def lost_labels(self, reason: str, n: int) -> None:
        """Labels left out before their image was planned (the image itself goes on)."""
        self.boxes.skipped[reason] += n

    def check(self) -> None:
        """The rule itself: an imbalance is a bug in clipdata, never the user's input."""
        for name, tally in (("boxes", self.boxes), ("images", self.images)):
            if not tally.balanced:
                raise ClipdataError(
                    f"internal check failed: {name} read {tally.read} != written {tally.written} + skipped "
                    f"{sum(tally.skipped.values())} {dict(tally.skipped)}",
                    hint="please report this, with the command you ran")

    def to_dict(self) -> dict:
        return {"boxes": self.boxes.to_dict(), "images": self.images.to_dict()}


def skip_row(s: Skip) -> dict:
    return {k: v for k, v in asdict(s).items() if v not in ("", None) and (k != "labels" or v)}


def sample_by_reason(skipped: list[Skip], limit: int = SAMPLE_PER_REASON) -> list[dict]:
    """The first `limit` items of each reason, in the order they were met."""
    seen: Counter = Counter()
    rows = []
    for s in skipped:
        if seen[s.reason] < limit:
            seen[s.reason] += 1
            rows.append(skip_row(s))
    return rows


def write_skipped(out: Path, skipped: list[Skip]) -> Path | None:
    """Every skipped item, one JSON object a line; no file when nothing was skipped."""
    if not skipped:
        return None
    path = out / SKIPPED_FILE
    write_with(path, lambda f: f.writelines(
        (dumps(skip_row(s)) + "\n").encode("utf-8") for s in skipped))
    return path
