"""The CLIP engine: load any CLIP-family model with transformers, embed images and texts in
batches, and score images against captions. Every command that embeds goes through here.

torch and transformers are imported only when an engine is made (`pip install clipdata[clip]`),
so `import clipdata` and `clipdata convert` never load them.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import ClipdataError, OptionError

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
INSTALL_HINT = "install the CLIP extra: pip install 'clipdata[clip]'"
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


class ModelError(ClipdataError):
    """The model cannot be loaded or is not a CLIP-family model."""


def _torch():
    try:
        import torch
        import transformers
    except ImportError as e:
        raise ClipdataError(f"the CLIP commands need torch and transformers ({e.name} is not installed)",
                            hint=INSTALL_HINT) from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return torch, transformers


def cpu_has_bf16() -> bool:
    """Native bfloat16 arithmetic (AVX-512 BF16 or AMX), where bfloat16 is ~3.4x float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to make an engine: small and picklable, so a worker process (or a
    Ray task) can build its own copy."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 16
    workers: int | None = None  # image decode/preprocess processes; None: one per CPU
    draft: bool = False  # JPEG draft-mode decoding: faster, pixels differ slightly
    backend: str = "local"  # where images are embedded: "local" or "ray"
    ray_address: str | None = None  # None: start a local Ray
    num_actors: int | None = None  # Ray actors; None: what the cluster has room for

    def check(self) -> "EngineSpec":
        if self.backend not in ("local", "ray"):
            raise OptionError(f"--engine {self.backend!r} is not one of local, ray")
        if self.device not in DEVICES:
            raise OptionError(f"--device {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise OptionError(f"--dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.batch_size < 1:
            raise OptionError(f"--batch-size {self.batch_size} must be at least 1")
        return self


@dataclass
class EmbedStats:
    images: int = 0
    cache_hits: int = 0
    seconds: float = 0.0
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> reason
    failed: dict[str, str] = field(default_factory=dict)  # path -> why its task failed (distributed runs)


def _fingerprint(path: Path) -> str:
    """Identify local weights cheaply: config bytes, and each weight file's size and its
    first and last MiB (a full hash of gigabytes would cost seconds per run)."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.name == "config.json":
            h.update(f.read_bytes())
        elif f.suffix in (".safetensors", ".bin", ".pt", ".pth"):
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(-(1 << 20), 2)
                    h.update(fh.read())
    return h.hexdigest()[:16]


class Engine:
    """A CLIP-family model with its processor; `embed_images` and `embed_texts` return unit
    vectors. The weights load on first use, so a run whose embeddings are all cached never
    loads them."""

    def __init__(self, spec: EngineSpec = EngineSpec()) -> None:
        torch, self._transformers = _torch()
        self.spec = spec.check()
        self.torch = torch
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if spec.device == "auto" else spec.device
        if self.device == "cuda" and not torch.cuda.is_available():
            raise OptionError("--device cuda: no CUDA device is available", hint="use --device cpu or auto")
        if spec.dtype == "auto":
            self.dtype = "float16" if self.device == "cuda" else ("bfloat16" if cpu_has_bf16() else "float32")
        else:
            self.dtype = spec.dtype
        self._model = self._processor = None
        self.identity = f"{self._source_identity(spec.model)}:{self.dtype}"
        self._scalars: tuple[str, float, float] | None = None

    @staticmethod
    def _source_identity(name: str) -> str:
        """Which weights: a local folder's fingerprint, or the hub snapshot's commit."""
        local = Path(name).expanduser()
        if local.is_dir():
            return f"{name}@{_fingerprint(local)}"
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
            if isinstance(cached, str):
                return f"{name}@{Path(cached).parent.name}"
        except Exception:  # no hub library or an odd name: the name alone
            pass
        return name

    def _load(self) -> None:
        transformers, name = self._transformers, self.spec.model
        local = Path(name).expanduser()
        try:
            kwargs = {"local_files_only": True} if local.is_dir() or os.environ.get("HF_HUB_OFFLINE") else {}
            source = str(local) if local.is_dir() else name
            model = transformers.AutoModel.from_pretrained(source, **kwargs)
            processor = transformers.AutoProcessor.from_pretrained(source, **kwargs)
        except Exception as e:  # transformers raises OSError, ValueError, HTTP errors...
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(
                f"cannot load model {name!r}: {first}",
                hint="point --model at a local directory with the model's config.json, weights and "
                     "tokenizer/processor files (save_pretrained, or `hf download MODEL --local-dir DIR`)",
            ) from None
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise ModelError(f"model {name!r} ({type(model).__name__}) has no image and text towers",
                             hint="use a CLIP-family model (CLIP, SigLIP, ...)")
        if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
            raise ModelError(f"model {name!r} has no image processor and tokenizer")
        self._model, self._processor = model.to(self.device).eval(), processor
        kind = "siglip" if "siglip" in getattr(model.config, "model_type", "") else "clip"
        scale = float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 100.0
        bias = getattr(model, "logit_bias", None)
        self._scalars = (kind, scale, float(bias.item()) if bias is not None else 0.0)

    @property
    def model(self):
        if self._model is None:
            self._load()
        return self._model

    @property
    def processor(self):
        if self._processor is None:
            self._load()
        return self._processor

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def scalars(self, cache=None) -> tuple[str, float, float]:
        """(kind, logit scale, logit bias): from the cache when a run recorded them, else
        from the weights (and then recorded)."""
        if self._scalars is None and cache is not None:
            self._scalars = cache.scalars()
        if self._scalars is None:
            self._load()
        if cache is not None:
            cache.put_scalars(*self._scalars)
        return self._scalars  # type: ignore[return-value]

    def _autocast(self):
        torch = self.torch
        if self.dtype == "float32":
            return torch.autocast(self.device, enabled=False)
        return torch.autocast(self.device, dtype=getattr(torch, self.dtype))

    @staticmethod
    def _features(out) -> "torch.Tensor":
        """transformers 5 returns an output object whose pooler_output is the projection."""
        return out if hasattr(out, "norm") else out.pooler_output

    def _unit(self, t) -> np.ndarray:
        t = t.float()
        return (t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()

    def embed_texts(self, texts: Sequence[str], cache=None) -> np.ndarray:
        """Unit text embeddings, in batches padded to the longest caption (not to 77 tokens);
        with a cache, captions embedded before are not embedded again."""
        if cache is not None:
            from .cache import text_hash

            keys = [text_hash(t) for t in texts]
            known = cache.get("text", keys)
            missing = [t for t, k in zip(texts, keys) if k not in known]
            if missing:
                fresh = self.embed_texts(missing)
                cache.put("text", {text_hash(t): v for t, v in zip(missing, fresh)})
                known.update({text_hash(t): v for t, v in zip(missing, fresh)})
            return np.stack([known[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)
        torch = self.torch
        out = []
        with torch.inference_mode(), self._autocast():
            for i in range(0, len(texts), 256):
                tok = self.processor.tokenizer(list(texts[i:i + 256]), padding=True, truncation=True,
                                               return_tensors="pt").to(self.device)
                out.append(self._unit(self._features(self.model.get_text_features(**tok))))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def embed_pixels(self, pixel_values) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode(), self._autocast():
            return self._unit(self._features(self.model.get_image_features(pixel_values=pixel_values.to(self.device))))

    def scores(self, image_emb: np.ndarray, text_emb: np.ndarray, cache=None) -> np.ndarray:
        """Per image, a probability per class: softmax of CLIP's scaled cosine similarities,
        or for SigLIP an independent sigmoid per class (those need not sum to 1)."""
        kind, scale, bias = self.scalars(cache)
        return scores(image_emb, text_emb, kind, scale, bias)

    def describe(self) -> str:
        return f"{self.spec.model} on {self.device} in {self.dtype}"


def scores(image_emb: np.ndarray, text_emb: np.ndarray, kind: str, scale: float, bias: float = 0.0) -> np.ndarray:
    logits = scale * (image_emb @ text_emb.T) + bias
    if kind == "siglip":
        return 1.0 / (1.0 + np.exp(-logits))
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)
