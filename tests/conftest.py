"""Shared fixtures (the builders they use live in helpers.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

import clipdata
from helpers import FIXTURES, SAMPLES, make_image, manifest, tree_bytes, write_coco  # noqa: F401  (re-exported)

# In CI, property tests draw the same examples every run: a red CI is then reproducible, and a
# green one is not luck. Locally they explore afresh each run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


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


@pytest.fixture
def layout(tmp_path):
    """The folder sample as a CLIP layout (three texture classes, two splits)."""
    out = tmp_path / "layout"
    clipdata.convert(SAMPLES / "folder", out, format="folder", template="a photo of {}")
    return out
