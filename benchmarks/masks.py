"""Benchmark `convert --mask` on the shapes world with the shipped tiny CLIP
(samples/models/shapes-clip). Prints, in one run:

  (a) zero-shot top-1 (`clipdata eval`, the layout's captions "a photo of a {}") of the crops
      of cluttered scenes whose objects overlap, cut four ways: rectangles (`--mask none`),
      `--mask fill` (CLIP's mean colour), `--mask fill --mask-fill 0,0,0`, and `--mask alpha`
      (which eval composites on white); crops with `--padding 0.1`, and again at 0.3
  (b) the cost: convert time with and without `--mask fill` on those scenes, and on one
      40-megapixel photo holding 24 polygons (masks are rasterised in the crop's window only),
      alternating A/B, each run a `clipdata convert` process (CPU seconds with its workers),
      with the load average

Scenes: 256x256, a striped, speckled or noisy background strewn with 6-12 small unlabelled
shapes of the same colours (clutter), then 3-5 labelled shapes placed so that they may
overlap; each object's segmentation is its *visible* region (later shapes cover earlier
ones), as COCO's masks are, written as an RLE, and its bbox is that region's extent. Objects
less than 35% visible are left out.

    pip install -e ".[clip]" && python benchmarks/masks.py [--scenes 300] [--seed 7]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "samples"))
import shapes_world as world  # noqa: E402

from clipdata.commands.convert import convert  # noqa: E402
from clipdata.commands.evaluate import evaluate  # noqa: E402
from clipdata.embedding import EngineSpec  # noqa: E402
from clipdata.masks import rle_extent, rle_string  # noqa: E402

MODEL = ROOT / "samples" / "models" / "shapes-clip"
SPEC = EngineSpec(model=str(MODEL), dtype="float32", workers=0, batch_size=64)


def rle(mask: np.ndarray) -> dict:
    """A COCO RLE (compressed counts) of a boolean mask: column-major runs, background first."""
    flat = mask.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    runs = np.diff(np.concatenate([[0], change])).tolist()
    if sum(runs) < flat.size:
        runs.append(flat.size - sum(runs))
    return {"size": list(mask.shape), "counts": rle_string(runs)}


def _outline(owner: Image.Image, shape: str, cx: float, cy: float, r: float, angle: float, k: int) -> None:
    d = ImageDraw.Draw(owner)
    if shape == "circle":
        d.ellipse([(cx - r, cy - r), (cx + r, cy + r)], fill=k)
    else:
        d.polygon(world._polygon(shape, cx, cy, r, angle), fill=k)


def scene(rnd: random.Random, side: int = 256):
    img = world.background(rnd.choice(("striped", "speckled", "noisy")), rnd, side)
    for _ in range(rnd.randint(6, 12)):  # clutter: small unlabelled shapes of the same colours
        r = rnd.uniform(6, 14)
        world.draw_shape(img, world.random_item(rnd), rnd.uniform(0, side), rnd.uniform(0, side), r,
                         rnd.uniform(0, 2 * math.pi), rnd)
    owner = Image.new("L", (side, side), 0)
    items = []
    placed: list[tuple[float, float, float]] = []
    for k in range(1, rnd.randint(3, 5) + 1):
        for _ in range(50):
            r = rnd.uniform(24, 46)
            cx, cy = rnd.uniform(r, side - r), rnd.uniform(r, side - r)
            if all(math.hypot(cx - x, cy - y) > 0.55 * (r + rr) for x, y, rr in placed):  # overlap allowed
                break
        placed.append((cx, cy, r))
        item = world.random_item(rnd)
        angle = rnd.uniform(0, 2 * math.pi)
        world.draw_shape(img, item, cx, cy, r, angle, rnd)
        full = Image.new("L", (side, side), 0)
        _outline(full, item.shape, cx, cy, r, angle, 1)
        _outline(owner, item.shape, cx, cy, r, angle, k)
        items.append((k, item, np.asarray(full).sum()))
    own = np.asarray(owner)
    objects = []
    for k, item, area in items:
        visible = own == k
        if visible.sum() >= 0.35 * area:
            objects.append((item, rle(visible)))
    return img, objects


def write_scenes(out: Path, n: int, seed: int) -> tuple[Path, int, int]:
    rnd = random.Random(seed)
    names = world.classes()
    images, annotations, overlapping = [], [], 0
    (out / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, objects = scene(rnd)
        file = f"scene_{i:03}.jpg"
        img.save(out / "images" / file, quality=92)
        images.append({"id": i + 1, "file_name": file, "width": img.width, "height": img.height})
        for item, segm in objects:
            from clipdata.masks import rle_counts
            box = rle_extent(rle_counts(segm["counts"]) or [], segm["size"][0])
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "iscrowd": 0,
                                "category_id": names.index(item.label) + 1, "bbox": list(box), "segmentation": segm})
    ann = out / "annotations.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": k + 1, "name": c} for k, c in enumerate(names)]}))
    return ann, len(images), len(annotations)


def top1(layout: Path) -> float:
    report = evaluate(layout, spec=SPEC, cache_dir=False)
    return report.sets[0].top1


def timed(source: Path, out: Path, mask: str) -> tuple[float, float]:
    """Wall and CPU seconds of one `clipdata convert` run in its own process (its workers'
    CPU included: they are its children, and it waits for them)."""
    import resource
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    w = time.perf_counter()
    subprocess.run([sys.executable, "-m", "clipdata.cli", "convert", "coco", str(source), str(out), "--split", "test",
                    "--padding", "0.1", "--mask", mask, "--workers", "1", "--quiet"], check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - w
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def big_photo(tmp: Path) -> Path:
    """One 7300x5480 (40 MP) photo-like JPEG with 24 polygons."""
    rnd = random.Random(3)
    w, h = 7300, 5480
    base = Image.frombytes("L", (w // 8, h // 8), rnd.randbytes((w // 8) * (h // 8))).resize((w, h)).convert("RGB")
    anns = []
    for i in range(24):
        cx, cy, r = rnd.uniform(600, w - 600), rnd.uniform(600, h - 600), rnd.uniform(150, 550)
        poly = [c for a in range(64) for c in (cx + r * (1 + 0.3 * math.sin(5 * a / 10)) * math.cos(a * math.pi / 32),
                                              cy + r * math.sin(a * math.pi / 32))]
        xs, ys = poly[0::2], poly[1::2]
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [poly],
                     "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]})
    (tmp / "big").mkdir()
    base.save(tmp / "big" / "photo.jpg", quality=90)
    ann = tmp / "big" / "annotations.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "photo.jpg", "width": w, "height": h}],
                               "annotations": anns, "categories": [{"id": 1, "name": "blob"}]}))
    return ann


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cost-only", action="store_true", help="skip (a)")
    args = ap.parse_args()
    if not (MODEL / "config.json").is_file():
        sys.exit("the shapes model is not built: python samples/make_shapes_model.py")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        ann, n_img, n_obj = write_scenes(tmp / "scenes", args.scenes, args.seed)
        print(f"(a) {n_img} scenes, {n_obj} objects (visible >= 35%), 16 classes")
        variants = [] if args.cost_only else [
            ("rectangle (--mask none)", {}), ("--mask fill (CLIP mean)", {"mask": "fill"}),
            ("--mask fill 0,0,0", {"mask": "fill", "mask_fill": "0,0,0"}),
            ("--mask alpha (eval: on white)", {"mask": "alpha"})]
        for padding in ("0.1", "0.3") if variants else ():
            for name, kw in variants:
                out = tmp / f"out-{padding}-{len(kw)}-{kw.get('mask_fill', kw.get('mask', 'none'))}"
                convert(ann, out, "coco", split="test", padding=padding, workers=1, **kw)
                print(f"    padding {padding}  {name:32s} top-1 {top1(out):.3f}")
        print(f"(b) convert time, {args.repeats} alternating runs each, load {os.getloadavg()[0]:.2f}")
        big = big_photo(tmp)
        for label, source in (("scenes", ann), ("40 MP photo, 24 polygons", big)):
            times = {"none": [], "fill": []}
            for r in range(args.repeats):
                for mode in ("none", "fill"):
                    out = tmp / f"t-{label[:3]}-{mode}-{r}"
                    times[mode].append(timed(source, out, mode))
            wn = min(w for w, _ in times["none"])
            wf = min(w for w, _ in times["fill"])
            cn = min(c for _, c in times["none"])
            cf = min(c for _, c in times["fill"])
            print(f"    {label:28s} none {wn:6.2f} s ({cn:.2f} CPU s)  fill {wf:6.2f} s ({cf:.2f} CPU s)  "
                  f"ratio {wf / wn:.2f}x wall, {cf / cn:.2f}x CPU")
        print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
