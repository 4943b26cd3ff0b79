"""One request-validation layer for clipdata's web servers: each endpoint declares its query
parameters and body as JSON Schema (in an OpenAPI document), and a request reaches the
handler only as checked, typed values. A body is bounded in bytes and in nesting before it
is parsed; JSON that is not UTF-8, holds NaN or a lone surrogate, or breaks the schema is a
400 with one line saying where and what (`RequestError`), never an exception in a handler.

The review app's document is openapi.py; another server (the Label Studio ML backend)
builds its own `Operation`s the same way."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..textfiles import nested_deeper

MAX_BODY = 1 << 20  # bytes; the review app's largest body (a few thousand decisions) is ~200 KB
MAX_DEPTH = 16  # nesting levels; the review app's bodies nest 2
# JSON values in a body (counted before parsing, from its commas and brackets): Python holds
# each in ~50-100 bytes, 20-40 times what it takes in the text, so a body of empty objects
# under the byte limit could take gigabytes. 4,000,000 is a Label Studio /predict of ~100,000
# tasks; at most ~400 MB.
MAX_VALUES = 4_000_000
_WHOLE = re.compile(r"[+-]?[0-9]{1,15}")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "true/false", int: "a number",
               float: "a number", type(None): "null"}


class RequestError(Exception):
    """A request the server refuses: `status` (4xx) and a one-line `reason`."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _kind(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _short(value: object) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, (dict, list)) else _kind(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _place(where: str, path) -> str:
    out = where
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _reason(err, where: str) -> str:
    """One line from a jsonschema error: where in the request, what was wrong; the sent
    value is named by its kind, or shown when short."""
    place, kind, expected, value = _place(where, err.absolute_path), err.validator, err.validator_value, err.instance
    if kind == "type":
        names = expected if isinstance(expected, list) else [expected]
        return f"{place} is {_kind(value)}, expected {' or '.join(names)}"
    if kind == "required":
        missing = [k for k in expected if isinstance(value, dict) and k not in value]
        return f"{place} lacks {', '.join(map(repr, missing))}"
    if kind == "additionalProperties":
        known = set(err.schema.get("properties", {}))
        extra = sorted(k for k in value if k not in known)[:3]
        return f"{place} has unknown field(s) {', '.join(repr(k[:40]) for k in extra)}" + (
            f" (known: {', '.join(sorted(known))})" if known else "")
    if kind == "enum":
        return f"{place} is {_short(value)}, not one of {', '.join(map(str, expected))}"
    if kind in ("maxLength", "minLength"):
        return f"{place} is {len(value)} characters, {'at most' if kind == 'maxLength' else 'at least'} {expected}"
    if kind in ("maxItems", "minItems"):
        return f"{place} has {len(value)} items, {'at most' if kind == 'maxItems' else 'at least'} {expected}"
    if kind in ("minimum", "maximum"):
        return f"{place} is {_short(value)}, {'at least' if kind == 'minimum' else 'at most'} {expected}"
    return f"{place}: {err.message[:200]}"


@dataclass
class Schema:
    """A JSON Schema (draft 2020-12) and its validator, made once."""

    schema: dict
    validator: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from jsonschema import Draft202012Validator

        Draft202012Validator.check_schema(self.schema)
        self.validator = Draft202012Validator(self.schema)

    def check(self, value: object, where: str, status: int = 400) -> object:
        from jsonschema.exceptions import best_match

        err = best_match(self.validator.iter_errors(value))
        if err is not None:
            raise RequestError(status, _reason(err, where))
        return value


def parse_json(data: bytes, *, max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES) -> object:
    """A request body as JSON (empty: None): UTF-8, nested at most `max_depth` levels and
    holding at most `max_values` values (an upper bound counted without parsing), no
    NaN/Infinity or number a float cannot hold, no lone surrogate (which no file could
    store as UTF-8)."""
    if not data.strip():
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RequestError(400, f"the body is not UTF-8 (byte {e.start})") from None
    if nested_deeper(data, max_depth):
        raise RequestError(400, f"the body nests more than {max_depth} levels")
    values = data.count(b",") + data.count(b"[") + data.count(b"{") + 1  # at least as many as it holds
    if values > max_values:
        raise RequestError(413, f"the body holds more than {max_values} JSON values; send it in smaller batches")

    def no_constant(name: str) -> None:
        raise RequestError(400, f"the body holds {name}, which is not JSON")

    def finite(literal: str) -> float:  # 1e400 is JSON, but as a float it is infinity
        value = float(literal)
        if not math.isfinite(value):
            raise RequestError(400, f"the body holds the number {literal[:40]}, too large for a float")
        return value

    try:
        value = json.loads(text, parse_constant=no_constant, parse_float=finite)
    except json.JSONDecodeError as e:
        raise RequestError(400, f"the body is not JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # an integer of 5,000 digits; nesting the count missed
        raise RequestError(400, f"the body is not JSON this server reads: {str(e).splitlines()[0][:120]}") from None
    if b"\\u" in data:  # only an escape (\\ud800) makes a lone surrogate
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            raise RequestError(400, f"the body holds a lone surrogate ({e.object[e.start]!r}), "
                                    "which is not a character") from None
    return value


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The body, refused (413) past `limit` bytes, before or while it is read; a client
    that hangs up (or sends a broken chunked body) before its end is a 400, not a bug."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise RequestError(413 if length.isdigit() else 400,
                           f"the body is larger than {limit} bytes" if length.isdigit() else "a bad Content-Length")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"the body is larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise RequestError(400, "the connection closed before the body was complete") from None
    return b"".join(chunks)


def _coerce(raw: str, schema: dict, name: str) -> object:
    """A query or path value as its schema's type; a value of the wrong form is refused here
    (a 5,000-digit number never reaches int())."""
    kind = schema.get("type")
    if kind == "integer":
        if not _WHOLE.fullmatch(raw):
            raise RequestError(400, f"{name}={_short(raw)} is not a whole number")
        return int(raw)
    if kind == "number":
        if len(raw) > 40 or not _NUMBER.fullmatch(raw) or not math.isfinite(float(raw)):
            raise RequestError(400, f"{name}={_short(raw)} is not a number")
        return float(raw)
    return raw


@dataclass
class Operation:
    """One endpoint: its handler (a plain function) gets `(request, values)`, `values`
    holding the checked path and query parameters by name and the checked body as "body"."""

    handler: Callable[[Request, dict], Response]
    parameters: list[dict] = field(default_factory=list)  # OpenAPI parameter objects (in: query/path)
    body: dict | None = None  # the JSON Schema of the body; None: the body must be empty
    max_body: int = MAX_BODY
    _checks: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._checks = {p["name"]: Schema(p["schema"]) for p in self.parameters}
        self._body = Schema(self.body) if self.body is not None else None

    async def values(self, request: Request) -> dict:
        out: dict = {}
        for p in self.parameters:
            name, source = p["name"], request.path_params if p["in"] == "path" else request.query_params
            raw = source.get(name)
            if raw in (None, ""):
                if p.get("required"):
                    raise RequestError(400, f"{name} is required")
                continue
            status = 404 if p["in"] == "path" else 400  # a path that names nothing is not found
            try:
                value = _coerce(str(raw), p["schema"], name)
            except RequestError as e:
                raise RequestError(status, e.reason) from None
            out[name] = self._checks[name].check(value, name, status)
        data = await read_body(request, self.max_body)
        if self._body is None:
            if data.strip() not in (b"", b"{}", b"null"):
                raise RequestError(400, "this request takes no body")
        else:  # parsed and checked in a worker thread: a body of many MB never stalls the other requests
            out["body"] = await run_in_threadpool(lambda: self._body.check(parse_json(data), "body"))
        return out

    async def __call__(self, request: Request) -> Response:
        """Check, then run the handler in a worker thread (it may read files, decode images
        or run the model: the event loop keeps answering)."""
        values = await self.values(request)
        return await run_in_threadpool(self.handler, request, values)
