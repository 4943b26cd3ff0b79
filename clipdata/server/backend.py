"""The Label Studio ML backend (Starlette): the protocol subset Label Studio 1.23 speaks to a
machine-learning backend (/health, /setup, /predict, /webhook, /train, /versions) over the
Learner in learner.py. Every refusal is a 4xx with one line, also logged; a task whose
image cannot be read gets no prediction while the others are predicted. Protocol, score,
learning rule and safety rules: formats/labelstudio-backend.md."""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ClipdataError
from .labelstudio import BackendError, parse_config
from .learner import Learner, project_id

log = logging.getLogger("clipdata.backend")
MAX_BODY = 256 << 20   # bytes: a /predict of thousands of tasks, or a legacy /train with their annotations
LEARN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED",
                "ANNOTATIONS_DELETED", "START_TRAINING")
REALM = 'Basic realm="clipdata review backend"'


def _refuse(status: int, message: str) -> JSONResponse:
    line = " ".join(str(message).split())[:500]
    return JSONResponse({"error": line}, status, headers={"cache-control": "no-store"})


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
            response = _refuse(401, "this backend needs basic auth: set it in the model's connection settings")
            response.headers["www-authenticate"] = REALM
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


async def _body(request: Request) -> dict:
    """The request's JSON object, bounded; BackendError (a 400) for anything else."""
    size = request.headers.get("content-length")
    if size is not None and (not size.isdigit() or int(size) > MAX_BODY):
        raise BackendError(f"a body of more than {MAX_BODY} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise BackendError(f"a body of more than {MAX_BODY} bytes")

    def no_constant(name: str):
        raise BackendError(f"{name} is not JSON")

    try:
        body = json.loads(bytes(data) or b"null", parse_constant=no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise BackendError(f"the request body is not JSON ({type(e).__name__})") from None
    if not isinstance(body, dict):
        raise BackendError("the request body is not a JSON object")
    return body


def _field(body: dict, name: str, kind: type, what: str):
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BackendError(f'"{name}" is missing or not {what}')
    return value


def create_app(learner: Learner, auth: tuple[str, str] | None = None) -> ASGIApp:
    """The backend's ASGI app; `auth`: (user, password) for basic auth, or None."""

    def health(request: Request) -> Response:
        return JSONResponse({"status": "UP", "model_class": "clipdata", **learner.status()},
                            headers={"cache-control": "no-store"})

    async def setup(request: Request) -> Response:
        body = await _body(request)
        pid = project_id(body.get("project"))
        control = parse_config(body.get("schema"))
        token = body.get("access_token")
        if learner.studio is not None and learner.studio.token is None and isinstance(token, str) and token:
            learner.studio.token = token  # Label Studio's own token for its API (LABEL_STUDIO_API_KEY wins)
        project = await _in_thread(learner.project, pid, control)
        return JSONResponse({"model_version": project.scorer.version})

    async def predict(request: Request) -> Response:
        body = await _body(request)
        tasks = _field(body, "tasks", list, "a list of tasks")
        if not all(isinstance(t, dict) for t in tasks):
            raise BackendError('"tasks" holds something other than task objects')
        pid = project_id(body.get("project"))
        control = parse_config(body["label_config"]) if body.get("label_config") is not None else None
        project = await _in_thread(learner.project, pid, control)
        results, errors = await _in_thread(learner.predict, project, tasks)
        answer: dict = {"results": results, "model_version": project.scorer.version}
        if errors:
            answer["errors"] = errors
        return JSONResponse(answer)

    async def webhook(request: Request) -> Response:
        body = await _body(request)
        action = body.get("action")
        if action not in LEARN_EVENTS:
            return JSONResponse({"status": "ignored", "action": str(action)[:80]})
        project = body.get("project")
        pid = project_id(project.get("id") if isinstance(project, dict) else project)
        trusted = auth is None or request.scope.get("state", {}).get("authenticated", False)
        config = project.get("label_config") if isinstance(project, dict) and trusted else None
        known = learner.projects.get(pid)
        if known is None and not trusted:
            raise BackendError(f"project {pid} has not been set up with this backend",
                               hint="a webhook without credentials only refits a project that was set up")
        target = known if config is None else await _in_thread(learner.project, pid, parse_config(config))
        if target is None:
            raise BackendError(f"project {pid} has not been set up with this backend",
                               hint="connect the backend in the project's settings (Label Studio calls /setup)")
        learner.request_fit(target, str(action))
        return JSONResponse({"status": "fit queued", "project": pid}, 201)

    async def train(request: Request) -> Response:
        body = await _body(request)
        pid = project_id(body.get("project"))
        control = parse_config(body["label_config"]) if body.get("label_config") is not None else None
        project = await _in_thread(learner.project, pid, control)
        learner.request_fit(project, "train")
        return JSONResponse({"status": "fit queued", "project": pid})

    def versions(request: Request) -> Response:
        return JSONResponse({"versions": learner.versions()})

    def metrics(request: Request) -> Response:
        return JSONResponse({})

    routes = [
        Route("/", health, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/setup", setup, methods=["POST"]),
        Route("/predict", predict, methods=["POST"]),
        Route("/webhook", webhook, methods=["POST"]),
        Route("/train", train, methods=["POST"]),
        Route("/versions", versions, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]

    async def refused(request: Request, exc: Exception) -> Response:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return _refuse(400, str(exc))

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return _refuse(500, f"{type(exc).__name__}: {exc}")

    app: ASGIApp = Starlette(routes=routes, exception_handlers={ClipdataError: refused, Exception: unexpected})
    if auth is not None:
        app = BasicAuth(app, *auth)
    return app


async def _in_thread(fn, *args):
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def start_backend(learner: Learner, *, host: str = "127.0.0.1", port: int = 9090,
                  auth: tuple[str, str] | None = None):
    """Serve the backend with uvicorn in a thread; returns the running run.Server (`.url`,
    `.stop()`, `.wait()`), with `.learner`."""
    from .run import Server, _bind

    sock = _bind(host, port)
    server = Server(create_app(learner, auth), sock, None, name="Label Studio backend")
    server.learner = learner  # type: ignore[attr-defined]
    stop = server.stop

    def stop_and_clean() -> None:
        stop()
        learner.close()

    server.stop = stop_and_clean  # type: ignore[method-assign]
    return server
