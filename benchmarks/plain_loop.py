"""The peer `benchmarks/peers.py` measures clipdata against: what most scripts do to embed a
folder of images with a CLIP model (the CLIP model card's loop), batch 32, unit vectors
saved with numpy. `--dtype bfloat16` casts the weights and the inputs (only worth it on a
CPU with native bfloat16).

    python benchmarks/plain_loop.py IMAGES MODEL OUT.npy [--dtype float32|bfloat16] [--batch 32]
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

ap = argparse.ArgumentParser()
ap.add_argument("images"), ap.add_argument("model"), ap.add_argument("out")
ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
ap.add_argument("--batch", type=int, default=32)
args = ap.parse_args()

dtype = getattr(torch, args.dtype)
model = CLIPModel.from_pretrained(args.model).eval().to(dtype)
processor = CLIPProcessor.from_pretrained(args.model)
paths = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
out = []
with torch.no_grad():
    for i in range(0, len(paths), args.batch):
        images = [Image.open(p).convert("RGB") for p in paths[i:i + args.batch]]
        inputs = processor(images=images, return_tensors="pt")
        features = model.get_image_features(pixel_values=inputs["pixel_values"].to(dtype))
        features = getattr(features, "pooler_output", features).float()  # transformers 5: an output object
        out.append((features / features.norm(dim=-1, keepdim=True)).numpy())
np.save(args.out, np.concatenate(out))
