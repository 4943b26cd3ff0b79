"""`clipdata review backend` against a real Label Studio (1.23.2, in its own virtual
environment: it pins its own packages). Label Studio runs on 127.0.0.1 with a scratch data
directory copied from a database migrated once per run; everything goes through its own API:
projects, uploads, a local-files storage, the model connection, "Retrieve predictions",
annotations (whose webhooks make the backend learn), and a SIGKILL of the backend mid-fit.

Where Label Studio is found: $CLIPDATA_LABEL_STUDIO (its `label-studio` program), else a
`label-studio` on PATH. The migrated database is kept in $CLIPDATA_LABEL_STUDIO_DB when set
(.ci/run sets both), else made once per test session. Without Label Studio these tests skip,
saying why; test_backend.py runs the same protocol from recorded requests everywhere."""
from __future__ import annotations

import io
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("torch")
pytest.importorskip("transformers")
httpx = pytest.importorskip("httpx")

from clipdata import review_backend  # noqa: E402
from helpers import SHAPES_MODEL, needs_shapes_model, shapes_spec, world  # noqa: E402

pytestmark = [needs_shapes_model]

TOKEN = "clipdata-test-token-0123456789"
CODES = ["alfa", "bravo", "charlie", "delta", "echo", "foxtrot"]  # names that mean nothing to the model
KINDS = [("red", "circle"), ("blue", "star"), ("green", "triangle"), ("yellow", "square"), ("red", "star"),
         ("blue", "circle")]
START_WAIT = 240  # seconds for Label Studio to start on a loaded 2-core machine
FIT_WAIT = 180
MIGRATE_WAIT = 360  # a fresh database migrates in about 3 minutes
ENV = {"LABEL_STUDIO_SENTRY_DSN": "", "SENTRY_DSN": "", "COLLECT_ANALYTICS": "false", "LATEST_VERSION_CHECK": "false",
       "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false", "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
       "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true", "DJANGO_DB": "sqlite"}


def config(names) -> str:
    return ('<View><Image name="image" value="$image"/><Choices name="class" toName="image" choice="single">'
            + "".join(f'<Choice value="{n}"/>' for n in names) + "</Choices></View>")


def _program() -> str | None:
    given = os.environ.get("CLIPDATA_LABEL_STUDIO")
    if given:
        return given if Path(given).is_file() else None
    return shutil.which("label-studio")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _migrated(program: str, tmp_factory) -> Path:
    """An empty, migrated Label Studio database (minutes), made once and then copied."""
    where = Path(os.environ.get("CLIPDATA_LABEL_STUDIO_DB") or tmp_factory.mktemp("ls-template") / "db")
    if (where / "label_studio.sqlite3").is_file() and (where / ".migrated").is_file():
        return where
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    env = {**os.environ, **ENV}
    try:
        done = subprocess.run([program, "version", "--data-dir", str(where)], env=env, capture_output=True,
                              text=True, timeout=MIGRATE_WAIT)
    except subprocess.TimeoutExpired:
        pytest.skip(f"Label Studio did not migrate a database in {MIGRATE_WAIT} s (.ci/run migrates one ahead: "
                    "set CLIPDATA_LABEL_STUDIO_DB)")
    if done.returncode != 0 or not (where / "label_studio.sqlite3").is_file():
        pytest.skip(f"Label Studio could not migrate a database: {(done.stderr or done.stdout).strip()[-300:]}")
    (where / ".migrated").write_text("ok\n")
    return where


class Studio:
    """A running Label Studio and a client for its API."""

    def __init__(self, program: str, template: Path, root: Path) -> None:
        self.data, self.docroot = root / "data", root / "docroot"
        shutil.copytree(template, self.data)
        self.docroot.mkdir()
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **ENV, "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.docroot)}
        self.log = open(root / "label-studio.log", "w")
        self.proc = subprocess.Popen(
            [program, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.data), "--username", "reviewer@example.com", "--password", "reviewer-pw-1",
             "--user-token", TOKEN, "--enable-legacy-api-token"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Token {TOKEN}"}, timeout=120)
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.skip(f"Label Studio exited at start: {(root / 'label-studio.log').read_text()[-300:]}")
            try:
                if self.http.get("/api/projects").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.close()
        pytest.skip(f"Label Studio did not answer in {START_WAIT} s")

    def close(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self.log.close()

    def ok(self, method: str, path: str, **kw) -> httpx.Response:
        r = self.http.request(method, path, **kw)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r

    def project(self, title: str, xml: str) -> int:
        return self.ok("POST", "/api/projects", json={"title": title, "label_config": xml}).json()["id"]

    def import_world(self, pid: int, n: int, seed: int) -> dict[int, str]:
        """n tasks of the six code-named classes: even ones uploaded, odd ones in a local-files
        storage. Returns task id -> true class; the image bytes are kept in self.bytes."""
        rnd = random.Random(seed)
        truth_by_name, files = {}, {}
        folder = self.docroot / f"p{pid}"
        folder.mkdir()
        self.bytes = getattr(self, "bytes", {})
        for i in range(n):
            colour, shape = KINDS[i % len(KINDS)]
            buf = io.BytesIO()
            world.render(world.random_item(rnd, shape, colour), rnd).save(buf, "JPEG", quality=90)
            name = f"img{i:03}.jpg"
            truth_by_name[name] = CODES[i % len(KINDS)]
            self.bytes[(pid, name)] = buf.getvalue()
            if i % 2:
                (folder / name).write_bytes(buf.getvalue())
            else:
                files[f"file{i}"] = (name, buf.getvalue(), "image/jpeg")
        self.ok("POST", f"/api/projects/{pid}/import", files=files)
        storage = self.ok("POST", "/api/storages/localfiles", json={
            "project": pid, "path": str(folder), "use_blob_urls": True, "regex_filter": r".*\.jpg",
            "title": "shapes"}).json()["id"]
        self.ok("POST", f"/api/storages/localfiles/{storage}/sync")
        tasks = self.tasks(pid)
        assert len(tasks) == n, len(tasks)
        truth = {}
        for t in tasks:
            image = t["data"]["image"]
            name = image.rsplit("/", 1)[-1].split("-", 1)[-1] if "/upload/" in image else image.rsplit("/", 1)[-1]
            truth[t["id"]] = truth_by_name[name]
            t["name"] = name
        self.names = {**getattr(self, "names", {}), **{t["id"]: t["name"] for t in tasks}}
        return truth

    def tasks(self, pid: int) -> list[dict]:
        got = self.ok("GET", "/api/tasks", params={"project": pid, "page_size": 1000, "fields": "all"}).json()
        return got["tasks"] if isinstance(got, dict) else got

    def connect(self, pid: int, url: str) -> httpx.Response:
        return self.http.post("/api/ml", json={"url": url, "project": pid, "title": "clipdata"})

    def retrieve(self, pid: int) -> None:
        self.ok("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
                json={"selectedItems": {"all": True, "excluded": []}})

    def predictions(self, pid: int) -> list[dict]:
        got = self.ok("GET", "/api/predictions", params={"project": pid}).json()
        return got["results"] if isinstance(got, dict) else got

    def annotate(self, task: int, cls: str) -> None:
        self.ok("POST", f"/api/tasks/{task}/annotations", json={"result": [
            {"from_name": "class", "to_name": "image", "type": "choices", "value": {"choices": [cls]}}]})


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    program = _program()
    if program is None:
        pytest.skip("Label Studio is not installed (set CLIPDATA_LABEL_STUDIO to its label-studio program; "
                    ".ci/run installs label-studio==1.23.2 in its own virtual environment)")
    template = _migrated(program, tmp_path_factory)
    running = Studio(program, template, tmp_path_factory.mktemp("ls"))
    yield running
    running.close()


@pytest.fixture(autouse=True)
def _no_label_studio_env(monkeypatch):
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
        monkeypatch.delenv(name, raising=False)


def _status(url: str, pid: int) -> dict | None:
    return httpx.get(url + "/health", timeout=30).json()["projects"].get(str(pid))


def _wait_learnt(url: str, pid: int, annotations: int) -> dict:
    deadline = time.monotonic() + FIT_WAIT
    state = None
    while time.monotonic() < deadline:
        state = _status(url, pid)
        if state and state["annotations"] == annotations and state["fit"]["state"] == "idle":
            return state
        time.sleep(0.2)
    raise AssertionError(f"the backend did not learn {annotations} annotations in {FIT_WAIT} s: {state}")


def _latest(predictions: list[dict]) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for p in sorted(predictions, key=lambda p: p["id"]):
        out[p["task"]] = p
    return out


def _plain_probe_accuracy(studio: Studio, pid: int, truth: dict[int, str], done: list[int], rest: list[int],
                          cache: Path) -> tuple[float, float]:
    """Zero-shot and a plain few-shot probe on the same images, computed here: the bar."""
    from clipdata.embedding import Engine, embed_images, embed_texts, model_scalars, open_cache
    from clipdata.probe import fit_probe
    from clipdata.scoring import zero_shot

    files = cache.parent / f"plain-{pid}"
    files.mkdir(exist_ok=True)
    paths = {}
    for t in truth:
        paths[t] = files / studio.names[t]
        paths[t].write_bytes(studio.bytes[(pid, studio.names[t])])
    engine = Engine(shapes_spec())
    with open_cache(engine, cache) as c:
        x, _ = embed_images(engine, [paths[t] for t in sorted(truth)], c, None, shapes_spec())
        text = embed_texts(engine, [f"a photo of a {n}" for n in CODES], c)
        _, scale, _ = model_scalars(engine, c)
    row = {t: i for i, t in enumerate(sorted(truth))}
    y = np.array([CODES.index(truth[t]) for t in sorted(truth)])
    tr, te = [row[t] for t in sorted(done)], [row[t] for t in rest]
    probe = fit_probe(x[tr].astype(np.float64), y[tr], text, scale)
    plain = float(np.mean(probe.proba(x[te].astype(np.float64)).argmax(1) == y[te]))
    zs = float(np.mean(zero_shot(engine, x[te], text).argmax(1) == y[te]))
    return zs, plain


def test_label_studio_gets_predictions_that_improve_with_annotations(studio, tmp_path):
    """Connect, import 60 tasks (uploads and local files), retrieve predictions, annotate
    three per class with code names, and the refreshed predictions are as good as a plain
    probe's; every prediction is sorted by the review order's uncertainty."""
    pid = studio.project("clipdata backend", config(CODES))
    truth = studio.import_world(pid, 60, seed=11)
    with review_backend(CODES, spec=shapes_spec(), port=0, label_studio_url=studio.url, api_key=TOKEN,
                        cache_dir=tmp_path / "cache") as backend:
        connected = studio.connect(pid, backend.url)
        assert connected.status_code == 201, connected.text
        version0 = connected.json()["model_version"]
        assert version0.startswith("clipdata:shapes-clip:zero-shot:0:")
        hooks = studio.ok("GET", "/api/webhooks", params={"project": pid}).json()
        assert [h["url"] for h in hooks] == [backend.url + "/webhook"]
        studio.retrieve(pid)
        first = _latest(studio.predictions(pid))
        assert len(first) == 60
        for p in first.values():
            (item,) = p["result"]
            assert item["from_name"] == "class" and item["value"]["choices"][0] in CODES
            assert 0 <= p["score"] <= 1 and p["model_version"] == version0
        # three annotations per class: each one's webhook makes the backend refit
        per: dict[str, list[int]] = {}
        for t in sorted(truth):
            per.setdefault(truth[t], [])
            if len(per[truth[t]]) < 3:
                per[truth[t]].append(t)
        done = sorted(t for ts in per.values() for t in ts)
        for t in done:
            studio.annotate(t, truth[t])
        state = _wait_learnt(backend.url, pid, len(done))
        assert state["scorer"] in ("probe", "blend") and state["fit"]["last_error"] is None
        # Label Studio asks again, since the version changed, and stores the new predictions
        studio.retrieve(pid)
        after = _latest(studio.predictions(pid))
        assert {p["model_version"] for p in after.values()} == {state["model_version"]} != {version0}
        rest = [t for t in sorted(truth) if t not in done]

        def accuracy(preds: dict[int, dict]) -> float:
            return float(np.mean([preds[t]["result"][0]["value"]["choices"][0] == truth[t] for t in rest]))

        zs, plain = _plain_probe_accuracy(studio, pid, truth, done, rest, tmp_path / "cache")
        assert accuracy(first) == pytest.approx(zs)
        assert accuracy(after) >= plain - 1 / len(rest) and accuracy(after) > zs + 0.3, (zs, plain, accuracy(after))


def _cli_backend(port: int, studio: Studio, cache: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "LABEL_STUDIO_URL": studio.url,
           "LABEL_STUDIO_API_KEY": TOKEN}
    return subprocess.Popen([sys.executable, "-m", "clipdata.cli", "review", "backend", "--classes", ",".join(CODES),
                             "--model", str(SHAPES_MODEL), "--dtype", "float32", "--workers", "0",
                             "--port", str(port), "--cache-dir", str(cache)],
                            env=env, stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True)


def _up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the backend exited"
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the backend did not start")


def test_a_backend_killed_mid_fit_predicts_again_and_learns_every_annotation(studio, tmp_path):
    pid = studio.project("clipdata sigkill", config(CODES))
    truth = studio.import_world(pid, 24, seed=21)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "backend.log"
    proc = _cli_backend(port, studio, tmp_path / "cache", log)
    try:
        _up(url, proc)
        assert studio.connect(pid, url).status_code == 201
        ids = sorted(truth)
        annotated = ids[:6]
        for t in annotated:
            studio.annotate(t, truth[t])
        _wait_learnt(url, pid, len(annotated))
        killed = threading.Event()

        def kill_when_fitting(target: int) -> None:  # polls from before the annotation that starts the fit
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    state = _status(url, pid)
                except httpx.HTTPError:
                    return
                if state and state["fit"]["state"] == "fitting":
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed.set()
                    return
                if state and state["annotations"] == target:
                    return  # that fit ran between two looks: try again with the next annotation

        for t in ids[6:10]:  # the next annotation starts a fit: kill it while it runs
            watcher = threading.Thread(target=kill_when_fitting, args=(len(annotated) + 1,))
            watcher.start()
            studio.annotate(t, truth[t])
            annotated = sorted(set(annotated) | {t})
            watcher.join(90)
            if killed.is_set():
                proc.wait(30)
                break
            _wait_learnt(url, pid, len(annotated))
        assert killed.is_set(), "no fit was seen running"
        proc = _cli_backend(port, studio, tmp_path / "cache", log)
        _up(url, proc)
        studio.retrieve(pid)  # it predicts again: Label Studio's setup makes it refit from scratch
        preds = _latest(studio.predictions(pid))
        assert set(preds) == set(truth)
        state = _wait_learnt(url, pid, len(annotated))  # the next fit used every annotation
        assert state["fit"]["last_error"] is None
        studio.annotate(ids[20], truth[ids[20]])  # and learning goes on
        _wait_learnt(url, pid, len(annotated) + 1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
    assert "Traceback" not in log.read_text()


def test_what_label_studio_cannot_use_is_one_line_in_the_log(studio, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="clipdata.backend")
    no_choices = studio.project("clipdata no choices", '<View><Image name="image" value="$image"/></View>')
    other = studio.project("clipdata other classes", config(["alfa", "zulu"]))
    good = studio.project("clipdata missing image", config(CODES))
    truth = studio.import_world(good, 6, seed=31)
    studio.ok("POST", f"/api/projects/{good}/import", json=[{"image": "/data/upload/999/00000000-gone.jpg"}])
    with review_backend(CODES, spec=shapes_spec(), port=0, label_studio_url=studio.url, api_key=TOKEN,
                        cache_dir=tmp_path / "cache") as backend:
        for pid, says in ((no_choices, "no <Choices> control"), (other, "not given to the backend: zulu")):
            refused = studio.connect(pid, backend.url)
            assert refused.status_code == 400 and "setup" in refused.text
            lines = [r.getMessage() for r in caplog.records if says in r.getMessage()]
            assert lines and all("\n" not in line for line in lines)
        assert studio.connect(good, backend.url).status_code == 201
        studio.retrieve(good)
        preds = _latest(studio.predictions(good))
    assert set(preds) == set(truth)  # the task whose image is gone has none; the others do
    assert any("gone.jpg: answered" in r.getMessage() for r in caplog.records)  # (1.23.2: a 500)
