"""The review server's and the review backend's HTTP APIs, fuzzed from their own schemas
(clipdata/server/openapi.py; the backend's SETUP/PREDICT/WEBHOOK/TRAIN).

Hypothesis builds requests for every endpoint from the schema of its parameters and body:
valid ones (real listed paths and classes: these write decisions; for the backend, bodies as
Label Studio sends them, with real, damaged and hostile image addresses: these predict and
queue fits) and wrong ones of every kind: another JSON type anywhere, a missing or unknown
field, strings and lists past their bounds, nesting up to 100,000 levels, bodies that are
not JSON, not UTF-8, NaN, lone surrogates, 5,000-digit numbers, path and query values of
the wrong form, other methods, unknown routes, missing or forged tokens, Host and Origin.
The servers are real (uvicorn on 127.0.0.1): the review app over a real `label` output of
the tiny model (search, look-alikes and re-label run for real) whose images were damaged
since (not an image, cut short, a decompression bomb, a symlink out, a FIFO); the backend
over a stand-in Label Studio and an --images folder damaged the same way.

Invariants, after every request: no 5xx; every 4xx carries a one-line reason; nothing in
the server's log is a traceback or the "bug" line; decisions.jsonl stays valid (every row a
listed path and a class of the run, or `_rejected`, or null in an undo). After the run:
nothing changed outside OUT (the labeled folder; the backend's cache) nor in the working
folder, and no fit failed with an exception instead of a reason.

Damaged label outputs: label.json, predictions.jsonl and decisions.jsonl with fields of
another type or value (NaN, huge, traversal), rows dropped or doubled, lines cut, NUL bytes,
deep nesting; `review serve` refuses them in one line or serves them without a 5xx.

CI runs a fixed sample (CLIPDATA_API_FUZZ_CASES, default 400 requests to the review app and
200 to the backend; CLIPDATA_API_FUZZ_DAMAGE_CASES, default 20; derandomized: seconds); the long mode is `python fuzz/serve_api.py
--cases 20000 --seed N` (`--survey`: go on past failures and list each kind once). The test
prints how many cases ran, by endpoint and status. Every request has a 60 s limit.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("jsonschema")
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import clipdata  # noqa: E402
from clipdata.formats import decisions  # noqa: E402
from clipdata.server import openapi  # noqa: E402
from helpers import SAMPLES  # noqa: E402
from labelstudio_stub import TOKEN  # noqa: E402

CASES = int(os.environ.get("CLIPDATA_API_FUZZ_CASES", "400"))
BACKEND_CASES = int(os.environ.get("CLIPDATA_API_FUZZ_CASES", "200"))  # each /predict embeds images
SEED = os.environ.get("CLIPDATA_API_FUZZ_SEED")  # unset: the fixed sample CI runs
CLASSES = ["grass", "gravel", "sand"]


def _bomb_png() -> bytes:
    """A small PNG whose header claims 30,000 x 30,000 pixels (a decompression bomb)."""
    import io
    import struct
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", 30_000, 30_000)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    return bytes(data)


def _tree(*roots: Path, skip: Path | None = None) -> dict[str, tuple]:
    """Every entry under `roots` (not following links) with its kind, size and mtime, but
    what lies under `skip` (OUT): what a request could change outside OUT."""
    out = {}
    for root in roots:
        stack = [root]
        while stack:  # no recursion: a loop over a stack
            d = stack.pop()
            for e in os.scandir(d):
                p = Path(e.path)
                if skip is not None and (p == skip or skip in p.parents):
                    continue
                st_ = e.stat(follow_symlinks=False)
                out[e.path] = (st_.st_mode, st_.st_size, st_.st_mtime_ns)
                if e.is_dir(follow_symlinks=False):
                    stack.append(p)
    return out


@pytest.fixture(scope="module")
def world(tiny, tmp_path_factory):
    """A label output of eight photos (the tiny model, its cache), five of them damaged
    since: not an image, cut short, a decompression bomb, a symlink out of the image folder,
    a FIFO (reading it would block)."""
    from clipdata.embedding import EngineSpec

    tmp = tmp_path_factory.mktemp("api-fuzz")
    photos = tmp / "photos"
    photos.mkdir()
    for p in sorted((SAMPLES / "folder").rglob("*.jpg"))[:8]:
        shutil.copy(p, photos / p.name)
    (tmp / "secret.jpg").write_bytes((photos / p.name).read_bytes())  # outside the image folder
    labeled = tmp / "labeled"
    clipdata.label(photos, labeled, classes=",".join(CLASSES),
                   spec=EngineSpec(model=str(tiny), dtype="float32", batch_size=8, workers=0))
    rows = [json.loads(line) for line in (labeled / "predictions.jsonl").read_text().splitlines()]
    paths = [r["path"] for r in rows]
    (photos / paths[0]).write_bytes(b"replaced by something that is not an image")
    data = (photos / paths[1]).read_bytes()
    (photos / paths[1]).write_bytes(data[:len(data) // 3])  # cut short
    (photos / paths[2]).write_bytes(_bomb_png())
    (photos / paths[3]).unlink()
    os.symlink(tmp / "secret.jpg", photos / paths[3])
    (photos / paths[4]).unlink()
    os.mkfifo(photos / paths[4])
    return labeled, paths, tmp, Path(tiny)


class Log(logging.Handler):
    """What the server writes to its log: records, and whether any carries a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _watched(tmp: Path, *loggers: str):
    """(log, thread errors) of a server run inside: its log records, threads that died, and
    the working folder an empty one under `tmp` (a file written there would show)."""
    log = Log()
    watched = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.asgi", "starlette", *loggers)]
    for lg in watched:
        lg.addHandler(log)
    thread_errors: list[str] = []
    before = threading.excepthook
    threading.excepthook = lambda args: thread_errors.append(f"{args.exc_type.__name__}: {args.exc_value}")
    cwd = Path.cwd()
    (tmp / "cwd").mkdir()
    os.chdir(tmp / "cwd")
    try:
        yield log, thread_errors
    finally:
        os.chdir(cwd)
        threading.excepthook = before
        for lg in watched:
            lg.removeHandler(log)


@pytest.fixture(scope="module")
def served(world):
    labeled, paths, tmp, tiny = world
    with _watched(tmp) as (log, thread_errors):
        before_tree = _tree(tmp, tiny, skip=labeled)
        srv = clipdata.review_serve(labeled)
        try:
            yield srv, labeled, paths, log, thread_errors, (tmp, tiny, before_tree)
        finally:
            srv.stop()


# -- building requests from the document ----------------------------------------------------
DOC = openapi.document()
OPERATIONS = [(method.upper(), path, op) for path, ms in DOC["paths"].items() for method, op in ms.items()]
# the endpoints that take a body, and the one that writes, drawn more often
OPERATIONS += [o for o in OPERATIONS if "requestBody" in o[2]] + [o for o in OPERATIONS if o[1] == "/api/decisions"] * 2
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
ODD_TEXT = st.sampled_from(["", " ", "\x00", "\n", "..", "../../etc/passwd", "/etc/passwd", "C:\\x.jpg", "%2F", "\ufeff",
                            "\u202e", "caf\xe9", "\U0001F600", "a" * 5000, "_rejected", "null", "[]", "{}", "0", "-0",
                            "1e999", "NaN", "9" * 5000, "true"])


def _deep(depth: int, kind: str) -> bytes:
    if kind == "[":
        return b"[" * depth + b"1" + b"]" * depth
    return b'{"k":' * depth + b"1" + b"}" * depth


RAW_BODIES = st.sampled_from([
    b"", b" ", b"{", b'{"path": ', b"nope", b"\xff\xfe\x00\x01", b"\xef\xbb\xbf{}", '{"text": "x"}'.encode("utf-16"),
    b'{"text": NaN}', b'{"text": Infinity}', b'{"text": "\\ud800"}', b'{"path": "\\udfff", "class": "sand"}',
    b'{"path": "a", "class": ' + b"9" * 5000 + b"}", b"[" * 17 + b"]" * 17, b"[" * 100_000 + b"]" * 100_000,
    b'{"text": "' + b"x" * (1 << 20) + b'"}', b"1" * 100, b'{"a": 1, "a": 2}', b"null", b"[]", b"{}", b"[{}]",
    _deep(5000, "["), _deep(3000, "{"), b"{" * 3000,
])


def _valid(schema: dict, world: dict, name: str = "") -> st.SearchStrategy:
    """Values the schema accepts, drawn towards this world's real paths and classes."""
    if "if" in schema:
        return st.one_of(_valid(schema["then"], world, name), _valid(schema["else"], world, name))
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kinds = schema.get("type")
    if isinstance(kinds, list):
        return st.one_of([_valid({**schema, "type": k}, world, name) for k in kinds])
    if kinds == "object":
        props = schema.get("properties", {})
        required = {k: _valid(props[k], world, k) for k in schema.get("required", [])}
        optional = {k: _valid(v, world, k) for k, v in props.items() if k not in required}
        return st.fixed_dictionaries(required, optional=optional)
    if kinds == "array":
        return st.lists(_valid(schema["items"], world, name), min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 4), 4))
    if kinds == "string":
        known = world.get(name, [])
        plain = st.text(max_size=min(schema.get("maxLength", 20), 20))
        return st.one_of(st.sampled_from(known), plain) if known else plain
    if kinds == "integer":
        top = world["n"] + 2 if name == "index" else 10_000
        return st.integers(schema.get("minimum", -5), top)
    if kinds == "number":
        return st.floats(-2, 2, allow_nan=False)
    if kinds == "boolean":
        return st.booleans()
    if kinds == "null":
        return st.none()
    return JSON


def _wrong(schema: dict, world: dict, name: str = "") -> st.SearchStrategy:
    """Values of the wrong type, past their bounds, or objects with a field wrong, missing
    or unknown."""
    out = [JSON, ODD_TEXT]
    kinds = schema.get("type")
    if "if" in schema:
        return st.one_of(_wrong(schema["then"], world, name), _wrong(schema["else"], world, name))
    if kinds == "object":
        props = schema.get("properties", {})
        good = _valid(schema, world, name)

        @st.composite
        def one_field_wrong(draw):
            value = dict(draw(good))
            action = draw(st.sampled_from(["wrong", "drop", "extra"]))
            if action == "wrong" and props:
                key = draw(st.sampled_from(sorted(props)))
                value[key] = draw(_wrong(props[key], world, key))
            elif action == "drop" and value:
                value.pop(draw(st.sampled_from(sorted(value))))
            else:
                value[draw(st.text(max_size=10))] = draw(JSON)
            return value
        out.append(one_field_wrong())
    if kinds == "array":
        out.append(st.lists(_wrong(schema["items"], world, name), min_size=1, max_size=3))
        if "maxItems" in schema:
            row = {"path": world["path"][0], "class": world["class"][0]}
            out.append(st.just([row] * (schema["maxItems"] + 1)))
    if "maxLength" in schema:
        out.append(st.integers(schema["maxLength"] + 1, schema["maxLength"] + 50).map(lambda n: "x" * n))
    return st.one_of(out)


def _query_value(schema: dict, world: dict, name: str) -> st.SearchStrategy:
    good = _valid(schema, world, name).map(lambda v: str(v).lower() if isinstance(v, bool) else str(v))
    return st.one_of(good, good, ODD_TEXT, st.text(max_size=30))


def _encode(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@st.composite
def _decision(draw, world: dict):
    """A decision a reviewer could make: real paths and classes, one row, a list, or an undo."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return {"path": draw(st.sampled_from(world["path"])), "class": None, "undo": True}
    rows = [{"path": draw(st.sampled_from(world["path"])), "class": draw(st.sampled_from(world["class"]))}
            for _ in range(draw(st.integers(1, 3)))]
    return rows[0] if kind == 1 else rows


@st.composite
def requests(draw, world: dict, operations: list | None = None):
    """(method, raw target, headers, body bytes, operation id). `world["plausible"]` maps an
    operation to bodies a real client sends (drawn one time in five)."""
    method, template, op = draw(st.sampled_from(operations or OPERATIONS))
    op_id = op["operationId"]
    if draw(st.integers(0, 19)) == 0:
        method = draw(st.sampled_from(METHODS))
    path = template
    for p in op.get("parameters", []):
        if p["in"] == "path":
            value = draw(st.one_of(_valid(p["schema"], world, p["name"]).map(str), ODD_TEXT, st.text(max_size=12)))
            path = path.replace("{" + p["name"] + "}", _encode(value) if value else "")
    if draw(st.integers(0, 29)) == 0:
        path, op_id = draw(st.sampled_from(["/api", "/api/", "/api/items/", "/static/", "/static/../app.py",
                                            "/api/image", "//api/items", "/%00", "/api/thumb/1/2"])), "unrouted"
    query = []
    for p in op.get("parameters", []):
        if p["in"] == "query" and draw(st.booleans()):
            query.append((p["name"], draw(_query_value(p["schema"], world, p["name"]))))
    if draw(st.integers(0, 9)) == 0:
        query.append((draw(st.sampled_from(["offset", "x", "token", ""])), draw(st.text(max_size=10))))
    target = path + ("?" + "&".join(f"{_encode(k)}={_encode(v)}" for k, v in query) if query else "")
    if draw(st.integers(0, 29)) == 0:
        target += draw(st.sampled_from(["?%zz", "?a=%ff%fe", "?limit=1&limit=x", "?%", "#frag"]))
    body = b""
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    choice = draw(st.integers(0, 9))
    if op_id in world.get("plausible", {}) and choice < world.get("plausible_share", 2):
        body = json.dumps(draw(world["plausible"][op_id])).encode()
    elif schema is not None and choice < 4:
        body = json.dumps(draw(_valid(schema, world)), ensure_ascii=draw(st.booleans())).encode(
            "utf-8", "surrogatepass")
    elif schema is not None and choice < 8:
        body = json.dumps(draw(_wrong(schema, world))).encode()
    elif choice < 9 or method != "GET":
        body = draw(RAW_BODIES)
    headers = {"x-clipdata-token": world["token"], "host": world["host"]} if world.get("token") else {
        "host": world["host"]}
    if body:
        headers["content-type"] = draw(st.sampled_from(["application/json"] * 4 + [
            "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/json; charset=latin-1"]))
    if draw(st.integers(0, 9)) == 0:
        what = draw(st.sampled_from(["no token", "wrong token", "forged host", "evil origin", "cookie only",
                                     "own origin", "latin-1 token", "odd host"]))
        if what == "no token":
            headers.pop("x-clipdata-token", None)
        elif what == "wrong token":
            headers["x-clipdata-token"] = draw(st.text(max_size=30).filter(lambda t: t.isascii() and "\n" not in t
                                                                             and "\r" not in t))
        elif what == "forged host":
            headers["host"] = f"attacker.example:{world['port']}"
        elif what == "evil origin":
            headers["origin"] = draw(st.sampled_from(["http://evil.example", "null", f"http://127.0.0.1:{world['port']}x",
                                                      "http://[::1", f"https://127.0.0.1:{world['port']}"]))
        elif what == "cookie only":
            headers["cookie"] = f"clipdata_token_{world['port']}={headers.pop('x-clipdata-token', '')}"
        elif what == "own origin":
            headers["origin"] = f"http://127.0.0.1:{world['port']}"
        elif what == "latin-1 token":
            headers["x-clipdata-token"] = "caf\xe9"
        else:
            headers["host"] = draw(st.sampled_from(["", "127.0.0.1:99999", "[::1", "a..b", "127.0.0.1:8x", "LOCALHOST"]))
    return method, target, headers, body, op_id


def _send(port: int, method: str, target: str, headers: dict, body: bytes) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v.encode("latin-1"))
        if body or method not in ("GET", "HEAD"):
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body or None)
        r = conn.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        conn.close()


def _check_decisions(labeled: Path, paths: list[str]) -> None:
    state = decisions.read(labeled)  # raises on any row that is not a decision row
    allowed = set(CLASSES) | {decisions.REJECTED, None}
    lines = (labeled / decisions.FILE).read_bytes().splitlines() if (labeled / decisions.FILE).exists() else []
    for line in lines:
        row = json.loads(line)
        assert row["path"] in paths and row["class"] in allowed and row.get("previous") in allowed, row
    assert set(state) <= set(paths)


SURVEY = os.environ.get("CLIPDATA_API_FUZZ_SURVEY") == "1"  # go on past failures, then list each kind once
_EXCEPTION_LINE = re.compile(r"^[A-Z][A-Za-z]*(Error|Exception|Warning|Interrupt|Exit)\b")


def _violations(method: str, status: int, data: bytes, got_headers: dict, op_id: str, err: str, log: Log,
                thread_errors: list[str], decisions_at: tuple[Path, list[str]] | None = None) -> list[tuple[str, str]]:
    """(kind, detail) for each invariant this answer and the server's log break."""
    out = []
    if status >= 500:
        out.append((f"{status}", data[:300].decode("utf-8", "replace")))
    if 400 <= status < 500 and method != "HEAD":
        try:
            reason = json.loads(data)["error"] if got_headers.get("content-type", "").startswith(
                "application/json") else data.decode("utf-8")  # (uvicorn/h11 refuse in plain text)
        except (ValueError, KeyError, TypeError):
            reason = None
        if not (isinstance(reason, str) and reason.strip() and "\n" not in reason.strip() and len(reason) <= 1000):
            out.append(("a 4xx without a one-line reason", repr(data[:300])))
    if decisions_at and method == "POST" and status == 200 and op_id == "decisions":
        try:
            _check_decisions(*decisions_at)
        except Exception as e:  # noqa: BLE001
            out.append(("decisions.jsonl broken", f"{type(e).__name__}: {e}"[:300]))
    if "Traceback" in err or "bug in clipdata" in err:
        last = [line for line in err.strip().splitlines() if line.strip()][-1]
        out.append(("a traceback in the server log", last[:300]))
    for r in log.records:
        if r.exc_info:
            out.append(("a traceback in the server log", f"{r.exc_info[0].__name__}: {r.exc_info[1]}"[:300]))
        elif "bug in clipdata" in r.getMessage():
            out.append(("the bug line in the server log", r.getMessage()[:300]))
    out += [("a thread died", e[:300]) for e in thread_errors]
    log.records.clear()
    thread_errors.clear()
    return out


def _fuzz(name: str, port: int, world: dict, operations: list, capfd, log: Log, thread_errors: list[str],
          decisions_at: tuple[Path, list[str]] | None = None, cases: int | None = None) -> tuple[Counter, dict]:
    """Send `cases` generated requests; (count per (operation, status), failures by kind)."""
    stats: Counter = Counter()
    found: dict[tuple[str, str, str], list] = {}

    @settings(max_examples=cases or CASES, deadline=None, database=None, derandomize=SEED is None,
              suppress_health_check=list(HealthCheck))
    @given(requests(world, operations))
    def one(request):
        method, target, headers, body, op_id = request
        status, data, got_headers = _send(port, method, target, headers, body)
        stats[(op_id, status)] += 1
        if os.environ.get("CLIPDATA_API_FUZZ_LOG"):  # every request and answer, one line each
            with open(os.environ["CLIPDATA_API_FUZZ_LOG"], "a") as f:
                f.write(f"{status} {method} {target[:100]} {body[:300]!r} -> {data[:300]!r}\n")
        bad = _violations(method, status, data, got_headers, op_id, capfd.readouterr().err, log, thread_errors,
                          decisions_at)
        where = f"{method} {target[:120]} {headers} body={body[:200]!r}"
        for kind, detail in bad:
            key = (op_id, kind, detail.splitlines()[0][:120] if detail else "")
            found.setdefault(key, [0, where])[0] += 1
        assert SURVEY or not bad, f"{where}: {bad}"

    if SEED is not None:
        one = seed(int(SEED))(one)
    started = time.perf_counter()
    one()
    seconds = time.perf_counter() - started
    statuses: Counter = Counter()
    by_op: Counter = Counter()
    for (op_id, status), n in stats.items():
        statuses[status] += n
        by_op[op_id] += n
    with capfd.disabled():
        print(f"\n{name} fuzz: {sum(stats.values())} cases in {seconds:.0f} s; statuses "
              f"{dict(sorted(statuses.items()))}; by endpoint {dict(sorted(by_op.items()))}; "
              f"kinds of failure: {len(found)}")
        for (op_id, kind, detail), (n, where) in sorted(found.items()):
            print(f"  {op_id}: {kind} x{n}: {detail}\n      e.g. {where[:300]}")
    return statuses, found


def _outside_out(before: dict, after: dict) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def test_the_api_fuzzed_from_its_schema(served, capfd):
    srv, labeled, paths, log, thread_errors, (tmp, tiny, before_tree) = served
    world = {"token": srv.token, "port": srv.port, "host": f"127.0.0.1:{srv.port}", "n": len(paths),
             "path": paths, "class": CLASSES + [decisions.REJECTED]}
    world["plausible"] = {"decisions": _decision(world)}
    statuses, found = _fuzz("review serve API", srv.port, world, OPERATIONS, capfd, log, thread_errors,
                            (labeled, paths))
    _check_decisions(labeled, paths)
    written = (labeled / decisions.FILE).read_bytes().count(b"\n") if (labeled / decisions.FILE).exists() else 0
    with capfd.disabled():
        print(f"  decisions written: {written}")
    assert not found
    assert statuses[200] and statuses[400] and statuses[404]  # the sample reached handlers and refusals alike
    assert written, "no generated decision was saved: the sample never reached the writer"
    changed = _outside_out(before_tree, _tree(tmp, tiny, skip=labeled))
    assert not changed, f"written outside OUT ({labeled}): {changed[:10]}"


# -- the review backend (Label Studio's ML backend protocol) ---------------------------------
def _backend_operations() -> list:
    from clipdata.server import backend

    def op(op_id: str, schema: dict | None = None) -> dict:
        out: dict = {"operationId": op_id}
        if schema is not None:
            out["requestBody"] = {"content": {"application/json": {"schema": schema}}}
        return out

    ops = [("GET", p, op(p.strip("/") or "root")) for p in ("/", "/health", "/versions", "/metrics")]
    ops += [("POST", f"/{n}", op(n, getattr(backend, n.upper()))) for n in ("setup", "predict", "webhook", "train")]
    return ops + [o for o in ops if o[0] == "POST"] * 2  # the bodies, drawn more often


def _config(names: list[str]) -> str:
    choices = "".join(f'<Choice value="{n}"/>' for n in names)
    return (f'<View><Image name="image" value="$image"/><Choices name="class" toName="image" choice="single">'
            f"{choices}</Choices></View>")


@st.composite
def _ls_body(draw, world: dict, kind: str):
    """A body as Label Studio sends it to /setup, /predict, /webhook or /train, with odd
    projects, labeling configs and image addresses mixed in (one value in four). Drawn with
    a seeded random (hypothesis favours its simplest values, which here are all refusals)."""
    rnd = draw(st.randoms(use_true_random=False))
    odd = rnd.random() < 0.25
    project = rnd.choice([-1, 0, "", "x" * 101, "1.2.3", "../1", "1" * 40, True] if odd else [1, "1", "1.1796624129"])
    config = world["config"] if rnd.random() < 0.75 else rnd.choice([
        None, "", "<View>", '<!DOCTYPE v [<!ENTITY a "aaaa">]><View>&a;</View>', _config(["alfa", "zulu"]),
        _config(CLASSES).replace('choice="single"', 'choice="multiple"'), world["config"].replace("$image", "image"),
        "<View>" + "<View>" * 200 + "</View>" * 201, world["config"].replace("<View>", "<View>\ufeff")])

    def image() -> str:
        return rnd.choice(world["images"][:4] if rnd.random() < 0.5 else world["images"])

    def task() -> dict:
        t: dict = {"id": rnd.randint(-2, 10**6), "data": {"image": image()}}
        if rnd.random() < 0.2:
            t["data"] = rnd.choice([{}, {"img": image()}, {"image": [image()]}, {"image": {"url": image()}},
                                    {"image": 7}, {"image": None}, "x", None])
        return t
    if kind == "setup":
        return {"project": project, "schema": config if isinstance(config, str) else world["config"],
                "access_token": rnd.choice([TOKEN, None, "wrong"])}
    if kind == "predict":
        return {"project": project, "label_config": config, "tasks": [task() for _ in range(rnd.randint(0, 4))]}
    if kind == "webhook":
        body: dict = {"action": rnd.choice(["ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED",
                                            "ANNOTATIONS_DELETED", "START_TRAINING"] + (["PROJECT_UPDATED", ""]
                                                                                        if odd else []))}
        where = rnd.choice(["object", "object", "id", "none"])
        if where == "object":
            body["project"] = {"id": project, "label_config": config}
        elif where == "id":
            body["project"] = project
        if rnd.random() < 0.5:
            body["task"] = task()
        return body
    return {"project": project, "label_config": config}


@pytest.fixture(scope="module")
def backend_served(tiny, tmp_path_factory):
    """The backend over a stand-in Label Studio (uploads, local files, an export of four
    annotated tasks, one of them a damaged image) and an --images folder with a bomb, a
    FIFO and a symlink out."""
    from clipdata.embedding import EngineSpec
    from labelstudio_stub import FakeStudio

    tmp = tmp_path_factory.mktemp("backend-fuzz")
    images = tmp / "images"
    images.mkdir()
    photos = sorted((SAMPLES / "folder").rglob("*.jpg"))[:4]
    for p in photos:
        shutil.copy(p, images / p.name)
    (images / "bad.jpg").write_bytes(b"not an image")
    (images / "bomb.png").write_bytes(_bomb_png())
    os.mkfifo(images / "fifo.jpg")
    (tmp / "secret.jpg").write_bytes(photos[0].read_bytes())
    os.symlink(tmp / "secret.jpg", images / "out.jpg")
    studio = FakeStudio()
    studio.files = {"/data/upload/1/a.jpg": photos[0].read_bytes(), "/data/upload/1/bad.jpg": b"\xff\xd8cut",
                    "/data/upload/1/bomb.png": _bomb_png(), "sub/b.jpg": photos[1].read_bytes()}
    refs = ["/data/upload/1/a.jpg", "/data/local-files/?d=sub/b.jpg", photos[2].name, "/data/upload/1/bad.jpg"]
    studio.export = {1: [{"id": i + 1, "data": {"image": ref}, "project": 1, "annotations": [
        {"id": i + 1, "result": [{"from_name": "class", "to_name": "image", "type": "choices",
                                  "value": {"choices": [CLASSES[i % len(CLASSES)]]}}],
         "was_cancelled": False, "ground_truth": False, "updated_at": "2026-01-01T00:00:00Z"}]}
        for i, ref in enumerate(refs)]}
    image_refs = refs + [
        "/data/upload/1/bomb.png", "/data/upload/1/missing.jpg", f"{studio.url}/data/upload/1/a.jpg",
        f"{studio.url}/redirect-out", "http://169.254.169.254/latest/meta-data", "file:///etc/passwd",
        "bomb.png", "fifo.jpg", "out.jpg", "bad.jpg", "../secret.jpg", str(tmp / "secret.jpg"), "/etc/passwd",
        "/data/local-files/?d=../secret.jpg", "/data/local-files/?d=", "s3://bucket/x.jpg", "", "a" * 5000,
        "caf\xe9.jpg", "\x00", "C:\\x.jpg"]
    out = tmp / "cache"  # OUT: the embedding cache is all the backend may write
    with _watched(tmp, "clipdata.backend") as (log, thread_errors):
        before_tree = _tree(tmp, Path(tiny), skip=out)
        srv = clipdata.review_backend(CLASSES, spec=EngineSpec(model=str(tiny), dtype="float32", workers=0,
                                                               batch_size=8),
                                      port=0, label_studio_url=studio.url, api_key=TOKEN, images=images,
                                      cache_dir=out)
        try:
            yield srv, {"config": _config(CLASSES), "images": image_refs}, log, thread_errors, (
                tmp, Path(tiny), out, before_tree)
        finally:
            srv.stop()  # waits at most 60 s for a running fit
            studio.close()


def test_the_backend_api_fuzzed_from_its_schemas(backend_served, capfd):
    srv, world, log, thread_errors, (tmp, tiny, out, before_tree) = backend_served
    port = int(srv.url.rsplit(":", 1)[1].split("/")[0])
    world = {**world, "port": port, "host": f"127.0.0.1:{port}", "path": [], "class": CLASSES}
    world["plausible"] = {k: _ls_body(world, k) for k in ("setup", "predict", "webhook", "train")}
    world["plausible_share"] = 5  # in ten: most of Label Studio's bodies are long to build by chance
    statuses, found = _fuzz("review backend API", port, world, _backend_operations(), capfd, log, thread_errors,
                            cases=BACKEND_CASES)
    deadline = time.monotonic() + 120  # the fits the webhooks queued, each bounded
    while time.monotonic() < deadline and any(
            p["fit"]["state"] != "idle" for p in srv.learner.status()["projects"].values()):
        time.sleep(0.2)
    projects = srv.learner.status()["projects"]
    fits = sum(p["fit"]["fits"] for p in projects.values())
    crashed = {pid: p["fit"]["last_error"] for pid, p in projects.items()
               if p["fit"]["last_error"] and _EXCEPTION_LINE.match(p["fit"]["last_error"])}
    with capfd.disabled():
        print(f"  projects set up: {len(projects)}; fits done: {fits}; "
              f"failed fits: {sum(bool(p['fit']['last_error']) for p in projects.values())}")
    bad_log = _violations("GET", 200, b"", {}, "fit", capfd.readouterr().err, log, thread_errors)
    assert not found and not bad_log, bad_log
    assert not crashed, f"a fit failed with an exception, not a reason: {crashed}"
    assert statuses[200] and statuses[400] and statuses[404]
    assert fits, "no fit ran: the sample never reached learning"
    changed = _outside_out(before_tree, _tree(tmp, tiny, skip=out))
    assert not changed, f"written outside OUT ({out}): {changed[:10]}"


# -- damaged label outputs: review serve starts or refuses in one line, then never answers 5xx --
DAMAGE_CASES = int(os.environ.get("CLIPDATA_API_FUZZ_DAMAGE_CASES", "20"))  # each starts a server
_JUNK = st.one_of(JSON, st.sampled_from([float("nan"), float("inf"), -float("inf"), 10**400, -1, 0, True, "",
                                         "../../etc/passwd", "/etc/passwd", "caf\udce9.jpg", "\x00", [[[]]], {},
                                         "a" * 5000, "a/" * 3000]))
_ROW_KEYS = ["path", "top_k", "decision", "uncertain", "review_rank", "width", "height", "review_file"]
_META_KEYS = ["classes", "captions", "images_root", "model", "model_identity", "preprocess", "dtype", "threshold",
              "margin", "template", "weights"]


def _dump(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogateescape")


@st.composite
def _damage(draw, meta: dict, rows: list[dict]) -> dict[str, bytes]:
    """New bytes for label.json, predictions.jsonl and decisions.jsonl: fields of another
    type or value (NaN, huge, negative, traversal), rows dropped or doubled, classes and
    captions out of step, lines cut, NUL bytes, deep nesting, not UTF-8."""
    meta, rows = json.loads(json.dumps(meta)), json.loads(json.dumps(rows))
    out: dict[str, bytes] = {}
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(["meta field", "meta field", "row field", "row field", "score", "top class",
                                     "rows", "decisions", "bytes"]))
        if what == "meta field":
            key = draw(st.sampled_from(_META_KEYS))
            if draw(st.integers(0, 3)) == 0:
                meta.pop(key, None)
            else:
                meta[key] = draw(_JUNK if key not in ("classes", "captions") else st.one_of(
                    _JUNK, st.lists(st.text(max_size=6), max_size=4), st.lists(st.lists(st.text(max_size=6)), max_size=4)))
        elif what == "row field":
            row = draw(st.sampled_from(rows))
            key = draw(st.sampled_from(_ROW_KEYS))
            row[key] = draw(_JUNK if key != "path" else st.one_of(_JUNK, st.sampled_from([r["path"] for r in rows])))
        elif what == "score":
            row = draw(st.sampled_from(rows))
            row["top_k"][0]["score"] = draw(st.sampled_from([float("nan"), float("inf"), -1.5, 1e308, 2, 0]))
        elif what == "top class":
            row = draw(st.sampled_from(rows))
            row["top_k"][0]["class"] = draw(st.sampled_from(["", "unknown class", decisions.REJECTED, "\x00"]))
            if draw(st.booleans()):
                row["decision"] = row["top_k"][0]["class"]
        elif what == "rows":
            how = draw(st.sampled_from(["double", "drop", "one", "reverse"]))
            if how == "double":
                rows.append(dict(draw(st.sampled_from(rows))))
            elif how == "drop" and len(rows) > 1:
                rows.pop(draw(st.integers(0, len(rows) - 1)))
            elif how == "one":
                del rows[1:]
            else:
                rows.reverse()
        elif what == "decisions":
            lines = draw(st.lists(st.one_of(
                st.builds(lambda p, c: _dump({"path": p, "class": c}), st.sampled_from([r["path"] for r in rows] + [
                    "elsewhere.jpg", ""]), st.sampled_from(CLASSES + [decisions.REJECTED, None, "unknown"])),
                _JUNK.map(_dump), st.sampled_from([b"", b"\x00" * 64, b"[" * 100_000, b'{"path": "a.jpg", "cla',
                                                   b"\xff\xfe{}"])), min_size=1, max_size=5))
            out["decisions.jsonl"] = b"\n".join(lines) + draw(st.sampled_from([b"\n", b""]))
        else:
            name = draw(st.sampled_from(["label.json", "predictions.jsonl"]))
            data = _dump(meta) if name == "label.json" else b"".join(_dump(r) + b"\n" for r in rows)
            how = draw(st.sampled_from(["cut", "nul", "bom", "latin-1", "deep", "empty"]))
            out[name] = {"cut": data[:draw(st.integers(0, max(0, len(data) - 1)))], "nul": data + b"\x00" * 16,
                         "bom": b"\xef\xbb\xbf" + data, "latin-1": data.replace(b"}", b"\xe9}", 1),
                         "deep": data + b"[" * 100_000 + b"\n", "empty": b""}[how]
    out.setdefault("label.json", _dump(meta))
    out.setdefault("predictions.jsonl", b"".join(_dump(r) + b"\n" for r in rows))
    return out


def test_damaged_label_outputs_are_refused_in_one_line_or_served_without_5xx(world, tmp_path, capfd):
    from clipdata.errors import ClipdataError

    labeled, paths, tmp, tiny = world
    meta = json.loads((labeled / "label.json").read_text())
    rows = [json.loads(line) for line in (labeled / "predictions.jsonl").read_text().splitlines()]
    log, thread_errors = Log(), []
    seen: Counter = Counter()
    found: dict[tuple[str, str], list] = {}
    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "starlette")]
    for lg in loggers:
        lg.addHandler(log)
    n = iter(range(10**9))

    @settings(max_examples=DAMAGE_CASES, deadline=None, database=None, derandomize=SEED is None,
              suppress_health_check=list(HealthCheck))
    @given(_damage(meta, rows), st.sampled_from([False, False, False, True]))
    def one(files, use_model):
        folder = tmp_path / f"l{next(n)}"
        shutil.copytree(labeled, folder, ignore=shutil.ignore_patterns("decisions.jsonl"))
        for name, data in files.items():
            (folder / name).write_bytes(data)
        bad: list[tuple[str, str]] = []
        try:
            srv = clipdata.review_serve(folder)
        except ClipdataError as e:
            seen["refused at start"] += 1
            if "\n" in str(e).strip():
                bad.append(("a refusal of more than one line", str(e)[:300]))
        except Exception as e:  # noqa: BLE001
            bad.append(("start: not a clear refusal", f"{type(e).__name__}: {e}"[:300]))
        else:
            seen["started"] += 1
            try:
                head = {"x-clipdata-token": srv.token, "host": f"127.0.0.1:{srv.port}", "content-type": "application/json"}
                asks = [("GET", "/api/items", b""), ("GET", "/api/items?state=reviewed&limit=3", b""),
                        ("GET", "/api/progress", b""), ("GET", "/api/thumb/0", b""), ("GET", "/api/image/1", b""),
                        ("POST", "/api/decisions", _dump({"path": paths[-1], "class": CLASSES[0]})),
                        ("POST", "/api/decisions", _dump({"path": paths[-1], "class": None, "undo": True}))]
                if use_model:  # the engine loads: one example in four
                    asks += [("POST", "/api/search", b'{"text": "grass"}'),
                             ("POST", "/api/similar", _dump({"path": paths[-1]})), ("POST", "/api/relabel", b"")]
                for method, target, body in asks:
                    status, data, got = _send(srv.port, method, target, head, body)
                    seen[status] += 1
                    bad += [(f"{method} {target.split('?')[0]}: {k}", d) for k, d in _violations(
                        method, status, data, got, target, capfd.readouterr().err, log, thread_errors)]
            finally:
                srv.stop()
        err = capfd.readouterr().err
        if "Traceback" in err or "bug in clipdata" in err:
            bad.append(("a traceback", err.strip().splitlines()[-1][:300]))
        where = {k: v[:200] for k, v in files.items()}
        for kind, detail in bad:
            found.setdefault((kind, detail.splitlines()[0][:120] if detail else ""), [0, where])[0] += 1
        assert SURVEY or not bad, f"{where}: {bad}"
        shutil.rmtree(folder)

    if SEED is not None:
        one = seed(int(SEED))(one)
    try:
        one()
    finally:
        for lg in loggers:
            lg.removeHandler(log)
    with capfd.disabled():
        print(f"\ndamaged label outputs: {sum(v for k, v in seen.items() if isinstance(k, str))} cases; "
              f"{dict(seen)}; kinds of failure: {len(found)}")
        for (kind, detail), (count, where) in sorted(found.items()):
            print(f"  {kind} x{count}: {detail}\n      e.g. {str(where)[:400]}")
    assert not found
    assert seen["refused at start"] and seen["started"]
