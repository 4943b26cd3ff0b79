"""Hand-off to open_clip training: OUT/openclip_<split>.csv with `filepath` and `title`
columns, tab-separated (open_clip's default `--csv-separator`). See formats/openclip.md."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable

from . import ExportOptions
from ...fsutil import write_text


def export(out: Path, rows: Iterable[dict], options: ExportOptions) -> list[Path]:
    """Paths are absolute by default, because open_clip opens them as written."""
    by_split: dict[str, list[dict]] = {}
    for r in rows:
        by_split.setdefault(r["split"], []).append(r)
    written = []
    for split, split_rows in by_split.items():
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="\t", lineterminator="\n")
        w.writerow(["filepath", "title"])
        for r in split_rows:
            w.writerow([r["path"] if options.relative else str((out / r["path"]).resolve()), r["caption"]])
        path = out / f"openclip_{split}.csv"
        write_text(path, buf.getvalue())
        written.append(path)
    return written
