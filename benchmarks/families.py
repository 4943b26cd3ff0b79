"""Images/s per model family at 640x480 and 1080p, with the full-size architectures (random
weights: speed does not depend on weight values): CLIP ViT-B/32, SigLIP B/16 at 224, SigLIP 2
B/16 NaFlex (256 patches), MetaCLIP 2 B/32. For each family and photo size, in one run:

  model   the image tower alone on pre-made inputs (the limit the model sets)
  decode  the family's default (fast) preprocessing alone, one process (the limit decoding sets)
  end     clipdata's embedding path end to end (fast path, default loaders, no cache)

with the CPU seconds of each and the load average beside it (the machine is shared).

    pip install -e ".[clip,test]" && python benchmarks/families.py [--images 32]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

B16_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
B16_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)


def build(family: str, folder: Path) -> Path:
    """A full-size random model of `family`, saved with its processor and a tokenizer."""
    import transformers as t

    import tiny_models as tm
    from tiny_clip import VIT_B32_TEXT, VIT_B32_VISION, make_tiny_clip

    folder.mkdir(parents=True, exist_ok=True)
    if family == "clip":
        return make_tiny_clip(folder, text=VIT_B32_TEXT, vision=VIT_B32_VISION, projection_dim=512)
    if family == "siglip":
        tok = t.SiglipTokenizer(vocab_file=str(tm._sentencepiece(folder / "_spm")))
        model = t.SiglipModel(t.SiglipConfig(text_config=dict(vocab_size=len(tok), max_position_embeddings=64, **B16_TEXT),
                                             vision_config=dict(image_size=224, patch_size=16, **B16_VISION)))
        proc = t.SiglipProcessor(image_processor=t.SiglipImageProcessorPil(), tokenizer=tok)
    elif family == "siglip2-naflex":
        tok = t.Siglip2Tokenizer(vocab=tm._gemma_vocab(), merges=[])
        model = t.Siglip2Model(t.Siglip2Config(
            text_config=dict(vocab_size=len(tok), max_position_embeddings=64, **B16_TEXT),
            vision_config=dict(patch_size=16, num_patches=256, **B16_VISION)))
        proc = t.Siglip2Processor(image_processor=t.Siglip2ImageProcessorPil(patch_size=16, max_num_patches=256),
                                  tokenizer=tok)
    elif family == "metaclip2":
        tok = t.XLMRobertaTokenizer(vocab=tm._xlmr_vocab())
        model = t.MetaClip2Model(t.MetaClip2Config(
            text_config=dict(vocab_size=len(tok), max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **VIT_B32_TEXT),
            vision_config=VIT_B32_VISION, projection_dim=512))
        proc = t.CLIPProcessor(image_processor=t.CLIPImageProcessorPil(), tokenizer=tok)
    else:
        raise SystemExit(f"no benchmark model for {family}")
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, 1-minute load average at the end)."""
    w, c = time.perf_counter(), _cpu()
    fn()
    return time.perf_counter() - w, _cpu() - c, os.getloadavg()[0]


def measure(family: str, folder: Path, photos: list[Path]) -> dict[str, tuple[float, float, float]]:
    import torch

    from clipdata.embedding import Engine, EngineSpec, embed_images

    spec = EngineSpec(model=str(folder))
    engine = Engine(spec)
    prepare = engine.preparer(False)
    inputs = [prepare(str(p)) for p in photos[:16]]
    batch = ({k: torch.stack([x[k] for x in inputs]) for k in inputs[0]} if isinstance(inputs[0], dict)
             else torch.stack(inputs))
    engine.embed_pixels(batch)  # warm up
    n = len(photos)
    out = {}
    out["model"] = timed(lambda: [engine.embed_pixels(batch) for _ in range(max(1, n // 16))])
    out["decode"] = timed(lambda: [prepare(str(p)) for p in photos])
    out["end"] = timed(lambda: embed_images(engine, photos, None, None, spec))
    return {k: (max(1, n // 16) * 16 / w if k == "model" else n / w, c, load) for k, (w, c, load) in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--families", default="clip,siglip,siglip2-naflex,metaclip2")
    args = ap.parse_args()
    from label import make_photos

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sizes = {"640x480": (640, 480), "1080p": (1920, 1080)}
        photos = {name: make_photos(tmp / name, args.images, size) for name, size in sizes.items()}
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
              f"{args.images} JPEGs per size; images/s (CPU seconds, load average)")
        for family in args.families.split(","):
            folder = build(family, tmp / family)
            for name, paths in photos.items():
                r = measure(family, folder, paths)
                print(f"{family:15} {name:8} " + "  ".join(f"{k} {v:6.1f}/s ({c:5.1f} s, load {load:4.1f})"
                                                           for k, (v, c, load) in r.items()), flush=True)


if __name__ == "__main__":
    main()
