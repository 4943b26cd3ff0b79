"""Shared helpers: small real images and COCO files built in a temporary folder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = Path(__file__).parent.parent / "samples"


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


@pytest.fixture
def coco_set(tmp_path: Path):
    """A small COCO set: two images, three categories with non-contiguous ids."""
    root = tmp_path / "src"
    make_image(root / "a.jpg", (64, 48))
    make_image(root / "b.png", (40, 40), fmt="PNG")
    cats = [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 7, "name": "unused"}]
    images = [{"id": 10, "file_name": "a.jpg", "width": 64, "height": 48},
              {"id": 20, "file_name": "b.png", "width": 40, "height": 40}]
    anns = [
        {"id": 1, "image_id": 10, "category_id": 1, "bbox": [4, 4, 20, 10], "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [30.4, 10.5, 20.2, 20.0], "iscrowd": 0},
        {"id": 3, "image_id": 20, "category_id": 3, "bbox": [0, 0, 40, 40], "iscrowd": 0},
        {"id": 4, "image_id": 20, "category_id": 1, "bbox": [5, 5, 10, 10], "iscrowd": 1},
    ]
    return write_coco(root / "annotations.json", images, anns, cats)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes: equal dicts mean byte-identical outputs."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Commands that default to the user's embedding cache use a temporary one in tests."""
    monkeypatch.setenv("CLIPDATA_CACHE", str(tmp_path_factory.getbasetemp() / "clipdata-cache"))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny random CLIP saved to disk; CLIP tests load it the way users load a model."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tiny_clip import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture
def spec(tiny):
    """Engine options for the tiny model: float32 (exact comparisons), no worker processes."""
    from clipdata.embedding import EngineSpec

    return EngineSpec(model=str(tiny), dtype="float32", batch_size=4, workers=0)
