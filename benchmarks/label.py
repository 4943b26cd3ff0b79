"""Benchmark clipdata label with the full-size ViT-B/32 architecture (random weights: speed
does not depend on weight values). Prints, in one run:

  (a) model-only images/s on pre-made tensors
  (b) clipdata label end to end (cold cache)
  (c) transformers pipeline("zero-shot-image-classification"), called per image
  (d) clipdata label again, warm cache
  and what the fast image path does to speed and to scores against --exact-preprocess.

    pip install -e ".[clip,test]" && python benchmarks/label.py [--images 200]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

CLASSES = ["circle", "square", "triangle", "star", "blob"]


def make_photos(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    import random
    rnd = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    base = Image.blend(Image.linear_gradient("L").resize(size).convert("RGB"),
                       Image.effect_noise(size, 60).convert("RGB"), 0.25)
    paths = []
    for i in range(n):
        img = base.copy()
        d = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = rnd.randrange(size[0]), rnd.randrange(size[1])
            r = rnd.randrange(size[0] // 20, size[0] // 4)
            d.ellipse((x, y, x + r, y + r), fill=tuple(rnd.randrange(256) for _ in range(3)))
        p = folder / f"{i:04}.jpg"
        img.save(p, quality=90)
        paths.append(p)
    return paths


def ray_vs_local(tmp: Path, model_dir: Path, n: int) -> None:
    import clipdata
    from clipdata.embedding.ray import start
    from clipdata.embedding import EngineSpec

    photos = make_photos(tmp / "photos", n, (640, 480))
    t = time.perf_counter()
    start()
    ray_start = time.perf_counter() - t
    local = clipdata.label(photos[0].parent, tmp / "local", classes=CLASSES, spec=EngineSpec(model=str(model_dir)))
    on_ray = clipdata.label(photos[0].parent, tmp / "ray", classes=CLASSES,
                            spec=EngineSpec(model=str(model_dir), backend="ray"))
    print(f"{n} JPEGs at 640x480, ViT-B/32 architecture, random weights")
    print(f"  Ray start-up (local, {os.cpu_count()} CPUs): {ray_start:.1f} s (not counted below)")
    print(f"  local engine: {local.seconds:.1f} s = {local.images / local.seconds:.1f} images/s")
    print(f"  Ray engine:   {on_ray.seconds:.1f} s = {on_ray.images / on_ray.seconds:.1f} images/s "
          f"= {on_ray.seconds / local.seconds:.2f}x the local time")


def rate_of(fn, x, seconds: float) -> float:
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        fn(x)
        n += x.shape[0]
    return n / (time.perf_counter() - t)


def model_variants(model_dir: Path, engine, batch: int, rounds: int, compile_model: bool) -> dict[str, float]:
    """Best-of-`rounds` images/s per variant, the variants interleaved so they share the load."""
    import torch
    from transformers import CLIPModel

    x = torch.randn(batch, 3, 224, 224)
    weights = CLIPModel.from_pretrained(model_dir).eval().to(torch.bfloat16)
    last = CLIPModel.from_pretrained(model_dir).eval().to(torch.bfloat16).to(memory_format=torch.channels_last)

    def run(m, px):
        with torch.inference_mode():
            return m.get_image_features(pixel_values=px)

    fns = {"engine (bfloat16 autocast)": engine.embed_pixels,
           "bfloat16 weights": lambda px: run(weights, px.to(torch.bfloat16)),
           "bfloat16 weights, channels-last": lambda px: run(last, px.to(torch.bfloat16).contiguous(
               memory_format=torch.channels_last))}
    best = {}
    for name, fn in fns.items():
        fn(x)  # warm-up
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = max(best.get(name, 0.0), rate_of(fn, x, 2.0))
    if compile_model:
        tower, projection = weights.vision_model, weights.visual_projection
        t = time.perf_counter()
        compiled = torch.compile(lambda px: projection(tower(pixel_values=px).pooler_output))
        with torch.inference_mode():
            compiled(x.to(torch.bfloat16))
            best["compile seconds"] = time.perf_counter() - t
            best["bfloat16 weights, torch.compile"] = max(rate_of(lambda px: compiled(px.to(torch.bfloat16)), x, 2.0)
                                                          for _ in range(rounds))
    return best


def per_image_ms(fn, paths: list[Path], rounds: int = 3) -> float:
    """Best-of-`rounds` milliseconds per image, one core (this process, torch on one thread)."""
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for p in paths:
            fn(p)
        best = min(best, (time.perf_counter() - t) / len(paths))
    return best * 1e3


def scores_moved(a: Path, b: Path) -> tuple[float, float]:
    """(share with the same top-1 class, largest probability change) between two label runs."""
    rows = [{r["path"]: r for r in map(json.loads, (o / "predictions.jsonl").read_text().splitlines())} for o in (a, b)]
    same = sum(rows[0][p]["top_k"][0]["class"] == rows[1][p]["top_k"][0]["class"] for p in rows[0]) / len(rows[0])
    delta = max(abs(x["score"] - y["score"]) for p in rows[0]
                for x, y in zip(sorted(rows[0][p]["top_k"], key=lambda t: t["class"]),
                                sorted(rows[1][p]["top_k"], key=lambda t: t["class"])))
    return same, delta


def timed_label(images: Path, out: Path, spec) -> tuple[float, float]:
    """(images/s, fixed seconds) of one cold clipdata.label run: the rate from the end of the
    first batch to the last image (model load, loader start-up and writing left out); the
    fixed part is the rest of the run's time."""
    import clipdata

    marks: list[tuple[int, float]] = []
    report = clipdata.label(images, out, classes=CLASSES, spec=spec, cache_dir=out.parent / f"{out.name}-cache",
                            progress=lambda done, total: marks.append((done, time.perf_counter())))
    first = next((d, t) for d, t in marks if d >= spec.batch_size)
    rate = (marks[-1][0] - first[0]) / (marks[-1][1] - first[1])
    return rate, report.seconds - report.images / rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200, help="images per set at 640x480 and 1920x1080")
    ap.add_argument("--big-images", type=int, default=40, help="images at 4000x3000 (each ~3 MB)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement (~40 s)")
    ap.add_argument("--engine", choices=["local", "ray"], default="local",
                    help="ray: compare the Ray Data engine with the local one on the same images")
    args = ap.parse_args()
    import torch
    from transformers import AutoProcessor, pipeline

    import clipdata
    from clipdata.embedding import Engine, EngineSpec
    from clipdata.embedding.local import load_image
    from clipdata.embedding.preprocess import FastPreprocess
    from tiny_clip import VIT_B32_TEXT, VIT_B32_VISION, make_tiny_clip

    tmp = Path(tempfile.mkdtemp(prefix="clipdata-label-bench-"))
    try:
        model_dir = make_tiny_clip(tmp / "vit-b32", text=VIT_B32_TEXT, vision=VIT_B32_VISION, projection_dim=512)
        spec = EngineSpec(model=str(model_dir))
        if args.engine == "ray":
            ray_vs_local(tmp, model_dir, args.images)
            return
        engine = Engine(spec)
        cores = os.cpu_count() or 1
        print(f"ViT-B/32 architecture, random weights; {engine.describe()}; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {cores} CPUs")
        variants = model_variants(model_dir, engine, spec.batch_size, rounds=4, compile_model=not args.no_compile)
        model_only = variants["engine (bfloat16 autocast)"]
        print(f"\n(a) model only, batch {spec.batch_size} (best of 4 interleaved rounds):")
        for name, value in variants.items():
            print(f"  {name}: {value:.1f}" + ("" if "seconds" in name else " images/s"))
        if "compile seconds" in variants:
            rate = variants["bfloat16 weights, torch.compile"]
            eager = max(v for k, v in variants.items() if "compile" not in k)
            print(f"  1,000 images: compiled {variants['compile seconds'] + 1000 / rate:.1f} s "
                  f"(compile included) against eager {1000 / eager:.1f} s")

        processor = AutoProcessor.from_pretrained(model_dir).image_processor
        paths = {"processor": lambda p: processor(images=load_image(str(p)), return_tensors="pt"),
                 "fast, Pillow draft": FastPreprocess.from_processor(processor),
                 "fast, simplejpeg": FastPreprocess.from_processor(processor, decoder="simplejpeg")}
        threads = torch.get_num_threads()
        for size in ((640, 480), (1920, 1080), (4000, 3000)):
            n = args.images if size[0] < 4000 else args.big_images
            photos = make_photos(tmp / f"photos_{size[0]}", n, size)
            print(f"\n{n} JPEGs at {size[0]}x{size[1]} ({photos[0].stat().st_size // 1024} KB each)")
            torch.set_num_threads(1)
            ms = {name: per_image_ms(fn, photos[:20]) for name, fn in paths.items()}
            torch.set_num_threads(threads)
            print("  decode + preprocess, one core: " + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()))
            t_decode = min(v for k, v in ms.items() if k != "processor") / 1e3
            # the model-only rate again, next to the runs it is compared with (the machine is shared)
            x = torch.randn(spec.batch_size, 3, 224, 224)
            model_only = max(rate_of(engine.embed_pixels, x, 2.0) for _ in range(2))
            limit = 1 / (1 / model_only + t_decode / cores)
            print(f"  model only, measured now: {model_only:.1f} images/s; limit 1 / (t_model + t_decode / {cores}) "
                  f"= {limit:.1f} images/s = {limit / model_only:.2f} x model only")
            rates = {}
            for workers in (0, 1):
                rate, fixed = timed_label(photos[0].parent, tmp / f"out_{size[0]}_{workers}",
                                          EngineSpec(model=str(model_dir), workers=workers))
                rates[workers] = rate
                print(f"  (b) clipdata label, {workers} loader process{'es' if workers != 1 else ''}: {rate:.1f} "
                      f"images/s = {rate / limit:.2f} x the limit (target >= 0.85), {rate / model_only:.2f} x model only; "
                      f"fixed start-up {fixed:.1f} s")
            out = tmp / f"out_{size[0]}_0"
            exact, _ = timed_label(photos[0].parent, tmp / f"exact_{size[0]}",
                                   EngineSpec(model=str(model_dir), workers=int(rates[1] > rates[0]), exact_preprocess=True))
            same, delta = scores_moved(out, tmp / f"exact_{size[0]}")
            print(f"  --exact-preprocess (the faster loader setting): {exact:.1f} images/s; the default is "
                  f"{max(rates.values()) / exact:.1f}x that, "
                  f"with the same top-1 class for {same:.0%} of images, largest score change "
                  f"{delta:.4f} (random weights: near-uniform scores, a stress test)")
            if size == (640, 480):
                warm = min((clipdata.label(photos[0].parent, out, classes=CLASSES, cache_dir=tmp / f"{out.name}-cache",
                                           spec=EngineSpec(model=str(model_dir), workers=0), overwrite=True)
                            for _ in range(3)), key=lambda r: r.seconds)  # best of 3: short runs are noisy here
                print(f"  (d) warm cache (best of 3): {warm.seconds:.2f} s for {warm.images} images "
                      f"({warm.cache_hits} hits) (target >= 20x faster than a cold run)")
                clf = pipeline("zero-shot-image-classification", model=str(model_dir), device="cpu")
                clf(Image.open(photos[0]), candidate_labels=CLASSES)  # warm-up
                t = time.perf_counter()
                for p in photos:
                    clf(Image.open(p), candidate_labels=CLASSES)
                per_image = len(photos) / (time.perf_counter() - t)
                print(f"  (c) transformers pipeline, per image: {per_image:.1f} images/s (target: (b) >= 4x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
