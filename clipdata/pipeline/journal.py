"""The journal behind `convert --resume`: OUT/.clipdata-journal.jsonl, a header line with the
run's fingerprint, then one line per finished image task. A killed run leaves it behind; a
resumed run replays it and does only the rest, so the output is byte-identical to a run that
never stopped. Format: formats/clip.md (resume)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

from ..errors import OutputError
from ..fsutil import TMP_PREFIX
from .jobs import Result

JOURNAL = ".clipdata-journal.jsonl"


def replay(out: Path, fingerprint: str, provenance: str) -> dict[int, Result]:
    """The results a killed run recorded, after checking it was the same command; temporary
    files it left are removed. An empty dict when there is nothing to resume."""
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

    def __init__(self, out: Path, fingerprint: str, fresh: bool) -> None:
        self.path = out / JOURNAL
        self._file: IO[str] = open(self.path, "a", encoding="utf-8")
        if fresh:
            self._file.write(json.dumps({"clipdata_journal": 1, "fingerprint": fingerprint}) + "\n")

    def record(self, result: Result) -> None:
        self._file.write(json.dumps(result.to_json()) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def finish(self) -> None:
        """The run is complete: nothing is left to resume."""
        self.path.unlink()
