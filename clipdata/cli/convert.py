"""convert and inspect on the command line."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import List, Optional

import typer

from . import render
from .app import app, errors, progress
from ..formats import REGISTRY
from .options import (Export, Images, Link, Overwrite, Quiet, Resume, Seed, ShardSize, SkipMissing, Split, SplitRatios,
                      Template, Workers)

FORMATS = ", ".join(REGISTRY)  # the registry's formats: what the unknown-format error offers too

CONVERT_HELP = f"""Convert a dataset into the CLIP classification layout.

FORMAT is one of: {FORMATS}, or auto (detected from the files; refused when two
match). Detection boxes become crops (or, with
--mode scenes, whole images foldered by their classes as Roboflow's CLIP export does);
folder-per-class images are copied as they are. --mask fill or alpha cuts each object
with a polygon or RLE out of its crop.

Examples:

\b
  clipdata convert coco samples/coco/annotations.json out/
  clipdata convert folder photos/ out/ --template "a picture of a {{}} flower"
  clipdata convert coco export/ out/ --padding 0.1 --square --ontology classes.yaml
  clipdata convert yolo data.yaml out/ --split-ratios 0.8,0.1,0.1 --export hf,openclip
  clipdata convert coco instances.json out/ --mask fill --padding 0.1

  clipdata convert auto export/ out/
"""


@app.command(help=CONVERT_HELP, no_args_is_help=True)
def convert(
    format: str = typer.Argument(..., metavar="FORMAT", help=f"Source format: {FORMATS}, or auto."),
    source: Path = typer.Argument(..., metavar="SOURCE", help="Dataset folder, or its annotation file (COCO/LabelMe/Label Studio/Create ML JSON, CVAT XML, YOLO data.yaml or obj.data)."),
    out: Path = typer.Argument(..., metavar="OUT", help="Output folder (new or empty)."),
    mode: str = typer.Option("crops", "--mode", help="crops: one image per box; scenes: Roboflow's whole-image CLIP export."),
    images: Images = None,
    split: Split = None,
    split_ratios: SplitRatios = None,
    seed: Seed = 0,
    template: Template = "a photo of a {}",
    ontology: Optional[Path] = typer.Option(None, "--ontology", help="YAML file of per-class captions, renames, merges, drops."),
    rename: List[str] = typer.Option([], "--rename", help='Rename a class: --rename "OLD=NEW" (repeatable; same NEW merges).'),
    project_name: Optional[str] = typer.Option(None, "--project-name", help="Scenes: the project name in captions (default: the source's name)."),
    group_name: Optional[str] = typer.Option(None, "--group-name", help="Scenes: what images without objects lack (default: Roboflow's group, else objects)."),
    include_crowd: bool = typer.Option(False, "--include-crowd", help="COCO: also crop iscrowd=1 boxes."),
    skip_difficult: bool = typer.Option(False, "--skip-difficult", help="VOC: skip objects marked difficult."),
    min_size: int = typer.Option(1, "--min-size", help="Skip crops narrower or shorter than this many pixels."),
    padding: Optional[str] = typer.Option(None, "--padding", help="Context around each box: a fraction of its size (0.1) or pixels (8px)."),
    square: bool = typer.Option(False, "--square", help="Grow each box to a square before clamping."),
    image_format: Optional[str] = typer.Option(None, "--image-format", help="Crop file format: jpg (default), png (default with --mask alpha) or webp."),
    quality: int = typer.Option(95, "--quality", help="JPEG/WebP quality of crops."),
    mask: str = typer.Option("none", "--mask", help="Crops of objects with a polygon or RLE: none (the rectangle), fill (outside the object: --mask-fill), alpha (PNG with the mask as alpha)."),
    mask_fill: Optional[str] = typer.Option(None, "--mask-fill", help="--mask fill's colour, R,G,B (default 123,117,104: CLIP's mean)."),
    link: Link = False,
    skip_missing: SkipMissing = False,
    export: Export = None,
    openclip_relative: bool = typer.Option(False, "--openclip-relative", help="open_clip CSV paths relative to OUT."),
    shard_size: ShardSize = 10_000,
    overwrite: Overwrite = False,
    resume: Resume = False,
    workers: Workers = None,
    quiet: Quiet = False,
) -> None:
    from ..commands.convert import ConvertOptions
    from ..commands.convert import convert as api_convert

    given = locals()
    options = ConvertOptions(**{f.name: given[f.name] for f in fields(ConvertOptions)})
    with errors(), progress("converting", quiet) as update:
        report = api_convert(source, out, format, options=options, overwrite=overwrite, resume=resume,
                             workers=workers, progress=update)
    if not quiet:
        render.convert_report(report)
        render.say(_conservation(report.ledger.to_dict()))


def _conservation(counts: dict) -> str:
    """The conservation rule as the user sees it: nothing read went unaccounted for."""
    def part(name: str, t: dict) -> str:
        skipped = sum(t["skipped"].values())
        return f"{name}: {t['read']} read = {t['written']} written + {skipped} skipped"
    return "; ".join(part(name, counts[name]) for name in ("boxes", "images"))


INSPECT_HELP = """Check a CLIP layout (clipdata's or Roboflow's) and show classes beside their captions.

Exits 1 when the layout is broken: captions misaligned with the class folders, an empty
class folder, an unreadable image. The same file in two splits is a warning.

Example:

\b
  clipdata inspect out/
"""


@app.command(help=INSPECT_HELP, no_args_is_help=True)
def inspect(
    layout: Path = typer.Argument(..., metavar="LAYOUT", help="A CLIP layout folder (or one split folder)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only problems."),
) -> None:
    from ..commands.inspect import inspect as api_inspect

    with errors(), progress("checking", quiet) as update:
        report = api_inspect(layout, progress=update)
    render.inspect_report(report, quiet)
    if not report.ok:
        raise typer.Exit(1)
