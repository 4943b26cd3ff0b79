"""The journal behind `convert --resume`: OUT/.clipdata-journal.jsonl, a header line with the
run's fingerprint, then one line per finished image task. A killed run leaves it behind; a
resumed run replays it and does only the rest, so the output is byte-identical to a run that
never stopped. Format: formats/clip.md (resume)."""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import IO, Iterable

from ..errors import OutputError
from ..fsutil import TMP_PREFIX
from ..imagefiles import is_image_name, sha256_file
from .jobs import Result

JOURNAL = ".clipdata-journal.jsonl"
# Files whose content is hashed (annotations, lists, class names); any other file (images,
# archives) counts by size and modification time, so a resume never reads every image.
_HASHED = (".json", ".jsonl", ".xml", ".txt", ".yaml", ".yml", ".csv", ".names", ".data")


def _files(root: Path, skip: Path) -> Iterable[Path]:
    """Every regular file under root (or root itself), sorted, links not followed, `skip` left out."""
    if not root.is_dir():
        yield root
        return
    skip_real = os.path.realpath(skip)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) != skip_real)
        for f in sorted(filenames):
            yield Path(dirpath, f)


def fingerprint_inputs(inputs: Iterable[Path], out: Path) -> dict[str, str]:
    """What the run reads, as {file: digest} for annotation-like files (content hash with size
    and mtime) plus one "<other files>" digest over every other file's path, size and mtime.
    A resume compares it, so an edited annotation file is named rather than mixed in."""
    digests: dict[str, str] = {}
    others = hashlib.sha256()
    for root in inputs:
        for path in _files(Path(root), out):
            try:
                st = path.stat()
            except OSError:
                continue  # a link to nothing, a file gone while walking
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
            if path.suffix.lower() in _HASHED and not is_image_name(path.name) and stat.S_ISREG(st.st_mode):
                # (a pipe named like an annotation file would block the hash: it counts by stamp)
                digests[str(path)] = f"{stamp}:{sha256_file(path)}"
            else:
                others.update(f"{path}\0{stamp}\n".encode("utf-8", "surrogateescape"))
    digests["<other files>"] = others.hexdigest()
    return digests


def _changed(old: dict[str, str], new: dict[str, str]) -> str:
    names = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    shown = ["image or other files (added, removed or modified)" if n == "<other files>" else n for n in names[:3]]
    return ", ".join(shown) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def replay(out: Path, fingerprint: str, provenance: str, inputs: dict[str, str] | None = None) -> dict[int, Result]:
    """The results a killed run recorded, after checking it was the same command over the same
    inputs; temporary files it left are removed. An empty dict when there is nothing to resume."""
    journal = out / JOURNAL
    if not journal.is_file():
        if (out / provenance).is_file():
            raise OutputError("holds a finished conversion: nothing to resume", file=out,
                              hint="pass --overwrite to convert again")
        return {}
    lines = journal.read_text(encoding="utf-8").split("\n")
    try:
        header = json.loads(lines[0])
    except (json.JSONDecodeError, IndexError):
        header = {}
    if header.get("fingerprint") != fingerprint:
        raise OutputError("the interrupted run in this folder used another source or other options",
                          file=out, hint="repeat the original command with --resume, or pass --overwrite")
    if inputs is not None and header.get("inputs") != inputs:
        raise OutputError(f"the source changed since the interrupted run: {_changed(header.get('inputs') or {}, inputs)}",
                          file=out, hint="a resume would mix old and new outputs: pass --overwrite to convert again")
    results: dict[int, Result] = {}
    for line in lines[1:]:
        try:
            r = Result.from_json(json.loads(line))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # the line being written when the run was killed
        results[r.index] = r
    for dirpath, _, filenames in os.walk(out):
        for f in filenames:
            if f.startswith(TMP_PREFIX):
                os.unlink(os.path.join(dirpath, f))
    return results


class Journal:
    """Appends results as they are folded in; each line is flushed before the next task's."""

    def __init__(self, out: Path, fingerprint: str, fresh: bool, inputs: dict[str, str] | None = None) -> None:
        self.path = out / JOURNAL
        self._file: IO[str] = open(self.path, "a", encoding="utf-8")
        if fresh:
            header = {"clipdata_journal": 1, "fingerprint": fingerprint, "inputs": inputs}
            self._file.write(json.dumps(header) + "\n")
            self._file.flush()

    def record(self, result: Result) -> None:
        self._file.write(json.dumps(result.to_json()) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def finish(self) -> None:
        """The run is complete: nothing is left to resume."""
        self.path.unlink()
