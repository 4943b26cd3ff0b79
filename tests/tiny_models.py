"""A tiny random model of each family clipdata scores, built from the family's transformers
config and saved with `save_pretrained` beside a tokenizer built offline (a sentencepiece model
trained on a few sentences, or a vocabulary written out), so tests load each through the same
--model DIR path users use. Nothing is downloaded. `make(family, folder)`."""
from __future__ import annotations

import io
import string
from pathlib import Path

from tiny_clip import TINY_TEXT, TINY_VISION, make_tiny_clip

# words the test captions use, so every tokenizer has real pieces for them
CORPUS = ("a photo of the red circle blue square green triangle yellow star purple heart dog cat car "
          "tree house flower bird boat this is picture shape small big").split()
CHARS = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation


def _sentencepiece(folder: Path) -> Path:
    """A unigram sentencepiece model trained here on a few sentences (SigLIP's tokenizer kind)."""
    import sentencepiece as spm

    model = io.BytesIO()
    lines = [" ".join(CORPUS[i:i + 6]) for i in range(0, len(CORPUS), 3)] + [CHARS]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines * 20), model_writer=model, vocab_size=120,
                                   character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   model_type="unigram", minloglevel=2)
    path = folder / "spiece.model"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.getvalue())
    return path


def _gemma_vocab() -> dict[str, int]:
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for piece in ["▁"] + list(CHARS) + [f"▁{w}" for w in CORPUS] + [f"<0x{b:02X}>" for b in range(256)]:
        vocab.setdefault(piece, len(vocab))
    return vocab


def _bert_vocab() -> dict[str, int]:
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
    for piece in list(CHARS.lower()) + CORPUS + [f"##{c}" for c in string.ascii_lowercase]:
        vocab.setdefault(piece, len(vocab))
    return vocab


def _xlmr_vocab() -> list[tuple[str, float]]:
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(f"▁{w}", -2.0) for w in CORPUS] + [("▁", -3.0)] + [(c, -5.0) for c in CHARS]
    return pieces + [("<mask>", 0.0)]


# the real input size (224 px), so the fast path reduces JPEGs as it does for real models
SIDE = 224
VISION = {**TINY_VISION, "image_size": SIDE, "patch_size": 32}


def _vision(**extra) -> dict:
    return {**VISION, **extra}


def _text(vocab_size: int, **extra) -> dict:
    return {**TINY_TEXT, "vocab_size": vocab_size, **extra}


def make(family: str, folder: Path, seed: int = 0) -> Path:
    """Build and save a tiny random model of `family` (a key of clipdata's family table)."""
    import torch
    import transformers as t

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    if family in ("clip", "groupvit", "aimv2"):
        if family == "clip":
            return make_tiny_clip(folder, seed, vision=VISION)
        tmp = make_tiny_clip(folder / "_clip", seed, vision=VISION)
        clip_proc = t.AutoProcessor.from_pretrained(tmp)
        tok = clip_proc.tokenizer
        ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        if family == "groupvit":
            config = t.GroupViTConfig(
                text_config=_text(len(tok), max_position_embeddings=77, **ids),
                vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, depths=[1, 1],
                                   num_group_tokens=[4, 0], num_output_groups=[4, 2], num_attention_heads=2,
                                   image_size=SIDE, patch_size=32),
                projection_dim=16, projection_intermediate_dim=32)
            model = t.GroupViTModel(config)
        else:
            config = t.Aimv2Config(text_config=_text(len(tok), max_position_embeddings=77, **ids),
                                   vision_config=_vision(), projection_dim=16)
            model = t.Aimv2Model(config)
        _confident(model)
        model.save_pretrained(folder)
        clip_proc.save_pretrained(folder)
        return folder
    if family == "siglip":
        tok = t.SiglipTokenizer(vocab_file=str(_sentencepiece(folder / "_spm")))
        config = t.SiglipConfig(text_config=_text(len(tok), max_position_embeddings=64),
                                vision_config=_vision())
        model = t.SiglipModel(config)
        proc = t.SiglipProcessor(image_processor=t.SiglipImageProcessorPil(size={"height": SIDE, "width": SIDE}),
                                 tokenizer=tok)
    elif family == "siglip2":  # fixed resolution: a SigLIP config with SigLIP 2's Gemma tokenizer
        tok = t.GemmaTokenizer(vocab=_gemma_vocab(), merges=[])
        config = t.SiglipConfig(text_config=_text(len(tok), max_position_embeddings=64), vision_config=_vision())
        model = t.SiglipModel(config)
        proc = t.SiglipProcessor(image_processor=t.SiglipImageProcessorPil(size={"height": SIDE, "width": SIDE}),
                                 tokenizer=tok)
    elif family == "siglip2-naflex":
        tok = t.Siglip2Tokenizer(vocab=_gemma_vocab(), merges=[])
        config = t.Siglip2Config(text_config=_text(len(tok), max_position_embeddings=64),
                                 vision_config={k: v for k, v in _vision(num_patches=256, patch_size=16).items() if k != "image_size"})
        model = t.Siglip2Model(config)
        proc = t.Siglip2Processor(image_processor=t.Siglip2ImageProcessorPil(patch_size=16, max_num_patches=256),
                                  tokenizer=tok)
    elif family == "metaclip2":
        tok = t.XLMRobertaTokenizer(vocab=_xlmr_vocab())
        config = t.MetaClip2Config(text_config=_text(len(tok), max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                                                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
                                   vision_config=_vision(), projection_dim=16)
        model = t.MetaClip2Model(config)
        proc = t.CLIPProcessor(image_processor=t.CLIPImageProcessorPil(size={"shortest_edge": SIDE},
                                                                       crop_size={"height": SIDE, "width": SIDE}),
                               tokenizer=tok)
    elif family == "altclip":
        tok = t.XLMRobertaTokenizer(vocab=_xlmr_vocab())
        config = t.AltCLIPConfig(text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                                  num_hidden_layers=2, num_attention_heads=2, project_dim=16,
                                                  pad_token_id=tok.pad_token_id),
                                 vision_config=_vision(), projection_dim=16)
        model = t.AltCLIPModel(config)
        proc = t.AltCLIPProcessor(image_processor=t.CLIPImageProcessorPil(size={"shortest_edge": SIDE},
                                                                          crop_size={"height": SIDE, "width": SIDE}),
                                  tokenizer=tok)
    elif family == "chinese-clip":
        tok = t.BertTokenizer(vocab=_bert_vocab())
        config = t.ChineseCLIPConfig(text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                                      num_hidden_layers=2, num_attention_heads=2),
                                     vision_config=_vision(), projection_dim=16)
        model = t.ChineseCLIPModel(config)
        proc = t.ChineseCLIPProcessor(image_processor=t.ChineseCLIPImageProcessorPil(
            size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE}), tokenizer=tok)
    elif family == "align":
        tok = t.BertTokenizer(vocab=_bert_vocab())
        config = t.AlignConfig(text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                                num_hidden_layers=2, num_attention_heads=2),
                               vision_config=dict(image_size=289, width_coefficient=0.1, depth_coefficient=0.1,
                                                  hidden_dim=64, kernel_sizes=[3] * 7, expand_ratios=[1] * 7),
                               projection_dim=32)
        model = t.AlignModel(config)
        with torch.no_grad():  # a tiny EfficientNet at its default init fades to ~1e-30: give it signal
            for name, w in model.vision_model.named_parameters():
                if w.dim() > 1:
                    torch.nn.init.kaiming_normal_(w)
                elif name.endswith("weight"):
                    w.fill_(1.0)
        proc = t.AlignProcessor(image_processor=t.EfficientNetImageProcessorPil(
            size={"height": 289, "width": 289}, crop_size={"height": 289, "width": 289}, do_center_crop=True,
            rescale_offset=True, rescale_factor=1 / 127.5), tokenizer=tok)
    elif family == "dual-encoder":  # a CLIP vision tower and a BERT text tower, joined
        tok = t.BertTokenizer(vocab=_bert_vocab())
        config = t.VisionTextDualEncoderConfig.from_vision_text_configs(
            t.CLIPVisionConfig(**_vision()), t.BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                                          num_hidden_layers=2, num_attention_heads=2),
            projection_dim=16)
        model = t.VisionTextDualEncoderModel(config)
        proc = t.VisionTextDualEncoderProcessor(image_processor=t.CLIPImageProcessorPil(
            size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE}), tokenizer=tok)
    else:
        raise ValueError(f"no tiny model for family {family!r}")
    _confident(model)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def _confident(model) -> None:
    """Scales a trained model has (random init leaves SigLIP at scale 1, bias 0: every score
    near 0.5), so probabilities spread and a comparison of them means something."""
    import math

    import torch

    with torch.no_grad():
        if hasattr(model, "logit_scale"):
            model.logit_scale.fill_(math.log(50.0))
        if hasattr(model, "logit_bias"):
            model.logit_bias.fill_(-3.0)
        if hasattr(model, "temperature"):
            model.temperature.fill_(0.02)
