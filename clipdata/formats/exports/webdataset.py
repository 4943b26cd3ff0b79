"""WebDataset tar shards for training at scale: OUT/webdataset/<split>-<shard>.tar, each sample
an image, its caption, its class index in the global class list and its manifest row.
See formats/webdataset.md."""
from __future__ import annotations

import json
import os
import tarfile
from io import BytesIO
from pathlib import Path
from typing import BinaryIO, Iterable

from . import ExportOptions
from ...errors import OptionError, OutputError
from ...fsutil import write_text, write_with
from ...names import dumps

FOLDER = "webdataset"
SIZES = "sizes.json"  # shard name -> samples; open_clip reads it for the dataset size
KEY_DIGITS = 9
# Fixed member metadata, so the same samples always give the same tar bytes.
MTIME = 0
MODE = 0o644


def shard_name(split: str, shard: int) -> str:
    return f"{split}-{shard:06d}.tar"


def sample_key(split: str, number: int) -> str:
    """`train_000000012`: dotless (webdataset cuts the key at the basename's first dot),
    unique across splits, and zero-padded so name order is sample order."""
    return f"{split}_{number:0{KEY_DIGITS}d}"


def export(out: Path, rows: Iterable[dict], options: ExportOptions) -> list[Path]:
    """Write shards of `options.shard_size` samples per split; returns the files written.

    Samples are numbered per split in row (manifest) order. `options.classes` is the global
    sorted class list; when empty, it is the sorted classes of `rows`."""
    if options.shard_size < 1:
        raise OptionError(f"--shard-size {options.shard_size} is not a positive number of samples",
                          hint="use e.g. --shard-size 10000")
    classes = tuple(options.classes)
    if not classes:
        rows = list(rows)
        classes = tuple(sorted({r["class"] for r in rows}))
    index = {name: i for i, name in enumerate(classes)}
    folder = out / FOLDER
    pending: dict[str, list[dict]] = {}
    numbered: dict[str, int] = {}
    sizes: dict[str, dict[str, int]] = {}  # split (first-seen order) -> shard name -> samples

    def flush(split: str) -> None:
        batch = pending.pop(split)
        first = numbered[split] - len(batch)
        path = folder / shard_name(split, first // options.shard_size)
        write_with(path, lambda f: _write_shard(f, out, split, first, batch, index))
        sizes.setdefault(split, {})[path.name] = len(batch)

    for row in rows:
        split = row["split"]
        pending.setdefault(split, []).append(row)
        numbered[split] = numbered.get(split, 0) + 1
        if len(pending[split]) == options.shard_size:
            flush(split)
    for split in list(pending):
        flush(split)
    if not sizes:
        return []
    # Listed split by split, whatever order the last shards were finished in.
    counts = {name: n for per_split in sizes.values() for name, n in per_split.items()}
    write_text(folder / SIZES, json.dumps(counts, indent=1) + "\n")
    return [folder / name for name in counts] + [folder / SIZES]


def _write_shard(f: BinaryIO, out: Path, split: str, first: int, rows: list[dict],
                 index: dict[str, int]) -> None:
    # USTAR suffices: member names are short ASCII keys, so no PAX header is ever needed.
    with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for number, row in enumerate(rows, first):
            key = sample_key(split, number)
            try:
                cls = index[row["class"]]
            except KeyError:
                raise OutputError(f"class {row['class']!r} is not in the global class list",
                                  file=out / "clipdata.json", where="classes",
                                  hint="re-run the conversion with --overwrite") from None
            image = out / row["path"]
            ext = image.suffix.lower().lstrip(".")
            # Sorted within the sample; keys already ascend, so the whole tar is in name order.
            members: list[tuple[str, bytes | Path]] = [
                ("cls", str(cls).encode("ascii")),
                (ext, image),
                ("json", dumps(row).encode("utf-8")),
                ("txt", row["caption"].encode("utf-8")),
            ]
            for member_ext, data in sorted(members, key=lambda m: m[0]):
                _add(tar, f"{key}.{member_ext}", data, out)


def _add(tar: tarfile.TarFile, name: str, data: bytes | Path, out: Path) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = MTIME, MODE, 0, 0, "", ""
    if isinstance(data, bytes):
        info.size = len(data)
        tar.addfile(info, BytesIO(data))
        return
    try:
        fh = open(data, "rb")
    except FileNotFoundError:
        raise OutputError("an image named in the manifest is missing from the output", file=data,
                          hint="re-run the conversion with --overwrite") from None
    with fh:
        info.size = os.fstat(fh.fileno()).st_size
        tar.addfile(info, fh)
