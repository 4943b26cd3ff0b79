"""The command line: parse options, call the API, show progress and a summary.

Exit codes: 0 success; 1 a clear failure (bad input, bad option, broken layout); 2 a usage
error (unknown option, missing argument).
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task,
                           TextColumn, TimeRemainingColumn)
from rich.text import Text
from rich.table import Table

from . import __version__
from .errors import ClipdataError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
    help="Image datasets into the CLIP classification layout (split/class folders + _tokenization.txt).",
)
out_console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        out_console.print(f"clipdata {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


@contextmanager
def _errors() -> Iterator[None]:
    """One clear line for anything a user can cause; never a traceback for those."""
    try:
        yield
    except ClipdataError as e:
        err_console.print(f"[bold red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        err_console.print(f"[bold red]error:[/] {where}{e.strerror or e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130)


class _SpeedColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f} items/s" if task.speed else "", style="progress.data.speed")


@contextmanager
def _progress(label: str, quiet: bool) -> Iterator:
    if quiet:
        yield None
        return
    # No refresh thread (auto_refresh=False): worker processes can then be forked safely.
    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), _SpeedColumn(),
                   TimeRemainingColumn(), console=err_console, transient=True, auto_refresh=False)
    with bar:
        task = bar.add_task(label, total=None)
        last = [0.0]

        def update(done: int, total: int) -> None:
            now = time.monotonic()
            finished = done >= total
            bar.update(task, completed=done, total=total)
            if finished or now - last[0] > 0.1:
                bar.refresh()
                last[0] = now

        yield update


CONVERT_HELP = """Convert a dataset into the CLIP classification layout.

FORMAT is one of: folder, coco, yolo, voc. Detection boxes become crops (or, with
--mode scenes, whole images foldered by their classes as Roboflow's CLIP export does);
folder-per-class images are copied as they are.

[bold]Examples[/]

  clipdata convert coco samples/coco/annotations.json out/

  clipdata convert folder photos/ out/ --template "a picture of a {} flower"

  clipdata convert coco export/ out/ --padding 0.1 --square --ontology classes.yaml

  clipdata convert yolo data.yaml out/ --split-ratios 0.8,0.1,0.1 --export hf,openclip
"""


@app.command(help=CONVERT_HELP, no_args_is_help=True)
def convert(
    format: str = typer.Argument(..., help="Source format: folder, coco, yolo or voc."),
    source: Path = typer.Argument(..., help="Dataset folder, COCO JSON, YOLO data.yaml or obj.data."),
    out: Path = typer.Argument(..., help="Output folder (new or empty)."),
    mode: str = typer.Option("crops", "--mode", help="crops: one image per box; scenes: Roboflow's whole-image CLIP export."),
    images: Optional[Path] = typer.Option(None, "--images", help="COCO: folder that holds the images."),
    split: Optional[str] = typer.Option(None, "--split", help="Split for a source without splits: train, valid or test."),
    split_ratios: Optional[str] = typer.Option(None, "--split-ratios", help="Re-split by source image, e.g. 0.8,0.1,0.1."),
    seed: int = typer.Option(0, "--seed", help="Seed of --split-ratios."),
    template: str = typer.Option("a photo of a {}", "--template", help="Caption template; {} is the class name, {a} the name with a/an."),
    ontology: Optional[Path] = typer.Option(None, "--ontology", help="YAML file of per-class captions, renames, merges, drops."),
    rename: List[str] = typer.Option([], "--rename", help='Rename a class: --rename "OLD=NEW" (repeatable; same NEW merges).'),
    project_name: Optional[str] = typer.Option(None, "--project-name", help="Scenes: the project name in captions (default: the source's name)."),
    group_name: Optional[str] = typer.Option(None, "--group-name", help="Scenes: what images without objects lack (default: Roboflow's group, else objects)."),
    include_crowd: bool = typer.Option(False, "--include-crowd", help="COCO: also crop iscrowd=1 boxes."),
    skip_difficult: bool = typer.Option(False, "--skip-difficult", help="VOC: skip objects marked difficult."),
    min_size: int = typer.Option(1, "--min-size", help="Skip crops narrower or shorter than this many pixels."),
    padding: Optional[str] = typer.Option(None, "--padding", help="Context around each box: a fraction of its size (0.1) or pixels (8px)."),
    square: bool = typer.Option(False, "--square", help="Grow each box to a square before clamping."),
    image_format: str = typer.Option("jpg", "--image-format", help="Crop file format: jpg, png or webp."),
    quality: int = typer.Option(95, "--quality", help="JPEG/WebP quality of crops."),
    link: bool = typer.Option(False, "--link", help="Hard-link whole images instead of copying them."),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="Record missing images and go on."),
    export: Optional[str] = typer.Option(None, "--export", help="Hand-off files: hf, openclip, or hf,openclip."),
    openclip_relative: bool = typer.Option(False, "--openclip-relative", help="open_clip CSV paths relative to OUT."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier clipdata output in OUT."),
    resume: bool = typer.Option(False, "--resume", help="Finish a run that was killed; the result is as if it never stopped."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Worker processes (default: one per CPU)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    from .api import convert as api_convert

    with _errors(), _progress("converting", quiet) as update:
        report = api_convert(
            source, out, format, mode=mode, images=images, split=split, split_ratios=split_ratios,
            seed=seed, template=template, ontology=ontology, rename=rename,
            project_name=project_name, group_name=group_name, include_crowd=include_crowd,
            skip_difficult=skip_difficult, min_size=min_size, padding=padding, square=square,
            image_format=image_format, quality=quality, link=link, skip_missing=skip_missing,
            export=export, openclip_relative=openclip_relative, overwrite=overwrite, resume=resume,
            workers=workers, progress=update,
        )
    if quiet:
        return
    table = Table(title=f"{report.out}", show_lines=False)
    for col in ("split", "class", "images", "caption"):
        table.add_column(col, justify="right" if col == "images" else "left")
    for split, classes in report.counts.items():
        for cls, n in classes.items():
            table.add_row(split, cls, str(n), report.captions[cls])
    out_console.print(table)
    out_console.print(
        f"[bold]{report.crops}[/] crops, [bold]{report.images}[/] whole images, "
        f"[bold]{len(report.classes)}[/] classes in {len(report.counts)} split(s)", highlight=False)
    if report.exported:
        out_console.print("hand-off files: " + ", ".join(report.exported), highlight=False)
    if report.skipped:
        out_console.print("skipped: " + ", ".join(f"{r} {n}" for r, n in report.skipped_by_reason.items())
                          + f" (details in {report.out / 'clipdata.json'})", highlight=False)
    for note in report.notes:
        out_console.print(f"[yellow]note:[/] {note}", highlight=False)


INSPECT_HELP = """Check a CLIP layout (clipdata's or Roboflow's) and show classes beside their captions.

Exits 1 when the layout is broken: captions misaligned with the class folders, an empty
class folder, an unreadable image. The same file in two splits is a warning.

[bold]Example[/]

  clipdata inspect out/
"""


@app.command(help=INSPECT_HELP, no_args_is_help=True)
def inspect(
    layout: Path = typer.Argument(..., help="A CLIP layout folder (or one split folder)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only problems."),
) -> None:
    from .api import inspect as api_inspect

    with _errors(), _progress("checking", quiet) as update:
        report = api_inspect(layout, progress=update)
    if not quiet:
        table = Table(title=str(report.root))
        for col in ("split", "class", "images", "caption"):
            table.add_column(col, justify="right" if col == "images" else "left")
        for row in report.rows:
            table.add_row(row.split, row.name, str(row.images), row.caption if row.caption is not None else "[red](none)[/]")
        out_console.print(table)
    for w in report.warnings:
        out_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    for e in report.errors:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)
    if not quiet:
        out_console.print("[green]layout OK[/]")


def _engine_options(model: str, device: str, dtype: str, batch_size: int, workers: Optional[int], draft: bool,
                    engine: str = "local", ray_address: Optional[str] = None, num_actors: Optional[int] = None):
    from .engine import EngineSpec

    return EngineSpec(model=model, device=device, dtype=dtype, batch_size=batch_size, workers=workers, draft=draft,
                      backend=engine, ray_address=ray_address, num_actors=num_actors)


MODEL_HELP = "Hugging Face model id or local directory of a CLIP-family model."

LABEL_HELP = """Pre-label unlabeled images with CLIP for a person to review.

Writes to OUT: predictions.jsonl and .csv, review/<class>/ (hard links; move files between
folders to correct them), labelstudio.json + labelstudio_config.xml, and index.html.

[bold]Examples[/]

  clipdata label photos/ --out labeled/ --classes "daisy,dandelion" --template "a picture of a {} flower"

  clipdata label photos/ --out labeled/ --ontology flowers.yaml --threshold 0.6

  clipdata review apply labeled/ layout/
"""


@app.command(help=LABEL_HELP, no_args_is_help=True)
def label(
    images: Path = typer.Argument(..., help="Folder of unlabeled images (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the review material."),
    classes: Optional[str] = typer.Option(None, "--classes", help='Comma-separated class names: "daisy,dandelion".'),
    ontology: Optional[Path] = typer.Option(None, "--ontology", help="YAML: class -> caption(s); several captions are ensembled."),
    from_layout: Optional[Path] = typer.Option(None, "--from-layout", help="A CLIP layout split: its class folders and captions."),
    template: str = typer.Option("a photo of a {}", "--template", help="Caption template for --classes."),
    top_k: int = typer.Option(3, "--top-k", help="Classes kept per image."),
    threshold: float = typer.Option(0.5, "--threshold", help="Uncertain below this top probability."),
    margin: float = typer.Option(0.1, "--margin", help="Uncertain when top-1 leads top-2 by less than this."),
    copy: bool = typer.Option(False, "--copy", help="Copy images into review/ instead of hard-linking."),
    model: str = typer.Option("openai/clip-vit-base-patch32", "--model", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 or float16."),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per model call."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Decode/preprocess processes (default: one per CPU)."),
    draft: bool = typer.Option(False, "--draft", help="Faster JPEG decoding at reduced scale (pixels differ slightly)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Embedding cache folder (default: OUT/cache)."),
    engine: str = typer.Option("local", "--engine", help="Where images are embedded: local, or ray (pip install 'clipdata[ray]')."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join (default: start a local Ray)."),
    num_actors: Optional[int] = typer.Option(None, "--num-actors", help="Ray actors, one model each (default: what the cluster has room for)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier label output in OUT (its cache is kept)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    from .api import label as api_label

    with _errors(), _progress("embedding", quiet) as update:
        report = api_label(images, out, classes=classes, ontology=ontology, from_layout=from_layout,
                           template=template, top_k=top_k, threshold=threshold, margin=margin, copy=copy,
                           spec=_engine_options(model, device, dtype, batch_size, workers, draft, engine,
                                                ray_address, num_actors),
                           cache_dir=cache_dir, overwrite=overwrite, progress=update)
    if quiet:
        return
    table = Table(title=f"{report.out}")
    table.add_column("class")
    table.add_column("images", justify="right")
    for cls, n in report.counts.items():
        table.add_row(cls, str(n))
    table.add_row("[yellow]uncertain[/]", str(report.uncertain))
    out_console.print(table)
    out_console.print(
        f"{report.images} images in {report.seconds:.1f} s ({report.images_per_second:.1f} images/s), "
        f"{report.engine}, cache hits {report.cache_hits}", highlight=False)
    if report.unreadable:
        out_console.print(f"[yellow]unreadable:[/] {len(report.unreadable)} (listed in {report.out / 'label.json'})", highlight=False)
    if report.failed:
        out_console.print(f"[red]failed:[/] {len(report.failed)} image(s) whose distributed task failed past its retries "
                          f"(listed in {report.out / 'label.json'}; run again to embed them)", highlight=False)
    out_console.print(f"review: move files between the folders of {report.out / 'review'}, or open "
                      f"{report.out / 'index.html'}; then: clipdata review apply {report.out} LAYOUT", highlight=False)


review_app = typer.Typer(help="Turn reviewed pre-labels into a CLIP layout.", no_args_is_help=True)
app.add_typer(review_app, name="review")

REVIEW_HELP = """Write a CLIP layout from reviewed pre-labels.

REVIEWED is the folder `clipdata label --out` wrote (its review/ tree, after you moved files
between class folders and emptied _uncertain), a Label Studio JSON export, or an edited
predictions.csv (its `final` column). Prints how many pre-labels the reviewer changed.

[bold]Examples[/]

  clipdata review apply labeled/ layout/

  clipdata review apply labeled/export.json layout/ --images photos/
"""


@review_app.command("apply", help=REVIEW_HELP, no_args_is_help=True)
def review_apply(
    reviewed: Path = typer.Argument(..., help="Label output folder, Label Studio export, or predictions.csv."),
    out: Path = typer.Argument(..., help="Output folder for the CLIP layout."),
    images: Optional[Path] = typer.Option(None, "--images", help="The image folder (for an export made elsewhere)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of the layout (default train)."),
    split_ratios: Optional[str] = typer.Option(None, "--split-ratios", help="Re-split, e.g. 0.8,0.1,0.1."),
    template: str = typer.Option("a photo of a {}", "--template", help="Caption template."),
    link: bool = typer.Option(False, "--link", help="Hard-link images instead of copying them."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier clipdata output in OUT."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary."),
) -> None:
    from .api import review_apply as api_review_apply

    with _errors():
        result = api_review_apply(reviewed, out, images=images, split=split, split_ratios=split_ratios,
                                  template=template, link=link, overwrite=overwrite)
    if quiet:
        return
    table = Table(title="reviewer's corrections")
    for col in ("proposed class", "kept", "changed"):
        table.add_column(col, justify="left" if col == "proposed class" else "right")
    for cls, c in result.changes.items():
        table.add_row(cls, str(c["kept"]), str(c["changed"]))
    out_console.print(table)
    acc = result.accuracy
    out_console.print(f"{result.layout.images} images into {result.layout.out} ({len(result.layout.classes)} classes)"
                      + (f"; the pre-labels were {acc:.1%} right" if acc is not None else ""), highlight=False)
    if result.layout.skipped:
        out_console.print("skipped: " + ", ".join(f"{r} {n}" for r, n in result.layout.skipped_by_reason.items()),
                          highlight=False)
    for note in result.layout.notes:
        out_console.print(f"[yellow]note:[/] {note}", highlight=False)


# The CLIP engine's options, shared by eval, search, unique and duplicates.
_MODEL = typer.Option("openai/clip-vit-base-patch32", "--model", help=MODEL_HELP)
_DEVICE = typer.Option("auto", "--device", help="auto, cpu or cuda.")
_DTYPE = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 or float16.")
_BATCH = typer.Option(16, "--batch-size", help="Images per model call.")
_WORKERS = typer.Option(None, "--workers", "-j", help="Decode/preprocess processes (default: one per CPU).")
_CACHE = typer.Option(None, "--cache-dir", help="Embedding cache (default: $CLIPDATA_CACHE or ~/.cache/clipdata).")
_NO_CACHE = typer.Option(False, "--no-cache", help="Do not read or write the embedding cache.")
_ENGINE = typer.Option("local", "--engine", help="Where images are embedded: local, or ray (pip install 'clipdata[ray]').")
_RAY_ADDRESS = typer.Option(None, "--ray-address", help="Ray cluster to join (default: start a local Ray).")
_NUM_ACTORS = typer.Option(None, "--num-actors", help="Ray actors, one model each (default: what the cluster has room for).")


def _cache(cache_dir: Optional[Path], no_cache: bool):
    return False if no_cache else cache_dir


def _footer(report) -> None:
    out_console.print(f"{report.images} images, {report.engine}, cache hits {report.cache_hits}", highlight=False)
    if report.unreadable:
        out_console.print(f"[yellow]unreadable:[/] {len(report.unreadable)}: "
                          + ", ".join(list(report.unreadable)[:3]), highlight=False)


EVAL_HELP = """Zero-shot accuracy of a CLIP layout under several caption wordings, side by side.

The layout's own _tokenization.txt is one prompt set; each --template and --ontology adds one.
Images are embedded once: more prompt sets cost only a small text pass each.

[bold]Example[/]

  clipdata eval flowers/ --template "{}" --template "{} flower" --template "a picture of a {} flower"
"""


@app.command("eval", help=EVAL_HELP, no_args_is_help=True)
def eval_(
    layout: Path = typer.Argument(..., help="A CLIP layout."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to evaluate (default: test, else all)."),
    template: List[str] = typer.Option([], "--template", help="A caption template to compare (repeatable)."),
    ontology: List[Path] = typer.Option([], "--ontology", help="Per-class captions to compare (repeatable)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write every figure as JSON (formats/eval.md)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG of the best set's confusion matrix (needs matplotlib)."),
    model: str = _MODEL, device: str = _DEVICE, dtype: str = _DTYPE, batch_size: int = _BATCH,
    workers: Optional[int] = _WORKERS, cache_dir: Optional[Path] = _CACHE, no_cache: bool = _NO_CACHE,
    engine: str = _ENGINE, ray_address: Optional[str] = _RAY_ADDRESS, num_actors: Optional[int] = _NUM_ACTORS,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the table."),
) -> None:
    from .zeroshot import evaluate

    with _errors(), _progress("embedding", quiet) as update:
        r = evaluate(layout, split=split, templates=template, ontologies=ontology,
                     spec=_engine_options(model, device, dtype, batch_size, workers, False, engine, ray_address, num_actors),
                     cache_dir=_cache(cache_dir, no_cache), json_path=json_path, plot_path=plot, progress=update)
    table = Table(title=f"{r.layout} ({', '.join(r.splits)}): {r.images} images, {len(r.classes)} classes")
    for col in ("prompt set", "top-1", "top-5", "mean per-class recall"):
        table.add_column(col, justify="left" if col == "prompt set" else "right")
    best = r.best
    for ps in r.sets:
        name = f"[bold]{ps.name}[/]" if ps is best else ps.name
        table.add_row(name, f"{ps.top1:.1%}", f"{ps.top5:.1%}" if ps.top5 is not None else "—",
                      f"{ps.mean_per_class_recall:.1%}")
    out_console.print(table)
    if quiet:
        return
    recall = Table(title=f"per-class recall, {best.name}")
    recall.add_column("class")
    recall.add_column("recall", justify="right")
    for cls, v in best.per_class_recall.items():
        recall.add_row(cls, f"{v:.1%}")
    out_console.print(recall)
    if r.flipped:
        worst = min(r.sets, key=lambda s: (s.top1, s.mean_per_class_recall))
        out_console.print(f"{len(r.flipped)} image(s) change prediction between {worst.name!r} and {best.name!r}, e.g.:",
                          highlight=False)
        for f in r.flipped[:10]:
            out_console.print(f"  {f['path']}: {f[worst.name]} -> {f[best.name]} (true: {f['class']})", highlight=False)
    _footer(r)


SEARCH_HELP = """Rank images by similarity to text queries (or to an image).

[bold]Examples[/]

  clipdata search photos/ "a red car" "a bicycle" --top 10

  clipdata search photos/ --image query.jpg --copy-to hits/ --html hits.html
"""


@app.command(help=SEARCH_HELP, no_args_is_help=True)
def search(
    images: Path = typer.Argument(..., help="Folder of images (searched recursively)."),
    queries: List[str] = typer.Argument(None, help="Text queries."),
    image: Optional[Path] = typer.Option(None, "--image", help="An image to search by."),
    top: int = typer.Option(20, "--top", help="Hits per query."),
    jsonl: Optional[Path] = typer.Option(None, "--jsonl", help="Write query, rank, path, score rows."),
    copy_to: Optional[Path] = typer.Option(None, "--copy-to", help="Hard-link the hits into this folder."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="A page of the hits' thumbnails."),
    model: str = _MODEL, device: str = _DEVICE, dtype: str = _DTYPE, batch_size: int = _BATCH,
    workers: Optional[int] = _WORKERS, cache_dir: Optional[Path] = _CACHE, no_cache: bool = _NO_CACHE,
    engine: str = _ENGINE, ray_address: Optional[str] = _RAY_ADDRESS, num_actors: Optional[int] = _NUM_ACTORS,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    from .rank import search as api_search

    with _errors(), _progress("embedding", quiet) as update:
        r = api_search(images, queries or [], image=image, top=top,
                       spec=_engine_options(model, device, dtype, batch_size, workers, False, engine, ray_address, num_actors),
                       cache_dir=_cache(cache_dir, no_cache), jsonl=jsonl, copy_to=copy_to,
                       html_path=html_out, progress=update)
    table = Table(title=f"{r.root}")
    for col in ("query", "rank", "score", "path"):
        table.add_column(col, justify="right" if col in ("rank", "score") else "left", overflow="fold")
    for h in r.hits:
        table.add_row(h.query, str(h.rank), f"{h.score:.3f}", str(h.path))
    out_console.print(table)
    _footer(r)


UNIQUE_HELP = """Images by uniqueness: mean cosine distance to their k nearest neighbours, most unique first.

With --per-class LAYOUT/split, neighbours are taken within each class: the odd ones out of a
class are often label errors.

[bold]Example[/]

  clipdata unique photos/ --top 50 --html unique.html
"""


@app.command(help=UNIQUE_HELP)
def unique(
    images: Optional[Path] = typer.Argument(None, help="Folder of images (searched recursively)."),
    per_class: Optional[Path] = typer.Option(None, "--per-class", help="Score within each class of this layout split."),
    k: int = typer.Option(5, "-k", help="Neighbours averaged."),
    top: int = typer.Option(20, "--top", help="Rows shown on the terminal."),
    jsonl: Optional[Path] = typer.Option(None, "--jsonl", help="Write every image's score."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="A page of thumbnails, most unique first."),
    model: str = _MODEL, device: str = _DEVICE, dtype: str = _DTYPE, batch_size: int = _BATCH,
    workers: Optional[int] = _WORKERS, cache_dir: Optional[Path] = _CACHE, no_cache: bool = _NO_CACHE,
    engine: str = _ENGINE, ray_address: Optional[str] = _RAY_ADDRESS, num_actors: Optional[int] = _NUM_ACTORS,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    from .rank import unique as api_unique

    with _errors(), _progress("embedding", quiet) as update:
        r = api_unique(images, per_class=per_class, k=k,
                       spec=_engine_options(model, device, dtype, batch_size, workers, False, engine, ray_address, num_actors),
                       cache_dir=_cache(cache_dir, no_cache), jsonl=jsonl, html_path=html_out, progress=update)
    table = Table(title=f"{r.root}: most unique first")
    table.add_column("rank", justify="right")
    table.add_column("uniqueness", justify="right")
    table.add_column("path", overflow="fold")
    for n, (p, v) in enumerate(r.scores[:top], 1):
        table.add_row(str(n), f"{v:.4f}", str(p))
    out_console.print(table)
    _footer(r)


DUPLICATES_HELP = """Groups of duplicate images: exact (same bytes) and near (cosine distance <= --threshold).

One group per line, tab-separated full paths (never cut to the terminal's width).

[bold]Example[/]

  clipdata duplicates photos/ --threshold 0.02 --jsonl dups.jsonl
"""


@app.command(help=DUPLICATES_HELP, no_args_is_help=True)
def duplicates(
    images: Path = typer.Argument(..., help="Folder of images (searched recursively)."),
    threshold: float = typer.Option(0.02, "--threshold", help="Largest cosine distance (1 - cos) within a near-duplicate pair."),
    jsonl: Optional[Path] = typer.Option(None, "--jsonl", help="Write one group per line."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="A page of the groups' thumbnails."),
    model: str = _MODEL, device: str = _DEVICE, dtype: str = _DTYPE, batch_size: int = _BATCH,
    workers: Optional[int] = _WORKERS, cache_dir: Optional[Path] = _CACHE, no_cache: bool = _NO_CACHE,
    engine: str = _ENGINE, ray_address: Optional[str] = _RAY_ADDRESS, num_actors: Optional[int] = _NUM_ACTORS,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the groups."),
) -> None:
    from .rank import duplicates as api_duplicates

    with _errors(), _progress("embedding", quiet) as update:
        r = api_duplicates(images, threshold=threshold,
                           spec=_engine_options(model, device, dtype, batch_size, workers, False, engine, ray_address, num_actors),
                           cache_dir=_cache(cache_dir, no_cache), jsonl=jsonl, html_path=html_out, progress=update)
    for g in r.groups:  # plain print: full paths, whatever the terminal's width
        print(g["kind"], *g["paths"], sep="\t")
    if not quiet:
        err_console.print(f"{len(r.groups)} group(s) among {r.images} images; {r.engine}", highlight=False)


def main() -> None:
    app(prog_name="clipdata")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
