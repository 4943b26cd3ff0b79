"""Every model family scored as its reference scores it: a tiny random model of each (built from
the family's own transformers config, tests/tiny_models.py) against transformers' zero-shot
pipeline on the same 30 photos (320x240 to 4000x3000, EXIF-rotated, grey, transparent) and 5
classes. Random weights give no accuracy to check, so the checks are the reference comparison
and train-free properties (a caption's embedding never depends on its batch)."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from clipdata.embedding import Engine, EngineSpec, embed_images  # noqa: E402
from clipdata.embedding.families import BY_KEY, FAMILIES, LEFT_OUT, family_for  # noqa: E402
from clipdata.embedding.preprocess import to_rgb  # noqa: E402
from clipdata.scoring import Classes, class_embeddings, zero_shot  # noqa: E402
from test_preprocess import exif, photo  # noqa: E402

ALL_TRANSFORMERS = [f.key for f in FAMILIES if f.model_types]
# those transformers' zero-shot pipeline takes (it maps none to VisionTextDualEncoder: its own test below)
TRANSFORMERS_FAMILIES = [k for k in ALL_TRANSFORMERS if k != "dual-encoder"]
CLASSES = ["red circle", "blue square", "green triangle", "yellow star", "purple heart"]
TEMPLATE = "a photo of a {}."
SIZES = [(320, 240)] * 9 + [(640, 480)] * 9 + [(1024, 768)] * 4 + [(1920, 1080)] * 3 + [(4000, 3000)]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: one torch thread does the work; two only wait on each other (and on a busy
    machine, spin)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """30 photos: JPEGs of five sizes at random EXIF orientations, two grey, two transparent."""
    root = tmp_path_factory.mktemp("family-photos")
    rnd = random.Random(20)
    out = []
    for i, size in enumerate(SIZES):
        p = root / f"{i:02}_{size[0]}.jpg"
        photo(size, rnd.randrange(1 << 30)).save(p, quality=rnd.choice((80, 90)), exif=exif(rnd.choice((1, 3, 6, 8))))
        out.append(p)
    for i in range(2):
        p = root / f"grey_{i}.jpg"
        photo((800, 600), rnd.randrange(1 << 30)).convert("L").save(p, quality=90)
        out.append(p)
    for i in range(2):
        img = photo((600, 800), rnd.randrange(1 << 30))
        img.putalpha(Image.linear_gradient("L").resize(img.size))
        p = root / f"rgba_{i}.png"
        img.save(p)
        out.append(p)
    assert len(out) == 30
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """family key -> a saved tiny model folder, built once per module."""
    from tiny_models import make

    root = tmp_path_factory.mktemp("family-models")
    built: dict[str, Path] = {}

    def get(key: str) -> Path:
        if key not in built:
            built[key] = make(key, root / key)
        return built[key]

    return get


def _spec(folder: Path, **kw) -> EngineSpec:
    return EngineSpec(model=str(folder), dtype="float32", workers=0, batch_size=8, **kw)


def _clipdata_probs(engine: Engine, paths: list[Path], exact: bool) -> np.ndarray:
    spec = _spec(Path(engine.spec.model), exact_preprocess=exact)
    text = class_embeddings(engine, Classes(CLASSES, [[TEMPLATE.format(c)] for c in CLASSES]))
    matrix, stats = embed_images(engine, paths, spec=spec)
    assert not stats.unreadable
    return zero_shot(engine, matrix, text)


def _pipeline_probs(folder: Path, paths: list[Path], family) -> np.ndarray:
    """transformers' zero-shot pipeline, given each photo as clipdata decodes it (EXIF applied;
    transparency on white as the processors do it: the pipeline's own loader drops alpha)."""
    kw = {"model_kwargs": {"attn_implementation": family.attention}} if family.attention else {}
    pipe = transformers.pipeline("zero-shot-image-classification", model=str(folder), device="cpu", **kw)
    rows = []
    for p in paths:
        img = to_rgb(ImageOps.exif_transpose(Image.open(p)))
        got = {d["label"]: d["score"] for d in pipe(img, candidate_labels=CLASSES, hypothesis_template=TEMPLATE)}
        rows.append([got[c] for c in CLASSES])
    return np.array(rows)


@pytest.fixture(scope="module")
def resaved(photos, tmp_path_factory) -> tuple[list[Path], list[Path]]:
    """The JPEGs, and the same JPEGs re-saved at quality 95 (an invisible change: the noise floor)."""
    root = tmp_path_factory.mktemp("resaved")
    jpegs = [p for p in photos if p.suffix == ".jpg"]
    out = []
    for p in jpegs:
        img = Image.open(p)
        img.save(root / p.name, quality=95, exif=img.info.get("exif", b""))
        out.append(root / p.name)
    return jpegs, out


@pytest.mark.parametrize("key", TRANSFORMERS_FAMILIES)
def test_scores_equal_the_pipeline_and_the_fast_path_stays_within_noise(models, photos, resaved, key):
    """--exact-preprocess: transformers' zero-shot pipeline within 1e-4. The default fast path:
    scores move no more than twice what re-saving the JPEGs at quality 95 moves them, and the
    top class is the same wherever the reference's margin is above that noise."""
    folder = models(key)
    engine = Engine(_spec(folder))
    want = _pipeline_probs(folder, photos, engine.family)
    got = _clipdata_probs(engine, photos, exact=True)
    assert np.abs(got - want).max() <= 1e-4, np.abs(got - want).max()
    assert want.std() > 1e-3  # the scores spread: agreement is not agreement on a constant

    jpegs, again = resaved
    exact = got[[photos.index(p) for p in jpegs]]
    fast, floor = _clipdata_probs(engine, jpegs, exact=False), _clipdata_probs(engine, again, exact=True)
    moved, noise = np.abs(fast - exact).max(), np.abs(floor - exact).max()
    assert moved <= max(2 * noise, 1e-3), (moved, noise)
    top2 = np.sort(exact, 1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * noise
    assert (fast.argmax(1) == exact.argmax(1))[clear].all()


@pytest.mark.parametrize("key", TRANSFORMERS_FAMILIES)
def test_a_captions_embedding_does_not_depend_on_its_batch(models, key):
    """Padding must never change a caption's embedding (SigLIP's tower reads the padding: it is
    padded to 64 tokens, as trained); a caption alone and beside a much longer one agree."""
    engine = Engine(_spec(models(key)))
    captions = [TEMPLATE.format(c) for c in CLASSES]
    alone = np.concatenate([engine.embed_texts([c]) for c in captions])
    batched = engine.embed_texts(captions + ["a photo of the big green triangle beside a small purple heart " * 3])
    assert (alone * batched[:len(captions)]).sum(1).min() >= 1 - 1e-5


@pytest.mark.parametrize("key", TRANSFORMERS_FAMILIES)
def test_text_embeddings_equal_the_models_own_on_the_pipelines_tokens(models, key):
    folder = models(key)
    family = Engine(_spec(folder)).family
    kw = {"attn_implementation": family.attention} if family.attention else {}
    model = transformers.AutoModel.from_pretrained(folder, **kw).eval()
    tok = transformers.AutoProcessor.from_pretrained(folder).tokenizer
    captions = [TEMPLATE.format(c) for c in CLASSES]
    kw = dict(padding="max_length", max_length=64, truncation=True) if "siglip" in model.config.model_type \
        else dict(padding=True)
    with torch.inference_mode():
        ref = model.get_text_features(**tok(captions, return_tensors="pt", **kw))
    ref = getattr(ref, "pooler_output", ref).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    got = Engine(_spec(folder)).embed_texts(captions)
    assert (got * ref).sum(1).min() >= 1 - 1e-5


@pytest.mark.parametrize("key", ["siglip2", "siglip2-naflex"])
def test_siglip2_captions_are_lowercased_as_its_authors_trained_it(models, key):
    engine = Engine(_spec(models(key)))
    upper, lower = engine.embed_texts(["A Photo of a RED Circle.", "a photo of a red circle."])
    assert float(upper @ lower) >= 1 - 1e-6


def test_each_family_is_recognised_from_its_checkpoint(models):
    for key in ALL_TRANSFORMERS:
        engine = Engine(_spec(models(key)))
        assert engine.family is BY_KEY[key] and f"#{BY_KEY[key].rules}:" in engine.identity
        assert not engine.loaded  # read from config.json: a cached run never loads the weights
    assert family_for("siglip", "GemmaTokenizer").key == "siglip2"
    assert family_for("siglip", "SiglipTokenizer").key == "siglip"
    assert family_for("owlvit") is None and "owlvit, owlv2" in LEFT_OUT and family_for("videoprism") is None


def test_scores_follow_the_family(models, photos):
    """SigLIP's scores are independent sigmoids (their sum is not 1), ALIGN's scale is
    1/temperature, CLIP's a softmax."""
    siglip = Engine(_spec(models("siglip")))
    assert siglip.scalars[0] == "siglip" and siglip.scalars[2] == pytest.approx(-3.0)
    align = Engine(_spec(models("align")))
    assert align.scalars[:2] == ("clip", pytest.approx(50.0))



@pytest.mark.parametrize("key", ALL_TRANSFORMERS)
def test_every_command_runs_with_the_family(models, tmp_path, key):
    pytest.importorskip("httpx")
    from family_commands import run_every_command

    run_every_command(_spec(models(key)), tmp_path)


def test_a_dual_encoder_scores_as_its_own_forward(models, photos):
    """VisionTextDualEncoder has no zero-shot pipeline (transformers maps none to it): the
    reference is the model's own forward, softmax over its logits_per_image, on its
    processor's inputs. Its captions never depend on their batch either."""
    folder = models("dual-encoder")
    engine = Engine(_spec(folder))
    assert engine.family is BY_KEY["dual-encoder"]
    model = transformers.AutoModel.from_pretrained(folder).eval()
    proc = transformers.AutoProcessor.from_pretrained(folder)
    some = photos[::3]  # every kind of photo, 10 of them: one pass of a small model is enough here
    images = [to_rgb(ImageOps.exif_transpose(Image.open(p))) for p in some]
    with torch.inference_mode():
        want = model(**proc(text=[TEMPLATE.format(c) for c in CLASSES], images=images, return_tensors="pt",
                            padding=True)).logits_per_image.softmax(-1).numpy()
    got = _clipdata_probs(engine, some, exact=True)
    assert want.std() > 1e-3 and np.abs(got - want).max() <= 1e-4, np.abs(got - want).max()
    captions = [TEMPLATE.format(c) for c in CLASSES]
    alone = np.concatenate([engine.embed_texts([c]) for c in captions])
    batched = engine.embed_texts(captions + ["a photo of the big green triangle beside a small purple heart " * 3])
    assert (alone * batched[:len(captions)]).sum(1).min() >= 1 - 1e-5
