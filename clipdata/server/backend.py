"""The Label Studio ML backend (Starlette): the protocol subset Label Studio 1.23 speaks to a
machine-learning backend (/health, /setup, /predict, /webhook, /train, /versions) over the
Learner in learner.py. Every refusal is a 4xx with one line, also logged; a task whose
image cannot be read gets no prediction while the others are predicted. Protocol, score,
learning rule and safety rules: formats/labelstudio-backend.md."""
from __future__ import annotations

import base64
import binascii
import hmac
import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ClipdataError
from .guard import Guard, HostRule, JSONAnswer, LastResort, error
from .labelstudio import BackendError, parse_config
from .learner import Learner, project_id
from .validate import Operation, RequestError

log = logging.getLogger("clipdata.backend")
MAX_BODY = 256 << 20   # bytes: a /predict of thousands of tasks, or a legacy /train with their annotations
LEARN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED",
                "ANNOTATIONS_DELETED", "START_TRAINING")
REALM = 'Basic realm="clipdata review backend"'

# The bodies Label Studio sends (it sends more fields than these; they are ignored).
_PROJECT = {"type": ["string", "integer"], "maxLength": 100}
_CONFIG = {"type": ["string", "null"], "maxLength": 1 << 20}
SETUP = {"type": "object", "required": ["project", "schema"], "properties": {
    "project": _PROJECT, "schema": {"type": "string", "maxLength": 1 << 20},
    "access_token": {"type": ["string", "null"], "maxLength": 4096}}}
PREDICT = {"type": "object", "required": ["tasks", "project"], "properties": {
    "tasks": {"type": "array", "items": {"type": "object"}}, "project": _PROJECT, "label_config": _CONFIG}}
WEBHOOK = {"type": "object", "required": ["action"], "properties": {
    "action": {"type": "string", "maxLength": 100},
    "project": {"type": ["object", "string", "integer"], "properties": {"label_config": _CONFIG}}}}
TRAIN = {"type": "object", "required": ["project"], "properties": {"project": _PROJECT, "label_config": _CONFIG}}


class BasicAuth:
    """ASGI middleware: HTTP basic auth (Label Studio's "Basic Auth" option for a backend) on
    every route but /webhook. Label Studio's webhooks carry no credentials, so /webhook
    checks itself: without them it only rings the bell for a project already set up."""

    def __init__(self, app: ASGIApp, user: str, password: str) -> None:
        self.app = app
        self.expected = f"{user}:{password}".encode("utf-8")

    def passes(self, header: str | None) -> bool:
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            given = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self.expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        ok = self.passes(Request(scope).headers.get("authorization"))
        scope.setdefault("state", {})["authenticated"] = ok
        if not ok and scope.get("path") != "/webhook":
            response = error(401, "this backend needs basic auth: set it in the model's connection settings")
            response.headers["www-authenticate"] = REALM
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


def create_app(learner: Learner, hosts: HostRule, auth: tuple[str, str] | None = None) -> ASGIApp:
    """The backend's ASGI app: `hosts` the Host rule (guard.py), `auth` (user, password) for
    basic auth, or None. Each body is checked against its schema before a handler runs."""

    def health(request: Request, values: dict) -> Response:
        return JSONAnswer({"status": "UP", "model_class": "clipdata", **learner.status()},
                            headers={"cache-control": "no-store"})

    def setup(request: Request, values: dict) -> Response:
        body = values["body"]
        pid = project_id(body["project"])
        control = parse_config(body["schema"])
        token = body.get("access_token")
        if learner.studio is not None and learner.studio.token is None and token:
            learner.studio.token = token  # Label Studio's own token for its API (LABEL_STUDIO_API_KEY wins)
        return JSONAnswer({"model_version": learner.project(pid, control).scorer.version})

    def _project(body: dict):
        config = body.get("label_config")
        return learner.project(project_id(body["project"]), parse_config(config) if config is not None else None)

    def predict(request: Request, values: dict) -> Response:
        project = _project(values["body"])
        results, errors = learner.predict(project, values["body"]["tasks"])
        answer: dict = {"results": results, "model_version": project.scorer.version}
        if errors:
            answer["errors"] = errors
        return JSONAnswer(answer)

    def webhook(request: Request, values: dict) -> Response:
        body = values["body"]
        action = body["action"]
        if action not in LEARN_EVENTS:
            return JSONAnswer({"status": "ignored", "action": action})
        project = body.get("project")
        pid = project_id(project.get("id") if isinstance(project, dict) else project)
        trusted = auth is None or request.scope.get("state", {}).get("authenticated", False)
        config = project.get("label_config") if isinstance(project, dict) and trusted else None
        target = learner.projects.get(pid) if config is None else learner.project(pid, parse_config(config))
        if target is None:
            raise BackendError(f"project {pid} has not been set up with this backend",
                               hint="connect the backend in the project's settings (Label Studio calls /setup)"
                               if trusted else "a webhook without credentials only refits a project that was set up")
        learner.request_fit(target, action)
        return JSONAnswer({"status": "fit queued", "project": pid}, 201)

    def train(request: Request, values: dict) -> Response:
        project = _project(values["body"])
        learner.request_fit(project, "train")
        return JSONAnswer({"status": "fit queued", "project": project.id})

    def versions(request: Request, values: dict) -> Response:
        return JSONAnswer({"versions": learner.versions()})

    def metrics(request: Request, values: dict) -> Response:
        return JSONAnswer({})

    routes = [
        Route("/", Operation(health).__call__, methods=["GET"]),
        Route("/health", Operation(health).__call__, methods=["GET"]),
        Route("/setup", Operation(setup, body=SETUP).__call__, methods=["POST"]),
        Route("/predict", Operation(predict, body=PREDICT, max_body=MAX_BODY).__call__, methods=["POST"]),
        Route("/webhook", Operation(webhook, body=WEBHOOK, max_body=MAX_BODY).__call__, methods=["POST"]),
        Route("/train", Operation(train, body=TRAIN, max_body=MAX_BODY).__call__, methods=["POST"]),
        Route("/versions", Operation(versions).__call__, methods=["GET"]),
        Route("/metrics", Operation(metrics).__call__, methods=["GET"]),
    ]

    async def refused(request: Request, exc: Exception) -> Response:
        if isinstance(exc, RequestError):
            status, reason = exc.status, exc.reason
        elif isinstance(exc, HTTPException):  # no such route, a method the route does not take
            status, reason = exc.status_code, f"{exc.detail}: {request.method} {request.url.path[:200]}"
        else:  # a ClipdataError: what the backend cannot do with this request
            status, reason = 400, str(exc)
        log.warning("%s %s: %s", request.method, request.url.path[:200], reason)
        return error(status, reason)

    async def bug(request: Request, exc: Exception) -> Response:  # LastResort logs it
        return error(500, f"internal error ({type(exc).__name__}); the backend's log has the details")

    app: ASGIApp = Starlette(routes=routes, exception_handlers={
        RequestError: refused, HTTPException: refused, ClipdataError: refused, Exception: bug})
    if auth is not None:
        app = BasicAuth(app, *auth)
    return LastResort(Guard(app, hosts, token=None), log.error)


def start_backend(learner: Learner, *, host: str = "127.0.0.1", port: int = 9090,
                  auth: tuple[str, str] | None = None, allow_hosts: tuple[str, ...] | list[str] = ()):
    """Serve the backend with uvicorn in a thread; returns the running run.Server (`.url`,
    `.stop()`, `.wait()`), with `.learner`. It answers only to requests whose Host names it
    (guard.HostRule: loopback, `host`, `allow_hosts`)."""
    from .run import Server, _bind, check_port

    sock = _bind(host, check_port(port))
    hosts = HostRule(host, sock.getsockname()[0], allow_hosts)
    server = Server(create_app(learner, hosts, auth), sock, None, name="Label Studio backend")
    server.learner = learner  # type: ignore[attr-defined]
    stop = server.stop

    def stop_and_clean() -> None:
        stop()
        learner.close()

    server.stop = stop_and_clean  # type: ignore[method-assign]
    return server
