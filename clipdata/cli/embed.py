"""embed on the command line."""
from __future__ import annotations

from pathlib import Path

import typer

from .app import app, errors, progress
from .options import Quiet, engine_options
from .render import footer, say

EMBED_HELP = """Embed a folder of images into an embeddings folder others can read.

Writes clip-retrieval's layout: OUT/img_emb/img_emb_{i}.npy (float32 unit rows),
OUT/metadata/metadata_{i}.parquet (image_path, width, height, sha256) and OUT/embed.json.
autofaiss and clip-retrieval read it as is; search, unique and duplicates take it with
--embeddings OUT. A second run reuses the cache; a killed run keeps its finished parts.

Example:

\b
  clipdata embed photos/ --out photos-emb/ --model ./clip-vit-base-patch32
  clipdata search --embeddings photos-emb/ "a red car" --model ./clip-vit-base-patch32
"""


@app.command(help=EMBED_HELP, no_args_is_help=True)
@engine_options()
def embed(
    images: Path = typer.Argument(..., metavar="IMAGES", help="Folder of images (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="The embeddings folder to write."),
    part_size: int = typer.Option(1_000_000, "--part-size", help="Most rows per part file."),
    quiet: Quiet = False,
    spec=None, cache=None,
) -> None:
    from ..commands.embed import embed as api_embed

    with errors(), progress("embedding", quiet) as update:
        r = api_embed(images, out, spec=spec, part_size=part_size, cache_dir=cache, progress=update)
    if not quiet:
        kept = f", {r.parts_kept} kept from an earlier run" if r.parts_kept else ""
        say(f"{r.out}: {r.written} embeddings in {r.parts} part(s){kept}, {r.seconds:.1f} s")
        footer(r)
