"""The fast image path against the model's own processor, on the same files: exact for
non-JPEG inputs, and within the parity bounds for reduced-scale JPEG decoding."""
from __future__ import annotations

import io
import random
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageOps

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from clipdata.embedding.preprocess import FastPreprocess, UnsupportedProcessor  # noqa: E402
from clipdata.images import Unreadable  # noqa: E402
from conftest import SAMPLES  # noqa: E402

sys.path.insert(0, str(SAMPLES))
import shapes_world as world  # noqa: E402

SHAPES_MODEL = SAMPLES / "models" / "shapes-clip"
SIZES = [(640, 480), (1920, 1080), (4000, 3000)]


def clip_processor(side: int = 224):
    return transformers.CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})


def siglip_processor():
    return transformers.SiglipImageProcessorPil()


def reference(processor, path: Path) -> np.ndarray:
    """What the model's processor makes of the file (decoded and oriented as the product does)."""
    img = ImageOps.exif_transpose(Image.open(path))
    return processor(images=img, return_tensors="np")["pixel_values"][0]


def photo(size: tuple[int, int], seed: int, item: world.Item | None = None) -> Image.Image:
    """Photo-like content: a shapes-world scene (the shipped model's own world, so it is sure of
    its answers and agreement is not agreement on noise) enlarged to fill the centre square,
    under a smooth colour gradient, with film grain and clutter at the sides."""
    rnd = random.Random(seed)
    w, h = size
    side = min(w, h)
    scene = world.render(item or world.random_item(rnd), rnd)
    img = scene.resize(size, Image.Resampling.BICUBIC)  # the background carries on to the sides
    img.paste(scene.resize((side, side), Image.Resampling.BICUBIC), ((w - side) // 2, (h - side) // 2))
    g = Image.linear_gradient("L")
    tint = Image.merge("RGB", (g.resize(size), g.rotate(90).resize(size), Image.radial_gradient("L").resize(size)))
    img = Image.blend(img, tint, 0.05)
    d = ImageDraw.Draw(img)
    band = (w - side) // 2
    for _ in range(3 if band > 8 else 0):  # clutter beside the centre square
        r = rnd.randrange(band // 4, band // 2 + 1)
        x = rnd.choice((rnd.randrange(band - r + 1), (w + side) // 2 + rnd.randrange(band - r + 1)))
        y = rnd.randrange(h - r)
        d.ellipse((x, y, x + r, y + r), fill=tuple(rnd.randrange(256) for _ in range(3)))
    img = img.filter(ImageFilter.GaussianBlur(max(0.5, w / 2000)))
    noise = Image.frombytes("L", size, rnd.randbytes(w * h)).convert("RGB")
    return Image.blend(img, noise, 0.03)


def png16(path: Path, rgb16: np.ndarray) -> Path:
    """A 16-bit-per-channel RGB PNG (Pillow writes 16-bit grey only)."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb16)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def exif(orientation: int) -> bytes:
    e = Image.Exif()
    e[0x0112] = orientation
    return e.tobytes()


def odd_formats(folder: Path, seed: int) -> dict[str, Path]:
    """Every input kind that is not a plain RGB JPEG, named by what it tests."""
    folder.mkdir(parents=True, exist_ok=True)
    base = photo((900, 600), seed)
    out = {}

    def save(name: str, img: Image.Image, **kw) -> None:
        out[name] = folder / name
        img.save(out[name], **kw)

    save("rgb.png", base)
    save("palette.png", base.quantize(64))
    pal = base.quantize(64)
    pal.info["transparency"] = 0
    save("palette-transparent.png", pal, transparency=0)
    rgba = base.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    save("rgba.png", rgba)
    save("la.png", rgba.convert("LA"))
    save("grey16.png", Image.fromarray((np.asarray(base.convert("L"), np.uint16) * 257 // 300).astype(np.uint16)))
    out["rgb16.png"] = png16(folder / "rgb16.png", np.asarray(base, np.uint16) * 257)
    save("rotated6.png", base, exif=exif(6))
    save("cmyk.tif", base.convert("CMYK"))
    save("rgb.webp", base, lossless=True)
    return out


def odd_jpegs(folder: Path, seed: int) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, img, kw in [
        ("rotated6.jpg", photo((1920, 1080), seed), {"exif": exif(6)}),
        ("rotated3.jpg", photo((1920, 1080), seed + 1), {"exif": exif(3)}),
        ("rotated8-12mp.jpg", photo((4000, 3000), seed + 2), {"exif": exif(8)}),
        ("cmyk.jpg", photo((1920, 1080), seed + 3).convert("CMYK"), {}),
        ("grey.jpg", photo((1920, 1080), seed + 4).convert("L"), {}),
        ("odd-size.jpg", photo((1917, 1083), seed + 5), {}),
        ("phone.mpo", photo((1920, 1080), seed + 6), {"format": "MPO", "save_all": True,
                                                       "append_images": [photo((320, 180), seed + 7)]}),
    ]:
        out[name] = folder / name
        img.save(out[name], quality=90, **kw)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("preprocess")
    jpegs = {f"{w}x{h}.jpg": root / f"{w}x{h}.jpg" for w, h in SIZES}
    for (w, h), p in zip(SIZES, jpegs.values()):
        photo((w, h), w).save(p, quality=90)
    return {"odd": odd_formats(root / "odd", 1), "jpeg": {**jpegs, **odd_jpegs(root / "jpeg", 2)}}


PROCESSORS = {"clip-224": lambda: clip_processor(224), "siglip-224": siglip_processor,
              "clip-64": lambda: clip_processor(64)}


@pytest.mark.parametrize("proc", PROCESSORS)
def test_non_jpeg_inputs_are_the_processors_pixels_bit_for_bit(files, proc):
    processor = PROCESSORS[proc]()
    fast = FastPreprocess.from_processor(processor)
    for name, path in files["odd"].items():
        got, want = fast.pixels(path), reference(processor, path)
        assert got.dtype == np.float32 and got.shape == want.shape, name
        assert np.array_equal(got, want), f"{name}: max diff {np.abs(got - want).max()}"


@pytest.mark.parametrize("proc", PROCESSORS)
@pytest.mark.parametrize("decoder", ["pillow", "simplejpeg"])
def test_jpegs_decode_reduced_but_stay_close_to_the_processor(files, proc, decoder):
    """Orientation, colour conversion and geometry must match; only the DCT-scale decode may
    move pixels, and only a little (normalised units: one 8-bit level is ~0.015)."""
    processor = PROCESSORS[proc]()
    fast = FastPreprocess.from_processor(processor, decoder=decoder)
    for name, path in files["jpeg"].items():
        got, want = fast.pixels(path), reference(processor, path)
        assert got.shape == want.shape, name
        diff = np.abs(got - want)
        assert diff.mean() < 0.02 and np.percentile(diff, 99) < 0.15, f"{name}: {diff.mean():.4f}"


@pytest.mark.parametrize("size, side, decoded", [
    ((640, 480), 224, (640, 480)),      # 480 / 2 < 448: full size
    ((1920, 1080), 224, (960, 540)),    # 1/2: 540 >= 2 x 224
    ((4000, 3000), 224, (1000, 750)),   # 1/4: 750 >= 448 (1/8 would give 375)
    ((4000, 3000), 64, (1000, 750)),    # 64 px input: 1/8 would do, but keeps only block means
    ((1917, 1083), 224, (959, 542)),    # odd sizes round up
])
def test_jpeg_decode_scale_never_below_twice_the_resize(tmp_path, size, side, decoded):
    path = tmp_path / "p.jpg"
    photo(size, 0).save(path, quality=85)
    fast = FastPreprocess.from_processor(clip_processor(side))
    img, _, shown = fast._decode(path)
    assert img.size == decoded and shown == (size[1], size[0])
    th, tw = fast.target(*shown)
    assert min(img.size) >= 2 * min(th, tw) or img.size == size
    assert img.width >= size[0] // 4


def test_multi_picture_jpegs_from_phones_decode_reduced_too(files):
    img, _, shown = FastPreprocess.from_processor(clip_processor(224))._decode(files["jpeg"]["phone.mpo"])
    assert shown == (1080, 1920) and img.size == (960, 540)


def test_rotated_jpeg_is_decoded_reduced_in_its_displayed_orientation(files):
    fast = FastPreprocess.from_processor(clip_processor(224))
    img, box, shown = fast._decode(files["jpeg"]["rotated6.jpg"])
    assert shown == (1920, 1080) and img.size == (540, 960) and box == (0.0, 0.0, 540.0, 960.0)


def test_processor_settings_are_read_not_assumed():
    fast = FastPreprocess.from_processor(siglip_processor())
    assert (fast.resize, fast.size, fast.crop) == ("fixed", (224, 224), None)  # squash to square, no crop
    assert fast.target(1080, 1920) == (224, 224)
    clip = FastPreprocess.from_processor(clip_processor(224))
    assert (clip.resize, clip.crop, clip.resample) == ("short", (224, 224), Image.Resampling.BICUBIC)
    assert clip.target(1080, 1920) == (224, 398) and clip.target(1920, 1080) == (398, 224)
    capped = FastPreprocess.from_processor(transformers.CLIPImageProcessorPil(
        size={"shortest_edge": 224, "longest_edge": 300}, resample=2))
    assert capped.target(1080, 1920) == (169, 300) and capped.resample == 2
    assert not np.allclose(fast.table, clip.table)  # SigLIP's mean/std are not CLIP's


class _OwnSteps(transformers.CLIPImageProcessorPil):
    def _preprocess(self, images, **kwargs):  # a model with its own steps
        return super()._preprocess(images, **kwargs)


@pytest.mark.parametrize("make, why", [
    (lambda: _OwnSteps(), "own preprocessing"),
    (lambda: transformers.CLIPImageProcessorPil(do_pad=True), "pads"),
    (lambda: transformers.CLIPImageProcessorPil(size={"max_height": 224, "max_width": 224}), "resizes by"),
])
def test_processors_it_cannot_reproduce_are_refused(make, why):
    with pytest.raises(UnsupportedProcessor, match=why):
        FastPreprocess.from_processor(make())


@pytest.mark.parametrize("content, message", [
    (b"", "^not an image Pillow can identify"),  # never Pillow's repr of a buffer or a path
    (b"not an image at all", "^not an image Pillow can identify"),
    ("truncated", "truncated|Premature end"),
])
def test_unreadable_files_raise_one_line(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    if content == "truncated":
        buf = io.BytesIO()
        photo((640, 480), 0).save(buf, "JPEG", quality=90)
        content = buf.getvalue()[: len(buf.getvalue()) // 2]
    path.write_bytes(content)
    for decoder in ("pillow", "simplejpeg"):
        with pytest.raises(Unreadable, match=message) as e:
            FastPreprocess.from_processor(clip_processor(224), decoder=decoder)(path)
        assert "\n" not in str(e.value) and "BytesIO" not in str(e.value)


def test_cache_modes_keep_pixel_variants_apart():
    modes = {FastPreprocess.from_processor(clip_processor(), decoder=d, draft_factor=f).mode
             for d in ("pillow", "simplejpeg") for f in (2.0, 3.0)}
    assert len(modes) == 4 and "processor" not in modes


def _parity_set(root: Path) -> tuple[list[Path], list[str]]:
    """~110 shapes-world photos at the three sizes and in every odd format, with their truth."""
    rnd = random.Random(7)
    root.mkdir(parents=True, exist_ok=True)
    paths, truth = [], []
    for (w, h), n in zip(SIZES, (60, 30, 8)):
        for i in range(n):
            item = world.random_item(rnd)
            p = root / f"{w}_{i:03}.jpg"
            photo((w, h), rnd.randrange(1 << 30), item).save(p, quality=rnd.choice((75, 85, 95)),
                                                               exif=exif(rnd.choice((1, 1, 3, 6, 8))))
            paths.append(p)
            truth.append(item.label)
    for i, (name, convert) in enumerate([("cmyk", "CMYK"), ("grey", "L"), ("palette", "P")] * 4):
        item = world.random_item(rnd)
        img = photo((1280, 960), rnd.randrange(1 << 30), item)
        p = root / f"{name}_{i}.{'png' if name == 'palette' else 'jpg'}"
        (img.quantize(128) if convert == "P" else img.convert(convert)).save(p)
        paths.append(p)
        truth.append(item.label)
    return paths, truth


@pytest.mark.skipif(not (SHAPES_MODEL / "config.json").is_file(), reason="the shapes model is not built")
def test_shapes_model_agrees_with_its_processor(tmp_path):
    """Same top-1 class for >= 99% of ~110 photos. Scores: this small 64-px model moves its
    probabilities by a few hundredths when a photo is merely re-saved at JPEG quality 95, so
    the fast path must move them no more than twice what that invisible change does."""
    model = transformers.CLIPModel.from_pretrained(SHAPES_MODEL).eval()
    processor = transformers.AutoProcessor.from_pretrained(SHAPES_MODEL)
    paths, truth = _parity_set(tmp_path / "photos")
    resaved = []
    for p in paths:
        q = tmp_path / "q95" / p.name
        q.parent.mkdir(exist_ok=True)
        img = Image.open(p)
        img.save(q, quality=95, exif=img.info.get("exif", b"")) if p.suffix == ".jpg" else img.save(q)
        resaved.append(q)
    fast = FastPreprocess.from_processor(processor.image_processor)
    classes = world.classes()
    with torch.inference_mode():
        tok = processor.tokenizer([f"a photo of a {c}" for c in classes], padding=True, return_tensors="pt")
        text = model.get_text_features(**tok)
        text = getattr(text, "pooler_output", text)
        text = text / text.norm(dim=-1, keepdim=True)

        def probs(files: list[Path], prep) -> np.ndarray:
            img = model.get_image_features(pixel_values=torch.from_numpy(np.stack([prep(p) for p in files])))
            img = getattr(img, "pooler_output", img)
            img = img / img.norm(dim=-1, keepdim=True)
            return (model.logit_scale.exp() * img @ text.T).softmax(-1).numpy()

        exact = lambda p: reference(processor.image_processor, p)  # noqa: E731
        want, got, floor = probs(paths, exact), probs(paths, fast.pixels), probs(resaved, exact)
    agree = (want.argmax(1) == got.argmax(1)).mean()
    moved, noise = np.abs(want - got).max(), np.abs(want - floor).max()
    assert len(paths) >= 100 and agree >= 0.99, agree
    assert moved <= max(0.01, 2 * noise), (moved, noise)
    # the model is right about these photos, so agreement is not agreement on noise
    assert (np.array(classes)[got.argmax(1)] == np.array(truth)).mean() >= 0.85


def test_vit_b32_embeddings_match_the_processors(tmp_path, files):
    """Cosine >= 0.998 with the full ViT-B/32 image tower (random weights)."""
    from tiny_clip import VIT_B32_TEXT, VIT_B32_VISION, make_tiny_clip

    folder = make_tiny_clip(tmp_path / "vit-b32", text=VIT_B32_TEXT, vision=VIT_B32_VISION, projection_dim=512)
    model = transformers.CLIPModel.from_pretrained(folder).eval()
    processor = transformers.AutoProcessor.from_pretrained(folder).image_processor
    fast = FastPreprocess.from_processor(processor)
    paths = list(files["jpeg"].values()) + [files["odd"]["rgb16.png"], files["odd"]["palette.png"]]
    with torch.inference_mode():
        def embed(pixels: list[np.ndarray]) -> torch.Tensor:
            out = model.get_image_features(pixel_values=torch.from_numpy(np.stack(pixels)))
            out = getattr(out, "pooler_output", out)
            return out / out.norm(dim=-1, keepdim=True)

        cos = (embed([reference(processor, p) for p in paths]) * embed([fast.pixels(p) for p in paths])).sum(-1)
    assert cos.min().item() >= 0.998, dict(zip((p.name for p in paths), cos.tolist()))


def test_the_default_and_exact_preprocess_never_share_cached_embeddings():
    from clipdata.embedding import EngineSpec
    from clipdata.embedding.local import cache_mode
    from clipdata.embedding.preprocess import FAST_MODE

    assert cache_mode(EngineSpec()) == FAST_MODE == FastPreprocess.from_processor(clip_processor()).mode
    assert cache_mode(EngineSpec(exact_preprocess=True)) == "processor"


@pytest.mark.parametrize("make, exact, fast", [
    (lambda: clip_processor(224), False, True),
    (lambda: clip_processor(224), True, False),   # --exact-preprocess
    (lambda: _OwnSteps(), False, False),          # a processor the fast path cannot reproduce
])
def test_preparer_uses_the_processor_itself_when_asked_or_needed(files, make, exact, fast):
    from clipdata.embedding.local import preparer

    processor = make()
    prepare = preparer(processor, exact)
    assert isinstance(prepare, FastPreprocess) == fast
    path = files["jpeg"]["1920x1080.jpg"]
    got = prepare(str(path)).numpy()
    if not fast:
        assert np.array_equal(got, reference(processor, path))


@pytest.mark.parametrize("cpus, device, workers, batch, torch_threads, plan", [
    # 2 cores: decode a batch on both, then the model on both (no loader process fighting it)
    (2, "cpu", None, None, 2, (32, 0, 2, 2)),
    (1, "cpu", None, None, 1, (32, 0, 1, 1)),
    (2, "cpu", 1, 16, 2, (16, 1, 1, 1)),  # a loader asked for: the model keeps the other core
    (16, "cpu", None, None, 16, (32, 4, 1, 12)),
    (16, "cuda", None, None, 8, (32, 16, 1, 8)),  # on a GPU every CPU decodes
    # torch held to one thread (the caller's choice, or a forked child, where raising it
    # hangs): the plan never raises it, and decodes on no more threads than that either
    (2, "cpu", None, None, 1, (32, 0, 1, 1)),
    (16, "cpu", None, None, 4, (32, 4, 1, 4)),
])
def test_plan_by_machine(monkeypatch, cpus, device, workers, batch, torch_threads, plan):
    import clipdata.embedding.local as local
    from clipdata.embedding.spec import EngineSpec

    monkeypatch.setattr(local, "default_workers", lambda: cpus)
    got = local.plan_for(device, EngineSpec(workers=workers, batch_size=batch), model_threads=torch_threads)
    assert (got.batch_size, got.loaders, got.decode_threads, got.model_threads) == plan
    assert got.record()["cpus"] == cpus and f"batch {plan[0]}" in got.describe()
