"""Builders shared by the tests: small real images and COCO files, byte-level tree
comparison, manifest rows. Tests import them from here; conftest.py holds the fixtures."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = Path(__file__).parent.parent / "samples"
SHAPES_MODEL = SAMPLES / "models" / "shapes-clip"  # the tiny CLIP trained on the shapes world
sys.path.insert(0, str(SAMPLES))
import shapes_world as world  # noqa: E402,F401  (samples/shapes_world.py: the world that model knows)

needs_shapes_model = pytest.mark.skipif(not (SHAPES_MODEL / "config.json").is_file(),
                                        reason="the shapes model is not built")


def shapes_spec():
    """The shapes model in float32, in this process, big batches: exact and quick."""
    from clipdata.embedding import EngineSpec

    return EngineSpec(model=str(SHAPES_MODEL), dtype="float32", workers=0, batch_size=64)


def make_image(path: Path, size=(64, 48), color=(200, 30, 30), mode="RGB", fmt=None, **save) -> Path:
    """A picture whose pixel (x, y) encodes its position, so crops can be checked exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    px = img.load()
    for x in range(size[0]):
        for y in range(size[1]):
            px[x, y] = ((x * 4) % 256, (y * 4) % 256, color[2])
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, fmt, **save)
    return path


def write_coco(path: Path, images, annotations, categories, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": annotations, "categories": categories, **extra}
    path.write_text(json.dumps(data))
    return path


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes: equal dicts mean byte-identical outputs."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def convert_case(tmp_path: Path, build):
    """Run one table row's `convert` through the CLI as a user does (SOURCE built by `build`
    in src/, OUT beside it, one worker) and check what holds for every row of every table: no
    exception escaped, no traceback or "this is a bug" line, nothing changed outside OUT (the
    input untouched). Returns (click's result, OUT)."""
    from typer.testing import CliRunner

    from clipdata.cli import app
    src = tmp_path / "src"
    src.mkdir()
    args = build(src)
    out = tmp_path / "out"
    before = tree_bytes(tmp_path)
    r = CliRunner().invoke(app, ["convert", args[0], args[1], str(out), "--workers", "1", *args[2:]])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    assert "Traceback" not in r.output and "this is a bug" not in r.output, r.output
    assert {k: v for k, v in tree_bytes(tmp_path).items() if not k.startswith("out/")} == before
    return r, out


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def direct(tiny, paths, captions):
    """Probabilities straight from CLIPModel: the reference every test compares with."""
    import torch
    from transformers import CLIPModel, CLIPProcessor
    model, proc = CLIPModel.from_pretrained(tiny).eval(), CLIPProcessor.from_pretrained(tiny)
    with torch.no_grad():
        inputs = proc(text=captions, images=[Image.open(p) for p in paths], return_tensors="pt", padding=True)
        return model(**inputs).logits_per_image.softmax(-1).numpy()


def image_embeddings(tiny, paths):
    """A direct forward pass on the default (fast) path's pixels; tests/test_preprocess.py
    checks those pixels against the model's own processor."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    from clipdata.embedding.preprocess import FastPreprocess
    model, proc = CLIPModel.from_pretrained(tiny).eval(), CLIPProcessor.from_pretrained(tiny)
    fast = FastPreprocess.from_processor(proc.image_processor)
    with torch.no_grad():
        f = model.get_image_features(pixel_values=torch.stack([fast(p) for p in paths]))
    f = getattr(f, "pooler_output", f).numpy()
    return f / np.linalg.norm(f, axis=1, keepdims=True)
