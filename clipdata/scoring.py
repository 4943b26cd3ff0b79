"""Scoring images against classes: captions -> one text embedding per class (prompt
ensembling), and zero-shot probabilities. label, eval and the review app share it; the
few-shot probe (probe.py) starts from what this computes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Classes:
    names: list[str]
    captions: list[list[str]]  # per class, one or more captions (ensembled)


def class_embeddings(engine, classes: Classes, cache=None) -> np.ndarray:
    """One unit vector per class: the mean of its captions' unit embeddings, renormalised
    (the CLIP paper's prompt ensembling). Each caption is embedded once per run."""
    from .embedding import embed_texts

    flat = [c for caps in classes.captions for c in caps]
    emb = embed_texts(engine, flat, cache)
    out, i = [], 0
    for caps in classes.captions:
        v = emb[i:i + len(caps)].mean(axis=0)
        out.append(v / np.linalg.norm(v))
        i += len(caps)
    return np.stack(out)


def scores(image_emb: np.ndarray, text_emb: np.ndarray, kind: str, scale: float, bias: float = 0.0) -> np.ndarray:
    """Per image, a probability per class: softmax of CLIP's scaled cosine similarities, or
    for SigLIP an independent sigmoid per class (those need not sum to 1)."""
    logits = scale * (image_emb @ text_emb.T) + bias
    if kind == "siglip":
        return 1.0 / (1.0 + np.exp(-logits))
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def zero_shot(engine, image_emb: np.ndarray, text_emb: np.ndarray, cache=None) -> np.ndarray:
    """`scores` with the engine's own kind, logit scale and bias (cached when known)."""
    from .embedding import model_scalars

    kind, scale, bias = model_scalars(engine, cache)
    return scores(image_emb, text_emb, kind, scale, bias)
