"""A tiny random CLIP-architecture model and a byte-level tokenizer, saved like a real one so
tests load it through the same --model DIR path users use. Nothing is downloaded."""
from __future__ import annotations

from pathlib import Path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, which CLIP's BPE vocabulary uses."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                   image_size=32, patch_size=8)
# OpenAI's ViT-B/32 architecture (the weights stay random: speed does not depend on them)
VIT_B32_TEXT = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
# ... with OpenAI's vocabulary size, for tools that tokenize with OpenAI's own BPE (clip-retrieval)
VIT_B32_TEXT_FULL_VOCAB = dict(VIT_B32_TEXT, vocab_size=49408)
VIT_B32_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      image_size=224, patch_size=32)


def make_tiny_clip(folder: Path, seed: int = 0, text: dict = TINY_TEXT, vision: dict = TINY_VISION,
                   projection_dim: int = 16) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers import CLIPImageProcessorPil as ImageProcessor  # no torchvision here

    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    torch.manual_seed(seed)
    config = CLIPConfig(
        # CLIP pools text at the end-of-text token: its id must be the tokenizer's
        text_config={**dict(vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id), **text},
        vision_config=vision,
        projection_dim=projection_dim)
    CLIPModel(config).save_pretrained(folder)
    side = vision["image_size"]
    processor = CLIPProcessor(image_processor=ImageProcessor(size={"shortest_edge": side},
                                                             crop_size={"height": side, "width": side}),
                              tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder
