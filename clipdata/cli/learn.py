"""prompts and audit on the command line: the commands that learn from a layout's labels."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .app import app, errors, out_console, progress, styled
from .options import HtmlOut, JsonlOut, at_least, engine_options
from .render import _table, footer, notes, say

PROMPTS_HELP = """Find the best caption wording per class of a CLIP layout, by cross-validation.

Candidates: the layout's own captions, the CLIP paper's 80 ImageNet templates and its 7-template
subset (single and ensembled; --no-library leaves them out), each --template, and each
--ontology file (a class may list several captions). The choice is made on every split but
test and reported on test; it is written as an ontology for label/eval/convert --ontology.

Example:

\b
  clipdata prompts flowers/ --out best.yaml --template "a picture of a {} flower" --json prompts.json
"""


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.1%}"


@app.command(help=PROMPTS_HELP, no_args_is_help=True)
@engine_options()
def prompts(
    layout: Path = typer.Argument(..., metavar="LAYOUT", help="A CLIP layout with labeled images."),
    out: Path = typer.Option(..., "--out", help="The chosen wording, as an ontology YAML file."),
    template: List[str] = typer.Option([], "--template", help="A candidate template (repeatable)."),
    ontology: List[Path] = typer.Option([], "--ontology", help="Candidate captions per class (repeatable)."),
    library: bool = typer.Option(True, "--library/--no-library", help="Include the CLIP paper's templates."),
    split: Optional[str] = typer.Option(None, "--split", help="Choose on this split only (default: all but test)."),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds."),
    per_class: bool = typer.Option(True, "--per-class/--per-set", help="Allow a different wording per class."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Every candidate's score (formats/prompts.md)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the summary."),
    spec=None, cache=None,
) -> None:
    from ..commands.prompts import prompts as api_prompts

    with errors(), progress("embedding", quiet) as update:
        r = api_prompts(layout, out, templates=template, ontologies=ontology, library=library, split=split,
                        folds=folds, per_class=per_class, spec=spec, cache_dir=cache, json_path=json_path,
                        progress=update)
    held = r.heldout_split or "held-out"
    if not quiet:
        table = _table(f"{r.layout}: {r.images} images in {', '.join(r.search_splits)}, {len(r.classes)} classes",
                       ("class", "chosen wording", "captions"), ("captions",))
        for cls, cand in r.chosen.items():
            table.add_row(cls, cand.captions[0] if len(cand.captions) == 1 else cand.name, str(len(cand.captions)))
        out_console.print(table)
    rows = _table("top-1", ("prompts", f"{', '.join(r.search_splits)}", held), (", ".join(r.search_splits), held))
    rows.add_row(styled((f"chosen ({r.mode})", "bold")), f"{r.cv_top1:.1%} (cross-validated)", _pct(r.heldout_top1))
    for label, s in (("layout captions", r.layout_set), (f"best template: {r.best_template.name}" if r.best_template
                                                         else "best template", r.best_template)):
        if s is not None:
            rows.add_row(label, f"{s.top1:.1%}", _pct(s.heldout_top1))
    out_console.print(rows)
    say(f"wrote {r.out}" + (f"; every candidate in {json_path}" if json_path else ""))
    notes(r.notes)
    footer(r)


AUDIT_HELP = """The images of a CLIP layout whose label is probably wrong, most suspicious first.

Each image is scored by a few-shot probe that never saw it (k-fold cross-validation over the
layout); the confident-learning rule flags an image whose label is improbable while another
class is confidently predicted. Works on any CLIP layout: clipdata's, Roboflow's, review apply's.

Example:

\b
  clipdata audit layout/ --jsonl suspects.jsonl --html suspects.html
"""


@app.command(help=AUDIT_HELP, no_args_is_help=True)
@engine_options()
def audit(
    layout: Path = typer.Argument(..., metavar="LAYOUT", help="A CLIP layout."),
    split: List[str] = typer.Option([], "--split", help="Audit these splits only (repeatable; default: all)."),
    top: int = typer.Option(20, "--top", help="Rows shown on the terminal."),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds."),
    jsonl: JsonlOut = None,
    html_out: HtmlOut = None,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    spec=None, cache=None,
) -> None:
    from ..commands.audit import audit as api_audit

    with errors(), progress("embedding", quiet) as update:
        at_least(top=(top, 1))
        r = api_audit(layout, splits=split, folds=folds, spec=spec, cache_dir=cache, jsonl=jsonl,
                      html_path=html_out, progress=update)
    table = _table(f"{r.layout}: {r.flagged} of {r.images} images flagged", ("path", "label", "suggested", "score"),
                   ("score",))
    for row in [x for x in r.rows if x["flagged"]][:top]:
        table.add_row(row["path"], row["label"], row["suggested"], f"{row['score']:.3f}")
    out_console.print(table)
    say(f"scorer: {r.scorer}" + (f", cross-validated top-1 {r.cv_top1:.1%}" if r.cv_top1 is not None else ""))
    notes(r.notes)
    footer(r)
