"""eval, search, unique and duplicates on the command line."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from . import render
from .app import app, errors, progress
from .options import HtmlOut, JsonlOut, at_least, engine_options

Embeddings = Annotated[Optional[Path], typer.Option(
    "--embeddings", help="Read this embeddings folder (clipdata embed) instead of images.")]
Exact = Annotated[bool, typer.Option(
    "--exact", help="Exact neighbour search, never the approximate index (used from 10,000 images).")]

EVAL_HELP = """Zero-shot accuracy of a CLIP layout under several caption wordings, side by side.

The layout's own _tokenization.txt is one prompt set; each --template and --ontology adds one.
Images are embedded once: more prompt sets cost only a small text pass each.

Example:

\b
  clipdata eval flowers/ --template "{}" --template "{} flower" --template "a picture of a {} flower"
"""


@app.command("eval", help=EVAL_HELP, no_args_is_help=True)
@engine_options()
def eval_(
    layout: Path = typer.Argument(..., metavar="LAYOUT", help="A CLIP layout."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to evaluate (default: test, else all)."),
    template: List[str] = typer.Option([], "--template", help="A caption template to compare (repeatable)."),
    ontology: List[Path] = typer.Option([], "--ontology", help="Per-class captions to compare (repeatable)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write every figure as JSON (formats/eval.md)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG of the best set's confusion matrix (needs matplotlib)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the table."),
    spec=None, cache=None,
) -> None:
    from ..commands.evaluate import evaluate

    with errors(), progress("embedding", quiet) as update:
        r = evaluate(layout, split=split, templates=template, ontologies=ontology, spec=spec, cache_dir=cache,
                     json_path=json_path, plot_path=plot, progress=update)
    render.eval_report(r, quiet)


SEARCH_HELP = """Rank images by similarity to text queries (or to an image).

Examples:

\b
  clipdata search photos/ "a red car" "a bicycle" --top 10
  clipdata search photos/ --image query.jpg --copy-to hits/ --html hits.html
  clipdata search --embeddings photos-emb/ "a red car" --model ./clip-vit-base-patch32
"""


@app.command(help=SEARCH_HELP, no_args_is_help=True)
@engine_options()
def search(
    images: Optional[Path] = typer.Argument(None, metavar="IMAGES", help="Folder of images (searched recursively); with --embeddings, the first query."),
    queries: List[str] = typer.Argument(None, metavar="QUERIES", help="Text queries."),
    image: Optional[Path] = typer.Option(None, "--image", help="An image to search by."),
    top: int = typer.Option(20, "--top", help="Hits per query."),
    jsonl: JsonlOut = None,
    copy_to: Optional[Path] = typer.Option(None, "--copy-to", help="Hard-link the hits into this folder."),
    html_out: HtmlOut = None,
    embeddings: Embeddings = None,
    exact: Exact = False,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    spec=None, cache=None,
) -> None:
    from ..commands.rank import search as api_search

    queries = list(queries or [])
    if embeddings is not None and images is not None:
        images, queries = None, [str(images), *queries]  # no IMAGES: every argument is a query
    with errors(), progress("embedding", quiet) as update:
        r = api_search(images, queries, image=image, top=top, spec=spec, cache_dir=cache, jsonl=jsonl,
                       copy_to=copy_to, html_path=html_out, progress=update, embeddings=embeddings,
                       exact=exact or None)
    render.search_report(r)
    render.notes(r.notes)


UNIQUE_HELP = """Images by uniqueness: mean cosine distance to their k nearest neighbours, most unique first.

With --per-class LAYOUT/split, neighbours are taken within each class: the odd ones out of a
class are often label errors.

Example:

\b
  clipdata unique photos/ --top 50 --html unique.html
"""


@app.command(help=UNIQUE_HELP)
@engine_options()
def unique(
    images: Optional[Path] = typer.Argument(None, metavar="IMAGES", help="Folder of images (searched recursively)."),
    per_class: Optional[Path] = typer.Option(None, "--per-class", help="Score within each class of this layout split."),
    k: int = typer.Option(5, "-k", help="Neighbours averaged."),
    top: int = typer.Option(20, "--top", help="Rows shown on the terminal."),
    jsonl: JsonlOut = None,
    html_out: HtmlOut = None,
    embeddings: Embeddings = None,
    exact: Exact = False,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    spec=None, cache=None,
) -> None:
    from ..commands.rank import unique as api_unique

    with errors(), progress("embedding", quiet) as update:
        at_least(top=(top, 1))
        r = api_unique(images, per_class=per_class, k=k, spec=spec, cache_dir=cache, jsonl=jsonl,
                       html_path=html_out, progress=update, embeddings=embeddings, exact=exact or None)
    render.unique_report(r, top)
    render.notes(r.notes)


DUPLICATES_HELP = """Groups of duplicate images: exact (same bytes) and near (cosine distance <= --threshold).

One group per line, tab-separated full paths (never cut to the terminal's width).

Example:

\b
  clipdata duplicates photos/ --threshold 0.02 --jsonl dups.jsonl
"""


@app.command(help=DUPLICATES_HELP, no_args_is_help=True)
@engine_options()
def duplicates(
    images: Optional[Path] = typer.Argument(None, metavar="IMAGES", help="Folder of images (searched recursively)."),
    threshold: float = typer.Option(0.02, "--threshold", help="Largest cosine distance (1 - cos) within a near-duplicate pair."),
    jsonl: JsonlOut = None,
    html_out: HtmlOut = None,
    embeddings: Embeddings = None,
    exact: Exact = False,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the groups."),
    spec=None, cache=None,
) -> None:
    from ..commands.rank import duplicates as api_duplicates

    with errors(), progress("embedding", quiet) as update:
        r = api_duplicates(images, threshold=threshold, spec=spec, cache_dir=cache, jsonl=jsonl,
                           html_path=html_out, progress=update, embeddings=embeddings, exact=exact or None)
    render.duplicates_report(r, quiet)
    if not quiet:
        render.notes(r.notes)
