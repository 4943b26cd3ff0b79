"""The check report as one self-contained page (placeholder)."""
from __future__ import annotations


def require() -> None:
    pass


def write_page(path, report, paths, rel) -> None:
    from .fsutil import write_text
    write_text(path, "<html></html>")
