"""`clipdata review backend` at the protocol level: Label Studio's requests (recorded from
Label Studio 1.23.2 in tests/fixtures/labelstudio/) replayed against the real backend
(uvicorn on 127.0.0.1), with a stand-in Label Studio that serves images and the project
export the way 1.23.2 does (token required). The tests against a real Label Studio are in
test_backend_labelstudio.py."""
from __future__ import annotations

import base64
import json
import os
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

from clipdata import review_backend  # noqa: E402  (the API twin)
from clipdata.errors import OptionError  # noqa: E402
from clipdata.server.labelstudio import BackendError, locate, parse_config  # noqa: E402
from helpers import FIXTURES, needs_shapes_model, shapes_spec  # noqa: E402
from labelstudio_stub import TOKEN, FakeStudio, jpeg  # noqa: E402

RECORDED = FIXTURES / "labelstudio" / "requests-1.23.2.jsonl"
EXPORT = FIXTURES / "labelstudio" / "export-1.23.2.json"
CODES = ["alfa", "bravo", "charlie", "delta", "echo", "foxtrot"]  # names that mean nothing to the model
KINDS = [("red", "circle"), ("blue", "star"), ("green", "triangle"), ("yellow", "square"), ("red", "star"),
         ("blue", "circle")]
WAIT = 120  # seconds a background fit may take on a loaded 2-core machine (labelstudio_stub waits as long)


def config(names, name="class", extra="", choice="single") -> str:
    choices = "".join(f'<Choice value="{n}"/>' for n in names)
    return (f'<View><Image name="image" value="$image"/>{extra}'
            f'<Choices name="{name}" toName="image" choice="{choice}">{choices}</Choices></View>')


def recorded() -> list[dict]:
    return [json.loads(line) for line in RECORDED.read_text().splitlines()]


@pytest.fixture
def studio():
    fake = FakeStudio()
    yield fake
    fake.close()


@pytest.fixture(autouse=True)
def _no_label_studio_env(monkeypatch):
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN", "BASIC_AUTH_USER",
                 "BASIC_AUTH_PASS"):
        monkeypatch.delenv(name, raising=False)


def start(studio: FakeStudio | None, names=("alfa", "bravo"), tmp: Path | None = None, **kw):
    """The backend on a free port; Label Studio's token given unless `api_key` says otherwise."""
    kw.setdefault("cache_dir", (tmp or Path(os.environ["CLIPDATA_CACHE"])) / "cache")
    kw.setdefault("api_key", studio.token if studio else None)
    return review_backend(list(names), spec=shapes_spec(), port=0,
                          label_studio_url=studio.url if studio else kw.pop("label_studio_url", None), **kw)


def wait_fits(base: str, project: str, fits: int, auth=None) -> dict:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        state = httpx.get(base + "/health", auth=auth, timeout=30).json()["projects"].get(project)
        if state and state["fit"]["fits"] + (state["fit"]["last_error"] is not None) >= fits \
                and state["fit"]["state"] == "idle":
            return state
        time.sleep(0.1)
    raise AssertionError(f"no fit in {WAIT} s")


def post(base: str, path: str, body, **kw) -> httpx.Response:
    return httpx.post(base + path, json=body, timeout=120, **kw)


# -- the labeling config ------------------------------------------------------------------------

@pytest.mark.parametrize("xml, problem", [
    ('<View><Image name="image" value="$image"/></View>', "no <Choices> control"),
    (config(["a", "b"]).replace("</View>", '<Choices name="c2" toName="image"><Choice value="a"/></Choices></View>'),
     "2 <Choices> controls"),
    (config(["a", "b"], choice="multiple"), "allows multiple choices"),
    (config(["a", "b"]).replace('toName="image"', 'toName="text"'), "not one <Image>"),
    (config(["a", "b"]).replace('value="$image"', 'value="image"'), 'not a task field like "$image"'),
    ('<View><Image name="image" value="$image"/><Choices name="class" toName="image" value="$options"/></View>',
     "takes its choices from the task"),
    ('<!DOCTYPE v [<!ENTITY a "aaaa">]><View>&a;</View>', "declares entities"),
    ("<View><Image", "malformed XML"),
    (None, "no labeling config"),
    (config(["a", "a"]), "lists a choice twice"),
])
def test_configs_the_backend_cannot_serve_say_why(xml, problem):
    with pytest.raises(BackendError, match=problem.replace("(", r"\(").replace("$", r"\$")):
        parse_config(xml)


def test_the_config_label_writes_and_label_studio_templates_are_understood():
    ctl = parse_config(config(["cat", "dog"]))
    assert (ctl.from_name, ctl.to_name, ctl.key, ctl.choices) == ("class", "image", "image", ("cat", "dog"))
    # Label Studio's "Image Classification" template: nested views, headers, choice="single-radio", an alias
    xml = ('<View><Header value="Choose"/><View style="x"><Image name="img" value="$url" zoom="true"/></View>'
           '<View><Choices name="choice" toName="img" choice="single-radio" showInline="true">'
           '<Choice value="Cat" alias="cat-1"/><View><Choice value="Dog"/></View></Choices></View>'
           '<TextArea name="note" toName="img"/></View>')
    ctl = parse_config(xml)
    assert (ctl.from_name, ctl.to_name, ctl.key, ctl.choices) == ("choice", "img", "url", ("Cat", "Dog"))
    assert ctl.result_value == {"Cat": "cat-1", "Dog": "Dog"}
    with pytest.raises(BackendError, match="not in the project: Fox; not given to the backend: Dog"):
        ctl.check_classes(["Cat", "Fox"])


# -- where images may come from -------------------------------------------------------------------

def test_image_addresses_resolve_only_inside_label_studio_or_images(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    (images / "sub" / "a.jpg").write_bytes(b"x")
    (tmp_path / "secret.jpg").write_bytes(b"x")
    os.symlink(tmp_path / "secret.jpg", images / "link.jpg")
    ls = "http://127.0.0.1:8080"
    ok = {
        "/data/upload/3/abcd1234-a.jpg": ("studio", "/data/upload/3/abcd1234-a.jpg", True),
        "http://127.0.0.1:8080/data/upload/3/x.jpg": ("studio", "/data/upload/3/x.jpg", True),
        "http://127.0.0.1:80/data/upload/3/x.jpg": None,  # another port is another origin
        "/data/local-files/?d=sub/a.jpg": ("disk", str((images / "sub/a.jpg").resolve()), False),
        "/data/local-files/?d=elsewhere/b.jpg": ("studio", "/data/local-files/?d=elsewhere/b.jpg", False),
        "sub/a.jpg": ("disk", str((images / "sub/a.jpg").resolve()), False),
        str(images / "sub" / "a.jpg"): ("disk", str((images / "sub/a.jpg").resolve()), False),
        "../secret.jpg": None, str(tmp_path / "secret.jpg"): None, "link.jpg": None,
        "/data/local-files/?d=../secret.jpg": ("studio", "/data/local-files/?d=../secret.jpg", False),
        "http://127.0.0.1:8080/data/local-files/?d=sub/a.jpg": ("disk", str((images / "sub/a.jpg").resolve()), False),
        "http://127.0.0.1:8080/api/x.jpg": ("studio", "/api/x.jpg", False),
        "/data/sub/a.jpg": None,  # a file path that merely starts with /data: only inside --images
        "https://example.com/a.jpg": None, "file:///etc/passwd": None, "ftp://x/a.jpg": None,
        "s3://bucket/a.jpg": ("studio", "/tasks/7/resolve/?fileuri=" + base64.urlsafe_b64encode(
            b"s3://bucket/a.jpg").decode().replace("=", "%3D"), False),
    }
    for value, want in ok.items():
        if want is None:
            with pytest.raises(BackendError):
                locate(value, "image", ls, images, False, 7)
        else:
            ref = locate(value, "image", ls, images, False, 7)
            assert (ref.kind, ref.where, ref.stable) == want, value
    assert locate("https://example.com/a.jpg", "image", ls, images, True).kind == "remote"
    with pytest.raises(BackendError, match="--allow-remote-images"):
        locate("https://example.com/a.jpg", "image", ls, None, False)
    with pytest.raises(BackendError, match="no --images folder"):
        locate("photos/a.jpg", "image", ls, None, False)
    with pytest.raises(BackendError, match="no --label-studio-url"):
        locate("/data/upload/1/a.jpg", "image", None, images, False)


# -- the protocol, replayed -------------------------------------------------------------------------

@needs_shapes_model
def test_recorded_session_predicts_learns_and_changes_version(studio, tmp_path):
    """Label Studio 1.23.2's own requests: /health, /setup (its token used for the images),
    the batched /predict, the webhooks, START_TRAINING; the export it serves is read back."""
    rec = recorded()
    studio.files = {"/data/upload/1/26afd57a-img1.jpg": jpeg(1, "circle", "red"),
                    "shapes/l0.jpg": jpeg(2, "star", "blue"), "shapes/l1.jpg": jpeg(3, "star", "blue")}
    studio.token = TOKEN
    studio.export = {1: json.loads(EXPORT.read_text())}
    with start(studio, tmp=tmp_path, api_key=None) as srv:  # no key: the token /setup carries is used
        base = srv.url
        health = [r for r in rec if r["path"] == "/health"][0]
        assert httpx.get(base + health["path"], headers={"user-agent": health["headers"]["User-Agent"]}).json()[
            "status"] == "UP"
        setup = [r for r in rec if r["path"] == "/setup"][0]
        first = post(base, "/setup", setup["body"]).json()["model_version"]
        assert first.startswith("clipdata:shapes-clip:zero-shot:") and first.split(":")[3] in ("0",)
        pred = [r for r in rec if r["path"] == "/predict"][0]
        got = post(base, "/predict", pred["body"]).json()
        tasks = pred["body"]["tasks"]
        assert len(got["results"]) == len(tasks) and "errors" not in got
        for res in got["results"]:
            (item,) = res["result"]
            assert (item["from_name"], item["to_name"], item["type"]) == ("class", "image", "choices")
            assert item["value"]["choices"][0] in ("alfa", "bravo") and 0 <= res["score"] <= 1
            assert res["model_version"] == first
        # the images were read through Label Studio with the token /setup carried
        assert {(m, p, a) for m, p, a in studio.seen} >= {("GET", "/data/upload/1/26afd57a-img1.jpg", f"Token {TOKEN}")}
        # learning: webhooks answer at once; the fit reads every annotation from the export
        for hook in [r for r in rec if r["path"] == "/webhook"]:
            answer = post(base, "/webhook", hook["body"])
            assert answer.status_code == 201 and answer.elapsed.total_seconds() < 5
        state = wait_fits(base, "1", 1)
        assert state["annotations"] == 2 and state["fit"]["last_error"] is None
        assert state["model_version"] != first and state["model_version"].split(":")[3] == "2"
        assert post(base, "/setup", setup["body"]).json()["model_version"] == state["model_version"]
        again = post(base, "/predict", pred["body"]).json()
        assert {r["model_version"] for r in again["results"]} == {state["model_version"]}
        versions = [r for r in rec if r["path"] == "/versions"][0]
        assert httpx.get(base + versions["path"]).json() == {"versions": [state["model_version"]]}


def _project(studio: FakeStudio, n_per_class: int, seed: int) -> tuple[list[dict], list[str]]:
    """Tasks of six code-named classes, half uploaded and half in local-files storage."""
    tasks, truth = [], []
    for i in range(n_per_class * len(CODES)):
        k = i % len(CODES)
        colour, shape = KINDS[k]
        data = jpeg(seed + i, shape, colour)
        if i % 2:
            key = f"/data/upload/5/{i:08x}-img{i}.jpg"
            studio.files[key] = data
            image = key
        else:
            studio.files[f"shapes/img{i}.jpg"] = data
            image = f"/data/local-files/?d=shapes/img{i}.jpg"
        tasks.append({"id": 100 + i, "data": {"image": image}, "project": 5})
        truth.append(CODES[k])
    return tasks, truth


def _annotation(task: dict, cls: str, **extra) -> dict:
    return {**task, "annotations": [{"id": task["id"], "result": [
        {"from_name": "class", "to_name": "image", "type": "choices", "value": {"choices": [cls]}}],
        "was_cancelled": False, "ground_truth": False, "updated_at": "2026-01-01T00:00:00Z", **extra}]}


@needs_shapes_model
def test_annotations_raise_accuracy_as_a_plain_probe_does_and_scores_sort_like_review_rank(studio, tmp_path):
    from clipdata.classes import review_ranks
    from clipdata.embedding import Engine, embed_texts, model_scalars, open_cache
    from clipdata.probe import fit_probe
    from clipdata.scoring import zero_shot

    tasks, truth = _project(studio, 10, 500)
    xml = config(CODES)
    with start(studio, CODES, tmp=tmp_path) as srv:
        base = srv.url
        v0 = post(base, "/setup", {"project": "5.1", "schema": xml}).json()["model_version"]
        wait_fits(base, "5", 1)  # first contact: nothing annotated yet
        before = post(base, "/predict", {"tasks": tasks, "project": "5.1", "label_config": xml}).json()
        assert [r["model_version"] for r in before["results"]] == [v0] * len(tasks)
        # the score is review_rank's uncertainty: sorted ascending, it is review_rank's order
        scores = [r["score"] for r in before["results"]]
        x, _ = srv.learner.embed(tasks, "image")  # the same embeddings, from the cache
        order = sorted(range(len(tasks)), key=lambda i: (scores[i], tasks[i]["id"]))
        zs = zero_shot(srv.learner.engine, x, srv.learner.text()[0])
        ranks = review_ranks(zs, [f"{t['id']:06}" for t in tasks])
        assert [i for _, i in sorted(zip(ranks, range(len(tasks))))] == order
        # annotate three per class with code names; the next fit learns them
        picked = {c: [i for i in range(len(tasks)) if truth[i] == c][:3] for c in CODES}
        done = sorted(i for ids in picked.values() for i in ids)
        studio.export = {5: [_annotation(tasks[i], truth[i]) for i in done]}
        assert post(base, "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 5}}).status_code == 201
        state = wait_fits(base, "5", 2)
        assert state["annotations"] == 18 and state["scorer"] in ("probe", "blend")
        after = post(base, "/predict", {"tasks": tasks, "project": "5.1", "label_config": xml}).json()
        rest = [i for i in range(len(tasks)) if i not in done]

        def accuracy(results):
            return np.mean([results[i]["result"][0]["value"]["choices"][0] == truth[i] for i in rest])

        # the threshold: a plain probe fitted on the same embeddings, here in the test
        engine = Engine(shapes_spec())
        with open_cache(engine, tmp_path / "cache") as cache:
            t = embed_texts(engine, [f"a photo of a {c}" for c in CODES], cache)
            _, s, _ = model_scalars(engine, cache)
        plain = fit_probe(x[done].astype(np.float64), np.array([CODES.index(truth[i]) for i in done]), t, s)
        plain_acc = np.mean(plain.proba(x[rest].astype(np.float64)).argmax(1) == np.array(
            [CODES.index(truth[i]) for i in rest]))
        assert accuracy(after["results"]) >= plain_acc - 1e-9 and accuracy(after["results"]) > accuracy(
            before["results"]) + 0.3, (accuracy(before["results"]), accuracy(after["results"]), plain_acc)
        assert {r["model_version"] for r in after["results"]} == {state["model_version"]} != {v0}


@needs_shapes_model
def test_train_from_a_layout_learns_before_the_first_annotation_and_with_them(studio, tmp_path):
    """--train-from: the layout's images are learnt from at the first contact (code names,
    so zero-shot cannot), and annotations are added to them."""
    layout = tmp_path / "layout" / "train"
    for k, code in enumerate(CODES):
        colour, shape = KINDS[k]
        (layout / code).mkdir(parents=True)
        for j in range(3):
            (layout / code / f"{j}.jpg").write_bytes(jpeg(7000 + 10 * k + j, shape, colour))
    (layout / "_tokenization.txt").write_text("".join(f"a photo of a {c}\n" for c in CODES))
    tasks, truth = _project(studio, 5, 1300)
    xml = config(CODES)

    def accuracy(srv) -> float:
        got = post(srv.url, "/predict", {"tasks": tasks, "project": "5.1", "label_config": xml}).json()["results"]
        return float(np.mean([r["result"][0]["value"]["choices"][0] == t for r, t in zip(got, truth)]))

    with start(studio, CODES, tmp=tmp_path, train_from=tmp_path / "layout") as srv:
        post(srv.url, "/setup", {"project": "5.1", "schema": xml})
        first = wait_fits(srv.url, "5", 1)
        assert first["fit"]["last_error"] is None and first["scorer"] in ("probe", "blend"), first
        assert first["annotations"] == 0
        learnt = accuracy(srv)
        studio.export = {5: [_annotation(tasks[i], truth[i]) for i in range(6)]}
        post(srv.url, "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 5}})
        state = wait_fits(srv.url, "5", 2)
        assert state["fit"]["last_error"] is None and state["annotations"] == 6
        assert state["model_version"] != first["model_version"]
    studio.export = {}
    with start(studio, CODES, tmp=tmp_path) as plain:  # the same tasks, zero-shot
        post(plain.url, "/setup", {"project": "5.1", "schema": xml})
        assert wait_fits(plain.url, "5", 1)["scorer"] == "zero-shot"
        zero_shot_accuracy = accuracy(plain)
    assert learnt > zero_shot_accuracy + 0.3, (zero_shot_accuracy, learnt)


@needs_shapes_model
def test_a_fit_never_blocks_predictions_and_a_failed_fit_keeps_the_scorer(studio, tmp_path):
    tasks, truth = _project(studio, 4, 900)
    xml = config(CODES)
    studio.export = {5: [_annotation(tasks[i], truth[i]) for i in range(12)]}
    with start(studio, CODES, tmp=tmp_path) as srv:
        base = srv.url
        post(base, "/setup", {"project": "5.1", "schema": xml})
        learnt = wait_fits(base, "5", 1)
        assert learnt["annotations"] == 12
        # a fit stuck reading the export: predictions are still answered, with the last version
        studio.export_gate = threading.Event()
        post(base, "/webhook", {"action": "ANNOTATION_UPDATED", "project": {"id": 5}})
        got = post(base, "/predict", {"tasks": tasks, "project": "5.1", "label_config": xml}).json()
        assert {r["model_version"] for r in got["results"]} == {learnt["model_version"]}
        assert httpx.get(base + "/health").json()["projects"]["5"]["fit"]["state"] == "fitting"
        # Label Studio fails while the fit waits: the fit fails, says why, keeps the scorer
        studio.export_status = 500
        studio.export_gate.set()
        state = wait_fits(base, "5", 2)
        assert "answered 500" in state["fit"]["last_error"] and state["model_version"] == learnt["model_version"]
        assert state["annotations"] == 12
        got = post(base, "/predict", {"tasks": tasks[:3], "project": "5.1", "label_config": xml}).json()
        assert {r["model_version"] for r in got["results"]} == {learnt["model_version"]}


@needs_shapes_model
def test_bad_tasks_get_no_prediction_and_a_reason_while_the_others_are_predicted(studio, tmp_path):
    tasks, _ = _project(studio, 1, 700)
    images = tmp_path / "images"
    images.mkdir()
    (images / "ok.jpg").write_bytes(jpeg(1))
    (tmp_path / "secret.jpg").write_bytes(jpeg(2))
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    xml = config(CODES)
    remote = FakeStudio(token="other")  # a host outside Label Studio: it must never be asked
    bad = [{"id": 1, "data": {"image": "../secret.jpg"}}, {"id": 2, "data": {}},
           {"id": 3, "data": {"image": remote.url + "/data/upload/5/x.jpg"}},
           {"id": 4, "data": {"image": "/data/upload/5/missing.jpg"}}, {"id": 5, "data": {"image": "broken.jpg"}},
           {"id": 6, "data": {"image": studio.url + "/redirect-out"}},
           {"id": 9, "data": "ok.jpg"}, {"id": 10, "data": None}, {"id": 11, "data": ["ok.jpg"]},  # data not an object
           {"id": 12, "data": {"image": "a" * 5000}},  # a name too long for the file system (a 500 before)
           {"id": 7, "data": {"image": "ok.jpg"}},
           {"id": 8, "data": {"image": 42}}]
    try:
        with start(studio, CODES, tmp=tmp_path, images=images) as srv:
            post(srv.url, "/setup", {"project": "5.1", "schema": xml})
            got = post(srv.url, "/predict", {"tasks": tasks + bad, "project": "5.1", "label_config": xml}).json()
    finally:
        remote.close()
    results = got["results"]
    assert len(results) == len(tasks) + len(bad)
    assert all(r and r["result"] for r in results[:len(tasks)]) and results[-2]["result"]  # ok.jpg predicted
    failed = {e["task"]: e["error"] for e in got["errors"]}
    assert sorted(failed) == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12]
    assert all(results[len(tasks) + i] == [] for i in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11))
    assert "not a file inside --images" in failed[12]
    assert "not a file inside --images" in failed[1] and "no image in data.image" in failed[2]
    assert all("no image in data.image" in failed[i] for i in (9, 10, 11))  # (a 500 before)
    assert "outside Label Studio" in failed[3] and "--allow-remote-images" in failed[3]
    assert "answered 404" in failed[4] and "not an image" in failed[5] and "outside its origin" in failed[6]
    assert all("\n" not in e for e in failed.values())
    assert remote.seen == []


@needs_shapes_model
def test_remote_images_only_when_allowed_and_never_with_the_token(studio, tmp_path):
    remote = FakeStudio(token="remote-only")
    remote.files = {"/img/a.jpg": jpeg(4)}
    xml = config(CODES)
    task = {"id": 1, "data": {"image": remote.url + "/img/a.jpg"}}
    try:
        with start(studio, CODES, tmp=tmp_path, allow_remote_images=True) as srv:
            post(srv.url, "/setup", {"project": "5.1", "schema": xml, "access_token": TOKEN})
            got = post(srv.url, "/predict", {"tasks": [task], "project": "5.1"}).json()
    finally:
        remote.close()
    # the stand-in answers 401 without its own token: Label Studio's token was not sent there
    assert got["results"] == [[]] and "answered 401" in got["errors"][0]["error"]
    assert remote.seen == [("GET", "/img/a.jpg", None)]


@needs_shapes_model
@pytest.mark.parametrize("path, body, status, says", [
    ("/setup", {"project": "5.1", "schema": '<View><Image name="image" value="$image"/></View>'}, 400, "no <Choices>"),
    ("/setup", {"project": "5.1", "schema": config(["alfa", "zulu"])}, 400, "not given to the backend: zulu"),
    ("/setup", {"project": "x", "schema": config(CODES)}, 400, "not a Label Studio project id"),
    ("/predict", {"tasks": "all", "project": "5.1"}, 400, "tasks is a string, expected array"),
    ("/predict", {"tasks": [1, 2], "project": "5.1"}, 400, "expected object"),
    ("/predict", {"project": "5.1"}, 400, "lacks 'tasks'"),
    ("/setup", {"project": "5.1", "schema": 7}, 400, "expected string"),
    ("/predict", {"tasks": [], "project": "9.1"}, 400, "has not been set up"),
    ("/predict", [1], 400, "expected object"),
    ("/predict", b'{"tasks": [', 400, "not JSON"),
    ("/predict", b'{"tasks": NaN}', 400, "not JSON"),
    ("/predict", b'{"tasks": [], "project": "\\ud800"}', 400, "lone surrogate"),
    ("/predict", b"[" * 100_000 + b"]" * 100_000, 400, "nests more than"),
    ("/nowhere", {}, 404, "Not Found"),
    ("/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 77}}, 400, "has not been set up"),
    ("/webhook", {"action": "PROJECT_UPDATED", "project": {"id": 5}}, 200, "ignored"),
])
def test_bad_requests_are_one_line_4xx(studio, tmp_path, path, body, status, says):
    with start(studio, CODES, tmp=tmp_path) as srv:
        assert post(srv.url, "/setup", {"project": "5.1", "schema": config(CODES)}).status_code == 200
        kw = {"content": body} if isinstance(body, bytes) else {"json": body}
        got = httpx.post(srv.url + path, timeout=60, **kw)
    assert got.status_code == status, got.text
    text = got.json().get("error") or got.json().get("status")
    assert says in text and "\n" not in text and "Traceback" not in got.text


@needs_shapes_model
def test_requests_naming_another_host_are_refused(studio, tmp_path):
    """DNS rebinding: a page whose name resolves here must not drive the backend."""
    with start(studio, CODES, tmp=tmp_path, allow_hosts=["ml-backend"]) as srv:
        port = srv.port
        assert httpx.get(srv.url + "/health", headers={"host": "evil.example"}).status_code == 403
        assert httpx.get(srv.url + "/health", headers={"host": f"ml-backend:{port}"}).status_code == 200
        assert httpx.get(srv.url + "/health", headers={"host": f"localhost:{port}"}).status_code == 200
        browser = post(srv.url, "/setup", {"project": "5.1", "schema": config(CODES)},
                       headers={"origin": "http://evil.example"})
        assert browser.status_code == 403 and "another origin" in browser.json()["error"]


@needs_shapes_model
def test_basic_auth_guards_everything_but_the_webhook_bell(studio, tmp_path):
    xml = config(CODES)
    with start(studio, CODES, tmp=tmp_path, auth_user="ls", auth_password="s3cret") as srv:
        base = srv.url
        assert httpx.get(base + "/health").status_code == 401
        assert httpx.get(base + "/health", auth=("ls", "wrong")).status_code == 401
        refused = post(base, "/setup", {"project": "5.1", "schema": xml})
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert post(base, "/setup", {"project": "5.1", "schema": xml}, auth=("ls", "s3cret")).status_code == 200
        # Label Studio's webhooks carry no credentials: a bell for a project set up, nothing more
        assert post(base, "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 5}}).status_code == 201
        assert post(base, "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 6}}).status_code == 400
        assert post(base, "/predict", {"tasks": [], "project": "5.1"}).status_code == 401


@needs_shapes_model
def test_personal_access_tokens_are_exchanged_for_bearer_tokens(tmp_path):
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2ln"
    fake = FakeStudio(token=jwt)
    fake.files = {"/data/upload/5/00000001-a.jpg": jpeg(5)}
    try:
        with start(fake, CODES, tmp=tmp_path, api_key=jwt) as srv:
            post(srv.url, "/setup", {"project": "5.1", "schema": config(CODES)})
            got = post(srv.url, "/predict", {"tasks": [{"id": 1, "data": {"image": "/data/upload/5/00000001-a.jpg"}}],
                                             "project": "5.1"}).json()
    finally:
        fake.close()
    assert got["results"][0]["result"] and "errors" not in got
    assert ("POST", "/api/token/refresh", None) in fake.seen
    assert ("GET", "/data/upload/5/00000001-a.jpg", "Bearer access-1") in fake.seen


@needs_shapes_model
def test_a_task_is_embedded_once_however_often_it_is_predicted(studio, tmp_path):
    tasks, _ = _project(studio, 2, 300)
    xml = config(CODES)
    body = {"tasks": tasks, "project": "5.1", "label_config": xml}
    with start(studio, CODES, tmp=tmp_path) as srv:
        post(srv.url, "/setup", {"project": "5.1", "schema": xml})
        first = post(srv.url, "/predict", body).json()
        assert srv.learner.engine.loaded
    studio.seen.clear()
    with start(studio, CODES, tmp=tmp_path) as srv:  # a restart: the cache answers, the model never loads
        post(srv.url, "/setup", {"project": "5.1", "schema": xml})
        second = post(srv.url, "/predict", body).json()
        third = post(srv.url, "/predict", body).json()
        assert not srv.learner.engine.loaded
    assert second == first == third
    uploads = [p for _, p, _ in studio.seen if p.startswith("/data/upload/")]
    assert len(uploads) == len(tasks) // 2  # uploads never change: fetched once per process, then known


def test_options_that_cannot_work_are_usage_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    with pytest.raises(OptionError, match="could read no image"):
        review_backend(["a", "b"], spec=shapes_spec(), port=0)
    with pytest.raises(OptionError, match="not an http"):
        review_backend(["a", "b"], spec=shapes_spec(), port=0, label_studio_url="localhost:8080")
    with pytest.raises(OptionError, match="both a user and a password"):
        review_backend(["a", "b"], spec=shapes_spec(), port=0, images=tmp_path, auth_user="x")
    with pytest.raises(OptionError, match="one way"):
        review_backend(None, spec=shapes_spec(), port=0, images=tmp_path)


def _cli(*args: str, **kw):
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
        env.pop(name, None)
    return subprocess.Popen([sys.executable, "-m", "clipdata.cli", "review", "backend", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _first_line(proc, seconds: float = 120) -> str:
    """The first line the process prints, or "" when none comes in time (a start that hangs
    fails the test instead of hanging it)."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    return got[0] if got else ""


def _stop(proc, seconds: float = 60) -> tuple[str, str]:
    """SIGTERM, then SIGKILL when it has not ended in `seconds`: (stdout, stderr)."""
    import signal
    import subprocess

    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=30)
        return out, err + f"\n(still running {seconds} s after SIGTERM: killed)"


def test_cli_usage_errors_are_one_line_exit_2():
    proc = _cli("--classes", "a,b", "--model", "nowhere")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.count("\n") == 1 and "could read no image" in err and "Traceback" not in err


@needs_shapes_model
def test_cli_prints_the_url_serves_and_stops_on_sigterm(tmp_path):
    proc = _cli("--classes", ",".join(CODES), "--model", str(shapes_spec().model), "--dtype", "float32",
                "--port", "0", "--images", str(tmp_path), "--cache-dir", str(tmp_path / "cache"))
    says = "Label Studio backend at http://127.0.0.1:"
    health = setup = None
    try:
        line = _first_line(proc, 300)
        if line.startswith(says):
            url = line.split()[4]
            health = httpx.get(url + "/health", timeout=60).json()["status"]
            setup = post(url, "/setup", {"project": "5.1", "schema": config(CODES[:2])})
    finally:
        out, err = _stop(proc, 120)  # (the log is read whatever happened, for the messages below)
    assert line.startswith(says), line + err
    assert health == "UP" and setup.status_code == 400 and "not in the project" in setup.json()["error"], err
    assert proc.returncode in (0, 130) and "Traceback" not in err, (proc.returncode, err)
    assert "not in the project" in err  # the refusal is in the log too, one line
