"""`clipdata review serve`: the review app, on the `review` command group."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import errors, out_console, review_app

SERVE_HELP = """Review the pre-labels in the browser, by keyboard; every decision is saved.

LABELED is the folder `clipdata label --out` wrote. Decisions are appended to
LABELED/decisions.jsonl as they are made (`clipdata review apply LABELED OUT` reads them).
The printed URL carries an access token; the server listens on 127.0.0.1 only, unless
--host says otherwise. Ctrl+C stops it.

[bold]Examples[/]

  clipdata review serve labeled/

  clipdata review serve labeled/ --port 8765 --no-browser
"""


@review_app.command("serve", help=SERVE_HELP, no_args_is_help=True)
def review_serve(
    labeled: Path = typer.Argument(..., help="The folder clipdata label --out wrote."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; other machines can connect when not 127.0.0.1."),
    allow_host: Optional[list[str]] = typer.Option(
        None, "--allow-host", metavar="NAME", help="Answer to requests for this host name too (a name of this machine, a reverse "
                                   "proxy's); repeat for several. 127.0.0.1, localhost and --host always work."),
    images: Optional[Path] = typer.Option(None, "--images", help="The image folder, when it moved since label ran."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Do not open a browser; only print the URL."),
) -> None:
    from ..commands.serve import review_serve as api_review_serve

    with errors():
        server = api_review_serve(labeled, port=port, host=host, images=images, open_browser=not no_browser,
                                  allow_hosts=allow_host or ())
        if host not in ("127.0.0.1", "localhost", "::1"):
            out_console.print(f"[yellow]note:[/] listening on {host}: anyone with the URL on your network can review",
                              highlight=False)
        out_console.print(f"review at {server.url}", highlight=False, soft_wrap=True)
        out_console.print(f"decisions go to {Path(labeled) / 'decisions.jsonl'}; Ctrl+C stops", highlight=False)
        out_console.file.flush()
        server.wait()
