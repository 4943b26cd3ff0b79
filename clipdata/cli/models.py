"""models on the command line."""
from __future__ import annotations

import json

import typer

from .app import app, errors, out_console, styled
from .render import _table, say

MODELS_HELP = """List the model families clipdata scores: how each tokenizes captions, prepares
images and makes scores (as its authors do), what it needs installed, and a --model value.

Example:

\b
  clipdata models
  clipdata label photos/ --out labeled/ --classes "cat,dog" --model google/siglip2-base-patch16-naflex
"""


@app.command(help=MODELS_HELP)
def models(as_json: bool = typer.Option(False, "--json", help="Print the table as JSON.")) -> None:
    from ..commands.models import models as api_models

    with errors():
        r = api_models()
    if as_json:
        rows = [{"family": f.key, "name": f.name, "model_types": list(f.model_types), "checkpoints": f.checkpoints,
                 "example": f.example, "tokenization": _tokens(f), "images": f.image, "fast_path": f.fast,
                 "scores": f.scoring, "image_inputs": list(f.image_inputs), "needs": f.needs,
                 "installed": r.installed[f.key], "notes": f.notes} for f in r.families]
        print(json.dumps({"families": rows, "left_out": r.left_out}, indent=2, ensure_ascii=False))
        return
    table = _table("model families", ("family", "--model example", "captions", "images", "scores", "needs"))
    for f in r.families:
        needs = styled(f.needs, ("" if r.installed[f.key] else " (not installed)", "red"))
        table.add_row(styled(f.name, "\n", (f.checkpoints, "dim")), f.example, _tokens(f), f.image, f.scoring, needs)
    out_console.print(table)
    say("left out: " + "; ".join(f"{k} ({why})" for k, why in r.left_out.items()))
    say("details: formats/models.md")


def _tokens(f) -> str:
    if f.padding not in ("longest", "max_length"):
        return f.padding
    pad = f"padded to {f.text_length}" if f.padding == "max_length" else "padded to the longest"
    cut = f", cut at {f.text_length}" if f.text_length and f.padding != "max_length" else ""
    return pad + cut + (", lowercased" if f.lowercase else "")
