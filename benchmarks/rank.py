"""Benchmark clipdata eval's prompt sets and warm cache (full-size ViT-B/32 architecture,
random weights), and duplicate/uniqueness search on 100,000 random 512-d embeddings.

    pip install -e ".[clip,test]" && python benchmarks/rank.py [--images 500]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

CLASSES = ["circle", "square", "triangle", "star", "blob"]
SEARCH = """
import numpy as np, resource, time, json
from clipdata.index import near_pairs, _groups, uniqueness
rng = np.random.default_rng(0)
emb = rng.normal(size=(100_000, 512)).astype(np.float32)
emb /= np.linalg.norm(emb, axis=1, keepdims=True)
emb[1] = emb[0]; emb[3] = emb[2] * 0.999 + emb[4] * 0.001; emb[3] /= np.linalg.norm(emb[3])  # planted
t = time.perf_counter()
pairs = list(near_pairs(emb, 0.02))
groups = _groups(len(emb), [(i, j) for i, j, _ in pairs])
dup_s = time.perf_counter() - t
t = time.perf_counter()
u = uniqueness(emb, 5)
uniq_s = time.perf_counter() - t
print(json.dumps({"groups": len(groups), "dup_s": dup_s, "uniq_s": uniq_s,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=500)
    args = ap.parse_args()
    import clipdata
    from clipdata.embedding import EngineSpec
    from label import make_photos
    from tiny_clip import VIT_B32_TEXT, VIT_B32_VISION, make_tiny_clip

    tmp = Path(tempfile.mkdtemp(prefix="clipdata-rank-bench-"))
    try:
        model = make_tiny_clip(tmp / "vit-b32", text=VIT_B32_TEXT, vision=VIT_B32_VISION, projection_dim=512)
        spec = EngineSpec(model=str(model))
        layout = tmp / "layout" / "test"
        per = args.images // len(CLASSES)
        for i, c in enumerate(CLASSES):
            make_photos(layout / c, per, (640, 480), seed=i)
        (layout / "_tokenization.txt").write_text("\n".join(f"a photo of a {c}" for c in CLASSES))
        templates = ["{}", "a {}", "a photo of {a}", "a drawing of a {}", "a {} shape", "a picture of a {}",
                     "{} on a background", "a blurry photo of a {}", "a close-up of a {}"]
        print(f"{per * len(CLASSES)} images 640x480, {len(CLASSES)} classes, ViT-B/32 architecture, random weights")
        t = time.perf_counter()
        one = clipdata.evaluate(layout.parent, spec=spec, cache_dir=tmp / "cache1")
        one_s = time.perf_counter() - t
        t = time.perf_counter()
        ten = clipdata.evaluate(layout.parent, templates=templates, spec=spec, cache_dir=tmp / "cache10")
        ten_s = time.perf_counter() - t
        t = time.perf_counter()
        warm = clipdata.evaluate(layout.parent, templates=templates, spec=spec, cache_dir=tmp / "cache10")
        warm_s = time.perf_counter() - t
        print(f"  eval, 1 prompt set, cold cache:   {one_s:.1f} s ({one.engine})")
        print(f"  eval, {len(ten.sets)} prompt sets, cold cache: {ten_s:.1f} s = {ten_s / one_s:.2f}x (target <= 1.3x)")
        print(f"  eval, {len(warm.sets)} prompt sets, warm cache: {warm_s:.2f} s = {warm_s / ten_s:.1%} of the cold run "
              f"(target <= 10%); {warm.cache_hits} cache hits")
        r = subprocess.run([sys.executable, "-c", SEARCH], capture_output=True, text=True, check=True)
        import json
        res = json.loads(r.stdout.strip().splitlines()[-1])
        print("\n100,000 random 512-d unit embeddings (200 MB), blockwise exact search, one process:")
        print(f"  duplicates (threshold 0.02): {res['dup_s']:.1f} s, {res['groups']} planted groups found")
        print(f"  uniqueness (k=5): {res['uniq_s']:.1f} s")
        print(f"  peak RSS: {res['rss_mb']:.0f} MB (target: well under 2 GB)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
