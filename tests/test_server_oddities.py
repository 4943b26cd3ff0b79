"""The review server and the review backend against requests no client library would send
and files that change under them: raw bytes on a socket (bodies cut short, broken chunked
bodies, numbers JSON allows but a float cannot hold, millions of tiny values), an image or
decisions.jsonl swapped between its check and its use (a FIFO, a symlink out, a folder), a
disk that refuses a decision. The servers are real (uvicorn on 127.0.0.1, a free port).
Each case checks what a user relies on: a 4xx with a one-line reason, nothing in the
server's log that is a traceback or the "this is a bug" line, nothing read or written
outside the folders served, and the server still answering.
(The schema-driven fuzzing is test_serve_fuzz.py; the safety rules test_serve.py.)"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import clipdata  # noqa: E402
from helpers import SAMPLES, make_image  # noqa: E402
from test_serve import make_labeled  # noqa: E402

BUG_MARKS = ("Traceback", "this is a bug", "Exception in ASGI application")


class Log(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + ("\nTraceback" if record.exc_info else ""))


@contextlib.contextmanager
def watched(*names: str):
    """The records of the server's loggers (uvicorn's, the backend's) while inside."""
    log = Log()
    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "starlette", *names)]
    for lg in loggers:
        lg.addHandler(log)
    try:
        yield log
    finally:
        for lg in loggers:
            lg.removeHandler(log)


def exchange(port: int, data: bytes, *, close_after_send: bool = False, timeout: float = 10) -> bytes:
    """Send `data` as it is and read the answer until the server closes (bounded: 10 s,
    at most 1,000 reads). `close_after_send`: hang up at once, as a client that gives up."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if close_after_send:
            return b""
        out = b""
        for _ in range(1000):
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def no_bug_in(log: Log, err: str) -> None:
    text = "\n".join(log.lines) + "\n" + err
    for mark in BUG_MARKS:
        assert mark not in text, text[-3000:]


# -- the review app ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def review(tmp_path_factory):
    labeled = make_labeled(tmp_path_factory.mktemp("oddities"))
    srv = clipdata.review_serve(labeled)
    yield srv, labeled
    srv.stop()


def head(port: int, token: str, method: str, path: str, extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-clipdata-token: {token}\r\n"
            f"Connection: close\r\n{extra}\r\n").encode("latin-1")


def still_answers(port: int, token: str) -> None:
    r = httpx.get(f"http://127.0.0.1:{port}/api/progress", headers={"x-clipdata-token": token}, timeout=10)
    assert r.status_code == 200 and r.json()["total"] == 6


CUT_BODIES = [  # (headers, body): the body never arrives whole
    pytest.param("Transfer-Encoding: chunked\r\n", b"zz\r\n{}", id="chunk size not hex"),
    pytest.param("Transfer-Encoding: chunked\r\n", b"5\r\n{\"pa\r\n", id="chunked, client hangs up mid-body"),
    pytest.param("Content-Length: 100\r\n", b'{"path": "a.jpg"', id="Content-Length longer than what is sent"),
]


@pytest.mark.parametrize("extra, body", CUT_BODIES)
def test_a_body_cut_short_is_no_bug_and_nothing_is_written(review, capfd, extra, body):
    srv, labeled = review
    with watched() as log:
        exchange(srv.port, head(srv.port, srv.token, "POST", "/api/decisions", extra) + body,
                 close_after_send=True)
        time.sleep(0.5)  # the server notices the hang-up
        still_answers(srv.port, srv.token)
    no_bug_in(log, capfd.readouterr().err)
    assert not (labeled / "decisions.jsonl").exists() or not (labeled / "decisions.jsonl").read_bytes()


@pytest.mark.parametrize("body", [b'{"text": 1e400}', b'{"text": "a", "x": -1E+999}', b'[{"path": "a.jpg", '
                                  b'"class": "cat", "w": 2e308}]'], ids=["1e400", "-1E+999 in an unknown field",
                                                                        "2e308 in a row"])
def test_numbers_too_large_for_a_float_are_a_400(review, capfd, body):
    srv, labeled = review
    path = "/api/decisions" if body.startswith(b"[") else "/api/search"
    with watched() as log:
        answer = exchange(srv.port, head(srv.port, srv.token, "POST", path, f"Content-Length: {len(body)}\r\n")
                          + body)
    status, text = status_and_body(answer)
    assert status == 400 and "too large for a float" in json.loads(text)["error"]
    no_bug_in(log, capfd.readouterr().err)


# -- the Label Studio ML backend -----------------------------------------------------------
CONFIG = ('<View><Image name="image" value="$image"/><Choices name="class" toName="image">'
          '<Choice value="grass"/><Choice value="sand"/></Choices></View>')


@pytest.fixture(scope="module")
def backend(tiny, tmp_path_factory):
    from clipdata.embedding import EngineSpec

    tmp = tmp_path_factory.mktemp("backend-oddities")
    images = tmp / "images"
    images.mkdir()
    for p in sorted((SAMPLES / "folder").rglob("*.jpg"))[:2]:
        shutil.copy(p, images / p.name)
    srv = clipdata.review_backend(["grass", "sand"], port=0, images=images, cache_dir=tmp / "cache",
                                  spec=EngineSpec(model=str(tiny), dtype="float32", workers=0, batch_size=8))
    r = httpx.post(f"http://127.0.0.1:{srv.port}/setup", json={"project": "1.1", "schema": CONFIG}, timeout=60)
    assert r.status_code == 200, r.text
    yield srv, images
    srv.stop()


def post(port: int, path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.mark.parametrize("extra, body", CUT_BODIES)
def test_the_backend_logs_a_body_cut_short_as_a_refusal_not_a_traceback(backend, capfd, extra, body):
    srv, _ = backend
    data = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nConnection: close\r\n{extra}\r\n").encode()
    with watched("clipdata.backend") as log:
        exchange(srv.port, data + body, close_after_send=True)
        time.sleep(0.5)
        assert httpx.get(f"http://127.0.0.1:{srv.port}/health", timeout=10).status_code == 200
    no_bug_in(log, capfd.readouterr().err)


@pytest.mark.parametrize("task", [b'{"id": 1e400, "data": {"image": "missing.jpg"}}',
                                  b'{"id": -1e400, "data": {"image": "missing.jpg"}}',
                                  b'{"id": 1, "data": {"image": "missing.jpg", "score": 1e999}}'])
def test_a_task_holding_a_number_too_large_for_a_float_is_a_400_not_a_500(backend, capfd, task):
    """A task id of 1e400 became infinity, which the answer naming the task could not
    write as JSON: a 500 and a traceback."""
    srv, _ = backend
    body = b'{"project": "1.1", "tasks": [' + task + b"]}"
    with watched("clipdata.backend") as log:
        status, text = status_and_body(exchange(srv.port, post(srv.port, "/predict", body)))
    assert status == 400 and "too large for a float" in json.loads(text)["error"]
    no_bug_in(log, capfd.readouterr().err)


def test_a_bug_in_the_backend_is_one_line_in_its_log_not_a_traceback(backend, capfd, monkeypatch):
    srv, _ = backend
    monkeypatch.setattr(srv.learner, "status", lambda: 1 / 0)
    with watched("clipdata.backend") as log:
        r = httpx.get(f"http://127.0.0.1:{srv.port}/health", timeout=10)
        for _ in range(100):  # the answer goes out before the line is logged
            bug_lines = [line for line in log.lines if "this is a bug" in line]
            if bug_lines:
                break
            time.sleep(0.05)
    assert r.status_code == 500 and "ZeroDivisionError" in r.json()["error"]
    assert len(bug_lines) == 1 and "GET /health: ZeroDivisionError" in bug_lines[0]
    assert "Traceback" not in "\n".join(log.lines) + capfd.readouterr().err


def test_a_body_of_millions_of_values_is_refused_before_it_is_parsed(backend, capfd):
    """4,000,000 empty objects fit in the backend's byte limit, and Python would hold each
    in ~60 bytes: gigabytes for one request."""
    srv, _ = backend
    body = b'{"project": "1.1", "tasks": [' + b",".join([b"{}"] * 2_000_001) + b"]}"
    with watched("clipdata.backend") as log:
        status, text = status_and_body(exchange(srv.port, post(srv.port, "/predict", body), timeout=60))
    assert status == 413 and "more than 4000000 JSON values" in json.loads(text)["error"]
    no_bug_in(log, capfd.readouterr().err)


def test_other_requests_are_answered_while_a_body_is_parsed(backend, monkeypatch):
    """A body is parsed and checked in a worker thread: a parse that takes long (a body of
    many megabytes) never stops the event loop from answering /health."""
    from clipdata.server import validate

    srv, images = backend
    parsing, release = threading.Event(), threading.Event()
    parse = validate.parse_json

    def slow_parse(data, **kw):
        parsing.set()
        release.wait(30)
        return parse(data, **kw)

    monkeypatch.setattr(validate, "parse_json", slow_parse)
    body = json.dumps({"project": "1.1", "tasks": [{"id": 1, "data": {"image": "missing.jpg"}}]}).encode()
    answers: list[bytes] = []
    sender = threading.Thread(target=lambda: answers.append(exchange(srv.port, post(srv.port, "/predict", body),
                                                                     timeout=60)))
    sender.start()
    try:
        assert parsing.wait(30)
        r = httpx.get(f"http://127.0.0.1:{srv.port}/health", timeout=10)  # while the parse waits
        assert r.status_code == 200
    finally:
        release.set()
        sender.join(60)
    assert status_and_body(answers[0])[0] == 200


# -- files that change between the check and the read ---------------------------------------
def _fifo(p: Path, secret: Path) -> None:
    p.unlink()
    os.mkfifo(p)


def _symlink_out(p: Path, secret: Path) -> None:
    p.unlink()
    os.symlink(secret, p)


def _folder(p: Path, secret: Path) -> None:
    p.unlink()
    p.mkdir()


def _gone(p: Path, secret: Path) -> None:
    p.unlink()


@pytest.mark.parametrize("route", ["image", "thumb"])
@pytest.mark.parametrize("swap", [_fifo, _symlink_out, _folder, _gone], ids=["FIFO", "symlink out", "folder", "gone"])
def test_a_file_swapped_after_its_check_is_refused_never_followed_or_waited_on(tmp_path, capfd, monkeypatch, route,
                                                                               swap):
    """`Queue.file` checks a listed image (a regular file inside the root), then the app
    reads it: another process can swap it in between. A FIFO then blocked a worker thread
    for ever (the request never answered, the server never stopped); a symlink was followed
    out of the image folder."""
    from clipdata.server.queue import Queue

    labeled = make_labeled(tmp_path)
    secret = tmp_path / "other-secret.jpg"
    make_image(secret, (40, 30), color=(0, 0, 255))
    secret.write_bytes(secret.read_bytes() + b"SECRET")  # an image (a thumbnail would be made), marked
    check = Queue.file
    swapped: list[Path] = []

    def check_then_swap(self, index):
        found = check(self, index)
        request = threading.current_thread().name != "clipdata-review-warm"  # not the embeddings' warm-up
        if found is not None and index == 0 and request and not swapped:
            swap(found, secret)
            swapped.append(found)
        return found

    monkeypatch.setattr(Queue, "file", check_then_swap)
    srv = clipdata.review_serve(labeled)
    try:
        r = httpx.get(f"http://127.0.0.1:{srv.port}/api/{route}/0", headers={"x-clipdata-token": srv.token},
                      timeout=15)
        assert r.status_code in (404, 422) and "a.jpg" in r.json()["error"], r.text[:200]
        assert b"SECRET" not in r.content
        still_answers(srv.port, srv.token)
    finally:
        if swapped and swapped[0].is_fifo():  # a reader stuck on it (the defect) gets end of file
            with contextlib.suppress(OSError):
                os.close(os.open(swapped[0], os.O_WRONLY | os.O_NONBLOCK))
        srv.stop()
    no_bug_in(Log(), capfd.readouterr().err)


# -- the decision file -----------------------------------------------------------------------
def test_a_decision_file_that_is_a_symlink_is_refused_at_start_and_nothing_is_made_outside(tmp_path):
    from clipdata.errors import SourceError

    labeled = make_labeled(tmp_path)
    outside = tmp_path / "outside.jsonl"
    os.symlink(outside, labeled / "decisions.jsonl")
    with pytest.raises(SourceError, match="is a symlink"):
        clipdata.review_serve(labeled)
    assert not outside.exists()


def _swap_link(p: Path, outside: Path) -> None:
    p.unlink(missing_ok=True)
    os.symlink(outside, p)


def _swap_fifo(p: Path, outside: Path) -> None:
    p.unlink(missing_ok=True)
    os.mkfifo(p)


@pytest.mark.parametrize("swap, says", [(_swap_link, "is a symlink"), (_swap_fifo, "not a regular file")],
                         ids=["symlink out", "FIFO"])
def test_a_decision_file_swapped_while_serving_is_a_400_never_written_through_or_waited_on(tmp_path, capfd, swap,
                                                                                           says):
    """Appending followed a symlink swapped in for decisions.jsonl (and created the file it
    named outside the label folder); a FIFO hung the request that read it."""
    labeled = make_labeled(tmp_path)
    outside = tmp_path / "outside.jsonl"
    srv = clipdata.review_serve(labeled)
    headers = {"x-clipdata-token": srv.token}
    base = f"http://127.0.0.1:{srv.port}"
    try:
        assert httpx.post(base + "/api/decisions", json={"path": "a.jpg", "class": "cat"}, headers=headers,
                          timeout=15).status_code == 200
        swap(labeled / "decisions.jsonl", outside)
        r = httpx.post(base + "/api/decisions", json={"path": "b.jpg", "class": "dog"}, headers=headers, timeout=15)
        assert r.status_code == 400 and says in r.json()["error"] and "decisions.jsonl" in r.json()["error"]
        assert httpx.get(base + "/api/items", headers=headers, timeout=15).status_code in (200, 400)  # answered
        assert not outside.exists()
    finally:
        srv.stop()
    no_bug_in(Log(), capfd.readouterr().err)


def test_a_disk_that_refuses_the_write_is_a_400_and_the_decision_is_not_taken_as_saved(tmp_path, capfd,
                                                                                         monkeypatch):
    import errno

    from clipdata.formats import decisions

    labeled = make_labeled(tmp_path)
    srv = clipdata.review_serve(labeled)
    headers = {"x-clipdata-token": srv.token}
    base = f"http://127.0.0.1:{srv.port}"
    try:
        def full(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        with monkeypatch.context() as m:
            m.setattr(decisions.os, "fsync", full)
            r = httpx.post(base + "/api/decisions", json={"path": "a.jpg", "class": "cat"}, headers=headers,
                           timeout=15)
        assert r.status_code == 400 and "not saved: No space left on device" in r.json()["error"]
        assert httpx.get(base + "/api/progress", headers=headers, timeout=15).json()["reviewed"] == 0
        r = httpx.post(base + "/api/decisions", json={"path": "b.jpg", "class": "dog"}, headers=headers, timeout=15)
        assert r.status_code == 200
    finally:
        srv.stop()
    assert decisions.read(labeled) == {"b.jpg": "dog"}  # the refused row was written over
    no_bug_in(Log(), capfd.readouterr().err)


def test_image_decodes_at_once_are_capped_whatever_the_number_of_requests(tmp_path, monkeypatch):
    """Up to 40 request threads could each hold an image read whole (256 MB) or a decode:
    memory grew with the number of clients. Reads and decodes take turns through one small
    semaphore; every request is still answered."""
    import clipdata.server.app as app

    monkeypatch.setattr(app, "HEAVY", threading.BoundedSemaphore(2))
    real, busy, peak, lock = app.thumbnail_jpeg, [0], [0], threading.Lock()

    def slow(f, side):
        with lock:
            busy[0] += 1
            peak[0] = max(peak[0], busy[0])
        try:
            time.sleep(0.4)
            return real(f, side)
        finally:
            with lock:
                busy[0] -= 1

    monkeypatch.setattr(app, "thumbnail_jpeg", slow)
    srv = clipdata.review_serve(make_labeled(tmp_path))
    try:
        codes: list[int] = []

        def get(i: int) -> None:
            r = httpx.get(f"http://127.0.0.1:{srv.port}/api/thumb/{i}", headers={"x-clipdata-token": srv.token},
                          timeout=30)
            codes.append(r.status_code)

        threads = [threading.Thread(target=get, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(codes) == [200] * 5 and 1 <= peak[0] <= 2, (codes, peak)
    finally:
        srv.stop()


def test_an_image_replaced_during_review_gets_a_new_thumbnail(tmp_path):
    """Thumbnails were cached by list position only: a photo re-exported or fixed while the
    review ran kept showing its old picture until the server restarted."""
    labeled = make_labeled(tmp_path)
    srv = clipdata.review_serve(labeled)
    try:
        url, token = f"http://127.0.0.1:{srv.port}/api/thumb/0", {"x-clipdata-token": srv.token}
        first = httpx.get(url, headers=token, timeout=15)
        assert first.status_code == 200 and httpx.get(url, headers=token, timeout=15).content == first.content
        make_image(tmp_path / "photos" / "a.jpg", (80, 60), color=(0, 200, 0))
        second = httpx.get(url, headers=token, timeout=15)
        assert second.status_code == 200 and second.content != first.content
    finally:
        srv.stop()
