"""The review app's HTTP interface as an OpenAPI 3.1 document: the one description of every
endpoint's parameters and body. The app validates each request against it (validate.py),
the API fuzzer generates requests from it (tests/test_serve_fuzz.py), and it is served at
/api/openapi.json for any other client or tool. Prose: formats/review.md."""
from __future__ import annotations

from typing import Callable

from starlette.routing import Route

from .queue import STATES
from .validate import Operation

MAX_PATH = 4096  # characters of an image path (PATH_MAX)
MAX_CLASS = 1000
MAX_TEXT = 1000  # a search text
MAX_ROWS = 10_000  # decisions in one request

_ERROR = {"description": "refused, with a one-line reason",
          "content": {"application/json": {"schema": {
              "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}
_JSON = {"description": "done", "content": {"application/json": {"schema": {"type": "object"}}}}
_IMAGE = {"description": "the image", "content": {"image/*": {}}}

_ROW = {"type": "object", "required": ["path", "class"], "additionalProperties": False, "properties": {
    "path": {"type": "string", "maxLength": MAX_PATH},
    "class": {"type": ["string", "null"], "maxLength": MAX_CLASS},
    "undo": {"type": "boolean"}}}
DECISIONS = {"if": {"type": "array"},
             "then": {"type": "array", "items": _ROW, "minItems": 1, "maxItems": MAX_ROWS},
             "else": _ROW}
SEARCH = {"type": "object", "required": ["text"], "additionalProperties": False,
          "properties": {"text": {"type": "string", "maxLength": MAX_TEXT}}}
SIMILAR = {"type": "object", "required": ["path"], "additionalProperties": False,
           "properties": {"path": {"type": "string", "maxLength": MAX_PATH}}}
INDEX = {"name": "index", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}


def _query(name: str, schema: dict) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema}


# path -> method -> (operationId, parameters, body schema or None)
ENDPOINTS: dict[str, dict[str, tuple[str, list[dict], dict | None]]] = {
    "/": {"get": ("page", [], None)},
    "/static/{name}": {"get": ("static", [{"name": "name", "in": "path", "required": True,
                                           "schema": {"type": "string", "enum": ["app.js", "app.css"]}}], None)},
    "/api/openapi.json": {"get": ("openapi", [], None)},
    "/api/items": {"get": ("items", [
        _query("offset", {"type": "integer", "minimum": 0}),
        _query("limit", {"type": "integer", "minimum": 0}),
        _query("filter", {"type": "string", "enum": list(STATES)}),
        _query("class", {"type": "string", "maxLength": MAX_CLASS}),
        _query("min", {"type": "number"}),
        _query("max", {"type": "number"})], None)},
    "/api/progress": {"get": ("progress", [], None)},
    "/api/decisions": {"post": ("decisions", [], DECISIONS)},
    "/api/image/{index}": {"get": ("image", [INDEX], None)},
    "/api/thumb/{index}": {"get": ("thumb", [INDEX], None)},
    "/api/search": {"post": ("search", [], SEARCH)},
    "/api/similar": {"post": ("similar", [], SIMILAR)},
    "/api/relabel": {"post": ("relabel", [], None)},
}
_ANSWERS = {"image": _IMAGE, "thumb": _IMAGE, "page": {"description": "the page", "content": {"text/html": {}}},
            "static": {"description": "a file of the page"}}


def document() -> dict:
    """The OpenAPI document (every answer may also be a 400/401/403/404/413/422 refusal)."""
    paths: dict = {}
    for path, methods in ENDPOINTS.items():
        for method, (op_id, params, body) in methods.items():
            op: dict = {"operationId": op_id, "parameters": params,
                        "responses": {"200": _ANSWERS.get(op_id, _JSON), "4XX": _ERROR}}
            if body is not None:
                op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
            paths.setdefault(path, {})[method] = op
    return {"openapi": "3.1.0", "info": {"title": "clipdata review", "version": "1"},
            "components": {"securitySchemes": {"token": {"type": "apiKey", "in": "header",
                                                         "name": "X-Clipdata-Token"}}},
            "security": [{"token": []}], "paths": paths}


def routes(handlers: dict[str, Callable]) -> list[Route]:
    """A route per endpoint, each checked against its schema before its handler runs."""
    out = []
    for path, methods in ENDPOINTS.items():
        for method, (op_id, params, body) in methods.items():
            out.append(Route(path, Operation(handlers[op_id], params, body).__call__, methods=[method.upper()]))
    return out
