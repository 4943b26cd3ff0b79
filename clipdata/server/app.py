"""The review web app (Starlette): the HTTP interface of formats/review.md and the page in
static/. Safe by default (guard.py): the Host header must name this server, every request
needs the token of the printed URL (then a cookie), state changes are POSTs carrying the
token in a header from this server's origin, and images are served only for listed items,
by index. Every request is checked against its schema (openapi.py) before a handler sees
it; anything else that goes wrong answers one line, never a traceback."""
from __future__ import annotations

import os
import stat
import sys
import threading
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from ..errors import ClipdataError
from ..images import Unreadable, thumbnail_jpeg
from . import openapi
from .guard import Guard, HostRule, JSONAnswer, LastResort, error
from .queue import Queue
from .validate import RequestError
from .vectors import Vectors

THUMB_SIDE = 256
BROWSER_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                 ".gif": "image/gif", ".bmp": "image/bmp"}


def cookie_name(port: int) -> str:
    """One cookie per port: browsers share cookies across ports of one host."""
    return f"clipdata_token_{port}"


# Reads and decodes of images at once, whatever the number of request threads (40): each
# may hold an image read whole (up to MAX_IMAGE_BYTES) or a decode up to Pillow's limit, so
# memory stays bounded by this count; decoding is CPU-bound, so more would not be faster.
HEAVY = threading.BoundedSemaphore(max(2, min(4, os.cpu_count() or 2)))


class Thumbs:
    """Thumbnails made on the fly with Pillow, kept in memory up to a byte budget (LRU);
    requests run in several threads, so the table has a lock (a thumbnail is made outside it).
    Keyed by the file as it is now (inode, size, mtime), not only its index: an image
    replaced during review gets a new thumbnail."""

    def __init__(self, budget: int = 128 << 20) -> None:
        self.budget, self.used = budget, 0
        self.data: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, index: int, path: Path, side: int = THUMB_SIDE) -> bytes:
        st = os.stat(path, follow_symlinks=False)  # a missing file is the caller's OSError
        key = (index, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        with HEAVY, open_listed(path) as f:
            data = thumbnail_jpeg(f, side)
        with self._lock:
            if key not in self.data:
                self.data[key] = data
                self.used += len(data)
            while self.used > self.budget and len(self.data) > 1:
                self.used -= len(self.data.popitem(last=False)[1])
        return data


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


MAX_IMAGE_BYTES = 256 << 20  # an image served as it is; larger ones are refused, not read


def open_listed(path: Path) -> BinaryIO:
    """Open a listed image that `Queue.file` found to be a regular file inside the root, as
    it is now: the check and the open are two moments, and the file may have been swapped
    since. A symlink is not followed (the path was resolved), a FIFO or device does not
    block the open (O_NONBLOCK) and is refused from the open file's own stat."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Unreadable("not a regular file (a pipe, socket, device or folder)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def create_app(queue: Queue, vectors: Vectors, token: str, port: int, hosts: HostRule | None = None) -> ASGIApp:
    """The app, behind its guard: `hosts` says which Host names it answers to (default: this
    machine's loopback names only)."""
    thumbs = Thumbs()
    document = openapi.document()

    def page(request: Request, values: dict) -> Response:
        html = _static("index.html").decode("utf-8").replace("{{TOKEN}}", token)
        return Response(html, media_type="text/html; charset=utf-8", headers={"cache-control": "no-store"})

    def static(request: Request, values: dict) -> Response:
        kinds = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
        return Response(_static(values["name"]), media_type=kinds[values["name"]])

    def items(request: Request, values: dict) -> Response:
        body = queue.query(state=values.get("filter", "all"), cls=values.get("class"),
                           min_score=values.get("min"), max_score=values.get("max"),
                           offset=values.get("offset", 0), limit=values.get("limit"))
        return _json({**body, "classes": queue.classes, "progress": queue.progress()})

    def progress(request: Request, values: dict) -> Response:
        queue.log.refresh()
        return _json(queue.progress())

    def listed(path: str) -> dict:
        row = queue.by_path.get(path)
        if row is None:
            raise RequestError(404, f"{path[:200]!r} is not one of the listed images")
        return row

    def decisions(request: Request, values: dict) -> Response:
        body = values["body"]
        rows = body if isinstance(body, list) else [body]
        undo = {bool(r.get("undo")) for r in rows}
        if len(undo) > 1:
            raise RequestError(400, "an undo and a decision cannot be saved in one request")
        for r in rows:
            listed(r["path"])
        saved = queue.decide([(r["path"], r["class"]) for r in rows], undo=undo.pop())
        return _json({"saved": saved, "items": [queue.item(queue.by_path[r["path"]]) for r in saved],
                      "progress": queue.progress()})

    def image_file(index: int) -> Path:
        path = queue.file(index)
        if path is None:
            raise RequestError(404, f"no listed image {index} inside the image folder")
        return path

    def unreadable(index: int, why: str) -> RequestError:
        return RequestError(422, f"{queue.items[index]['path'][:200]}: cannot be shown: {why} "
                                 "(did the file change since label read it?)")

    def image(request: Request, values: dict) -> Response:
        index = values["index"]
        path = image_file(index)
        kind = BROWSER_TYPES.get(path.suffix.lower())
        try:
            with HEAVY, open_listed(path) as f:
                if kind:
                    data = f.read(MAX_IMAGE_BYTES + 1)  # what is there now, even if it grew since a stat
                    if len(data) > MAX_IMAGE_BYTES:
                        raise unreadable(index, f"larger than {MAX_IMAGE_BYTES >> 20} MB")
                    return Response(data, media_type=kind, headers={"cache-control": "private, max-age=3600"})
                return Response(thumbnail_jpeg(f, 2048), media_type="image/jpeg")
        except Unreadable as e:
            raise unreadable(index, str(e)) from None
        except OSError as e:
            raise unreadable(index, e.strerror or type(e).__name__) from None

    def thumb(request: Request, values: dict) -> Response:
        index = values["index"]
        path = image_file(index)
        try:
            data = thumbs.get(index, path)
        except Unreadable as e:
            raise unreadable(index, str(e)) from None
        except OSError as e:  # gone, or swapped for a symlink, since it was listed
            raise unreadable(index, e.strerror or type(e).__name__) from None
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})

    def search(request: Request, values: dict) -> Response:
        return _json(vectors.search(values["body"]["text"]))

    def similar(request: Request, values: dict) -> Response:
        return _json(vectors.similar(listed(values["body"]["path"])["index"]))

    def relabel(request: Request, values: dict) -> Response:
        result = vectors.relabel()
        return _json({**result, "progress": queue.progress()})

    def spec(request: Request, values: dict) -> Response:
        return _json(document)

    handlers = {"page": page, "static": static, "openapi": spec, "items": items, "progress": progress,
                "decisions": decisions, "image": image, "thumb": thumb, "search": search, "similar": similar,
                "relabel": relabel}

    async def refused(request: Request, exc: Exception) -> Response:
        if isinstance(exc, RequestError):
            return error(exc.status, exc.reason)
        if isinstance(exc, HTTPException):  # no such route, a method the route does not take
            return error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path[:200]}")
        return error(400, str(exc))  # a ClipdataError: what the server cannot do with this request

    async def bug(request: Request, exc: Exception) -> Response:
        return error(500, f"internal error ({type(exc).__name__}); the server log has the details")

    app = Starlette(routes=openapi.routes(handlers),
                    exception_handlers={RequestError: refused, HTTPException: refused, ClipdataError: refused,
                                        Exception: bug},
                    middleware=[Middleware(Guard, hosts=hosts or HostRule("127.0.0.1"), token=token,
                                           cookie=cookie_name(port))])
    return LastResort(app, lambda line: print(f"error: {line}", file=sys.stderr, flush=True))


def _json(body) -> Response:
    return JSONAnswer(body, headers={"cache-control": "no-store"})
