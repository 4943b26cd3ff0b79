"""A small synthetic visual world for the shipped tiny CLIP: coloured shapes on noisy or
textured backgrounds, with captions in varied wording, and detection scenes with boxes.

Deterministic: the same seed gives the same images and captions, byte for byte. Only Pillow
and the standard library are needed.

    python samples/shapes_world.py     # rebuilds samples/shapes/ (layout, unlabeled, scenes)
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
BACKGROUNDS = ("grey", "dark", "light", "noisy", "striped", "speckled")
SIZES = {"small": (0.28, 0.36), "medium": (0.38, 0.48), "large": (0.50, 0.62)}
CAPTIONS = (
    "a {colour} {shape}",
    "a photo of a {colour} {shape}",
    "a photo of a {size} {colour} {shape}",
    "a photo of a {size} {colour} {shape} on a {background} background",
    "a {colour} {shape} on a {background} background",
    "{colour} {shape}",
    "a picture of a {colour} {shape}",
    "a drawing of a {size} {colour} {shape}",
    "the {shape} is {colour}",
    "a {size} {shape}, coloured {colour}",
)
SIDE = 128


@dataclass(frozen=True)
class Item:
    shape: str
    colour: str
    size: str
    background: str

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"


def _jitter(rgb: tuple[int, int, int], rnd: random.Random, amount: int = 25) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rnd.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def background(kind: str, rnd: random.Random, side: int = SIDE) -> Image.Image:
    base = {"grey": 128, "dark": 45, "light": 215}.get(kind, rnd.randint(90, 170))
    tint = tuple(max(0, min(255, base + rnd.randint(-12, 12))) for _ in range(3))
    img = Image.new("RGB", (side, side), tint)
    if kind in ("noisy", "speckled", "grey", "dark", "light"):
        # seeded noise (Image.effect_noise is not reproducible)
        noise = Image.frombytes("L", (side, side), rnd.randbytes(side * side)).convert("RGB")
        img = Image.blend(img, noise, 0.3 if kind == "noisy" else 0.1)
    d = ImageDraw.Draw(img)
    if kind == "striped":
        step = rnd.randint(8, 16)
        shade = tuple(max(0, c - 30) for c in tint)
        for x in range(-side, side * 2, step * 2):
            d.polygon([(x, 0), (x + step, 0), (x + step + side, side), (x + side, side)], fill=shade)
    if kind == "speckled":
        for _ in range(60):
            x, y = rnd.randrange(side), rnd.randrange(side)
            r = rnd.randint(1, 3)
            g = rnd.randint(60, 200)
            d.ellipse((x - r, y - r, x + r, y + r), fill=(g, g, g))
    return img


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(math.cos(angle + math.pi / 4 + k * math.pi / 2), math.sin(angle + math.pi / 4 + k * math.pi / 2)) for k in range(4)]
    elif shape == "triangle":
        pts = [(math.cos(angle - math.pi / 2 + k * 2 * math.pi / 3), math.sin(angle - math.pi / 2 + k * 2 * math.pi / 3)) for k in range(3)]
    else:  # star: five points, inner radius 0.45
        pts = [((1 if k % 2 == 0 else 0.45) * math.cos(angle - math.pi / 2 + k * math.pi / 5),
                (1 if k % 2 == 0 else 0.45) * math.sin(angle - math.pi / 2 + k * math.pi / 5)) for k in range(10)]
    return [(cx + r * x, cy + r * y) for x, y in pts]


def draw_shape(img: Image.Image, item: Item, cx: float, cy: float, r: float, angle: float,
               rnd: random.Random) -> tuple[float, float, float, float]:
    """Draw and return the shape's box (x, y, w, h)."""
    d = ImageDraw.Draw(img)
    fill = _jitter(COLOURS[item.colour], rnd)
    if item.shape == "circle":
        pts = [(cx - r, cy - r), (cx + r, cy + r)]
        d.ellipse([pts[0], pts[1]], fill=fill)
        x0, y0, x1, y1 = cx - r, cy - r, cx + r, cy + r
    else:
        poly = _polygon(item.shape, cx, cy, r, angle)
        d.polygon(poly, fill=fill)
        xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
    x0, y0 = max(0.0, x0), max(0.0, y0)
    x1, y1 = min(float(img.width), x1), min(float(img.height), y1)
    return round(x0, 1), round(y0, 1), round(x1 - x0, 1), round(y1 - y0, 1)


def random_item(rnd: random.Random, shape: str | None = None, colour: str | None = None) -> Item:
    return Item(shape or rnd.choice(SHAPES), colour or rnd.choice(list(COLOURS)),
                rnd.choice(list(SIZES)), rnd.choice(BACKGROUNDS))


def render(item: Item, rnd: random.Random, side: int = SIDE) -> Image.Image:
    """One shape on a background, at a random place, size and rotation."""
    img = background(item.background, rnd, side)
    lo, hi = SIZES[item.size]
    r = side * rnd.uniform(lo, hi) / 2
    cx, cy = rnd.uniform(r, side - r), rnd.uniform(r, side - r)
    draw_shape(img, item, cx, cy, r, rnd.uniform(0, 2 * math.pi), rnd)
    if rnd.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rnd.uniform(0.3, 1.0)))
    return img


def caption(item: Item, rnd: random.Random) -> str:
    return rnd.choice(CAPTIONS).format(shape=item.shape, colour=item.colour, size=item.size, background=item.background)


def classes() -> list[str]:
    return sorted(f"{c} {s}" for c in COLOURS for s in SHAPES)


def scene(rnd: random.Random, side: int = 256) -> tuple[Image.Image, list[tuple[Item, tuple[float, float, float, float]]]]:
    """Two to four shapes that do not overlap, with their boxes."""
    img = background(rnd.choice(BACKGROUNDS), rnd, side)
    placed: list[tuple[float, float, float]] = []
    objects = []
    for _ in range(rnd.randint(2, 4)):
        for _attempt in range(50):
            r = rnd.uniform(20, 44)
            cx, cy = rnd.uniform(r, side - r), rnd.uniform(r, side - r)
            if all(math.hypot(cx - x, cy - y) > r + rr + 6 for x, y, rr in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        item = random_item(rnd)
        objects.append((item, draw_shape(img, item, cx, cy, r, rnd.uniform(0, 2 * math.pi), rnd)))
    return img, objects


def write_layout(out: Path, per_class: dict[str, int], seed: int) -> None:
    """A CLIP layout: <split>/<colour shape>/<n>.jpg and _tokenization.txt per split."""
    rnd = random.Random(seed)
    for split, n in per_class.items():
        for label in classes():
            colour, shape = label.split()
            for i in range(n):
                p = out / split / label / f"{shape}_{colour}_{i:03}.jpg"
                p.parent.mkdir(parents=True, exist_ok=True)
                render(random_item(rnd, shape, colour), rnd).save(p, quality=90)
        (out / split / "_tokenization.txt").write_text("\n".join(f"a photo of a {c}" for c in classes()))


def write_unlabeled(out: Path, n: int, seed: int) -> dict[str, str]:
    """n images with neutral names; returns file name -> true class (kept out of the folder)."""
    rnd = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(n):
        item = random_item(rnd)
        name = f"img_{i:04}.jpg"
        render(item, rnd).save(out / name, quality=90)
        truth[name] = item.label
    return truth


def write_scenes(out: Path, n: int, seed: int) -> None:
    """A COCO detection set: n scenes of 2-4 shapes, categories '<colour> <shape>'."""
    rnd = random.Random(seed)
    names = classes()
    images, annotations = [], []
    (out / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, objects = scene(rnd)
        file = f"scene_{i:03}.jpg"
        img.save(out / "images" / file, quality=90)
        images.append({"id": i + 1, "file_name": file, "width": img.width, "height": img.height})
        for item, box in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": names.index(item.label) + 1,
                                "bbox": list(box), "area": round(box[2] * box[3], 1), "iscrowd": 0})
    (out / "annotations.json").write_text(json.dumps({
        "info": {"description": "clipdata shapes world: synthetic scenes"}, "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": c, "supercategory": "shape"} for k, c in enumerate(names)]}, indent=1) + "\n")


if __name__ == "__main__":
    here = Path(__file__).parent / "shapes"
    write_layout(here / "layout", {"train": 4, "valid": 2, "test": 3}, seed=1)
    truth = write_unlabeled(here / "unlabeled", 48, seed=2)
    (here / "unlabeled_truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n")
    write_scenes(here / "scenes", 16, seed=3)
