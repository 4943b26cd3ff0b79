"""review serve: the review app over a label output folder (clipdata/server)."""
from __future__ import annotations

from pathlib import Path

from ..server import Server, start


def review_serve(labeled: str | Path, *, port: int = 0, host: str = "127.0.0.1",
                 images: str | Path | None = None, open_browser: bool = False,
                 allow_hosts: tuple[str, ...] | list[str] = (), model: str | None = None) -> Server:
    """Start the review app on `host:port` (0: a free port) and return the running server:
    `.url` carries the access token, `.stop()` ends it. Decisions go to LABELED/decisions.jsonl.
    It answers only to requests whose Host names it: 127.0.0.1, localhost, `host`, and the
    names in `allow_hosts` (a reverse proxy's or this machine's name on the network).
    `model`: the model label used, when it is no longer where label.json says (search and
    re-label need it)."""
    server = start(labeled, images=images, host=host, port=port, allow_hosts=allow_hosts, model=model)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    return server
