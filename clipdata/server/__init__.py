"""`clipdata review serve`: a local web app over a `clipdata label` output folder, to review
the pre-labels by keyboard; every decision is saved in decisions.jsonl. Interface and
safety rules: formats/review.md."""
from .run import Server, start

__all__ = ["Server", "start"]
