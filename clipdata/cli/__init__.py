"""The command line: typer + rich over the Python API. Each module registers its commands
on the one app (app.py); options shared by several commands live in options.py, tables in
render.py. A command function parses, calls the API, and renders — nothing else."""
from __future__ import annotations

from . import check, convert, embed, label, learn, models, rank, serve  # noqa: F401  (each registers its commands)
from .app import app, main, review_app

__all__ = ["app", "main", "review_app"]
