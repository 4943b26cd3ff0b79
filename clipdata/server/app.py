"""The review web app (Starlette): the HTTP interface of formats/review.md and the page in
static/. Safe by default: every request needs the token of the printed URL (then a cookie),
state changes are POSTs carrying the token in a header from this origin, and images are
served only for listed items, by index."""
from __future__ import annotations

import hmac
import io
import json
from collections import OrderedDict
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ClipdataError, OptionError, SourceError
from .queue import Queue
from .vectors import Vectors

TOKEN_HEADER = "x-clipdata-token"
SAFE_METHODS = ("GET", "HEAD")
THUMB_SIDE = 256
BROWSER_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                 ".gif": "image/gif", ".bmp": "image/bmp"}
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; "
                                 b"form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def cookie_name(port: int) -> str:
    """One cookie per port: browsers share cookies across ports of one host."""
    return f"clipdata_token_{port}"


class Guard:
    """ASGI middleware: the token check, the same-origin rule for state changes, and the
    security headers on every answer."""

    def __init__(self, app: ASGIApp, token: str, port: int) -> None:
        self.app, self.token, self.port = app, token, port

    def _same(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        header = request.headers.get(TOKEN_HEADER)
        given = header or request.query_params.get("token") or request.cookies.get(cookie_name(self.port))
        if request.method not in SAFE_METHODS:
            origin = request.headers.get("origin")
            site = request.headers.get("sec-fetch-site")
            own = f"{request.url.scheme}://{request.headers.get('host', '')}"
            if (origin is not None and origin != own) or site not in (None, "same-origin", "none"):
                return await self._send(JSONResponse({"error": "requests from another origin are refused"}, 403),
                                        scope, receive, send)
            if header is None:  # a cookie alone never changes state (no cross-site forgery)
                return await self._send(JSONResponse(
                    {"error": f"a POST needs the token in the {TOKEN_HEADER} header"}, 401), scope, receive, send)
        if not given:
            return await self._send(JSONResponse({"error": "no access token: open the URL the server printed"}, 401),
                                    scope, receive, send)
        if not self._same(given):
            return await self._send(JSONResponse({"error": "wrong access token"}, 403), scope, receive, send)
        if request.method in SAFE_METHODS and request.url.path == "/" and "token" in request.query_params:
            # the token leaves the address bar (and history) for an HttpOnly cookie
            response = RedirectResponse("/", 303)
            response.set_cookie(cookie_name(self.port), self.token, httponly=True, samesite="strict")
            return await self._send(response, scope, receive, send)
        await self._send(self.app, scope, receive, send)

    async def _send(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)

        await app(scope, receive, with_headers)


class Thumbs:
    """Thumbnails made on the fly with Pillow, kept in memory up to a byte budget (LRU)."""

    def __init__(self, budget: int = 128 << 20) -> None:
        self.budget, self.used = budget, 0
        self.data: OrderedDict[int, bytes] = OrderedDict()

    def get(self, index: int, path: Path, side: int = THUMB_SIDE) -> bytes:
        if index in self.data:
            self.data.move_to_end(index)
            return self.data[index]
        data = _jpeg(path, side)
        self.data[index] = data
        self.used += len(data)
        while self.used > self.budget and len(self.data) > 1:
            self.used -= len(self.data.popitem(last=False)[1])
        return data


def _jpeg(path: Path, side: int) -> bytes:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.draft("RGB", (side, side))
        im = ImageOps.exif_transpose(im).convert("RGB")
        im.thumbnail((side, side))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _float(value: str | None, name: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except ValueError:
        raise OptionError(f"{name}={value!r} is not a number") from None


def create_app(queue: Queue, vectors: Vectors, token: str, port: int) -> ASGIApp:
    thumbs = Thumbs()

    def page(request: Request) -> Response:
        html = _static("index.html").decode("utf-8").replace("{{TOKEN}}", token)
        return Response(html, media_type="text/html; charset=utf-8", headers={"cache-control": "no-store"})

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        kinds = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
        if name not in kinds:
            return JSONResponse({"error": "not found"}, 404)
        return Response(_static(name), media_type=kinds[name])

    def items(request: Request) -> Response:
        q = request.query_params
        try:
            offset = int(q.get("offset") or 0)
            limit = int(q["limit"]) if q.get("limit") else None
        except ValueError:
            raise OptionError("offset and limit are whole numbers") from None
        body = queue.query(state=q.get("filter") or "all", cls=q.get("class") or None,
                           min_score=_float(q.get("min"), "min"), max_score=_float(q.get("max"), "max"),
                           offset=max(offset, 0), limit=limit)
        return _json({**body, "classes": queue.classes, "progress": queue.progress()})

    def progress(request: Request) -> Response:
        queue.log.refresh()
        return _json(queue.progress())

    async def decisions(request: Request) -> Response:
        body = await _body(request)
        rows = body if isinstance(body, list) else [body]
        if not rows or not all(isinstance(r, dict) and isinstance(r.get("path"), str) and "class" in r for r in rows):
            raise OptionError('expected {"path": ..., "class": ...} or a list of them')
        undo = {bool(r.get("undo")) for r in rows}
        if len(undo) > 1:
            raise OptionError("an undo and a decision cannot be saved in one request")
        saved = await _in_thread(lambda: queue.decide([(r["path"], r["class"]) for r in rows], undo=undo.pop()))
        return _json({"saved": saved, "items": [queue.item(queue.by_path[r["path"]]) for r in saved],
                      "progress": queue.progress()})

    def image(request: Request) -> Response:
        path = queue.file(request.path_params["index"])
        if path is None:
            return JSONResponse({"error": "not found"}, 404)
        kind = BROWSER_TYPES.get(path.suffix.lower())
        if kind:
            return FileResponse(path, media_type=kind, headers={"cache-control": "private, max-age=3600"})
        return Response(_jpeg(path, 2048), media_type="image/jpeg")

    def thumb(request: Request) -> Response:
        index = request.path_params["index"]
        path = queue.file(index)
        if path is None:
            return JSONResponse({"error": "not found"}, 404)
        return Response(thumbs.get(index, path), media_type="image/jpeg",
                        headers={"cache-control": "private, max-age=3600"})

    async def search(request: Request) -> Response:
        body = await _body(request)
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise OptionError('expected {"text": ...}')
        return _json(await _in_thread(vectors.search, body["text"]))

    async def similar(request: Request) -> Response:
        body = await _body(request)
        row = queue.by_path.get(body.get("path")) if isinstance(body, dict) else None
        if row is None:
            raise SourceError('expected {"path": ...} naming a listed image')
        return _json(await _in_thread(vectors.similar, row["index"]))

    async def relabel(request: Request) -> Response:
        result = await _in_thread(vectors.relabel)
        return _json({**result, "progress": queue.progress()})

    routes = [
        Route("/", page),
        Route("/static/{name}", static),
        Route("/api/items", items),
        Route("/api/progress", progress),
        Route("/api/decisions", decisions, methods=["POST"]),
        Route("/api/image/{index:int}", image),
        Route("/api/thumb/{index:int}", thumb),
        Route("/api/search", search, methods=["POST"]),
        Route("/api/similar", similar, methods=["POST"]),
        Route("/api/relabel", relabel, methods=["POST"]),
    ]

    async def clipdata_error(request: Request, exc: Exception) -> Response:
        status = 404 if isinstance(exc, SourceError) and "listed" in str(exc) else 400
        return JSONResponse({"error": str(exc)}, status)

    app = Starlette(routes=routes, exception_handlers={ClipdataError: clipdata_error},
                    middleware=[Middleware(Guard, token=token, port=port)])
    return app


async def _body(request: Request):
    try:
        return json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OptionError("the request body is not JSON") from None


async def _in_thread(fn, *args):
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def _json(body) -> Response:
    return JSONResponse(body, headers={"cache-control": "no-store"})
