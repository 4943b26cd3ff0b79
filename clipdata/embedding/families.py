"""The model families clipdata scores, in one table: for each, how captions are tokenized,
how images are prepared, which inputs the image tower takes and how scores are made — the
way the family's authors (and transformers' zero-shot pipeline) do it. formats/models.md is
this table in prose; `clipdata models` prints it.

A family is recognised from the checkpoint's config.json (`model_type`) and, for SigLIP 2 at
a fixed resolution (whose config says "siglip"), from its Gemma tokenizer. `rules` names the
family's tokenization and scoring in the embedding cache's identity, so embeddings made under
other rules are never mixed with these.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SOFTMAX, SIGMOID = "clip", "siglip"  # the scoring kinds clipdata.scoring knows (cached as such)
PIXELS = ("pixel_values",)
NAFLEX_INPUTS = ("pixel_values", "pixel_attention_mask", "spatial_shapes")


@dataclass(frozen=True)
class Family:
    key: str  # what `clipdata models` and the cache identity call it
    name: str
    model_types: tuple[str, ...]  # config.json model_type values (transformers); () for open_clip
    checkpoints: str  # which published weights load as this family
    example: str  # a --model value
    # captions
    padding: str = "longest"  # "longest" (pad to the batch's longest: the tower masks padding) or "max_length"
    text_length: int | None = None  # tokens kept (and padded to, with max_length); None: the text tower's positions
    lowercase: bool = False  # clipdata lowercases captions first (the authors do; the shipped tokenizer does not)
    # images
    image: str = "shortest edge, centre crop"  # how the processor prepares pixels (read from its config)
    image_inputs: tuple[str, ...] = PIXELS  # what get_image_features takes
    fast: str = "yes"  # the fast path, or why the processor itself is used
    # scores
    score: str = SOFTMAX  # SOFTMAX over the classes, or SIGMOID per class (scale and bias)
    scale: str = "exp(logit_scale)"  # where the scale comes from: also "1/temperature", "exp(clamped logit_scale)"
    needs: str = "clipdata[clip]"
    notes: str = ""
    attention: str | None = None  # the attention implementation the family loads with (None: transformers' choice)

    @property
    def rules(self) -> str:
        """The family's tokenization and scoring rules, as the cache identity names them."""
        if self.key == "open_clip":  # open_clip's own tokenizer and scalars
            return "open_clip"
        text = ("pad-max" if self.padding == "max_length" else "pad-longest") + str(self.text_length or "")
        return "+".join([self.key, text] + (["lower"] if self.lowercase else [])
                        + ["sigmoid" if self.score == SIGMOID else "softmax"])

    @property
    def scoring(self) -> str:
        if self.score not in (SOFTMAX, SIGMOID):
            return self.score
        if self.score == SIGMOID:
            return f"sigmoid({self.scale} * cos + logit_bias), per class"
        return f"softmax({self.scale} * cos) over the classes"


CLIP_IMAGE = "shortest edge, centre crop (bicubic)"
FAMILIES: tuple[Family, ...] = (
    Family("clip", "CLIP", ("clip",), "OpenAI; LAION, DataComp and DFN checkpoints saved for transformers",
           "openai/clip-vit-base-patch32", image=CLIP_IMAGE),
    Family("siglip", "SigLIP", ("siglip",), "Google's SigLIP (sentencepiece tokenizer)",
           "google/siglip-base-patch16-224", padding="max_length", text_length=64,
           image="square resize, no crop (bilinear)", score=SIGMOID, needs="clipdata[clip] (sentencepiece)",
           notes="the tokenizer itself lowercases and drops punctuation"),
    Family("siglip2", "SigLIP 2 (fixed resolution)", ("siglip",), "Google's SigLIP 2 at 224-512 px (Gemma tokenizer)",
           "google/siglip2-base-patch16-224", padding="max_length", text_length=64, lowercase=True,
           image="square resize, no crop (bilinear)", score=SIGMOID,
           notes="config.json says siglip; recognised by its Gemma tokenizer, which does not lowercase"),
    Family("siglip2-naflex", "SigLIP 2 NaFlex", ("siglip2",), "Google's SigLIP 2 NaFlex (any aspect ratio)",
           "google/siglip2-base-patch16-naflex", padding="max_length", text_length=64, lowercase=True,
           image="aspect kept, resized to at most max_num_patches patches (bilinear), padded",
           image_inputs=NAFLEX_INPUTS, score=SIGMOID),
    Family("metaclip2", "MetaCLIP 2", ("metaclip_2",), "Meta's MetaCLIP 2 worldwide (XLM-V tokenizer)",
           "facebook/metaclip-2-worldwide-huge-quickgelu", image=CLIP_IMAGE),
    Family("align", "ALIGN", ("align",), "Kakao Brain's ALIGN (BERT tokenizer, EfficientNet)",
           "kakaobrain/align-base", text_length=64, image="square resize, centre crop (bilinear), offset rescale",
           scale="1/temperature", notes="text cut at 64 tokens, as AlignProcessor does"),
    Family("altclip", "AltCLIP", ("altclip",), "BAAI's AltCLIP (XLM-R text tower)", "BAAI/AltCLIP",
           image=CLIP_IMAGE),
    Family("chinese-clip", "Chinese CLIP", ("chinese_clip",), "OFA-Sys Chinese CLIP (BERT tokenizer)",
           "OFA-Sys/chinese-clip-vit-base-patch16", image="square resize, centre crop (bicubic)"),
    Family("groupvit", "GroupViT", ("groupvit",), "NVIDIA's GroupViT", "nvidia/groupvit-gcc-yfcc", image=CLIP_IMAGE),
    Family("aimv2", "AIMv2 (LiT)", ("aimv2",), "Apple's AIMv2 with its LiT text tower",
           "apple/aimv2-large-patch14-224-lit", image=CLIP_IMAGE, scale="exp(clamped logit_scale)",
           attention="eager", notes="loaded with eager attention: transformers' SDPA path drops the text "
                                    "tower's causal mask (a caption's embedding then depends on its batch)"),
    Family("dual-encoder", "VisionTextDualEncoder", ("vision-text-dual-encoder",),
           "any vision and text tower joined with transformers' VisionTextDualEncoderModel",
           "a local folder", image="the vision tower's processor"),
    Family("open_clip", "open_clip", (), "any open_clip architecture with its weights (OpenAI, LAION, DataComp, "
           "DFN, SigLIP, SigLIP 2, MetaCLIP ...)", "open_clip:ViT-B-32 --weights open_clip_model.safetensors",
           padding="the tokenizer's own", image="open_clip's own transforms",
           fast="a reduced JPEG decode, then open_clip's transforms",
           score="sigmoid(scale * cos + bias) where the checkpoint has a logit_bias, else softmax(scale * cos)",
           needs="clipdata[open_clip]", notes="tokenizer, transforms, logit scale and bias are open_clip's"),
)

# Left out, and why (formats/models.md says the same).
LEFT_OUT = {
    "blip": "BlipModel's contrastive head is not what BLIP's retrieval checkpoints hold (BlipForImageTextRetrieval)",
    "blip-2": "get_image_features returns Q-Former query states, not one embedding per image",
    "flava": "get_image_features returns the patch sequence; FLAVA scores through its multimodal head",
    "owlvit, owlv2": "detection models: one embedding per box, scored by the zero-shot detection pipeline",
    "clipseg": "a segmentation decoder on CLIP: use the CLIP checkpoint it was built from",
    "tipsv2": "no published zero-shot classification recipe to be scored against",
    "x_clip, videoprism, clap": "video and audio towers, not images (videoprism's text tower scores videos)",
}

BY_KEY = {f.key: f for f in FAMILIES}
OPEN_CLIP_PREFIX = "open_clip:"


def family_for(model_type: str, tokenizer_class: str = "", vocab_size: int = 0) -> Family | None:
    """The family of a transformers checkpoint, or None when it is none of the table's."""
    if model_type == "siglip" and ("gemma" in tokenizer_class.lower() or vocab_size >= 256000):
        return BY_KEY["siglip2"]
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def read_checkpoint(folder: Path) -> tuple[str, str, int]:
    """(model_type, tokenizer_class, text vocabulary size) from a checkpoint folder's files."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    tok = folder / "tokenizer_config.json"
    tokenizer_class = ""
    if tok.is_file():
        try:
            tokenizer_class = str(json.loads(tok.read_text(encoding="utf-8")).get("tokenizer_class") or "")
        except (ValueError, OSError):
            pass
    text = config.get("text_config") or {}
    return str(config.get("model_type", "")), tokenizer_class, int(text.get("vocab_size") or 0)
