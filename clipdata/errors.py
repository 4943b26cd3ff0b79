"""The exception hierarchy. Every error a user can cause is a ClipdataError that knows
the file, the place in it and what to do, so the CLI prints one clear line, never a traceback."""
from __future__ import annotations

from pathlib import Path


class ClipdataError(Exception):
    """Base class: `file` and `where` locate the problem, `hint` says what to do."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        where: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = str(file) if file is not None else None
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        place = ""
        if self.file:
            place = self.file + (f" ({self.where})" if self.where else "") + ": "
        elif self.where:
            place = self.where + ": "
        return place + self.message + (f" — {self.hint}" if self.hint else "")


class SourceError(ClipdataError):
    """The input dataset is unreadable, malformed or inconsistent."""


class MissingImagesError(SourceError):
    """Annotations name images that are not on disk."""


class ClassNameError(ClipdataError):
    """A class name cannot become a folder (or two collide)."""


class OptionError(ClipdataError):
    """An option or an option file (template, ontology) is invalid."""


class OutputError(ClipdataError):
    """The output folder cannot be written as asked."""


class LayoutError(ClipdataError):
    """A CLIP layout on disk breaks the layout contract."""


class WorkerError(ClipdataError):
    """A worker process died; the work done so far can be resumed."""


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line (libraries' messages run to pages), or
    its type when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
