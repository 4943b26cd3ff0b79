"""Images/s per model family at 640x480 and 1080p, with the full-size architectures (random
weights: speed does not depend on weight values): CLIP ViT-B/32, SigLIP B/16 at 224, SigLIP 2
B/16 NaFlex (256 patches), MetaCLIP 2 B/32. For each family and photo size, in one run:

  model   the image tower alone on pre-made inputs (the limit the model sets)
  decode  the family's default (fast) preprocessing alone, one process (the limit decoding sets)
  end     clipdata's embedding path end to end (fast path, default loaders, no cache)

with the CPU seconds of each and the load average beside it (the machine is shared). The
families alternate within each round, so a family's ratio to CLIP ViT-B/32 is taken under the
same load.

    pip install -e ".[clip,test]" && python benchmarks/families.py [--images 16] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
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


def _inputs(engine, photos: list[Path]):
    import torch

    prepare = engine.preparer(False)
    inputs = [prepare(str(p)) for p in photos[:16]]
    return ({k: torch.stack([x[k] for x in inputs]) for k in inputs[0]} if isinstance(inputs[0], dict)
            else torch.stack(inputs))


def measure(engine, spec, batch, photos: list[Path]) -> dict[str, tuple[float, float, float]]:
    """phase -> (images/s, CPU seconds per image, load average) for one family and photo size."""
    from clipdata.embedding import embed_images

    prepare = engine.preparer(False)
    n, m = len(photos), len(next(iter(batch.values())) if isinstance(batch, dict) else batch)
    out = {"model": (m, timed(lambda: engine.embed_pixels(batch))),
           "decode": (n, timed(lambda: [prepare(str(p)) for p in photos])),
           "end": (n, timed(lambda: embed_images(engine, photos, None, None, spec)))}
    return {k: (k_n / w, c / k_n, load) for k, (k_n, (w, c, load)) in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=16, help="JPEGs per size (the model phase takes 16)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; each runs every family in turn")
    ap.add_argument("--families", default="clip,siglip,siglip2-naflex,metaclip2")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: torch's default). On a loaded machine 1 gives CPU seconds per image "
                         "that threads spinning for a busy core do not inflate")
    args = ap.parse_args()
    from label import make_photos

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from clipdata.embedding import Engine, EngineSpec

    families = args.families.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sizes = {"640x480": (640, 480), "1080p": (1920, 1080)}
        photos = {name: make_photos(tmp / name, args.images, size) for name, size in sizes.items()}
        engines, batches = {}, {}
        for family in families:
            spec = EngineSpec(model=str(build(family, tmp / family)))
            engine = Engine(spec)
            engines[family] = (engine, spec)
            for name, paths in photos.items():
                batches[family, name] = _inputs(engine, paths)
                engine.embed_pixels(batches[family, name])  # warm up
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
              f"{args.images} JPEGs per size, {args.rounds} rounds, families alternating within each", flush=True)
        results: dict[tuple[str, str, str], list[tuple[float, float, float]]] = {}
        for r in range(args.rounds):
            for family in families:  # alternating: each round's figures share the machine's load
                engine, spec = engines[family]
                for name, paths in photos.items():
                    for k, v in measure(engine, spec, batches[family, name], paths).items():
                        results.setdefault((family, name, k), []).append(v)
            print(f"round {r + 1} done, load {os.getloadavg()[0]:.1f}", flush=True)
        print("median images/s (CPU milliseconds per image; load average range); x CLIP: the median of each "
              "round's ratio to CLIP ViT-B/32")
        for family in families:
            for name in photos:
                cells = []
                for k in ("model", "decode", "end"):
                    rows = results[family, name, k]
                    rate, cpu = statistics.median(x[0] for x in rows), statistics.median(x[1] for x in rows)
                    ratio = statistics.median(a[0] / b[0] for a, b in zip(rows, results["clip", name, k])) \
                        if "clip" in families else float("nan")
                    loads = [x[2] for x in rows]
                    cells.append(f"{k} {rate:6.1f}/s ({cpu * 1000:6.1f} ms, x{ratio:4.2f} CLIP, "
                                 f"load {min(loads):.0f}-{max(loads):.0f})")
                print(f"{family:15} {name:8} " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
