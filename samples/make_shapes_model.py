"""Train the tiny CLIP that ships in samples/models/shapes-clip/ (about 4 MB).

    pip install -e ".[clip]" && python samples/make_shapes_model.py

A transformers CLIPModel of small dimensions (ViT 64x64 px, patch 8, width 96, 4 layers;
text width 96, 3 layers; 64-d joint space) trained with a contrastive loss on images and
captions of the synthetic shapes world (shapes_world.py), with a BPE tokenizer trained on
the captions. CPU only, fixed seeds, about 10 minutes on 2 cores. The tests use the saved
model; they never retrain it.
"""
from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import shapes_world as world  # noqa: E402

OUT = HERE / "models" / "shapes-clip"
SEED = 7
N_TRAIN = 16_000
EPOCHS = 20
BATCH = 256
MAX_TOKENS = 32


def caption_corpus(rnd: random.Random) -> list[str]:
    corpus = []
    for _ in range(20_000):
        corpus.append(world.caption(world.random_item(rnd), rnd))
    corpus += [f"{c}" for c in world.classes()] + [f"a photo of a {c}" for c in world.classes()]
    return corpus


def train_tokenizer(corpus: list[str]):
    """A byte-level BPE with CLIP's conventions (lower-cased, `</w>` word ends), trained on the
    captions, then wrapped as a transformers CLIPTokenizer so AutoProcessor loads it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    clip_backend = CLIPTokenizer(vocab={"<|startoftext|>": 0, "<|endoftext|>": 1}, merges=[])._tokenizer
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    bpe.normalizer = clip_backend.normalizer
    bpe.pre_tokenizer = clip_backend.pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  end_of_word_suffix="</w>", show_progress=False)
    bpe.train_from_iterator(corpus, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = CLIPTokenizer(vocab=model["vocab"], merges=merges)
    tok.model_max_length = MAX_TOKENS
    return tok


def make_model(tok):
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=96, intermediate_size=384, num_hidden_layers=3,
                         num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=96, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                           image_size=64, patch_size=8),
        projection_dim=64)
    return CLIPModel(config)


def make_processor(tok):
    from transformers import CLIPImageProcessorPil, CLIPProcessor

    return CLIPProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 64},
                                                               crop_size={"height": 64, "width": 64}),
                         tokenizer=tok)


def images(n: int, seed: int, processor) -> tuple[torch.Tensor, list[world.Item]]:
    """n rendered images, preprocessed by the model's own processor (as at inference)."""
    rnd = random.Random(seed)
    items = [world.random_item(rnd) for _ in range(n)]
    pixels = []
    for start in range(0, n, 500):
        batch = [world.render(it, rnd) for it in items[start:start + 500]]
        pixels.append(torch.from_numpy(processor.image_processor(images=batch, return_tensors="np")["pixel_values"]))
    return torch.cat(pixels), items


@torch.no_grad()
def zero_shot(model, tok, pixels: torch.Tensor, items: list[world.Item], template: str) -> float:
    classes = world.classes()
    text = tok([template.format(c) for c in classes], padding=True, return_tensors="pt")
    t = model.get_text_features(**text)
    t = getattr(t, "pooler_output", t)
    i = model.get_image_features(pixel_values=pixels)
    i = getattr(i, "pooler_output", i)
    pred = (i / i.norm(dim=-1, keepdim=True) @ (t / t.norm(dim=-1, keepdim=True)).T).argmax(1)
    truth = torch.tensor([classes.index(it.label) for it in items])
    return float((pred == truth).float().mean())


def main() -> None:
    torch.manual_seed(SEED)
    rnd = random.Random(SEED)
    t0 = time.perf_counter()
    tok = train_tokenizer(caption_corpus(random.Random(SEED)))
    processor = make_processor(tok)
    model = make_model(tok)
    print(f"tokenizer: {len(tok)} tokens; 'a red circle' -> {tok.tokenize('a red circle')}")
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    train_px, train_items = images(N_TRAIN, SEED + 1, processor)
    held_px, held_items = images(800, SEED + 2, processor)
    print(f"data: {len(train_items)} training images in {time.perf_counter() - t0:.0f} s")
    labels = torch.tensor([world.classes().index(it.label) for it in train_items])
    steps = EPOCHS * math.ceil(N_TRAIN / BATCH)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    step = 0
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(N_TRAIN)
        for start in range(0, N_TRAIN, BATCH):
            idx = order[start:start + BATCH]
            caps = [world.caption(train_items[k], rnd) for k in idx.tolist()]
            text = tok(caps, padding=True, truncation=True, return_tensors="pt")
            out = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"], pixel_values=train_px[idx])
            logits = out.logits_per_image
            # images of the same class are positives of each other's captions (many per batch)
            same = (labels[idx][:, None] == labels[idx][None, :]).float()
            target = same / same.sum(1, keepdim=True)
            loss = (torch.nn.functional.cross_entropy(logits, target)
                    + torch.nn.functional.cross_entropy(logits.T, target)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
        model.eval()
        acc = zero_shot(model, tok, held_px, held_items, "a photo of a {}")
        print(f"epoch {epoch + 1}/{EPOCHS}: loss {loss.item():.3f}, held-out zero-shot {acc:.1%}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    for template in ("a photo of a {}", "{}", "a {}", "a photo of a thing"):
        print(f"  held-out zero-shot with {template!r}: {zero_shot(model, tok, held_px, held_items, template):.1%}")
    OUT.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT)
    processor.save_pretrained(OUT)
    print(f"saved to {OUT} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
