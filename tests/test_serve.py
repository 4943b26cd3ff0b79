"""`clipdata review serve` without a browser: the safety rules, the HTTP interface, and the
decision file. The server is real (uvicorn on 127.0.0.1, a free port); requests are real
HTTP (httpx, and http.client for paths a client library would normalise)."""
from __future__ import annotations

import http.client
import json
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from clipdata import review_serve  # noqa: E402  (the API twin)
from clipdata.errors import SourceError  # noqa: E402
from clipdata.formats import decisions  # noqa: E402
from clipdata.server.queue import Queue  # noqa: E402
from conftest import make_image  # noqa: E402

CLASSES = ["cat", "dog", "fox"]


def _row(path: str, scores: tuple[float, float, float], decision: str | None, **extra) -> dict:
    top = sorted(zip(CLASSES, scores), key=lambda t: -t[1])
    return {"path": path, "top_k": [{"class": c, "score": s} for c, s in top], "decision": decision,
            "uncertain": decision is None, "review_file": f"review/{decision or '_uncertain'}/{path.replace('/', '__')}",
            "width": 40, "height": 30, "model": "m", **extra}


def make_labeled(tmp: Path, extra_rows: list[dict] = (), **row_extra) -> Path:
    """A label output folder written by hand (no model needed): five images, a symlink out
    of the image root, a secret file beside the root."""
    root = tmp / "photos"
    for name in ("a.jpg", "b.jpg", "sub/c.png", "d.jpg", "e.jpg"):
        make_image(root / name, (40, 30), fmt="PNG" if name.endswith("png") else None)
    (tmp / "secret.jpg").write_bytes((root / "a.jpg").read_bytes())
    os.symlink(tmp / "secret.jpg", root / "link.jpg")
    labeled = tmp / "labeled"
    labeled.mkdir()
    (labeled / "label.json").write_text(json.dumps({
        "model": "m", "engine": "m on cpu in float32", "classes": CLASSES, "captions": [[c] for c in CLASSES],
        "threshold": 0.5, "margin": 0.1, "images_root": str(root)}))
    rows = [_row("a.jpg", (0.9, 0.05, 0.05), "cat"), _row("b.jpg", (0.4, 0.35, 0.25), None),
            _row("sub/c.png", (0.1, 0.8, 0.1), "dog"), _row("d.jpg", (0.2, 0.2, 0.6), "fox"),
            _row("e.jpg", (0.45, 0.44, 0.11), None), _row("link.jpg", (0.7, 0.2, 0.1), "cat"), *extra_rows]
    (labeled / "predictions.jsonl").write_text("".join(json.dumps({**r, **row_extra}) + "\n" for r in rows))
    return labeled


@pytest.fixture
def labeled(tmp_path):
    return make_labeled(tmp_path, [_row("../secret.jpg", (0.6, 0.3, 0.1), "cat"),
                                   _row(str(tmp_path / "secret.jpg"), (0.6, 0.3, 0.1), "cat")])


@pytest.fixture
def server(labeled):
    srv = review_serve(labeled)
    yield srv
    srv.stop()


def base(srv) -> str:
    return f"http://127.0.0.1:{srv.port}"


@pytest.fixture
def client(server):
    """A client that holds the token in the header, as the page does."""
    with httpx.Client(base_url=base(server), headers={"x-clipdata-token": server.token}, timeout=10) as c:
        yield c


def raw_get(srv, path: str, token: str | None = None) -> int:
    """GET `path` byte for byte (no client-side normalisation of `..` or `%2F`)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("GET", path, headers={"x-clipdata-token": token} if token else {})
        return conn.getresponse().status
    finally:
        conn.close()


# -- safety ---------------------------------------------------------------------------
def test_binds_localhost_and_the_url_carries_the_token(server):
    parts = urlsplit(server.url)
    assert parts.hostname == "127.0.0.1" and server.host == "127.0.0.1"
    assert parts.query == f"token={server.token}" and len(server.token) >= 24


@pytest.mark.parametrize("path", ["/", "/api/items", "/api/progress", "/api/thumb/0", "/api/image/0",
                                  "/static/app.js"])
def test_no_token_is_401_and_a_wrong_token_403(server, path):
    assert httpx.get(base(server) + path).status_code == 401
    assert httpx.get(base(server) + path, headers={"x-clipdata-token": "nope"}).status_code == 403
    assert httpx.get(base(server) + path, cookies={f"clipdata_token_{server.port}": "nope"}).status_code == 403
    assert httpx.get(base(server) + path, headers={"x-clipdata-token": server.token}).status_code == 200


def test_the_printed_url_sets_a_cookie_that_opens_the_page(server):
    with httpx.Client(timeout=10) as c:
        first = c.get(server.url)
        assert first.status_code == 303 and first.headers["location"] == "/"
        cookie = first.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = c.get(base(server) + "/")  # the cookie alone, no token in the URL
        assert page.status_code == 200 and server.token in page.text
        assert c.get(base(server) + "/api/items").status_code == 200
        # a state change never rides on the cookie alone: it needs the header
        assert c.post(base(server) + "/api/decisions", json={"path": "a.jpg", "class": "dog"}).status_code == 401


@pytest.mark.parametrize("headers", [{"origin": "http://evil.example"}, {"origin": "null"},
                                     {"sec-fetch-site": "cross-site"}, {"origin": "http://127.0.0.1:1"}])
@pytest.mark.parametrize("path", ["/api/decisions", "/api/relabel", "/api/search", "/api/similar"])
def test_posts_from_another_origin_are_refused(server, client, headers, path, labeled):
    r = client.post(path, json={"path": "a.jpg", "class": "dog"}, headers=headers)
    assert r.status_code == 403
    assert not (labeled / decisions.FILE).exists()


def test_a_post_from_the_page_own_origin_is_saved(server, client):
    r = client.post("/api/decisions", json={"path": "a.jpg", "class": "dog"},
                    headers={"origin": base(server), "sec-fetch-site": "same-origin"})
    assert r.status_code == 200


@pytest.mark.parametrize("path", [
    "/api/image/../../etc/passwd", "/api/image/..%2F..%2Fetc%2Fpasswd", "/api/image/%2Fetc%2Fpasswd",
    "/api/image/-1", "/api/image/99", "/api/thumb/99", "/api/image/a.jpg", "/api/image/0x1",
    "/static/../app.py", "/static/..%2Fapp.py", "/static/index.html.bak", "/api/image/5", "/api/thumb/5",
    "/api/image/6", "/api/thumb/6", "/api/image/7", "/api/thumb/7",
])
def test_traversal_absolute_symlink_out_and_unlisted_are_404(server, path):
    # rows 5, 6, 7: link.jpg (a symlink out of the root), ../secret.jpg, /abs/secret.jpg
    assert raw_get(server, path, server.token) == 404


def test_page_and_responses_need_nothing_from_the_web(server, client):
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and page.headers["x-content-type-options"] == "nosniff"
    static = Path(__file__).parent.parent / "clipdata" / "server" / "static"
    for f in static.iterdir():
        text = f.read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, f.name


# -- the HTTP interface ---------------------------------------------------------------
def test_items_in_review_order_least_margin_first(client):
    body = client.get("/api/items").json()
    paths = [it["path"] for it in body["items"]]
    # margins (top-1 minus top-2): e .01, b .05, both secrets .3, d .4, link .5, c .7, a .85
    assert paths[:3] == ["e.jpg", "b.jpg", "../secret.jpg"]
    assert paths[4:] == ["d.jpg", "link.jpg", "sub/c.png", "a.jpg"]
    assert [it["rank"] for it in body["items"]] == list(range(len(paths)))
    assert body["classes"] == CLASSES and body["total"] == 8
    first = body["items"][0]
    assert set(first) >= {"index", "path", "top_k", "decision", "uncertain", "review", "state", "rank"}


def test_review_rank_wins_when_label_wrote_it(tmp_path):
    ranks = {"a.jpg": 0, "b.jpg": 5, "sub/c.png": 1, "d.jpg": 2, "e.jpg": 3, "link.jpg": 4}
    folder = make_labeled(tmp_path)
    rows = [json.loads(l) for l in (folder / "predictions.jsonl").read_text().splitlines()]
    (folder / "predictions.jsonl").write_text(
        "".join(json.dumps({**r, "review_rank": ranks[r["path"]]}) + "\n" for r in rows))
    q = Queue(folder)
    assert [q.items[i]["path"] for i in q.order] == sorted(ranks, key=ranks.get)


@pytest.mark.parametrize("params, expected", [
    ({"filter": "uncertain"}, {"e.jpg", "b.jpg"}),
    ({"filter": "decided", "class": "cat"}, {"a.jpg", "link.jpg", "../secret.jpg", "/secret"}),
    ({"min": "0.7"}, {"a.jpg", "sub/c.png", "link.jpg"}),
    ({"max": "0.45"}, {"b.jpg", "e.jpg"}),
    ({"class": "fox"}, {"d.jpg"}),
    ({"filter": "reviewed"}, set()),
])
def test_filters(client, params, expected):
    got = {it["path"] for it in client.get("/api/items", params=params).json()["items"]}
    assert {p if not p.startswith("/") else "/secret" for p in got} == expected


def test_offset_limit_and_bad_parameters(client):
    all_items = client.get("/api/items").json()["items"]
    page = client.get("/api/items", params={"offset": 2, "limit": 3}).json()
    assert [it["path"] for it in page["items"]] == [it["path"] for it in all_items[2:5]] and page["total"] == 8
    for params in ({"filter": "nonsense"}, {"min": "high"}, {"limit": "x"}):
        r = client.get("/api/items", params=params)
        assert r.status_code == 400 and "error" in r.json()


def test_thumbs_are_small_jpegs_and_images_the_file_bytes(client, labeled):
    from io import BytesIO

    from PIL import Image

    index = {it["path"]: it["index"] for it in client.get("/api/items").json()["items"]}
    thumb = client.get(f"/api/thumb/{index['sub/c.png']}")
    assert thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(BytesIO(thumb.content)).format == "JPEG"
    image = client.get(f"/api/image/{index['sub/c.png']}")
    root = Path(json.loads((labeled / "label.json").read_text())["images_root"])
    assert image.content == (root / "sub/c.png").read_bytes() and image.headers["content-type"] == "image/png"


def test_decisions_are_on_disk_when_the_answer_comes(client, labeled):
    r = client.post("/api/decisions", json={"path": "b.jpg", "class": "dog"})
    assert r.status_code == 200
    saved = r.json()["saved"]
    assert [(s["path"], s["class"], s["previous"]) for s in saved] == [("b.jpg", "dog", None)]
    rows = [json.loads(l) for l in (labeled / decisions.FILE).read_text().splitlines()]
    assert rows == saved and set(rows[0]) == {"path", "class", "time", "previous"}
    many = client.post("/api/decisions", json=[{"path": "b.jpg", "class": "cat"},
                                               {"path": "e.jpg", "class": decisions.REJECTED}]).json()
    assert [(s["path"], s["previous"]) for s in many["saved"]] == [("b.jpg", "dog"), ("e.jpg", None)]
    assert many["progress"]["reviewed"] == 2 and many["progress"]["remaining"] == 6
    # the proposals were: b uncertain, top-1 cat -> kept; e uncertain, top-1 cat -> rejected
    assert many["progress"]["per_class"] == {"cat": {"kept": 1, "changed": 0, "rejected": 1}}
    undo = client.post("/api/decisions", json={"path": "b.jpg", "class": "dog", "undo": True}).json()
    assert undo["saved"][0]["undo"] is True and undo["items"][0]["review"] == "dog"
    assert decisions.read(labeled) == {"b.jpg": "dog", "e.jpg": decisions.REJECTED}
    states = {it["path"]: it["state"] for it in client.get("/api/items").json()["items"]}
    assert states["b.jpg"] == "reviewed" and states["e.jpg"] == "rejected" and states["a.jpg"] == "decided"


@pytest.mark.parametrize("body, status", [
    ({"path": "a.jpg", "class": "wolf"}, 400),
    ({"path": "a.jpg", "class": None}, 400),  # only an undo may take a decision back
    ({"path": "zzz.jpg", "class": "cat"}, 404),
    ({"path": "a.jpg"}, 400),
    ([], 400),
    ("a.jpg", 400),
    ([{"path": "a.jpg", "class": "cat"}, {"path": "b.jpg", "class": "cat", "undo": True}], 400),
])
def test_bad_decisions_are_refused_and_nothing_is_written(client, labeled, body, status):
    r = client.post("/api/decisions", json=body)
    assert r.status_code == status and r.json()["error"]
    assert not (labeled / decisions.FILE).exists()


WRONG_REQUESTS = [
    # (method, path, body or raw bytes, status, a fragment of the one-line reason)
    ("POST", "/api/decisions", {"path": "a.jpg", "class": ["red circle"]}, 400, "body.class is an array"),
    ("POST", "/api/decisions", {"path": ["a.jpg"], "class": "cat"}, 400, "body.path is an array"),
    ("POST", "/api/decisions", {"path": "a.jpg", "class": "cat", "undo": "yes"}, 400, "body.undo is a string"),
    ("POST", "/api/decisions", {"path": "a.jpg", "class": "cat", "extra": 1}, 400, "unknown field"),
    ("POST", "/api/decisions", [{"path": "a.jpg", "class": {"x": 1}}], 400, "body[0].class is an object"),
    ("POST", "/api/decisions", [[{"path": "a.jpg"}]], 400, "body[0] is an array"),
    ("POST", "/api/decisions", [{"path": "a.jpg", "class": "cat"}] * 10_001, 400, "at most 10000"),
    ("POST", "/api/decisions", {"path": "a.jpg", "class": "c" * 2000}, 400, "at most 1000"),
    ("POST", "/api/decisions", 12, 400, "body is a number"),
    ("POST", "/api/decisions", None, 400, "body is null"),
    ("POST", "/api/similar", {"path": ["a.jpg"]}, 400, "body.path is an array"),
    ("POST", "/api/similar", {"path": "zzz.jpg"}, 404, "not one of the listed images"),
    ("POST", "/api/similar", [], 400, "body is an array"),
    ("POST", "/api/search", {"text": 3}, 400, "body.text is a number"),
    ("POST", "/api/search", {}, 400, "lacks 'text'"),
    ("POST", "/api/relabel", {"anything": 1}, 400, "takes no body"),
    ("POST", "/api/decisions", b"[" * 100_000 + b"]" * 100_000, 400, "nests more than"),
    ("POST", "/api/search", b'{"text": NaN}', 400, "NaN"),
    ("POST", "/api/search", b'{"text": "\\ud800"}', 400, "lone surrogate"),
    ("POST", "/api/decisions", b'{"path": "a.jpg", "class": ' + b"9" * 5000 + b"}", 400, "not JSON this server reads"),
    ("POST", "/api/search", b"\xff\xfe{}", 400, "not UTF-8"),
    ("POST", "/api/search", b'{"text": "' + b"x" * (2 << 20) + b'"}', 413, "larger than"),
    ("GET", "/api/items?offset=" + "9" * 5000, None, 400, "not a whole number"),
    ("GET", "/api/items?limit=-1", None, 400, "at least 0"),
    ("GET", "/api/items?min=nan", None, 400, "not a number"),
    ("GET", "/api/items?max=1e999", None, 400, "not a number"),
    ("GET", "/api/items?filter=" + "x" * 5000, None, 400, "not one of"),
    ("GET", "/api/thumb/" + "9" * 5000, None, 404, "not a whole number"),
    ("GET", "/api/image/-1", None, 404, "at least 0"),
    ("GET", "/static/secrets.txt", None, 404, "not one of"),
    ("GET", "/api/decisions", None, 405, "Method Not Allowed"),
    ("POST", "/api/items", {}, 405, "Method Not Allowed"),
    ("GET", "/nowhere", None, 404, "Not Found"),
]


@pytest.mark.parametrize("method, path, body, status, reason", WRONG_REQUESTS,
                         ids=[f"{m} {p[:30]} {str(b)[:40]}" for m, p, b, _, _ in WRONG_REQUESTS])
def test_wrong_requests_are_4xx_with_one_line_and_nothing_is_written(client, labeled, capfd, method, path, body,
                                                                      status, reason):
    """Every wrong type, size and nesting is refused by the schema layer before a handler."""
    kwargs = {"content": body} if isinstance(body, bytes) else {} if body is None and method == "GET" else {"json": body}
    r = client.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    line = r.json()["error"]
    assert reason in line and "\n" not in line and len(line) <= 1000
    assert not (labeled / decisions.FILE).exists()
    assert "Traceback" not in capfd.readouterr().err


def test_the_openapi_document_describes_every_route(client):
    """The schema the requests are checked against is served, and names every endpoint."""
    doc = client.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    ops = {(m.upper(), p) for p, ms in doc["paths"].items() for m in ms}
    assert ("POST", "/api/decisions") in ops and ("GET", "/api/thumb/{index}") in ops and len(ops) == 11
    body = doc["paths"]["/api/decisions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["else"]["additionalProperties"] is False


# -- the Host header (DNS rebinding) --------------------------------------------------
@pytest.mark.parametrize("host, ok", [
    ("127.0.0.1:{port}", True), ("localhost:{port}", True), ("LOCALHOST.:{port}", True), ("127.0.0.1", True),
    ("[::1]:{port}", True), ("127.1.2.3:{port}", True),
    ("attacker.example:{port}", False), ("attacker.example", False), ("localhost.attacker.example:{port}", False),
    ("192.168.1.9:{port}", False), ("127.0.0.1:{port}@evil", False), ("a b", False),
])
def test_only_the_hosts_it_was_started_for_are_served(server, host, ok):
    """A valid token is not enough: a rebinding page's requests name the attacker's host."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("GET", "/api/progress", skip_host=True)
        if host:
            conn.putheader("Host", host.format(port=server.port))
        conn.putheader("x-clipdata-token", server.token)
        conn.endheaders()
        r = conn.getresponse()
        body = json.loads(r.read())
    finally:
        conn.close()
    assert (r.status == 200) == ok, body  # (HTTP/1.1 without a Host: uvicorn itself answers 400)
    if not ok:
        assert r.status == 403 and "Host" in body["error"]


def test_a_post_whose_origin_is_the_forged_host_is_refused(server, client, labeled):
    """The same-origin check compares Origin with the allowed names, not with Host."""
    evil = f"attacker.example:{server.port}"
    r = client.post("/api/decisions", json={"path": "a.jpg", "class": "dog"},
                    headers={"host": evil, "origin": f"http://{evil}"})
    assert r.status_code == 403
    r = client.post("/api/decisions", json={"path": "a.jpg", "class": "dog"},
                    headers={"host": f"localhost:{server.port}", "origin": f"http://localhost:{server.port}"})
    assert r.status_code == 200
    assert decisions.read(labeled) == {"a.jpg": "dog"}


@pytest.mark.parametrize("bind, names, host, ok", [
    ("127.0.0.1", (), "localhost", True),
    ("127.0.0.1", (), "myhost.lan", False),
    ("127.0.0.1", ("myhost.lan",), "MyHost.lan.", True),
    ("192.168.1.5", (), "192.168.1.5", True),
    ("192.168.1.5", (), "192.168.1.6", False),
    ("0.0.0.0", (), "192.168.1.6", True),  # listening everywhere: any address literal
    ("0.0.0.0", (), "attacker.example", False),
    ("box.lan", (), "box.lan", True),
    ("::", (), "fe80::1", True),
])
def test_the_host_rule(bind, names, host, ok):
    from clipdata.server.guard import HostRule

    assert HostRule(bind, "", names).allows(host.lower().rstrip(".")) == ok


def test_allow_host_serves_another_name(labeled):
    with review_serve(labeled, allow_hosts=["review.lan"]) as srv:
        r = httpx.get(base(srv) + "/api/progress", headers={"x-clipdata-token": srv.token, "host": "review.lan"})
    assert r.status_code == 200


# -- images that changed after label ran ----------------------------------------------
def _bomb(path: Path) -> None:
    from PIL import Image

    Image.new("1", (14000, 14000)).save(path, "PNG")  # 196 Mpx, small on disk


@pytest.mark.parametrize("replace", [
    lambda p: p.write_bytes(b"not an image at all"),
    lambda p: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2]),  # cut short
    _bomb,
    lambda p: p.chmod(0),  # (as root every file reads: then only the first three are tried)
], ids=["garbage", "truncated", "decompression bomb", "unreadable"])
def test_an_image_replaced_after_labeling_is_422_with_a_reason(client, labeled, capfd, replace):
    if os.geteuid() == 0 and "chmod" in __import__("inspect").getsource(replace):
        pytest.skip("root reads any file")
    root = Path(json.loads((labeled / "label.json").read_text())["images_root"])
    index = {it["path"]: it["index"] for it in client.get("/api/items").json()["items"]}
    for name in ("a.jpg", "sub/c.png"):
        replace(root / name)
    for name, kind in (("a.jpg", "thumb"), ("sub/c.png", "thumb"), ("a.jpg", "image")):
        r = client.get(f"/api/{kind}/{index[name]}")
        if kind == "image" and r.status_code == 200:  # served as it is: the browser decodes it
            continue
        assert r.status_code == 422, r.text
        assert r.json()["error"].startswith(f"{name}: cannot be shown")
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("damage, fragment", [
    (lambda f: f.write_text("{nope"), "malformed JSON"),
    (lambda f: f.write_bytes(b"\xff\xfe\x00"), "not UTF-8"),
    (lambda f: f.write_text("[1, 2]"), "expected an object"),
    (lambda f: f.write_text(json.dumps({"classes": "cat", "images_root": "."})), '"classes" is a string'),
    (lambda f: f.write_text(json.dumps({"classes": [1], "images_root": "."})), "other than names"),
    (lambda f: f.write_text(json.dumps({"classes": ["a"], "images_root": 3})), '"images_root" is a number'),
    (lambda f: f.write_text('{"classes": ["a"], "images_root": ".", "threshold": NaN}'), "not a finite number"),
], ids=["malformed", "not utf-8", "a list", "classes a string", "classes numbers", "root a number", "NaN"])
def test_a_damaged_label_json_is_one_line(tmp_path, damage, fragment):
    from typer.testing import CliRunner

    import clipdata.cli.serve  # noqa: F401  (registers `review serve`)
    from clipdata.cli import app

    labeled = make_labeled(tmp_path)
    damage(labeled / "label.json")
    r = CliRunner().invoke(app, ["review", "serve", str(labeled), "--no-browser", "--port", "0"])
    assert r.exit_code == 1 and fragment in r.output and "label.json" in r.output, r.output
    assert "bug" not in r.output and len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("row, fragment", [
    ({"path": "a.jpg", "top_k": [{"class": "cat", "score": "high"}]}, "top_k"),
    ({"path": "a.jpg", "top_k": ["cat"]}, "top_k"),
    ({"path": 3, "top_k": [{"class": "cat", "score": 1}]}, '"path"'),
    ({"path": "a.jpg", "top_k": [{"class": "cat", "score": 1}], "review_rank": "1"}, "review_rank"),
    ({"path": "a.jpg", "top_k": [{"class": "cat", "score": 1}], "decision": ["cat"]}, "decision"),
    ({"path": "a.jpg", "top_k": [{"class": "cat", "score": float("nan")}]}, "not a finite number"),  # (a 500 later)
    ({"path": "a.jpg", "top_k": [{"class": "cat", "score": float("inf")}]}, "not a finite number"),
    ({"path": "a.jpg", "top_k": [{"class": "cat", "score": 1}], "uncertain": float("nan")}, "uncertain"),
])
def test_a_damaged_prediction_row_is_one_line(tmp_path, row, fragment):
    labeled = make_labeled(tmp_path)
    with open(labeled / "predictions.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    with pytest.raises(SourceError, match=fragment) as e:
        review_serve(labeled)
    assert e.value.where == "line 7"


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_a_bad_port_is_a_usage_error(tmp_path, port):
    from typer.testing import CliRunner

    import clipdata.cli.serve  # noqa: F401
    from clipdata.cli import app

    r = CliRunner().invoke(app, ["review", "serve", str(make_labeled(tmp_path)), "--port", port, "--no-browser"])
    assert r.exit_code == 2 and "bug" not in r.output
    from clipdata.errors import OptionError
    with pytest.raises(OptionError, match="not a port"):
        review_serve(tmp_path / "labeled", port=99999)


def test_not_json_is_400(client):
    r = client.post("/api/decisions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_an_undo_back_to_not_reviewed(client, labeled):
    client.post("/api/decisions", json={"path": "a.jpg", "class": "dog"})
    client.post("/api/decisions", json={"path": "a.jpg", "class": None, "undo": True})
    assert decisions.read(labeled) == {"a.jpg": None}
    item = next(it for it in client.get("/api/items").json()["items"] if it["path"] == "a.jpg")
    assert item["review"] is None and item["state"] == "decided"


def test_restart_shows_the_state_as_it_was(labeled):
    with review_serve(labeled) as srv:
        httpx.post(base(srv) + "/api/decisions", json={"path": "d.jpg", "class": "cat"},
                   headers={"x-clipdata-token": srv.token})
    with review_serve(labeled) as srv:
        items = httpx.get(base(srv) + "/api/items", headers={"x-clipdata-token": srv.token}).json()["items"]
    assert next(it for it in items if it["path"] == "d.jpg")["review"] == "cat"


def test_stop_closes_the_port(labeled):
    srv = review_serve(labeled)
    srv.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(base(srv) + "/", timeout=2)


def test_not_a_label_folder(tmp_path):
    with pytest.raises(SourceError, match="label.json"):
        review_serve(tmp_path)


# -- the decision file ----------------------------------------------------------------
def test_last_row_per_path_wins_and_previous_is_the_value_on_disk(tmp_path):
    one, two = decisions.DecisionLog(tmp_path), decisions.DecisionLog(tmp_path)  # two servers, one folder
    one.append([("x.jpg", "cat")])
    (row,) = two.append([("x.jpg", "dog")])
    assert row["previous"] == "cat"  # the second writer saw the first's row before writing
    (row,) = one.append([("x.jpg", "fox")])
    assert row["previous"] == "dog"
    assert decisions.read(tmp_path) == {"x.jpg": "fox"}


def test_concurrent_writers_never_interleave_rows(tmp_path):
    logs = [decisions.DecisionLog(tmp_path) for _ in range(4)]

    def work(log, k):
        for i in range(50):
            log.append([(f"img{k}_{i}.jpg", "cat"), (f"shared{i}.jpg", f"c{k}")])

    threads = [threading.Thread(target=work, args=(log, k)) for k, log in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / decisions.FILE).read_text().splitlines()
    assert len(lines) == 400 and all(json.loads(l)["path"] for l in lines)
    state = decisions.read(tmp_path)
    assert sum(p.startswith("img") for p in state) == 200


def test_an_unfinished_last_row_is_dropped_and_cut_off(tmp_path):
    log = decisions.DecisionLog(tmp_path)
    log.append([("x.jpg", "cat")])
    with open(tmp_path / decisions.FILE, "ab") as f:
        f.write(b'{"path": "y.jpg", "cla')  # a writer killed mid-row: never reported saved
    assert decisions.read(tmp_path) == {"x.jpg": "cat"}
    decisions.DecisionLog(tmp_path).append([("z.jpg", "dog")])
    lines = (tmp_path / decisions.FILE).read_text().splitlines()
    assert [json.loads(l)["path"] for l in lines] == ["x.jpg", "z.jpg"]


@pytest.mark.parametrize("line, fragment", [
    (b"{nope\n", "malformed"),
    (b'{"class": "cat"}\n', '"path"'),
    (b'{"path": "a", "class": 3}\n', '"class"'),
    (b"[1]\n", '"path"'),
    (b"[" * 100_000 + b"\n", "nested too deep"),  # (a RecursionError before)
])
def test_a_damaged_row_names_the_file_and_line(tmp_path, line, fragment):
    (tmp_path / decisions.FILE).write_bytes(b'{"path": "a", "class": "cat"}\n' + line)
    with pytest.raises(SourceError, match=fragment) as e:
        decisions.read(tmp_path)
    assert e.value.where == "line 2" and e.value.file.endswith(decisions.FILE)


# -- review apply reads the decisions -------------------------------------------------
def _tree(labeled: Path) -> None:
    """The review tree label would have written for make_labeled's rows (copies, not links)."""
    root = Path(json.loads((labeled / "label.json").read_text())["images_root"])
    for line in (labeled / "predictions.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["path"] in ("a.jpg", "b.jpg", "sub/c.png", "d.jpg", "e.jpg"):
            dst = labeled / row["review_file"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes((root / row["path"]).read_bytes())


def _applied(tmp_path: Path, reviewed: Path, **kw):
    import clipdata

    result = clipdata.review_apply(reviewed, tmp_path / "layout", **kw)
    rows = [json.loads(l) for l in (tmp_path / "layout" / "manifest.jsonl").read_text().splitlines()]
    return {r["source_image"]: r["class"] for r in rows}, result


def test_review_apply_decisions_win_over_the_review_tree(tmp_path):
    labeled = make_labeled(tmp_path)
    _tree(labeled)
    (labeled / "review/fox/d.jpg").rename(labeled / "review/cat/d.jpg")  # moved in the tree ...
    log = decisions.DecisionLog(labeled)
    log.append([("d.jpg", "dog"), ("b.jpg", "fox"), ("a.jpg", decisions.REJECTED), ("sub/c.png", "cat")])
    log.append([("sub/c.png", None)], undo=True)  # taken back: the tree decides
    with open(labeled / decisions.FILE, "a") as f:
        f.write(json.dumps({"path": "zzz.jpg", "class": "cat"}) + "\n")
    applied, result = _applied(tmp_path, labeled)
    assert applied == {"d.jpg": "dog", "b.jpg": "fox", "sub/c.png": "dog"}
    # link.jpg: listed by label, its file not in the tree (the helper left it out): counted
    assert result.layout.skipped_by_reason == {"rejected": 1, "not_reviewed": 1, "not_listed": 1, "absent": 1}
    # against label's proposals: d (fox) changed, b (uncertain, top-1 cat) changed, c left
    # where label put it (no record that anyone looked: not reviewed)
    zero = {"kept": 0, "changed": 0, "moved": 0, "unreviewed": 0}
    assert result.changes == {"cat": {**zero, "changed": 1}, "dog": {**zero, "unreviewed": 1},
                              "fox": {**zero, "changed": 1}}
    assert result.reviewed == 2 and result.accuracy == 0.0


def test_review_apply_decisions_win_over_the_csv_final_column(tmp_path):
    labeled = make_labeled(tmp_path)
    (labeled / "predictions.csv").write_text(
        "path,decision,uncertain,class1,score1,final\n"
        "a.jpg,cat,no,cat,0.9,dog\nb.jpg,,yes,cat,0.4,\nsub/c.png,dog,no,dog,0.8,\nd.jpg,fox,no,fox,0.6,cat\n")
    decisions.DecisionLog(labeled).append([("a.jpg", "fox"), ("e.jpg", "dog")])
    applied, result = _applied(tmp_path, labeled / "predictions.csv")
    assert applied == {"a.jpg": "fox", "sub/c.png": "dog", "d.jpg": "cat", "e.jpg": "dog"}
    assert result.layout.skipped_by_reason == {"not_reviewed": 1, "absent": 1}  # link.jpg: no row
    # a: chosen (fox), d: final (cat), e: chosen (dog); c: only the decision column, not reviewed
    assert (result.reviewed, result.unreviewed, result.moved) == (3, 1, 0)


@pytest.mark.parametrize("meta_path", ["../secret.jpg", "sub/../../secret.jpg", "link.jpg", "ABSOLUTE"])
def test_review_apply_label_studio_paths_stay_inside_the_image_root(tmp_path, meta_path):
    labeled = make_labeled(tmp_path)
    if meta_path == "ABSOLUTE":
        meta_path = str(tmp_path / "secret.jpg")
    choice = lambda c: [{"result": [{"value": {"choices": [c]}}]}]  # noqa: E731
    tasks = [{"meta": {"path": "a.jpg"}, "annotations": choice("dog")},
             {"meta": {"path": meta_path}, "annotations": choice("cat")}]
    (labeled / "export.json").write_text(json.dumps(tasks))
    applied, result = _applied(tmp_path, labeled / "export.json")
    assert applied == {"a.jpg": "dog"}
    listed = 2 if meta_path == "link.jpg" else 1  # the other images label listed are absent from the export
    assert result.layout.skipped_by_reason == {"outside_image_root": 1, "absent": 6 - listed}


def test_a_missing_image_folder_is_one_clear_error(tmp_path):
    labeled = make_labeled(tmp_path)
    meta = json.loads((labeled / "label.json").read_text())
    (labeled / "label.json").write_text(json.dumps({**meta, "images_root": str(tmp_path / "moved")}))
    with pytest.raises(SourceError, match="--images"):
        review_serve(labeled)
    with review_serve(labeled, images=tmp_path / "photos") as srv:  # found again with --images
        assert httpx.get(base(srv) + "/api/thumb/0", headers={"x-clipdata-token": srv.token}).status_code == 200


def test_cli_errors_are_one_line(tmp_path):
    import socket

    from typer.testing import CliRunner

    import clipdata.cli.serve  # noqa: F401  (registers `review serve`)
    from clipdata.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["review", "serve", str(tmp_path), "--no-browser"])
    assert r.exit_code == 1 and "label.json" in r.output and "Traceback" not in r.output
    labeled = make_labeled(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = runner.invoke(app, ["review", "serve", str(labeled), "--port", str(port), "--no-browser"])
    assert r.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in r.output and "--port" in r.output
    assert len(r.output.strip().splitlines()) == 1
    # an address this machine does not have, a name that does not resolve: the hint names --host
    for host in ("192.0.2.1", "no-such-host.invalid"):
        r = runner.invoke(app, ["review", "serve", str(labeled), "--host", host, "--port", "0", "--no-browser"])
        assert r.exit_code == 1 and f"cannot listen on {host}:0" in r.output, r.output
        assert "--host" in r.output and "--port" not in r.output and len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.parametrize("exact", [False, True], ids=["fast path", "--exact-preprocess"])
def test_look_alikes_use_the_embeddings_label_cached_whichever_path_made_them(tmp_path, spec, exact):
    """label.json says how the images were embedded; the app reads those rows, never re-embeds."""
    pytest.importorskip("torch")
    import shutil
    from dataclasses import replace

    import clipdata
    from helpers import SAMPLES
    photos = tmp_path / "photos"
    for p in sorted((SAMPLES / "folder").rglob("*.jpg"))[:6]:
        photos.mkdir(exist_ok=True)
        shutil.copy(p, photos / p.name)
    out = tmp_path / "labeled"
    clipdata.label(photos, out, classes="grass,gravel", spec=replace(spec, exact_preprocess=exact))
    assert json.loads((out / "label.json").read_text())["preprocess"] == ("processor" if exact else "fast-pillow-x2-r4")
    with review_serve(out) as srv, httpx.Client(base_url=base(srv), headers={"x-clipdata-token": srv.token},
                                                timeout=60) as c:
        first = c.get("/api/items").json()["items"][0]["path"]
        r = c.post("/api/similar", json={"path": first})
        assert r.status_code == 200, r.text
        hits = r.json()
        assert len(hits["results"]) == 6 and hits["missing"] == 0
        assert hits["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)  # itself, from the cache



CONCURRENT_LOADS = """
import sys, threading
from clipdata.embedding import Engine, ModelSpec
barrier, errors = threading.Barrier(8), []
def work():
    barrier.wait()
    try:
        Engine(ModelSpec(sys.argv[1], dtype="float32")).model
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}")
threads = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print(errors)
sys.exit(1 if errors else 0)
"""


def test_engines_made_in_several_threads_at_once_all_load(tiny, tmp_path):
    """What a server's warm-up and its first requests do in a fresh process: torch and
    transformers import lazily, and eight threads at once saw a half-made module ("module
    'transformers' has no attribute 'AutoModel'", every time before the import lock)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", CONCURRENT_LOADS, str(tiny)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)  # clipdata from PYTHONPATH or the install, not from the cwd
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]


def _label_with_relative_model(tmp_path, tiny, monkeypatch) -> Path:
    """label run from tmp_path with --model given as a relative path (the README tour's way)."""
    import shutil

    import clipdata
    from clipdata.embedding import EngineSpec
    from helpers import SAMPLES
    shutil.copytree(tiny, tmp_path / "models" / "tiny")
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted((SAMPLES / "folder").rglob("*.jpg"))[:4]:
        shutil.copy(p, photos / p.name)
    monkeypatch.chdir(tmp_path)
    clipdata.label("photos", "labeled", classes="grass,gravel",
                   spec=EngineSpec(model="./models/tiny", dtype="float32", workers=0))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return tmp_path / "labeled"


def _search(srv, text="grass"):
    return httpx.post(base(srv) + "/api/search", json={"text": text}, headers={"x-clipdata-token": srv.token},
                      timeout=120)


def test_label_json_records_the_model_as_it_resolves_so_review_serve_searches_from_anywhere(tmp_path, tiny,
                                                                                         monkeypatch):
    labeled = _label_with_relative_model(tmp_path, tiny, monkeypatch)
    meta = json.loads((labeled / "label.json").read_text())
    assert meta["model"] == str((tmp_path / "models" / "tiny").resolve())
    assert meta["model_identity"].startswith(meta["model"] + "@")
    with review_serve(labeled) as srv:  # from another folder than label ran in
        r = _search(srv)
        assert r.status_code == 200 and r.json()["missing"] == 0, r.text
        first = httpx.get(base(srv) + "/api/items", headers={"x-clipdata-token": srv.token}).json()["items"][0]
        r = httpx.post(base(srv) + "/api/similar", json={"path": first["path"]},
                       headers={"x-clipdata-token": srv.token}, timeout=60)
        assert r.status_code == 200 and r.json()["results"][0]["index"] == first["index"]


def test_a_model_that_is_not_there_says_so_and_moved_weights_are_found_with_model(tmp_path, tiny, monkeypatch):
    labeled = _label_with_relative_model(tmp_path, tiny, monkeypatch)
    meta = json.loads((labeled / "label.json").read_text())
    # a label.json written before it recorded the resolved path: the relative path as typed
    (labeled / "label.json").write_text(json.dumps({**meta, "model": "./models/tiny"}))
    with review_serve(labeled) as srv:
        r = _search(srv)
        assert r.status_code == 400
        said = r.json()["error"]
        assert "the model folder ./models/tiny is not there from" in said and "--model" in said
        assert "holds no embedding" not in said
    (tmp_path / "models" / "tiny").rename(tmp_path / "moved")  # the same weights, elsewhere
    with review_serve(labeled, model=str(tmp_path / "moved")) as srv:
        assert _search(srv).status_code == 200


def test_changed_images_are_named_as_the_reason_nothing_is_cached(tmp_path, tiny, monkeypatch):
    labeled = _label_with_relative_model(tmp_path, tiny, monkeypatch)
    from PIL import Image
    for p in (tmp_path / "photos").iterdir():
        Image.new("RGB", (20, 20), (1, 2, 3)).save(p, "JPEG")  # every file changed since label
    with review_serve(labeled) as srv:
        r = _search(srv)
    assert r.status_code == 400 and "the image files changed since label ran" in r.json()["error"]


def test_names_that_are_not_utf8_in_a_label_output_are_answered_spelled_not_500(tmp_path):
    """A hand-edited label output whose model or image path holds a lone surrogate (JSON's
    `\\udce9`, a byte that is not UTF-8): the answers spell it \\xNN (they were a 500: the
    answer could not be encoded)."""
    labeled = make_labeled(tmp_path, [_row("caf\udce9.jpg", (0.6, 0.3, 0.1), "cat")])
    meta = json.loads((labeled / "label.json").read_text())
    (labeled / "label.json").write_text(json.dumps({**meta, "model": "caf\udce9"}))  # JSON spells it \udce9
    (labeled / "cache").mkdir()
    (labeled / "cache" / "embeddings.sqlite").touch()  # (the model is asked for before the cache is read)
    with review_serve(labeled) as srv:
        head = {"x-clipdata-token": srv.token}
        items = httpx.get(base(srv) + "/api/items", headers=head, timeout=30)
        assert items.status_code == 200 and "caf\\xe9.jpg" in {i["path"] for i in items.json()["items"]}
        r = httpx.post(base(srv) + "/api/search", json={"text": "cat"}, headers=head, timeout=120)
        assert r.status_code == 400 and "caf\\xe9" in r.json()["error"], r.text


def test_names_too_long_for_the_file_system_are_refused_or_not_found(tmp_path):
    """A path or image root longer than the file system takes (ENAMETOOLONG, which Python's
    is_file and is_dir raise rather than answer False): not found, never a 500."""
    labeled = make_labeled(tmp_path, [_row("a" * 5000, (0.6, 0.3, 0.1), "cat")])
    with review_serve(labeled) as srv:
        r = httpx.get(base(srv) + "/api/thumb/6", headers={"x-clipdata-token": srv.token}, timeout=30)
        assert r.status_code == 404 and "no listed image 6" in r.json()["error"]
    meta = json.loads((labeled / "label.json").read_text())
    (labeled / "label.json").write_text(json.dumps({**meta, "images_root": "a/" * 3000}))
    with pytest.raises(SourceError, match="the image folder .* is not there"):
        review_serve(labeled)
