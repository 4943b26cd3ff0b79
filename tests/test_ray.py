"""The Ray Data engine: same results and same cache as the local engine, nothing lost when an
actor dies. One local Ray (2 CPUs) for the whole module: Ray's start-up is paid once."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("torch")
ray = pytest.importorskip("ray")

import clipdata  # noqa: E402
from clipdata.embedding import EngineSpec  # noqa: E402
from clipdata.errors import OptionError  # noqa: E402
from helpers import SAMPLES  # noqa: E402

sys.path.insert(0, str(SAMPLES))
import shapes_world as world  # noqa: E402

MODEL = SAMPLES / "models" / "shapes-clip"
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    from clipdata.embedding.ray import start
    start()
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-photos")
    world.write_unlabeled(root, 40, seed=2024)
    (root / "broken.jpg").write_bytes(b"not an image")
    return root


def spec(**kw):
    return EngineSpec(**{"model": str(MODEL), "dtype": "float32", "workers": 0, "batch_size": 8, **kw})


def rows(out):
    return [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]


def test_ray_gives_the_local_results_and_fills_the_same_cache(local_ray, photos, tmp_path, monkeypatch):
    classes = world.classes()
    on_ray = clipdata.label(photos, tmp_path / "ray", classes=classes, spec=spec(backend="ray"),
                            cache_dir=tmp_path / "cache")
    local = clipdata.label(photos, tmp_path / "local", classes=classes, spec=spec(), cache_dir=tmp_path / "other")
    a, b = rows(tmp_path / "ray"), rows(tmp_path / "local")
    assert [r["path"] for r in a] == [r["path"] for r in b] and len(a) == 40
    for x, y in zip(a, b):
        assert [t["class"] for t in x["top_k"]] == [t["class"] for t in y["top_k"]]
        assert all(abs(s["score"] - t["score"]) <= 1e-5 for s, t in zip(x["top_k"], y["top_k"]))
    assert list(on_ray.unreadable) == list(local.unreadable) == [str(photos / "broken.jpg")]
    assert on_ray.failed == {}
    # a later local run hits the cache that Ray filled: the image tower never runs
    from clipdata.embedding import Engine
    monkeypatch.setattr(Engine, "embed_pixels", lambda self, px: pytest.fail("the image tower ran"))
    again = clipdata.label(photos, tmp_path / "again", classes=classes, spec=spec(), cache_dir=tmp_path / "cache")
    assert again.cache_hits == 40


def map_workers() -> list[int]:
    """Ray Data's actor processes, found by the title Ray gives them (`ray::MapWorker(...)`)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = open(f"/proc/{entry}/cmdline", "rb").read()
            except OSError:
                continue
            if cmd.startswith(b"ray::MapWorker"):
                pids.append(int(entry))
    return pids


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the actor's process through /proc")
def test_a_killed_actor_loses_nothing(local_ray, tmp_path):
    from clipdata.embedding.ray import embed_ray
    images = tmp_path / "many"
    world.write_unlabeled(images, 240, seed=77)
    paths = sorted(str(p) for p in images.iterdir())
    seen, result = [], {}

    def job():
        result["out"] = embed_ray(spec(backend="ray", batch_size=2), paths, progress=seen.append)

    t = threading.Thread(target=job)
    t.start()
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline and t.is_alive():
        if seen:  # the actor is working: kill its process
            for pid in map_workers():
                os.kill(pid, signal.SIGKILL)
                killed = pid
                break
        time.sleep(0.05)
    t.join(300)
    vectors, unreadable, failed = result["out"]
    assert killed is not None, "the job ended before an actor could be killed"
    assert len(vectors) + len(failed) == 240 and not unreadable
    assert len(vectors) == 240, f"{len(failed)} image(s) failed"  # retried on a restarted actor


def test_too_many_actors_is_a_clear_error(local_ray, photos, tmp_path):
    with pytest.raises(OptionError, match="room for 1 actor"):
        clipdata.search(photos, ["a red star"], spec=spec(backend="ray", num_actors=2), cache_dir=False)


def test_without_ray_the_engine_says_how_to_install(photos, tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"
            "import clipdata\nfrom clipdata.embedding import EngineSpec\nfrom clipdata.errors import ClipdataError\n"
            "try:\n"
            f"    clipdata.search({str(photos)!r}, ['x'], spec=EngineSpec(model={str(MODEL)!r}, backend='ray'), cache_dir=False)\n"
            "except ClipdataError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'clipdata[ray]'" in r.stdout, r.stdout + r.stderr
