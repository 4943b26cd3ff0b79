"""The CLIP engine: the model only. Load a model of one of the families in `families` (with
transformers, or open_clip for `open_clip:ARCH`) and turn pixel batches and captions into
unit vectors, tokenizing and reading the logit scale and bias the way the family's authors
do. Caching, image loading and distribution live beside it in clipdata.embedding; scoring
lives in clipdata.scoring.

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
from ..names import is_utf8, quoted
from .families import OPEN_CLIP_PREFIX, SIGMOID, Family, family_for, read_checkpoint

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
    """Native bfloat16 arithmetic (AVX-512 BF16 or AMX), where bfloat16 beats float32."""
    from ..machine import native_bf16

    return native_bf16()


_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def looks_like_path(model: str) -> bool:
    """Whether --model names a folder rather than a hub id (`org/name`, `name`): an absolute
    or home-relative path, one starting with `.`, ending with a separator, with a backslash or
    more than one `/`, or anything on disk. Such a name that is no folder is refused at once,
    never sent to the hub (offline, that is 40 s of retries before a misleading error).
    `open_clip:…` names an open_clip model (its own `local-dir:` path included), never a folder."""
    if model.startswith(OPEN_CLIP_PREFIX):
        return False
    return (model.startswith(("/", "~", ".", "\\")) or model.endswith(("/", "\\")) or "\\" in model
            or model.count("/") > 1 or bool(_WINDOWS_DRIVE.match(model)) or os.path.lexists(model))


@dataclass(frozen=True)
class ModelSpec:
    """Which model, on which device, in which dtype: all an engine needs. `weights`: the
    checkpoint file or hf-hub: name of an `open_clip:ARCH` model."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    weights: str | None = None

    def check(self) -> "ModelSpec":
        if not self.model.strip():  # Path("") is the current folder: never load from wherever the user stands
            raise OptionError("--model is empty", hint="give a local model folder or a Hugging Face id "
                                                      "such as openai/clip-vit-base-patch32")
        if looks_like_path(self.model) and not Path(self.model).expanduser().is_dir():
            what = "is not a folder" if Path(self.model).expanduser().exists() else "no such folder"
            raise ModelError(f"--model {self.model}: {what}",
                             hint="give a local model folder (config.json, weights, processor files), "
                                  "or a Hugging Face id such as openai/clip-vit-base-patch32")
        if self.device not in DEVICES:
            raise OptionError(f"--device {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise OptionError(f"--dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.weights is not None and not self.model.startswith(OPEN_CLIP_PREFIX):
            raise OptionError(f"--weights is for open_clip models; --model {self.model} loads its own weights",
                              hint="pass --model open_clip:ARCH --weights FILE, or leave --weights out")
        return self


def resolve_model(name: str) -> str:
    """The model as it resolves: a local folder as its absolute path (what a file records,
    so it still names the model from another working folder), anything else (a hub id) as
    given."""
    local = Path(name).expanduser()
    return str(local.resolve()) if local.is_dir() else name


def _fingerprint(path: Path) -> str:
    """Identify local weights cheaply: the config files' bytes, and each weight file's size and
    its first and last MiB (a full hash of gigabytes would cost seconds per run). `path`: a
    model folder, or one weight file."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()) if path.is_dir() else [path]:
        if f.name in ("config.json", "preprocessor_config.json", "tokenizer_config.json", "open_clip_config.json"):
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


def _store_matmul_weights(model, engine: "Engine"):
    """On a CPU running bfloat16 autocast, keep the Linear and Conv2d weights in bfloat16:
    autocast casts them to bfloat16 at every call anyway (the same rounding), so the
    embeddings are bit for bit the same (tested), without a cast of every weight per batch,
    in half the memory (measured ~1-4% less CPU per image). The layers autocast keeps in
    float32 (LayerNorm, the embeddings' sums) keep their float32 weights. Only the CLIP
    family, where that equality is tested; the others keep autocast's own casts."""
    torch = engine.torch
    if engine.device != "cpu" or engine.dtype != "bfloat16" or engine.family is None or engine.family.key != "clip":
        return model
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            module.to(torch.bfloat16)
    return model


class Engine:
    """A model of one of the families with its processor; `embed_images` and `embed_texts`
    return unit vectors. The weights load on first use, so a run whose embeddings are all
    cached never loads them (the family is read from the checkpoint's config.json)."""

    def __init__(self, spec=None) -> None:
        """`spec`: a ModelSpec, or anything with its fields (an EngineSpec); kept as `.spec`."""
        torch, self._transformers = _torch()
        self.spec = spec if spec is not None else ModelSpec()
        spec = self.spec
        ModelSpec(spec.model, spec.device, spec.dtype, getattr(spec, "weights", None)).check()
        self.torch = torch
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if spec.device == "auto" else spec.device
        if self.device == "cuda" and not torch.cuda.is_available():
            raise OptionError("--device cuda: no CUDA device is available", hint="use --device cpu or auto")
        if spec.dtype == "auto":
            self.dtype = "float16" if self.device == "cuda" else ("bfloat16" if cpu_has_bf16() else "float32")
        else:
            self.dtype = spec.dtype
        self._model = self._processor = None
        self._vocabulary_ok: bool | None = None
        self._scalars: tuple[str, float, float] | None = None
        self._backend = None
        if spec.model.startswith(OPEN_CLIP_PREFIX):
            from .openclip import OpenClip

            self._backend = OpenClip(spec.model[len(OPEN_CLIP_PREFIX):], getattr(spec, "weights", None), _fingerprint)
            self.family: Family | None = self._backend.family
            source = self._backend.identity
        else:
            source, self.family = self._source(spec.model)
        self._source_id = source
        self._identity = f"{source}#{self.family.rules}:{self.dtype}" if self.family else None

    @property
    def identity(self) -> str:
        """name@weights-fingerprint#family-rules:dtype, the embedding cache's key."""
        if self._identity is None:  # no config.json to read: the loaded model says which family
            self._load()
        return self._identity  # type: ignore[return-value]

    @staticmethod
    def _source(name: str) -> tuple[str, Family | None]:
        """Which weights (a local folder's fingerprint, or the hub snapshot's commit), and the
        family its config.json names (None where no config can be read without loading)."""
        local = Path(name).expanduser()
        folder = None
        source = name
        if local.is_dir():
            # the folder wherever it was named from: one identity for one folder
            source, folder = f"{local.resolve()}@{_fingerprint(local)}", local
        else:
            try:
                from huggingface_hub import try_to_load_from_cache

                cached = try_to_load_from_cache(name, "config.json")
                if isinstance(cached, str):
                    source, folder = f"{name}@{Path(cached).parent.name}", Path(cached).parent
            except Exception:  # no hub library or an odd name: the name alone
                pass
        family = None
        if folder is not None and (folder / "config.json").is_file():
            try:
                family = family_for(*read_checkpoint(folder))
            except (ValueError, OSError, TypeError):
                family = None  # the load says what is wrong with it
        return source, family

    def _load(self) -> None:
        with IMPORT_LOCK:  # from_pretrained imports the model's own code lazily; one load at a time
            if self._model is None:
                self._load_unlocked()

    def _load_unlocked(self) -> None:
        if self._backend is not None:
            self._backend.load(self.device)
            self._model, self._processor = self._backend.model, None
            self._scalars = self._backend.scalars
            return
        transformers, name = self._transformers, self.spec.model
        local = Path(name).expanduser()
        try:
            kwargs = {"local_files_only": True} if local.is_dir() or os.environ.get("HF_HUB_OFFLINE") else {}
            source = str(local) if local.is_dir() else name
            if self.family is not None and self.family.attention:
                kwargs["attn_implementation"] = self.family.attention
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
                             hint="use a model of a family `clipdata models` lists")
        if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
            raise ModelError(f"model {name!r} has no image processor and tokenizer")
        model_type = getattr(model.config, "model_type", "")
        family = family_for(model_type, type(processor.tokenizer).__name__,
                            int(getattr(getattr(model.config, "text_config", None), "vocab_size", 0) or 0))
        if family is None:
            raise ModelError(f"model {name!r} is a {model_type!r} model, not one of the families clipdata scores",
                             hint="`clipdata models` lists them and says why others are left out")
        if self.family is not None and family is not self.family:  # config.json and the loaded model disagree
            raise ModelError(f"model {name!r}: its files name the {self.family.name} family, the loaded model "
                             f"is {family.name}", hint="re-download or re-save the model folder")
        if family.attention and not self.family:  # learnt only now: load again as the family needs
            self.family = family
            return self._load_unlocked()
        self.family = family
        if self._identity is None:
            self._identity = f"{self._source_id}#{family.rules}:{self.dtype}"
        self._model, self._processor = _store_matmul_weights(model.to(self.device).eval(), self), processor
        self._scalars = (family.score, _scale(model, family), _bias(model, family))

    @property
    def model(self):
        if self._model is None:
            self._load()
        return self._model

    @property
    def processor(self):
        """The transformers processor (None for open_clip models)."""
        if self._model is None:
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

    def tokenize(self, texts: Sequence[str]) -> dict:
        """The text tower's inputs for these captions, as the family's authors make them: padded
        to the longest caption where the tower masks padding, to a fixed length where it was
        trained so (SigLIP: 64); lowercased where the authors lowercase. A caption's tokens never
        depend on the other captions of its batch."""
        model = self.model
        self._check_text(texts)
        if self._backend is not None:
            return self._backend.tokenize(texts)
        family = self.family
        if family.lowercase:
            texts = [t.lower() for t in texts]
        length = min(family.text_length or self._text_length(), self._text_length())
        padding = "max_length" if family.padding == "max_length" else True
        tok = self.processor.tokenizer(list(texts), padding=padding, truncation=True, max_length=length,
                                       return_tensors="pt")
        accepted = _accepted(model.get_text_features)
        return {k: v for k, v in tok.items() if accepted is None or k in accepted}

    def _check_text(self, texts: Sequence[str]) -> None:
        """Refuse what would embed as noise, not as the words: text with an undecodable byte,
        and a tokenizer that knows only its special tokens (a model folder saved without its
        tokenizer files: transformers then builds an empty one, and every query is the same)."""
        bad = next((t for t in texts if not is_utf8(t)), None)
        if bad is not None:
            raise OptionError(f"the text {quoted(bad)} is not UTF-8", hint="give captions and queries in UTF-8")
        if self._backend is not None:  # open_clip: its own tokenizer, always whole
            return
        if self._vocabulary_ok is None:
            tokenizer = self.processor.tokenizer
            self._vocabulary_ok = bool(set(tokenizer.get_vocab().values()) - set(tokenizer.all_special_ids))
        if not self._vocabulary_ok:
            raise ModelError(f"model {self.spec.model!r} has no tokenizer vocabulary: its folder lacks the "
                             "tokenizer files (tokenizer.json, vocab.json and merges.txt, or a sentencepiece model)",
                             hint="copy them from the model's original folder into --model (tokenizer.save_pretrained)")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit text embeddings, tokenized by the family's rules (`tokenize`)."""
        torch = self.torch
        out = []
        with torch.inference_mode(), self._autocast():
            for i in range(0, len(texts), 256):
                tok = {k: v.to(self.device) for k, v in self.tokenize(texts[i:i + 256]).items()}
                if self._backend is not None:
                    out.append(self._unit(self._backend.text_features(tok)))
                else:
                    out.append(self._unit(self._features(self.model.get_text_features(**tok))))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def _text_length(self) -> int:
        """The text tower's positions: a longer query is cut there, never an error (tokenizers
        saved without model_max_length would not cut at all). RoBERTa-style towers (AltCLIP)
        number positions from 2."""
        config = getattr(self.model.config, "text_config", self.model.config)
        positions = int(getattr(config, "max_position_embeddings", 77))
        return positions - 2 if self.family.key == "altclip" else positions

    def embed_pixels(self, pixel_values) -> np.ndarray:
        """Unit image embeddings of one batch: a pixel tensor, or a dict of the image tower's
        inputs (SigLIP 2 NaFlex: pixel_values, pixel_attention_mask, spatial_shapes)."""
        torch = self.torch
        inputs = pixel_values if isinstance(pixel_values, dict) else {"pixel_values": pixel_values}
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode(), self._autocast():
            if self._backend is not None:
                return self._unit(self._backend.image_features(inputs["pixel_values"]))
            return self._unit(self._features(self.model.get_image_features(**inputs)))

    def preparer(self, exact: bool):
        """path -> the image tower's input for one file (the loader's job, picklable): the
        fast path unless `exact` or the family's preprocessing has no fast path with parity."""
        model = self.model  # noqa: F841  (loads the processor)
        if self._backend is not None:
            return self._backend.preparer(exact)
        from .preprocess import preparer

        return preparer(self.processor.image_processor, exact, self.family.image_inputs)

    def describe(self) -> str:
        family = f" ({self.family.name})" if self.family else ""
        return f"{self.spec.model}{family} on {self.device} in {self.dtype}"


def _accepted(method) -> set[str] | None:
    """The keyword names a model method takes (None: it takes any)."""
    import inspect

    params = inspect.signature(method).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()) and len(params) <= 1:
        return None
    return {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}


def _scale(model, family: Family) -> float:
    """The factor on the cosine similarity, read as the family's model applies it."""
    if family.scale == "1/temperature":
        return float(1.0 / model.temperature.item())
    if not hasattr(model, "logit_scale"):
        return 100.0
    value = model.logit_scale
    if family.scale.startswith("exp(clamped") and hasattr(model, "max_log_logit_scale"):
        value = value.clamp(0.0, model.max_log_logit_scale)
    return float(value.exp().item())


def _bias(model, family: Family) -> float:
    bias = getattr(model, "logit_bias", None) if family.score == SIGMOID else None
    return float(bias.item()) if bias is not None else 0.0
