"""The CLIP engine: the model only. Load any CLIP-family model with transformers and turn
pixel batches and captions into unit vectors. Caching, image loading and distribution live
beside it in clipdata.embedding; scoring lives in clipdata.scoring.

torch and transformers are imported only when an engine is made (`pip install clipdata[clip]`),
so `import clipdata` and `clipdata convert` never load them.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import ClipdataError, OptionError, first_line

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
INSTALL_HINT = "install the CLIP extra: pip install 'clipdata[clip]'"
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


class ModelError(ClipdataError):
    """The model cannot be loaded or is not a CLIP-family model."""


# transformers imports lazily (its top-level names, each model's code on first from_pretrained),
# and two threads importing at once can see a half-made module ("module 'transformers' has no
# attribute 'AutoModel'": a server's warm-up beside its first request). Every import and load
# of theirs in this package goes through this lock.
IMPORT_LOCK = threading.RLock()


def _torch():
    with IMPORT_LOCK:
        try:
            import torch
            import transformers

            transformers.AutoModel, transformers.AutoProcessor  # noqa: B018  (the lazy names, made here)
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


_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def looks_like_path(model: str) -> bool:
    """Whether --model names a folder rather than a hub id (`org/name`, `name`): an absolute
    or home-relative path, one starting with `.`, ending with a separator, with a backslash or
    more than one `/`, or anything on disk. Such a name that is no folder is refused at once,
    never sent to the hub (offline, that is 40 s of retries before a misleading error)."""
    return (model.startswith(("/", "~", ".", "\\")) or model.endswith(("/", "\\")) or "\\" in model
            or model.count("/") > 1 or bool(_WINDOWS_DRIVE.match(model)) or os.path.lexists(model))


@dataclass(frozen=True)
class ModelSpec:
    """Which model, on which device, in which dtype: all an engine needs."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"

    def check(self) -> "ModelSpec":
        if looks_like_path(self.model) and not Path(self.model).expanduser().is_dir():
            what = "is not a folder" if Path(self.model).expanduser().exists() else "no such folder"
            raise ModelError(f"--model {self.model}: {what}",
                             hint="give a local model folder (config.json, weights, processor files), "
                                  "or a Hugging Face id such as openai/clip-vit-base-patch32")
        if self.device not in DEVICES:
            raise OptionError(f"--device {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise OptionError(f"--dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        return self


def resolve_model(name: str) -> str:
    """The model as it resolves: a local folder as its absolute path (what a file records,
    so it still names the model from another working folder), anything else (a hub id) as
    given."""
    local = Path(name).expanduser()
    return str(local.resolve()) if local.is_dir() else name


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


def _root_cause(e: BaseException) -> BaseException:
    """The first exception of a chain (`raise ... from`, or raised while handling another)."""
    seen = {id(e)}
    while (nxt := e.__cause__ or e.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        e = nxt
    return e


class Engine:
    """A CLIP-family model with its processor; `embed_images` and `embed_texts` return unit
    vectors. The weights load on first use, so a run whose embeddings are all cached never
    loads them."""

    def __init__(self, spec=None) -> None:
        """`spec`: a ModelSpec, or anything with its fields (an EngineSpec); kept as `.spec`."""
        torch, self._transformers = _torch()
        self.spec = spec if spec is not None else ModelSpec()
        spec = self.spec
        ModelSpec(spec.model, spec.device, spec.dtype).check()
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
        if local.is_dir():  # the folder wherever it was named from: one identity for one folder
            return f"{local.resolve()}@{_fingerprint(local)}"
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
            if isinstance(cached, str):
                return f"{name}@{Path(cached).parent.name}"
        except Exception:  # no hub library or an odd name: the name alone
            pass
        return name

    def _load(self) -> None:
        with IMPORT_LOCK:  # from_pretrained imports the model's own code lazily; one load at a time
            if self._model is None:
                self._load_unlocked()

    def _load_unlocked(self) -> None:
        transformers, name = self._transformers, self.spec.model
        local = Path(name).expanduser()
        try:
            kwargs = {"local_files_only": True} if local.is_dir() or os.environ.get("HF_HUB_OFFLINE") else {}
            source = str(local) if local.is_dir() else name
            model = transformers.AutoModel.from_pretrained(source, **kwargs)
            processor = transformers.AutoProcessor.from_pretrained(source, **kwargs)
        except Exception as e:  # transformers raises OSError, ValueError, HTTP errors...
            root = _root_cause(e)
            if isinstance(root, (ImportError, RuntimeError, AttributeError)) and not isinstance(root, OSError):
                # a broken install (torchvision whose ops do not load, say), not a missing model
                raise ModelError(
                    f"cannot load model {name!r}: a library failed to import: {type(root).__name__}: {first_line(root)}",
                    hint="repair or uninstall the package it names (a torchvision built for another torch "
                         "is the usual one: pip uninstall torchvision)") from None
            raise ModelError(
                f"cannot load model {name!r}: {first_line(e)}",
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

    @property
    def scalars(self) -> tuple[str, float, float]:
        """(kind, logit scale, logit bias), read from the weights (which this loads)."""
        if self._scalars is None:
            self._load()
        return self._scalars  # type: ignore[return-value]

    def set_scalars(self, scalars: tuple[str, float, float]) -> None:
        """Known scalars (a cache recorded them): scoring then needs no weights."""
        self._scalars = scalars

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

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit text embeddings, in batches padded to the longest caption (not to 77 tokens)."""
        torch = self.torch
        out = []
        with torch.inference_mode(), self._autocast():
            for i in range(0, len(texts), 256):
                tok = self.processor.tokenizer(list(texts[i:i + 256]), padding=True, truncation=True,
                                               max_length=self._text_length(), return_tensors="pt").to(self.device)
                out.append(self._unit(self._features(self.model.get_text_features(**tok))))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def _text_length(self) -> int:
        """The text tower's positions: a longer query is cut there, never an error (tokenizers
        saved without model_max_length would not cut at all)."""
        config = getattr(self.model.config, "text_config", self.model.config)
        return int(getattr(config, "max_position_embeddings", 77))

    def embed_pixels(self, pixel_values) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode(), self._autocast():
            return self._unit(self._features(self.model.get_image_features(pixel_values=pixel_values.to(self.device))))

    def describe(self) -> str:
        return f"{self.spec.model} on {self.device} in {self.dtype}"

