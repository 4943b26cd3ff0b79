"""The command line: typer + rich over the Python API. Each module registers its commands
on the one app (app.py); options shared by several commands live in options.py, tables in
render.py. A command function parses, calls the API, and renders — nothing else."""
from __future__ import annotations

import sys


def _interrupted_while_importing(kind, value, tb, _previous=sys.excepthook) -> None:
    """A Ctrl-C in the first half second of `clipdata ...`, while typer, rich and the commands
    import (before main() can catch it), says 'interrupted' like one at any later point, not
    a page of importlib frames. Installed only while this package imports."""
    if issubclass(kind, KeyboardInterrupt):
        try:
            sys.stderr.write("interrupted\n")
        except (OSError, AttributeError):
            pass
        return
    _previous(kind, value, tb)


_hook, sys.excepthook = sys.excepthook, _interrupted_while_importing
from . import check, convert, embed, label, learn, models, rank, serve  # noqa: E402,F401  (each registers its commands)
from .app import app, main, review_app  # noqa: E402

sys.excepthook = _hook  # imported: main() handles every later interrupt itself

__all__ = ["app", "main", "review_app"]
