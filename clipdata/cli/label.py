"""label and review apply on the command line."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import render
from .app import app, errors, progress, review_app
from .options import (ClassList, Export, FromLayout, Images, Link, OntologyFile, Overwrite, Quiet, Resume, Seed,
                      ShardSize, SkipMissing, Split, SplitRatios, Template, Workers, engine_options)

LABEL_HELP = """Pre-label unlabeled images with CLIP for a person to review.

Writes to OUT: predictions.jsonl and .csv, review/<class>/ (hard links; move files between
folders to correct them), labelstudio.json + labelstudio_config.xml, and index.html.

Examples:

\b
  clipdata label photos/ --out labeled/ --classes "daisy,dandelion" --template "a picture of a {} flower"
  clipdata label photos/ --out labeled/ --ontology flowers.yaml --threshold 0.6
  clipdata review apply labeled/ layout/
"""


@app.command(help=LABEL_HELP, no_args_is_help=True)
@engine_options(cache_help="Embedding cache folder (default: OUT/cache).")
def label(
    images: Path = typer.Argument(..., metavar="IMAGES", help="Folder of unlabeled images (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the review material."),
    classes: ClassList = None,
    ontology: OntologyFile = None,
    from_layout: FromLayout = None,
    train_from: Optional[Path] = typer.Option(None, "--train-from", help="A labeled CLIP layout (or one split): its classes, captions and a few-shot probe."),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds for --train-from."),
    template: Template = "a photo of a {}",
    top_k: int = typer.Option(3, "--top-k", help="Classes kept per image."),
    threshold: float = typer.Option(0.5, "--threshold", help="Uncertain below this top probability."),
    margin: float = typer.Option(0.1, "--margin", help="Uncertain when top-1 leads top-2 by less than this."),
    copy: bool = typer.Option(False, "--copy", help="Copy images into review/ instead of hard-linking."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier label output in OUT (its cache is kept)."),
    resume: bool = typer.Option(False, "--resume", help="Finish a label run that was killed: cached embeddings are kept, the rest is written again."),
    quiet: Quiet = False,
    spec=None, cache=None,
) -> None:
    from ..commands.label import label as api_label

    with errors(), progress("embedding", quiet) as update:
        report = api_label(images, out, classes=classes, ontology=ontology, from_layout=from_layout,
                           train_from=train_from, folds=folds,
                           template=template, top_k=top_k, threshold=threshold, margin=margin, copy=copy,
                           spec=spec, cache_dir=cache, overwrite=overwrite, resume=resume, progress=update)
    if not quiet:
        render.label_report(report)


REVIEW_HELP = """Write a CLIP layout from reviewed pre-labels.

REVIEWED is the folder `clipdata label --out` wrote (its review/ tree, after you moved files
between class folders and emptied _uncertain), a Label Studio JSON export, or an edited
predictions.csv (its `final` column). Prints how many pre-labels the reviewer changed.

Examples:

\b
  clipdata review apply labeled/ layout/
  clipdata review apply labeled/export.json layout/ --images photos/
"""


@review_app.command("apply", help=REVIEW_HELP, no_args_is_help=True)
def review_apply(
    reviewed: Path = typer.Argument(..., metavar="REVIEWED", help="Label output folder, Label Studio export, or predictions.csv."),
    out: Path = typer.Argument(..., metavar="OUT", help="Output folder for the CLIP layout."),
    images: Images = None,
    split: Split = None,
    split_ratios: SplitRatios = None,
    seed: Seed = 0,
    template: Template = "a photo of a {}",
    link: Link = False,
    skip_missing: SkipMissing = False,
    export: Export = None,
    shard_size: ShardSize = 10_000,
    overwrite: Overwrite = False,
    resume: Resume = False,
    workers: Workers = None,
    quiet: Quiet = False,
) -> None:
    from ..commands.review import review_apply as api_review_apply

    with errors():
        result = api_review_apply(reviewed, out, images=images, split=split, split_ratios=split_ratios, seed=seed,
                                  template=template, link=link, skip_missing=skip_missing, export=export,
                                  shard_size=shard_size, overwrite=overwrite, resume=resume, workers=workers)
    if not quiet:
        render.review_report(result)
