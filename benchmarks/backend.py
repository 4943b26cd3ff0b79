"""Benchmark clipdata review backend, the Label Studio ML backend. Prints, in one run:

  (a) predictions/s for 1,000 tasks in one /predict (as Label Studio's "Retrieve predictions"
      sends them), cold and warm cache, images read from disk (--images) and through Label
      Studio's API (a stand-in serving uploads with a token), against `clipdata label` on the
      same images; the runs alternate, ratios are taken within a round;
  (b) the fit time after each of 10 annotation batches (webhook -> the project export read
      -> probe fitted with its cross-validation);
  (c) accuracy on held-out tasks after 1, 2, 4 and 8 annotations per class, with code names
      and with the real class names, beside zero-shot.

    pip install -e ".[clip,labelstudio,test]" && python benchmarks/backend.py
    python benchmarks/backend.py --only speed --tasks 200 --model shapes     # a quick run

(a) uses the full-size ViT-B/32 architecture with random weights (speed does not depend on
weight values) on 640x480 JPEGs, unless --model shapes; (b) and (c) use the shipped shapes
model on the shapes world, freshly generated with seeds it never saw.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

CLASSES = ["circle", "square", "triangle", "star", "blob"]
FIT_WAIT = 600  # seconds one fit may take before the benchmark gives up


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def config(names: list[str]) -> str:
    return ('<View><Image name="image" value="$image"/><Choices name="class" toName="image" choice="single">'
            + "".join(f'<Choice value="{n}"/>' for n in names) + "</Choices></View>")


def post(url: str, path: str, body: dict) -> dict:
    import httpx

    r = httpx.post(url + path, json=body, timeout=1800)
    r.raise_for_status()
    return r.json()


def backend(names, spec, cache: Path, studio=None, images: Path | None = None):
    import clipdata

    return clipdata.review_backend(names, spec=spec, port=0, cache_dir=cache, images=images,
                                   label_studio_url=studio.url if studio else None,
                                   api_key=studio.token if studio else None)


def predict(srv, tasks: list[dict], names: list[str]) -> None:
    post(srv.url, "/setup", {"project": "1.1", "schema": config(names)})
    got = post(srv.url, "/predict", {"tasks": tasks, "project": "1.1", "label_config": config(names)})
    assert len(got["results"]) == len(tasks) and "errors" not in got, got.get("errors", [])[:3]


def clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its finished children)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def since(start: tuple[float, float]) -> tuple[float, float]:
    now = clock()
    return now[0] - start[0], now[1] - start[1]


def timed_backend(tasks: list[dict], names: list[str], *args, **kw) -> tuple[tuple[float, float], tuple[float, float]]:
    """((wall, CPU) from starting the backend to the answer of its first /predict, (wall, CPU)
    of a second /predict of the same tasks): the model loads inside the first, as in `label`."""
    t = clock()
    with backend(names, *args, **kw) as srv:
        predict(srv, tasks, names)
        first = since(t)
        t = clock()
        predict(srv, tasks, names)
        return first, since(t)


# -- (a) speed ---------------------------------------------------------------------------------

def speed(tmp: Path, n: int, model: str, rounds: int) -> None:
    import clipdata
    from clipdata.embedding import EngineSpec
    from labelstudio_stub import FakeStudio

    if model == "shapes":
        from helpers import SHAPES_MODEL, world

        model_dir = SHAPES_MODEL
        truth = world.write_unlabeled(tmp / "images", n, seed=9001)
        names = sorted(set(truth.values()))
        what = f"{n} shapes-world JPEGs (128x128), the shapes model"
    else:
        from label import make_photos
        from tiny_clip import VIT_B32_TEXT, VIT_B32_VISION, make_tiny_clip

        model_dir = make_tiny_clip(tmp / "vit-b32", text=VIT_B32_TEXT, vision=VIT_B32_VISION, projection_dim=512)
        make_photos(tmp / "images", n, (640, 480))
        names = CLASSES
        what = f"{n} JPEGs at 640x480, ViT-B/32 architecture (random weights)"
    spec = EngineSpec(model=str(model_dir))
    files = sorted((tmp / "images").iterdir())
    studio = FakeStudio()
    studio.files = {f"/data/upload/1/{i:08x}-{p.name}": p.read_bytes() for i, p in enumerate(files)}
    by_disk = [{"id": i + 1, "data": {"image": p.name}} for i, p in enumerate(files)]
    by_api = [{"id": i + 1, "data": {"image": key}} for i, key in enumerate(studio.files)]
    print(f"(a) predictions/s: {what}; {rounds} rounds, each run with a fresh cache, alternating")
    few = tmp / "warm-up-images"  # imports and the model's files in the page cache, on a few images
    few.mkdir()
    for p in files[:20]:
        (few / p.name).write_bytes(p.read_bytes())
    clipdata.label(few, tmp / "warm-up", classes=names, spec=spec, cache_dir=False)
    rows: dict[str, list[tuple[float, float]]] = {}
    for r in range(rounds):
        run = tmp / f"round{r}"
        t = clock()
        clipdata.label(tmp / "images", run / "label", classes=names, spec=spec, cache_dir=run / "label-cache")
        rows.setdefault("label, cold", []).append(since(t))
        t = clock()
        clipdata.label(tmp / "images", run / "label", classes=names, spec=spec, cache_dir=run / "label-cache",
                       overwrite=True)
        rows.setdefault("label, warm", []).append(since(t))
        cold, warm = timed_backend(by_disk, names, spec, run / "disk-cache", images=tmp / "images")
        rows.setdefault("backend, disk, cold", []).append(cold)
        rows.setdefault("backend, disk, warm", []).append(warm)
        cold, warm = timed_backend(by_api, names, spec, run / "api-cache", studio=studio)
        rows.setdefault("backend, API, cold", []).append(cold)
        rows.setdefault("backend, API, warm", []).append(warm)
        restart, _ = timed_backend(by_api, names, spec, run / "api-cache", studio=studio)  # uploads fetched again
        rows.setdefault("backend, API, restarted, warm cache", []).append(restart)
        print(f"  round {r + 1} done ({load()})", flush=True)
    studio.close()
    base = {"cold": rows["label, cold"], "warm": rows["label, warm"]}
    print("  (cold: from the backend's start to its first answer, model load included, as in label; CPU: this")
    print("  process and its children, the Label Studio stand-in included; ratios: label / backend per round, median)")
    print(f"  {'':38} {'best s':>7} {'tasks/s':>8} {'CPU s':>7}  {'wall ratio':>10} {'CPU ratio':>9}")
    for name, got in rows.items():
        kind = "warm" if "warm" in name else "cold"
        wall = statistics.median(b[0] / g[0] for b, g in zip(base[kind], got))
        cpu = statistics.median(b[1] / g[1] for b, g in zip(base[kind], got))
        best = min(g[0] for g in got)
        print(f"  {name:38} {best:7.2f} {n / best:8.1f} {statistics.median(g[1] for g in got):7.1f}  "
              f"{wall:9.2f}x {cpu:8.2f}x  (vs label {kind})")
    print(f"  ({load()})")


# -- (b) fit time and (c) accuracy -------------------------------------------------------------

def _world(n: int, seed: int):
    from helpers import world
    from labelstudio_stub import jpeg

    import random

    rnd = random.Random(seed)
    items = [world.random_item(rnd) for _ in range(n)]
    return [(jpeg(seed * 100_000 + i, it.shape, it.colour), it.label) for i, it in enumerate(items)]


def _project(studio, world_items, code: dict[str, str] | None):
    tasks, truth = [], []
    for i, (data, label) in enumerate(world_items):
        key = f"/data/upload/1/{i:08x}-t{i}.jpg"
        studio.files[key] = data
        tasks.append({"id": i + 1, "data": {"image": key}})
        truth.append(code[label] if code else label)
    return tasks, truth


def _annotations(tasks, truth, picked):
    return [{**tasks[i], "annotations": [{"id": i + 1, "was_cancelled": False, "updated_at": "2026", "result": [
        {"from_name": "class", "to_name": "image", "type": "choices", "value": {"choices": [truth[i]]}}]}]}
        for i in picked]


def _learn(srv, studio, tasks, truth, picked) -> dict:
    import httpx

    studio.export = {1: _annotations(tasks, truth, picked)}
    before = httpx.get(srv.url + "/health", timeout=60).json()["projects"]["1"]["fit"]["fits"]
    post(srv.url, "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 1}})
    deadline = time.monotonic() + FIT_WAIT
    while time.monotonic() < deadline:
        state = httpx.get(srv.url + "/health", timeout=60).json()["projects"]["1"]
        if state["fit"]["fits"] > before and state["fit"]["state"] == "idle":
            return state
        time.sleep(0.05)
    raise SystemExit(f"no fit ended in {FIT_WAIT} s")


def _wait_first_fit(srv) -> None:
    import httpx

    deadline = time.monotonic() + FIT_WAIT
    while httpx.get(srv.url + "/health", timeout=60).json()["projects"]["1"]["fit"]["state"] != "idle":
        if time.monotonic() > deadline:
            raise SystemExit(f"the first fit did not end in {FIT_WAIT} s")
        time.sleep(0.05)


def fits(tmp: Path, batches: int, per_batch: int) -> None:
    from helpers import shapes_spec, world
    from labelstudio_stub import FakeStudio

    names = world.classes()
    studio = FakeStudio()
    items = _world(batches * per_batch + 100, seed=71)
    tasks, truth = _project(studio, items, None)
    print(f"(b) fit time per annotation batch: shapes model, {len(tasks)} tasks, batches of {per_batch} "
          f"annotations (Label Studio's export read, images from the cache, probe with 5-fold CV)")
    with backend(names, shapes_spec(), tmp / "fit-cache", studio=studio) as srv:
        predict(srv, tasks, names)  # embeds every task once, as in use
        _wait_first_fit(srv)
        print(f"  {'annotations':>11} {'fit s':>7} {'scorer':>9} {'cv accuracy':>12}")
        for b in range(1, batches + 1):
            state = _learn(srv, studio, tasks, truth, range(b * per_batch))
            cv = state["cv_accuracy"].get(state["scorer"])
            print(f"  {state['annotations']:11} {state['fit']['last_seconds']:7.2f} {state['scorer']:>9} "
                  f"{cv if cv is not None else '-':>12}  ({load()})")
    studio.close()


def accuracy(tmp: Path, held_out: int, ks: tuple[int, ...]) -> None:
    import numpy as np

    from helpers import shapes_spec, world
    from labelstudio_stub import FakeStudio

    real = world.classes()
    code = {c: f"k{i + 1:02}" for i, c in enumerate(real)}
    pool = 12 * len(real)
    items = _world(pool + held_out, seed=83)
    print(f"(c) accuracy on {held_out} held-out tasks after k annotations per class (the first k of each "
          f"class among {pool} tasks, as a person would pick them), shapes model, 16 classes")
    print(f"  {'names':>6} {'zero-shot':>9} " + " ".join(f"{f'k={k}':>16}" for k in ks))
    for label, mapping in (("code", code), ("real", None)):
        studio = FakeStudio()
        tasks, truth = _project(studio, items, mapping)
        names = sorted(set(truth))
        rest = list(range(pool, pool + held_out))
        with backend(names, shapes_spec(), tmp / f"acc-cache-{label}", studio=studio) as srv:
            post(srv.url, "/setup", {"project": "1.1", "schema": config(names)})
            _wait_first_fit(srv)

            def acc() -> float:
                got = post(srv.url, "/predict", {"tasks": [tasks[i] for i in rest], "project": "1.1"})["results"]
                return float(np.mean([r["result"][0]["value"]["choices"][0] == truth[i] for r, i in zip(got, rest)]))

            cells = [f"{acc():9.3f}"]
            for k in ks:
                picked = [i for c in names for i in [j for j in range(pool) if truth[j] == c][:k]]
                state = _learn(srv, studio, tasks, truth, picked)
                cells.append(f"{acc():.3f} {state['scorer']:>10}")
        print(f"  {label:>6} " + " ".join(f"{c:>16}" if i else c for i, c in enumerate(cells)) + f"  ({load()})")
        studio.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["speed", "fit", "accuracy"])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--model", choices=["vit-b32", "shapes"], default="vit-b32")
    ap.add_argument("--held-out", type=int, default=400)
    args = ap.parse_args()
    import logging

    logging.getLogger("clipdata.backend").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="clipdata-bench-backend-") as tmp:
        tmp_path = Path(tmp)
        if args.only in (None, "speed"):
            speed(tmp_path / "speed", args.tasks, args.model, args.rounds)
        if args.only in (None, "fit"):
            fits(tmp_path / "fit", 10, 16)
        if args.only in (None, "accuracy"):
            accuracy(tmp_path / "accuracy", args.held_out, (1, 2, 4, 8))


if __name__ == "__main__":
    main()
