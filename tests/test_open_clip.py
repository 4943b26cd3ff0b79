"""open_clip checkpoints scored as open_clip scores them: tiny random open_clip models (a CLIP
with its bundled tokenizer, and a SigLIP-style one with a logit bias and a Gemma tokenizer
saved beside it), built with pretrained=None and saved as a checkpoint file, against
open_clip's own encode_image / encode_text and its scoring, on the same photos.

open_clip needs a torchvision built for the installed torch; where it cannot be imported (the
CPU torch these tests usually run on has none), these tests skip and say why."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

torch = pytest.importorskip("torch")
try:
    import open_clip
except Exception as e:  # ImportError, or a torchvision whose compiled ops do not match torch
    pytest.skip(f"open_clip cannot be imported here ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                "run these in an environment with open_clip_torch and its torchvision", allow_module_level=True)

from clipdata.embedding import Engine, EngineSpec, embed_images  # noqa: E402
from clipdata.embedding.preprocess import to_rgb  # noqa: E402
from clipdata.scoring import Classes, class_embeddings, zero_shot  # noqa: E402
from test_preprocess import exif, photo  # noqa: E402

CLASSES = ["red circle", "blue square", "green triangle", "yellow star", "purple heart"]
TEMPLATE = "a photo of a {}."
VISION = {"image_size": 224, "layers": 2, "width": 32, "patch_size": 32, "head_width": 16}
CLIP_CFG = {"embed_dim": 16, "vision_cfg": VISION,
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


def _siglip_cfg(vocab_size: int) -> dict:
    return {"embed_dim": 16, "init_logit_bias": -3.0, "custom_text": True,
            "vision_cfg": {**VISION},
            "text_cfg": {"context_length": 64, "vocab_size": vocab_size, "hf_tokenizer_name": "unused",
                         "tokenizer_kwargs": {"clean": "canonicalize"}, "width": 32, "heads": 2, "layers": 2,
                         "no_causal_mask": True, "proj_bias": True, "pool_type": "last"},
            "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                               "resize_mode": "squash"}}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("oc-photos")
    rnd = random.Random(5)
    out = []
    for i, size in enumerate([(320, 240)] * 4 + [(640, 480)] * 4 + [(1920, 1080)] * 2 + [(4000, 3000)]):
        p = root / f"{i:02}.jpg"
        photo(size, rnd.randrange(1 << 30)).save(p, quality=90, exif=exif(rnd.choice((1, 3, 6, 8))))
        out.append(p)
    img = photo((600, 800), 1)
    img.putalpha(Image.linear_gradient("L").resize(img.size))
    img.save(root / "rgba.png")
    photo((800, 600), 2).convert("L").save(root / "grey.jpg", quality=90)
    return out + [root / "rgba.png", root / "grey.jpg"]


def _save(model, folder: Path, config: dict, name: str = "open_clip_model.safetensors") -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = {k: v for k, v in config.items() if k != "preprocess_cfg"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg,
                                                              "preprocess_cfg": config.get("preprocess_cfg", {})}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / name)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (--model value, --weights value or None): a tiny CLIP registered as an
    architecture (ARCH --weights FILE), and a SigLIP-style model in a local folder."""
    import math

    root = tmp_path_factory.mktemp("oc-models")
    torch.manual_seed(0)
    arch = root / "arch"
    arch.mkdir()
    (arch / "tiny-clip-test.json").write_text(json.dumps(CLIP_CFG))
    open_clip.add_model_config(arch / "tiny-clip-test.json")
    clip = open_clip.create_model("tiny-clip-test", pretrained=None)
    weights = _save(clip, root / "clip", CLIP_CFG) / "open_clip_model.safetensors"

    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_models import _gemma_vocab
    from transformers import GemmaTokenizer

    tok = GemmaTokenizer(vocab=_gemma_vocab(), merges=[])
    cfg = _siglip_cfg(len(tok))
    siglip = _create_from_cfg(cfg)
    with torch.no_grad():  # scores that spread (random towers give cosines near 0)
        siglip.logit_scale.fill_(math.log(10.0))
        siglip.logit_bias.fill_(-0.5)
    folder = _save(siglip, root / "siglip", cfg)
    tok.save_pretrained(folder)
    return {"clip": ("open_clip:tiny-clip-test", str(weights)), "siglip": (f"open_clip:local-dir:{folder}", None)}


def _create_from_cfg(cfg: dict):
    from open_clip.model import CustomTextCLIP

    return CustomTextCLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"],
                          init_logit_bias=cfg["init_logit_bias"]).eval()


def _reference(model_name: str, weights: str | None, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """open_clip's own: its transforms on each photo (as clipdata decodes it), encode_image,
    encode_text on its tokenizer's tokens, and its scoring."""
    name = model_name[len("open_clip:"):]
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=weights)
    tokenizer = open_clip.get_tokenizer(name)
    model.eval()
    with torch.inference_mode():
        images = torch.stack([preprocess(to_rgb(ImageOps.exif_transpose(Image.open(p)))) for p in paths])
        img = model.encode_image(images, normalize=True)
        txt = model.encode_text(tokenizer([TEMPLATE.format(c) for c in CLASSES]), normalize=True)
        logits = model.logit_scale.exp() * img @ txt.T
        if model.logit_bias is not None:
            probs = torch.sigmoid(logits + model.logit_bias)
        else:
            probs = logits.softmax(-1)
    return probs.numpy(), txt.numpy()


def _ours(model_name: str, weights: str | None, paths: list[Path], **kw) -> tuple[np.ndarray, np.ndarray]:
    spec = EngineSpec(model=model_name, weights=weights, dtype="float32", workers=0, batch_size=8, **kw)
    engine = Engine(spec)
    text = class_embeddings(engine, Classes(CLASSES, [[TEMPLATE.format(c)] for c in CLASSES]))
    matrix, stats = embed_images(engine, paths, spec=spec)
    assert not stats.unreadable
    return zero_shot(engine, matrix, text), text


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_exact_preprocess_equals_open_clips_own_scoring(models, photos, which):
    name, weights = models[which]
    want, want_text = _reference(name, weights, photos)
    got, got_text = _ours(name, weights, photos, exact_preprocess=True)
    assert np.abs(got - want).max() <= 1e-4
    assert (got_text * want_text).sum(1).min() >= 1 - 1e-5
    assert want.std() > 1e-3


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_fast_path_moves_scores_no_more_than_a_resave(models, photos, tmp_path, which):
    name, weights = models[which]
    jpegs = [p for p in photos if p.suffix == ".jpg"]
    resaved = []
    for p in jpegs:
        q = tmp_path / p.name
        img = Image.open(p)
        img.save(q, quality=95, exif=img.info.get("exif", b""))
        resaved.append(q)
    exact, _ = _ours(name, weights, jpegs, exact_preprocess=True)
    fast, _ = _ours(name, weights, jpegs)
    floor, _ = _ours(name, weights, resaved, exact_preprocess=True)
    moved, noise = np.abs(fast - exact).max(), np.abs(floor - exact).max()
    assert moved <= max(2 * noise, 1e-3), (moved, noise)


def test_scoring_kind_follows_the_checkpoint(models):
    clip = Engine(EngineSpec(model=models["clip"][0], weights=models["clip"][1], dtype="float32"))
    siglip = Engine(EngineSpec(model=models["siglip"][0], dtype="float32"))
    assert clip.scalars[0] == "clip" and siglip.scalars[0] == "siglip" and siglip.scalars[2] == pytest.approx(-0.5)
    assert clip.identity.startswith("open_clip:tiny-clip-test@") and "#open_clip:" in clip.identity


def test_a_captions_embedding_does_not_depend_on_its_batch(models):
    for name, weights in models.values():
        engine = Engine(EngineSpec(model=name, weights=weights, dtype="float32"))
        captions = [TEMPLATE.format(c) for c in CLASSES]
        alone = np.concatenate([engine.embed_texts([c]) for c in captions])
        batched = engine.embed_texts(captions + ["a very long caption about a big green triangle " * 4])
        assert (alone * batched[:len(captions)]).sum(1).min() >= 1 - 1e-5


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_every_command_runs_with_an_open_clip_model(models, tmp_path, which):
    pytest.importorskip("httpx")
    from family_commands import run_every_command

    name, weights = models[which]
    run_every_command(EngineSpec(model=name, weights=weights, dtype="float32", workers=0, batch_size=8), tmp_path)
