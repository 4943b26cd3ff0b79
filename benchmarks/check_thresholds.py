"""The measurements that chose `clipdata check`'s thresholds (formats/check.md).

    pip install -e ".[clip,check]" cleanvision && python benchmarks/check_thresholds.py [--part near|quality|all]

near:    pixel similarity (quality.crop_similarity) of copies of an image -- exact, JPEG
         quality 70, half size, mirrored, centre crop 90%, corner crop 90% -- against the
         best similarity between two different images, on 400 shapes images and the real
         photos at hand (samples/coco, samples/folder, scikit-learn's two, and the street
         photos of ../shared/compat when present); and the shapes model's CLIP cosine of
         each copy to its original (why CLIP alone cannot decide).
quality: sharpness of sharp and Gaussian-blurred images (sigma 1%, 2%, 3% of the side);
         then each quality type on real photos and planted variants (dark, light, blurred,
         constant, grayscale stored as L and as RGB, a 4:1 strip, a 24 px tiny image), ours
         beside cleanvision's (Imagelab, its default thresholds): both / only ours / only
         cleanvision, per type, and which planted images each found.
"""
from __future__ import annotations

import argparse
import glob
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "samples"))
import shapes_world as world  # noqa: E402

from clipdata import quality  # noqa: E402


def photos() -> list[tuple[str, Image.Image]]:
    import sklearn.datasets

    files = sorted(glob.glob(str(ROOT / "samples/coco/images/*.jpg"))) + sorted(glob.glob(str(ROOT / "samples/folder/*/*/*.jpg")))
    files += sorted(glob.glob(str(Path(sklearn.datasets.__file__).parent / "images/*.jpg")))
    files += sorted(glob.glob(str(ROOT.parent / "shared/compat/**/*.jpg"), recursive=True))
    out, seen = [], set()
    for f in files:
        img = Image.open(f)
        if min(img.size) < 64:
            continue  # the compat corpus's 5-10 px synthetic images are no photos
        key = img.convert("RGB").resize((16, 16)).tobytes()
        # the corpus holds the same photo in several folders, and samples/coco re-encodes two of
        # scikit-learn's (china.jpg, flower.jpg): the same name or pixels is one photo
        if key not in seen and Path(f).name not in seen:
            seen |= {key, Path(f).name}
            out.append((Path(f).name, ImageOps.exif_transpose(img).convert("RGB")))
    return out


def shapes(n: int, seed: int = 5) -> list[Image.Image]:
    import random

    rnd = random.Random(seed)
    return [world.render(world.random_item(rnd), rnd) for _ in range(n)]


def jpeg(img: Image.Image, q: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=q)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


COPIES = {
    "exact": lambda im: im,
    "jpeg q70": lambda im: jpeg(im, 70),
    "half size": lambda im: im.resize((im.width // 2, im.height // 2)),
    "mirrored": ImageOps.mirror,
    "centre crop 90%": lambda im: im.crop((round(im.width * .05), round(im.height * .05), round(im.width * .95), round(im.height * .95))),
    "corner crop 90%": lambda im: im.crop((0, 0, round(im.width * .9), round(im.height * .9))),
}


def m(img: Image.Image) -> quality.Measured:
    return quality.measure(img, (img.height, img.width))


def near() -> None:
    sets = [("shapes", [jpeg(im, 90) for im in shapes(400)]), ("photos", [im for _, im in photos()])]
    for name, images in sets:
        base = [m(im).thumb for im in images]
        n = len(base)
        i, j = np.triu_indices(n, 1)
        d = quality.crop_similarity(base, np.stack([i, j], 1))
        print(f"{name} ({n} images, {len(d)} pairs of different images): best {d.max():.3f}, 99.9th percentile "
              f"{np.percentile(d, 99.9):.3f}; above 0.95: {(d > 0.95).sum()}, above 0.96: {(d > 0.96).sum()}")
        for t, f in COPIES.items():
            cp = [m(f(im)).thumb for im in images]
            s = quality.crop_similarity(base + cp, np.stack([np.arange(n), np.arange(n) + n], 1))
            print(f"  {t:16s} min {s.min():.3f}  1st percentile {np.percentile(s, 1):.3f}  median {np.median(s):.3f}"
                  f"  found at 0.96: {(s >= 0.96).mean():.1%}")
    model = ROOT / "samples/models/shapes-clip"
    if (model / "config.json").is_file():
        from clipdata.embedding import Engine, EngineSpec, embed_images

        with tempfile.TemporaryDirectory() as tmp:
            ims = [jpeg(im, 90) for im in shapes(100, seed=9)]
            files = {}
            for t, f in [("original", lambda im: im)] + list(COPIES.items()):
                files[t] = []
                for k, im in enumerate(ims):
                    p = Path(tmp) / f"{t.replace(' ', '_').replace('%', '')}_{k}.png"
                    f(im).save(p)
                    files[t].append(p)
            spec = EngineSpec(model=str(model), dtype="float32", workers=0, batch_size=64)
            engine = Engine(spec)
            emb = {t: embed_images(engine, ps, None, spec=spec)[0] for t, ps in files.items()}
            other = emb["original"] @ emb["original"].T
            np.fill_diagonal(other, -1)
            print(f"shapes model, 100 images: best CLIP cosine to a different image: median {np.median(other.max(1)):.3f}")
            for t in COPIES:
                c = np.einsum("nd,nd->n", emb["original"], emb[t])
                print(f"  CLIP cosine of {t:16s} to its original: min {c.min():.3f}, median {np.median(c):.3f}")


def sharp_vs_blurred() -> None:
    for name, images in (("shapes", shapes(100)), ("photos", [im for _, im in photos()])):
        row = []
        for share in (0, 0.01, 0.02, 0.03):
            v = [m(im.filter(ImageFilter.GaussianBlur(share * max(im.size))) if share else im)["sharpness"] for im in images]
            row.append(f"sigma {share:.0%}: {np.nanmin(v):.2f}-{np.nanmax(v):.2f} (blurry at {quality.BLURRY}: "
                       f"{np.mean(np.array(v) < quality.BLURRY):.0%})")
        print(f"{name}: " + "; ".join(row))


def planted(base: list[tuple[str, Image.Image]]) -> list[tuple[str, Image.Image, str | None]]:
    """(name, image, the type it was planted as)."""
    out = [(n, im, None) for n, im in base]
    for n, im in base[:8]:
        out.append((f"dark_{n}", im.point(lambda v: int(v * 0.15)), "dark"))
        out.append((f"light_{n}", Image.blend(im, Image.new("RGB", im.size, (255, 255, 255)), 0.95), "light"))
        out.append((f"blurred_{n}", im.filter(ImageFilter.GaussianBlur(0.03 * max(im.size))), "blurry"))
        out.append((f"gray_rgb_{n}", im.convert("L").convert("RGB"), "grayscale"))
    out.append(("constant.png", Image.new("RGB", (256, 256), (90, 120, 90)), "low_information"))
    out.append(("gray_L.png", base[0][1].convert("L"), "grayscale"))
    out.append(("strip.png", base[1][1].crop((0, 0, base[1][1].width, base[1][1].width // 4)), "odd_aspect_ratio"))
    out.append(("tiny.png", base[2][1].resize((24, 24)), "tiny"))
    return out


def agreement(items, folder: Path) -> dict:
    """Per type: (both, only ours, only cleanvision, planted found by ours, by cleanvision, planted)."""
    from cleanvision import Imagelab

    files = []
    for k, (name, im, _) in enumerate(items):
        p = folder / f"{k:03d}_{Path(name).stem}.png"
        im.save(p)
        files.append(p)
    lab = Imagelab(filepaths=[str(p) for p in files], verbose=False)
    types = ["dark", "light", "blurry", "low_information", "grayscale", "odd_aspect_ratio", "odd_size"]
    lab.find_issues({t: {} for t in types}, n_jobs=1, verbose=False)
    cv = {t: set(np.flatnonzero(lab.issues[f"is_{t}_issue"].to_numpy())) for t in types}
    values = np.stack([m(Image.open(p)).values for p in files])
    ours_rows = quality.quality_issues(values)
    ours = {t: {i for i, f in enumerate(ours_rows) if t in {x for x, _ in f}} for t in types + ["tiny"]}
    out = {}
    for t in types + ["tiny"]:
        mine, theirs = ours[t], cv.get(t, set())
        want = {i for i, (_, _, p) in enumerate(items) if p == t}
        out[t] = (len(mine & theirs), len(mine - theirs), len(theirs - mine), len(want & mine), len(want & theirs), len(want))
    return out


def quality_part() -> None:
    sharp_vs_blurred()
    try:
        import cleanvision  # noqa: F401
    except ImportError:
        print("cleanvision is not installed: pip install cleanvision (the agreement is left out)")
        return
    sets = {"photos": photos(), "shapes": [(f"shape_{k}.png", im) for k, im in enumerate(shapes(40))]}
    for name, base in sets.items():
        items = planted(base)
        with tempfile.TemporaryDirectory() as tmp:
            res = agreement(items, Path(tmp))
        print(f"{name}: {len(items)} images ({len(base)} unchanged, the rest planted)")
        print("  type               both  only ours  only cleanvision   planted found: ours / cleanvision / planted")
        for t, (both, mine, theirs, pm, pt, pw) in res.items():
            print(f"  {t:18s} {both:4d} {mine:10d} {theirs:17d}   {pm:3d} / {pt:3d} / {pw:3d}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["near", "quality", "all"], default="all")
    a = ap.parse_args()
    if a.part in ("near", "all"):
        near()
    if a.part in ("quality", "all"):
        quality_part()


if __name__ == "__main__":
    main()
