"""Option groups shared by several commands, declared once (sqlite-utils' shared option
decorators, in typer's terms).

- `Annotated` aliases for single options that several commands take (`Template`, `Quiet`...).
- `engine_options`: a decorator that adds the whole CLIP engine block (model, device, dtype,
  batch size, loaders, decode mode, cache, engine, Ray address, actors) to a command and
  hands the command one EngineSpec and one cache setting instead.
"""
from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

DEFAULT_MODEL = "openai/clip-vit-base-patch32"  # embedding.engine.DEFAULT_MODEL, without importing numpy
MODEL_HELP = ("Hugging Face model id or local directory of a model of a family `clipdata models` lists "
              "(CLIP, SigLIP, SigLIP 2, MetaCLIP 2, ALIGN ...), or open_clip:ARCH with --weights.")

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")]
Template = Annotated[str, typer.Option("--template", help="Caption template; {} is the class name, {a} the name with a/an.")]
Split = Annotated[Optional[str], typer.Option("--split", help="Split for a source without splits: train, valid or test.")]
SplitRatios = Annotated[Optional[str], typer.Option("--split-ratios", help="Re-split by source image, e.g. 0.8,0.1,0.1.")]
Link = Annotated[bool, typer.Option("--link", help="Hard-link whole images instead of copying them.")]
SkipMissing = Annotated[bool, typer.Option("--skip-missing", help="Record images that are not on disk as skipped (missing_image) and go on.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of --split-ratios.")]
Workers = Annotated[Optional[int], typer.Option("--workers", "-j", help="Worker processes (default: one per CPU).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an earlier clipdata output in OUT.")]
Resume = Annotated[bool, typer.Option("--resume", help="Finish a run that was killed; the result is as if it never stopped.")]
Images = Annotated[Optional[Path], typer.Option("--images", help="The folder that holds the images, when not beside the annotations.")]
Export = Annotated[Optional[str], typer.Option("--export", help="Hand-off files, comma-separated: hf, openclip, webdataset.")]
ShardSize = Annotated[int, typer.Option("--shard-size", help="Samples per WebDataset shard (--export webdataset).")]
ClassList = Annotated[Optional[str], typer.Option("--classes", help='Comma-separated class names: "daisy,dandelion".')]
OntologyFile = Annotated[Optional[Path], typer.Option("--ontology", help="YAML: class -> caption(s); several captions are ensembled.")]
FromLayout = Annotated[Optional[Path], typer.Option("--from-layout", help="A CLIP layout split: its class folders and captions.")]
AllowHost = Annotated[Optional[list[str]], typer.Option(
    "--allow-host", metavar="NAME", help="Answer to requests for this host name too (a name of this machine, a reverse "
                                         "proxy's); repeat for several. 127.0.0.1, localhost and --host always work.")]
JsonlOut = Annotated[Optional[Path], typer.Option("--jsonl", help="Write the results as JSON lines.")]
HtmlOut = Annotated[Optional[Path], typer.Option("--html", help="A page of the results' thumbnails.")]


def at_least(**options: tuple[int, int]) -> None:
    """A CLI-only count (rows shown) below its floor is a usage error, as the API's counts are:
    at_least(top=(top, 1)). Never a silent Python slice (`--top -1`: all rows but the last)."""
    from ..errors import OptionError

    for name, (value, low) in options.items():
        if value < low:
            raise OptionError(f"--{name.replace('_', '-')} {value} must be at least {low}")


def _opt(name: str, default, annotation, *decls: str, help: str) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, *decls, help=help))


# (parameter, the EngineSpec field it fills or None)
_ENGINE = [
    (_opt("model", DEFAULT_MODEL, str, "--model", help=MODEL_HELP), "model"),
    (_opt("weights", None, Optional[str], "--weights",
          help="For --model open_clip:ARCH: the checkpoint file (or an open_clip pretrained tag)."), "weights"),
    (_opt("device", "auto", str, "--device", help="auto, cpu or cuda."), "device"),
    (_opt("dtype", "auto", str, "--dtype", help="auto, float32, bfloat16 or float16."), "dtype"),
    (_opt("batch_size", None, Optional[int], "--batch-size",
          help="Images per model call (default: chosen for the machine, 32 on a CPU)."), "batch_size"),
    (_opt("workers", None, Optional[int], "--workers", "-j",
          help="Decode/preprocess processes (default: chosen for the machine)."), "workers"),
    (_opt("exact_preprocess", False, bool, "--exact-preprocess", help="Decode and preprocess with the model's own processor, bit for bit (slower; the default decodes JPEGs at a reduced scale)."), "exact_preprocess"),
    (_opt("engine", "local", str, "--engine",
          help="Where images are embedded: local, or ray (pip install 'clipdata[ray]')."), "backend"),
    (_opt("ray_address", None, Optional[str], "--ray-address",
          help="Ray cluster to join (default: start a local Ray)."), "ray_address"),
    (_opt("num_actors", None, Optional[int], "--num-actors",
          help="Ray actors, one model each (default: what the cluster has room for)."), "num_actors"),
    (_opt("no_cache", False, bool, "--no-cache", help="Do not read or write the embedding cache."), None),
]


def engine_options(cache_help: str = "Embedding cache (default: $CLIPDATA_CACHE or ~/.cache/clipdata).") -> Callable:
    """Give a command the engine option block. The command declares `spec` and `cache`
    parameters; it receives an EngineSpec and the cache setting (None: default, False: none,
    else a folder)."""
    cache_param = _opt("cache_dir", None, Optional[Path], "--cache-dir", help=cache_help)

    def decorate(fn: Callable) -> Callable:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name not in ("spec", "cache")]
        added = [p for p, _ in _ENGINE] + [cache_param]
        first_option = next((i for i, p in enumerate(own) if p.name == "quiet"), len(own))
        params = own[:first_option] + added + own[first_option:]

        @functools.wraps(fn)
        def command(**kwargs):
            from ..embedding.spec import EngineSpec

            spec = EngineSpec(**{field: kwargs.pop(p.name) for p, field in _ENGINE if field})
            no_cache, cache_dir = kwargs.pop("no_cache"), kwargs.pop("cache_dir")
            return fn(spec=spec, cache=False if no_cache else cache_dir, **kwargs)

        command.__signature__ = inspect.Signature(
            [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD else p
             for p in params])
        return command

    return decorate
