"""The review queue of one `clipdata label` output folder: its predictions in review order,
the reviewer's decisions (decisions.jsonl), filters and progress. No HTTP here: the app
in app.py only translates requests into these calls."""
from __future__ import annotations

import errno
import threading
from pathlib import Path, PurePosixPath

from ..errors import OptionError, SourceError
from ..formats.decisions import REJECTED, DecisionLog
from ..formats.review import PREDICTIONS, label_meta, read_predictions

STATES = ("all", "unreviewed", "uncertain", "decided", "reviewed", "rejected")


def _symlinked(file: Path) -> SourceError:
    return SourceError("is a symlink; review serve writes decisions only inside the label folder", file=file,
                       hint="replace the link with the file it points to")


def _margin(top_k: list[dict]) -> float:
    scores = [t["score"] for t in top_k]
    return scores[0] - (scores[1] if len(scores) > 1 else 0.0)


class Queue:
    """Items by index (their row in predictions.jsonl); `order` is the review order."""

    def __init__(self, labeled: str | Path, images: str | Path | None = None) -> None:
        self.folder = Path(labeled)
        meta_file = self.folder / "label.json"
        self.meta = label_meta(self.folder)
        self.classes: list[str] = list(self.meta.get("classes") or [])
        given = images or self.meta.get("images_root")
        try:
            there = bool(given) and Path(given).is_dir()
        except (OSError, ValueError):  # a name too long, a NUL
            there = False
        if not there:
            raise SourceError(f"the image folder {given or '(none recorded)'} is not there", file=meta_file,
                              hint="pass --images with the folder clipdata label read")
        self.root = Path(given).resolve()
        self.items = read_predictions(self.folder, required=True)
        if not self.items:
            raise SourceError("no predictions to review", file=self.folder / PREDICTIONS)
        for i, row in enumerate(self.items):
            row["index"] = i
            row["label_top_k"] = row["top_k"]  # what `label` proposed; progress compares with it
            row.setdefault("uncertain", row.get("decision") is None)
        self.by_path = {row["path"]: row for row in self.items}
        self.log = DecisionLog(self.folder)
        if self.log.path.is_symlink():  # appending would write wherever it points
            raise _symlinked(self.log.path)
        self.log.refresh()
        self.relabeled = False
        self._lock = threading.Lock()
        self.order: list[int] = []
        self._reorder(use_rank=True)

    # -- order and state ---------------------------------------------------------------
    def _reorder(self, use_rank: bool = False) -> None:
        """Review order: `review_rank` when label wrote it, else least margin (top-1 minus
        top-2 score) first; ties by path. After a re-scoring the unreviewed come first."""
        if use_rank and all(isinstance(r.get("review_rank"), int) for r in self.items):
            key = lambda r: (r["review_rank"], r["path"])  # noqa: E731
        elif use_rank:
            key = lambda r: (_margin(r["top_k"]), r["path"])  # noqa: E731
        else:
            key = lambda r: (self.review(r) is not None, _margin(r["top_k"]), r["path"])  # noqa: E731
        self.order = [r["index"] for r in sorted(self.items, key=key)]
        for pos, i in enumerate(self.order):
            self.items[i]["rank"] = pos

    def review(self, row: dict) -> str | None:
        return self.log.current(row["path"])

    def state(self, row: dict) -> str:
        if self.review(row) is not None:
            return "rejected" if self.review(row) == REJECTED else "reviewed"
        return "uncertain" if row["uncertain"] else "decided"

    def item(self, row: dict) -> dict:
        """An item as the HTTP interface returns it."""
        return {"index": row["index"], "path": row["path"], "top_k": row["top_k"],
                "decision": row.get("decision"), "uncertain": row["uncertain"], "review": self.review(row),
                "state": self.state(row), "rank": row["rank"], "width": row.get("width"),
                "height": row.get("height")}

    def query(self, *, state: str = "all", cls: str | None = None, min_score: float | None = None,
              max_score: float | None = None, offset: int = 0, limit: int | None = None) -> dict:
        """Items in review order that pass the filters: `state`, predicted class (the
        current suggestion's top-1) and its score range."""
        if state not in STATES:
            raise OptionError(f"filter {state!r} is not one of {', '.join(STATES)}")
        self.log.refresh()  # another server on this folder may have written
        out = []
        for i in self.order:
            row = self.items[i]
            top = row["top_k"][0]
            st = self.state(row)
            if state == "unreviewed" and st in ("reviewed", "rejected"):
                continue
            if state not in ("all", "unreviewed") and st != state:
                continue
            if cls and top["class"] != cls:
                continue
            if (min_score is not None and top["score"] < min_score) or (
                    max_score is not None and top["score"] > max_score):
                continue
            out.append(row)
        page = out[offset:offset + limit] if limit is not None else out[offset:]
        return {"total": len(out), "offset": offset, "items": [self.item(r) for r in page]}

    # -- decisions ---------------------------------------------------------------------
    def decide(self, decisions: list[tuple[str, str | None]], *, undo: bool = False) -> list[dict]:
        """Check, then save, (path, class) decisions; None (only in an undo) takes a path
        back to not reviewed."""
        allowed = set(self.classes) | {REJECTED}
        for path, cls in decisions:
            if path not in self.by_path:
                raise SourceError(f"{path!r} is not one of the listed images")
            if cls not in allowed and not (undo and cls is None):
                raise OptionError(f"{cls!r} is not a class of this label run",
                                  hint=f"one of {', '.join(self.classes)}, or {REJECTED}")
        try:
            return self.log.append(decisions, undo=undo)
        except OSError as e:
            if e.errno == errno.ELOOP:  # swapped in since the start
                raise _symlinked(self.log.path) from None
            raise SourceError(f"the decision was not saved: {e.strerror or type(e).__name__}", file=self.log.path,
                              hint="free space or fix the folder's permissions, then decide again") from None

    def progress(self) -> dict:
        """Reviewed, remaining, and per proposed class how many the reviewer kept, changed
        or rejected: the facts `review apply` prints, against label's own proposals."""
        per: dict[str, dict[str, int]] = {}
        reviewed = 0
        for row in self.items:
            got = self.review(row)
            if got is None:
                continue
            reviewed += 1
            was = row.get("decision") or row["label_top_k"][0]["class"]
            entry = per.setdefault(was, {"kept": 0, "changed": 0, "rejected": 0})
            entry["rejected" if got == REJECTED else "kept" if got == was else "changed"] += 1
        return {"reviewed": reviewed, "remaining": len(self.items) - reviewed, "total": len(self.items),
                "per_class": dict(sorted(per.items())), "relabeled": self.relabeled}

    # -- files -------------------------------------------------------------------------
    def file(self, index: int) -> Path | None:
        """The image file of a listed item, or None when its path is absolute, climbs out,
        or resolves (through a symlink) outside the image root."""
        if not 0 <= index < len(self.items):
            return None
        rel = PurePosixPath(self.items[index]["path"])
        if rel.is_absolute() or ".." in rel.parts or "\\" in str(rel):
            return None
        try:
            p = (self.root / rel).resolve()
            if self.root not in p.parents or not p.is_file():
                return None
        except (OSError, RuntimeError, ValueError):  # a name too long, a NUL: no such file
            return None
        return p

    # -- re-scoring --------------------------------------------------------------------
    def rescore(self, probs: dict[int, list[float]], top_k: int) -> int:
        """Replace unreviewed items' suggestions with new class probabilities; re-order by
        least margin. Returns how many top-1 suggestions changed."""
        threshold = float(self.meta.get("threshold", 0.5))
        margin = float(self.meta.get("margin", 0.1))
        changed = 0
        with self._lock:
            for i, p in probs.items():
                row = self.items[i]
                order = sorted(range(len(p)), key=lambda j: -p[j])[:max(top_k, 2)]
                top = [{"class": self.classes[j], "score": round(float(p[j]), 6)} for j in order]
                changed += top[0]["class"] != row["top_k"][0]["class"]
                row["uncertain"] = bool(top[0]["score"] < threshold or _margin(top) < margin)
                row["decision"] = None if row["uncertain"] else top[0]["class"]
                row["top_k"] = top[:top_k]
            self.relabeled = True
            self._reorder()
        return changed
