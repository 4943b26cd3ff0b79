"""What every clipdata web server puts in front of its app (the review app; a Label Studio
ML backend reuses it): the Host header must name this server (DNS rebinding), state changes
come from this server's own origin and carry the token in a header (cross-site forgery),
every answer has the security headers, and every refusal is JSON with a one-line reason.

`HostRule` is Jupyter's rule: a server listening on a loopback address answers only to
loopback addresses and `localhost`; one listening on a given address or name answers to that
too; one listening on every address (0.0.0.0, ::) answers to any address literal and to
this machine's name. More names are allowed by asking (`--allow-host`). An address literal
is safe: DNS rebinding needs a name that the attacker's DNS points here."""
from __future__ import annotations

import hmac
import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..names import dumps, message

TOKEN_HEADER = "x-clipdata-token"
SAFE_METHODS = ("GET", "HEAD")
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; "
                                 b"form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
WILDCARDS = ("", "0.0.0.0", "::")
MAX_REASON = 1000
DEBUG = "CLIPDATA_DEBUG"
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?")


class JSONAnswer(JSONResponse):
    """A JSON answer every client can read: a name that is not UTF-8 (from a file or an
    option) is spelled `\\xNN` (clipdata/names.py), where plain JSON could not encode it."""

    def render(self, content: object) -> bytes:
        return dumps(content, allow_nan=False, separators=(",", ":")).encode("utf-8")


def error(status: int, reason: str) -> JSONResponse:
    """A refusal: `{"error": one line}`, at most MAX_REASON characters (a client's own values
    are cut to 200 where they are named)."""
    line = " ".join(message(str(reason)).split())
    return JSONAnswer({"error": line[:MAX_REASON]}, status, headers={"cache-control": "no-store"})


def split_host(value: str) -> tuple[str, int | None] | None:
    """(host, port) of a Host header value, the host lower-case and without a trailing dot or
    IPv6 brackets; None when it is not a host[:port] at all."""
    m = _HOST.fullmatch(value.strip())
    if not m:
        return None
    host = (m["v6"] or m["name"]).lower().rstrip(".")
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 0 < port < 65536:
        return None
    return host, port


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass
class HostRule:
    """The host names and addresses a server started on `bind` (as typed, e.g. `--host`)
    answers to. `bound`: the address its socket got; `names`: more names to allow."""

    bind: str
    bound: str = ""
    names: Iterable[str] = ()
    allowed: set[str] = field(init=False)
    any_address: bool = field(init=False)

    def __post_init__(self) -> None:
        bind = self.bind.strip().strip("[]").lower().rstrip(".")
        self.any_address = bind in WILDCARDS or self.bound in ("0.0.0.0", "::")
        self.allowed = {"localhost"} | {n.strip().lower().rstrip(".") for n in self.names if n.strip()}
        for given in (bind, self.bound.lower()):
            if given and given not in WILDCARDS:
                self.allowed.add(str(_address(given) or given))
        if self.any_address:
            self.allowed.add(socket.gethostname().lower())

    def allows(self, host: str) -> bool:
        """Whether a host (from `split_host`) names this server."""
        addr = _address(host)
        if addr is None:
            return host in self.allowed
        return self.any_address or addr.is_loopback or str(addr) in self.allowed

    def shown(self) -> str:
        """The allowed names, for a message."""
        return ", ".join(sorted(self.allowed | {"127.0.0.1"}) + (["any address"] if self.any_address else []))


class Guard:
    """ASGI middleware, in this order: the Host rule (403), the same-origin rule for state
    changes (403), the token (401 none, 403 wrong; for a state change only in the header,
    so a cookie alone never changes state), then the app; security headers on every answer.

    `token` None: no token check (a server whose clients authenticate otherwise). `cookie`:
    the cookie that carries the token after the printed URL was opened (HttpOnly,
    SameSite=Strict); `redirect_path`: where a GET with `?token=` trades it for the cookie."""

    def __init__(self, app: ASGIApp, hosts: HostRule, token: str | None = None, cookie: str | None = None,
                 redirect_path: str | None = "/", allow_host_hint: str = "--allow-host") -> None:
        self.app, self.hosts, self.token, self.cookie = app, hosts, token, cookie
        self.redirect_path, self.hint = redirect_path, allow_host_hint

    def _same(self, given: str | None) -> bool:
        return given is not None and self.token is not None and hmac.compare_digest(
            given.encode("utf-8", "surrogatepass"), self.token.encode())

    def host_problem(self, request: Request) -> str | None:
        raw = request.headers.get("host")
        if raw is None:
            return "no Host header"
        parsed = split_host(raw)
        if parsed is None:
            return f"the Host header {raw[:80]!r} is not a host name"
        if not self.hosts.allows(parsed[0]):
            return (f"the Host header names {parsed[0][:80]!r}, not this server ({self.hosts.shown()}): "
                    f"start it with {self.hint} {parsed[0][:80]} to answer to that name")
        return None

    def origin_problem(self, request: Request) -> str | None:
        """None when a state change comes from this server's own pages: no Origin (not a
        browser), or one whose host is allowed and whose port is the one the browser used."""
        origin, site = request.headers.get("origin"), request.headers.get("sec-fetch-site")
        if site not in (None, "same-origin", "none"):
            return "requests from another origin are refused"
        if origin is None:
            return None
        try:
            parts = urlsplit(origin)
            origin_port = parts.port or 80
        except ValueError:
            return "requests from another origin are refused"
        host = split_host(request.headers.get("host", ""))
        if (parts.scheme != "http" or not parts.hostname or not self.hosts.allows(parts.hostname.lower().rstrip("."))
                or host is None or origin_port != (host[1] or 80) or parts.path not in ("", "/")):
            return "requests from another origin are refused"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        problem = self.host_problem(request)
        if problem:
            return await self._send(error(403, problem), scope, receive, send)
        header = request.headers.get(TOKEN_HEADER)
        if request.method not in SAFE_METHODS:
            problem = self.origin_problem(request)
            if problem:
                return await self._send(error(403, problem), scope, receive, send)
            if self.token is not None and header is None:  # a cookie alone never changes state
                return await self._send(error(401, f"a {request.method} needs the token in the {TOKEN_HEADER} header"),
                                        scope, receive, send)
        if self.token is not None:
            given = header or request.query_params.get("token") or (
                request.cookies.get(self.cookie) if self.cookie else None)
            if not given:
                return await self._send(error(401, "no access token: open the URL the server printed"),
                                        scope, receive, send)
            if not self._same(given):
                return await self._send(error(403, "wrong access token"), scope, receive, send)
            if (self.cookie and self.redirect_path and request.method in SAFE_METHODS
                    and request.url.path == self.redirect_path and "token" in request.query_params):
                # the token leaves the address bar (and history) for an HttpOnly cookie
                response: Response = RedirectResponse(self.redirect_path, 303)
                response.set_cookie(self.cookie, self.token, httponly=True, samesite="strict")
                return await self._send(response, scope, receive, send)
        await self._send(self.app, scope, receive, send)

    async def _send(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await app(scope, receive, with_headers)


class LastResort:
    """Outermost: an exception no handler took (a bug) is one line through `report` (the
    server's log), not a traceback (CLIPDATA_DEBUG=1 lets it through); the client already
    got a one-line 500. Starlette re-raises what its 500 handler answered, so without this
    uvicorn would print the traceback."""

    def __init__(self, app: ASGIApp, report: Callable[[str], None]) -> None:
        self.app, self.report = app, report

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as e:
            if os.environ.get(DEBUG) == "1":
                raise
            first = (str(e).strip().splitlines() or [""])[0][:300]
            self.report(f"{scope.get('method', '')} {scope.get('path', '')[:200]}: {type(e).__name__}: {first} "
                        f"— this is a bug in clipdata, please report it (run again with {DEBUG}=1 for the traceback)")
