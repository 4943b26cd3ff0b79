"""Rebuild samples/ from the photos that ship inside scikit-image and scikit-learn.

    pip install scikit-image scikit-learn && python samples/make_samples.py

The boxes were drawn by hand by looking at each photo; sources and licences are in
samples/README.md. Deterministic: running it twice gives the same bytes.
"""
from __future__ import annotations

import json
from pathlib import Path

import sklearn.datasets
import skimage
from PIL import Image

HERE = Path(__file__).parent
SKIMAGE = Path(skimage.__file__).parent / "data"
SKLEARN = Path(sklearn.datasets.__file__).parent / "images"

# file -> (source photo, boxes as (class, [x, y, w, h]))
COCO = {
    "astronaut.jpg": (SKIMAGE / "astronaut.png", [
        ("person", [20, 15, 350, 497]), ("flag", [0, 0, 105, 512]),
        ("space shuttle", [355, 0, 110, 275]), ("helmet", [278, 345, 234, 167])]),
    "chelsea.jpg": (SKIMAGE / "chelsea.png", [("cat", [5, 0, 400, 300])]),
    "coffee.jpg": (SKIMAGE / "coffee.png", [
        ("cup", [170, 20, 250, 285]), ("saucer", [75, 75, 405, 310]), ("spoon", [320, 65, 105, 262])]),
    "rocket.jpg": (SKIMAGE / "rocket.jpg", [
        ("rocket", [295, 125, 50, 285]), ("launch tower", [0, 0, 90, 400]), ("launch tower", [555, 0, 85, 427])]),
    "china.jpg": (SKLEARN / "china.jpg", [("pagoda", [60, 28, 310, 399]), ("tree", [548, 135, 92, 292])]),
    "flower.jpg": (SKLEARN / "flower.jpg", [("flower", [168, 85, 280, 275]), ("flower", [288, 373, 152, 54])]),
}
TEXTURES = {"brick wall": "brick.png", "grass": "grass.png", "gravel": "gravel.png"}


def coco() -> None:
    folder = HERE / "coco" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted({c for _, boxes in COCO.values() for c, _ in boxes})
    cat_id = {n: i + 1 for i, n in enumerate(names)}
    images, annotations = [], []
    for image_id, (file, (photo, boxes)) in enumerate(sorted(COCO.items()), 1):
        img = Image.open(photo).convert("RGB")
        img.save(folder / file, quality=90)
        images.append({"id": image_id, "file_name": file, "width": img.width, "height": img.height})
        for cls, box in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat_id[cls],
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    data = {"info": {"description": "clipdata sample: public-domain and CC photos, boxes drawn by hand"},
            "images": images, "annotations": annotations,
            "categories": [{"id": cat_id[n], "name": n, "supercategory": "object"} for n in names]}
    (HERE / "coco" / "annotations.json").write_text(json.dumps(data, indent=1) + "\n")


def folder() -> None:
    """Folder-per-class: 256x256 tiles of three texture photos; the last tile of each is valid."""
    for cls, file in TEXTURES.items():
        img = Image.open(SKIMAGE / file).convert("L")
        for i, (x, y) in enumerate([(0, 0), (256, 0), (0, 256), (256, 256)]):
            split = "valid" if i == 3 else "train"
            out = HERE / "folder" / split / cls / f"{Path(file).stem}_{i + 1}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            img.crop((x, y, x + 256, y + 256)).save(out, quality=90)


if __name__ == "__main__":
    coco()
    folder()
