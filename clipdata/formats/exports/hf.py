"""Hand-off to Hugging Face `datasets`: a `metadata.jsonl` per split folder, so that
`load_dataset("imagefolder", data_dir=OUT)` gives image, label and text. See formats/hf.md."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from . import ExportOptions
from ...fsutil import write_text
from ...names import dumps

METADATA = "metadata.jsonl"


def export(out: Path, rows: Iterable[dict], options: ExportOptions) -> list[Path]:
    """Write OUT/<split>/metadata.jsonl from manifest rows; returns the files written."""
    by_split: dict[str, list[str]] = {}
    for r in rows:
        line = {"file_name": r["path"].split("/", 1)[1], "label": r["class"], "text": r["caption"]}
        by_split.setdefault(r["split"], []).append(dumps(line) + "\n")
    written = []
    for split, lines in by_split.items():
        path = out / split / METADATA
        write_text(path, "".join(lines))
        written.append(path)
    return written
