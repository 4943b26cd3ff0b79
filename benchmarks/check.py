"""Benchmark `clipdata check --embeddings` at scale: every kind but quality (which needs
pixels) on 100,000 and 1,000,000 512-d embeddings of a layout, wall time and peak memory.

    pip install -e ".[clip,index,embed,check]" && python benchmarks/check.py [--n 100000] [--classes 100]

The layout's image files are empty (nothing is decoded from an embeddings folder but the
candidates of a near-duplicate, and those are then counted unreadable, which is what the
note says). The embeddings are shaped like image embeddings, as in benchmarks/index.py:
concepts of 50 variants each, every vector a noisy copy of one variant (neighbours at
cosine ~0.7); a class is a run of concepts. Planted across splits: noisy copies of a row
(cosine > 0.99), which must come out as near-duplicate candidates. A tiny random CLIP with
512-d projections gives the caption embeddings. The check runs in its own process, so its
peak RSS is its own; `phases` gives each progress bar's first and last report (seconds from
the start); the figures go to benchmarks/README.md with the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
D = 512
SPLITS = {"train": 0.8, "valid": 0.1, "test": 0.1}


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build(root: Path, n: int, classes: int, planted: int, seed: int = 0) -> Path:
    """The layout (empty files), its embeddings folder and the tiny model; returns the model."""
    from tiny_clip import make_tiny_clip

    from clipdata.embedding import Engine, EngineSpec
    from clipdata.formats import embeddings as ef

    model = make_tiny_clip(root / "model", projection_dim=D)
    identity = Engine(EngineSpec(model=str(model), dtype="float32")).identity
    rng = np.random.default_rng(seed)
    concepts = unit(rng.normal(size=(max(classes * 10, 1000), D)))
    variants = unit(np.repeat(concepts, 50, 0) + 0.8 * rng.normal(size=(len(concepts) * 50, D)) / np.sqrt(D))
    names = [f"class {c:04d}" for c in range(classes)]
    lay = root / "layout"
    paths, labels = [], []
    per_class = n // classes
    for c, name in enumerate(names):
        for s in SPLITS:
            (lay / s / name).mkdir(parents=True, exist_ok=True)
        bounds = np.cumsum([int(per_class * f) for f in SPLITS.values()])
        for i in range(per_class):
            split = next(s for s, b in zip(SPLITS, bounds) if i < b) if i < bounds[-1] else "train"
            paths.append(f"{split}/{name}/{i:06d}.jpg")
            labels.append(c)
    for s in SPLITS:
        (lay / s / "_tokenization.txt").write_text("\n".join(f"a photo of a {x}" for x in names))
    for p in paths:
        os.close(os.open(lay / p, os.O_CREAT | os.O_WRONLY, 0o644))
    real = str(lay.resolve())
    order = sorted(range(len(paths)), key=lambda i: paths[i])  # embed's row order
    emb = root / "emb"
    labels_a = np.array(labels)[order]
    m = np.empty((len(order), D), np.float32)
    per_concept = len(concepts) // classes
    for a in range(0, len(order), 100_000):
        lab = labels_a[a:a + 100_000]
        concept = lab * per_concept + rng.integers(0, per_concept, len(lab))
        var = concept * 50 + rng.integers(0, 50, len(lab))
        m[a:a + len(lab)] = unit(variants[var] + 0.7 * rng.normal(size=(len(lab), D)).astype(np.float32) / np.sqrt(D))
    ordered = [paths[i] for i in order]
    split_of = np.array([p.split("/")[0] for p in ordered])
    tests = rng.choice(np.flatnonzero(split_of == "test"), planted, replace=False)
    trains = rng.choice(np.flatnonzero(split_of == "train"), planted, replace=False)
    m[trains] = unit(m[tests] + 0.05 * rng.normal(size=(planted, D)) / np.sqrt(D))
    ef.write_part(emb, 0, m, [f"{real}/{p}" for p in ordered], [128] * len(m), [128] * len(m), [f"{i:064x}" for i in range(len(m))])
    ef.write_info(emb, ef.EmbedInfo(str(model), identity, "float32", "fast-pillow-x2-r4", D, len(m), 1, 10**7))
    return model


RUN = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import clipdata
from clipdata.embedding import EngineSpec
t0 = time.perf_counter()
phases = {{}}
def progress(phase, done, total):
    now = time.perf_counter()
    phases.setdefault(phase, [now, now])[1] = now  # first and last report of the phase
r = clipdata.check({layout!r}, embeddings={emb!r}, spec=EngineSpec(model={model!r}, dtype="float32"),
                   cache_dir={cache!r}, json_path={out!r} + "/report.json", html_path={out!r} + "/report.html",
                   progress=progress)
print(json.dumps({{"seconds": time.perf_counter() - t0, "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "summary": r.by_kind, "notes": r.notes, "phases": {{k: [round(a - t0, 1), round(b - t0, 1)] for k, (a, b) in phases.items()}},
                  "scorer": r.label_scorer, "map": r.map.get("method")}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--planted", type=int, default=50)
    ap.add_argument("--keep", type=Path, help="build here and keep it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        t0 = time.perf_counter()
        model = build(root, args.n, args.classes, args.planted)
        print(f"built {args.n} images in {args.classes} classes in {time.perf_counter() - t0:.0f} s", flush=True)
        code = RUN.format(root=str(ROOT), layout=str(root / "layout"), emb=str(root / "emb"), model=str(model),
                          cache=str(root / "cache"), out=str(root))
        load0 = os.getloadavg()[0]
        cpu0 = os.times()
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        cpu1 = os.times()
        if res.returncode:
            sys.exit(res.stderr[-3000:])
        out = json.loads(res.stdout.strip().splitlines()[-1])
        out["cpu_seconds"] = round(cpu1.children_user + cpu1.children_system - cpu0.children_user - cpu0.children_system, 1)
        out["load_average"] = [round(load0, 1), round(os.getloadavg()[0], 1)]
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
