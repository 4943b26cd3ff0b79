"""`clipdata review serve`: the review app, on the `review` command group."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import errors, out_console, review_app, styled
from .options import AllowHost, ClassList, FromLayout, OntologyFile, Template, engine_options

LOOPBACK = ("127.0.0.1", "localhost", "::1")

SERVE_HELP = """Review the pre-labels in the browser, by keyboard; every decision is saved.

LABELED is the folder `clipdata label --out` wrote. Decisions are appended to
LABELED/decisions.jsonl as they are made (`clipdata review apply LABELED OUT` reads them).
The printed URL carries an access token; the server listens on 127.0.0.1 only, unless
--host says otherwise. Ctrl+C stops it.

Examples:

\b
  clipdata review serve labeled/
  clipdata review serve labeled/ --port 8765 --no-browser
"""


@review_app.command("serve", help=SERVE_HELP, no_args_is_help=True)
def review_serve(
    labeled: Path = typer.Argument(..., metavar="LABELED", help="The folder clipdata label --out wrote."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; other machines can connect when not 127.0.0.1."),
    allow_host: AllowHost = None,
    images: Optional[Path] = typer.Option(None, "--images", help="The image folder, when it moved since label ran."),
    model: Optional[str] = typer.Option(None, "--model", help="The model label used, when it is no longer where "
                                                              "label.json says (search and re-label need it)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Do not open a browser; only print the URL."),
) -> None:
    from ..commands.serve import review_serve as api_review_serve

    with errors():
        server = api_review_serve(labeled, port=port, host=host, images=images, open_browser=not no_browser,
                                  allow_hosts=allow_host or (), model=model)
        if host not in ("127.0.0.1", "localhost", "::1"):
            out_console.print(styled(("note:", "yellow"), f" listening on {host}: anyone with the URL on your network can review"))
        out_console.print(f"review at {server.url}", highlight=False, soft_wrap=True)
        out_console.print(f"decisions go to {Path(labeled) / 'decisions.jsonl'}; Ctrl+C stops", highlight=False)
        out_console.file.flush()
        server.wait()


BACKEND_HELP = """Pre-label in Label Studio, learning from every annotation: a Label Studio ML backend.

For a project whose labeling config has one single-choice <Choices> over an <Image>, every
task gets a class, a score (the margin between the top two classes: sort ascending to see
the least certain first) and a model_version naming the model, the scorer and how many
annotations it learnt from. Each annotation refits a few-shot probe in the background.

Images and annotations are read through Label Studio's API (--label-studio-url, or
LABEL_STUDIO_URL, with the token in LABEL_STUDIO_API_KEY) or from --images; never from other
hosts unless --allow-remote-images. In Label Studio: Settings > Model > Connect model, URL
as printed. Ctrl+C stops.

Examples:

\b
  LABEL_STUDIO_API_KEY=... clipdata review backend --classes "cat,dog" --label-studio-url http://localhost:8080
  clipdata review backend --ontology classes.yaml --images /data/photos --port 9091
"""


@review_app.command("backend", help=BACKEND_HELP, no_args_is_help=True)
@engine_options()
def review_backend(
    classes: ClassList = None,
    ontology: OntologyFile = None,
    from_layout: FromLayout = None,
    train_from: Optional[Path] = typer.Option(None, "--train-from", help="A labeled CLIP layout (or one split): learnt from beside the annotations."),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds when fitting."),
    template: Template = "a photo of a {}",
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface, with a warning)."),
    port: int = typer.Option(9090, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    allow_host: AllowHost = None,
    label_studio_url: Optional[str] = typer.Option(None, "--label-studio-url", envvar="LABEL_STUDIO_URL",
                                                   help="Label Studio's address, for images and annotations (env LABEL_STUDIO_URL)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Read task images that are file paths (or local-files storage) from this folder."),
    allow_remote_images: bool = typer.Option(False, "--allow-remote-images", help="Fetch http(s) image URLs outside Label Studio (without its token)."),
    auth_user: Optional[str] = typer.Option(None, "--auth-user", envvar="BASIC_AUTH_USER", help="Basic auth user (env BASIC_AUTH_USER)."),
    auth_password: Optional[str] = typer.Option(None, "--auth-password", envvar="BASIC_AUTH_PASS", help="Basic auth password (env BASIC_AUTH_PASS)."),
    spec=None, cache=None,
) -> None:
    import logging

    from ..commands.backend import review_backend as api_review_backend

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("clipdata.backend")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    with errors():
        server = api_review_backend(classes, ontology=ontology, from_layout=from_layout, template=template, spec=spec,
                                    host=host, port=port, label_studio_url=label_studio_url, images=images,
                                    allow_remote_images=allow_remote_images, train_from=train_from, folds=folds,
                                    cache_dir=cache, auth_user=auth_user, auth_password=auth_password,
                                    allow_hosts=allow_host or ())
        if host not in LOOPBACK:
            out_console.print(styled(("warning:", "yellow"), f" listening on {host}: every machine that can reach this one can ask "
                                     "for predictions" + ("" if auth_user else " (no --auth-user set)")))
        out_console.print(f"Label Studio backend at {server.url} (Label Studio: Settings > Model > Connect model)",
                          highlight=False, soft_wrap=True)
        out_console.file.flush()
        server.wait()
