"""The open_clip backend of the engine: `--model open_clip:ARCH --weights FILE` (an
open_clip_model.safetensors / .bin / .pt, or a pretrained tag open_clip knows), or
`--model open_clip:hf-hub:ORG/NAME`, or `open_clip:local-dir:DIR`. Scored as open_clip scores
its checkpoints: its tokenizer (fixed length: a caption never depends on its batch), its image
transforms, its logit scale, and its logit bias (a sigmoid, SigLIP's way) where it has one.

The fast path decodes JPEGs at a reduced DCT scale, never below twice the transform's resize,
then runs open_clip's own transforms; --exact-preprocess runs them on the full decode.
`pip install 'clipdata[open_clip]'`; open_clip is imported only when such a model is used.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..errors import ClipdataError, OptionError
from .families import BY_KEY, SIGMOID, SOFTMAX

INSTALL_HINT = "install the open_clip extra: pip install 'clipdata[open_clip]'"


def _open_clip():
    try:
        import open_clip
    except ImportError as e:
        raise ClipdataError(f"open_clip models need open_clip_torch ({e.name or e} is not installed)",
                            hint=INSTALL_HINT) from None
    except Exception as e:  # a torchvision built for another torch fails here, not with ImportError
        raise ClipdataError(f"open_clip cannot be imported: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                            hint="open_clip needs a torchvision built for the installed torch "
                                 "(pip install 'clipdata[open_clip]' in a fresh environment)") from None
    return open_clip


class OpenClip:
    family = BY_KEY["open_clip"]

    def __init__(self, name: str, weights: str | None, fingerprint) -> None:
        """`fingerprint(path)`: the engine's cheap identity of weight files (a file or folder)."""
        if not name:
            raise OptionError("--model open_clip: names no architecture",
                              hint="pass --model open_clip:ViT-B-32 --weights FILE, or open_clip:hf-hub:ORG/NAME")
        self.name, self.weights = name, weights
        schema = name.split(":", 1)[0] if ":" in name else None
        if schema in ("hf-hub", "local-dir") and weights:
            raise OptionError(f"--weights: open_clip:{name} brings its own weights", hint="leave --weights out")
        if schema is None and not weights:
            raise OptionError(f"--model open_clip:{name} needs --weights (a checkpoint file or an open_clip "
                              "pretrained tag)", hint="or name a hub model: --model open_clip:hf-hub:ORG/NAME")
        if weights and (Path(weights).expanduser().suffix or "/" in weights) and not Path(weights).expanduser().is_file():
            raise OptionError(f"--weights {weights}: no such file", hint="pass the checkpoint file open_clip saved")
        self.identity = f"open_clip:{name}@{self._fingerprint(fingerprint)}"
        self.model = self.transform = self.tokenizer = None

    def _fingerprint(self, fingerprint) -> str:
        if self._is_file():
            return fingerprint(Path(self.weights).expanduser())
        if self.name.startswith("local-dir:"):
            folder = Path(self.name[len("local-dir:"):]).expanduser()
            return fingerprint(folder) if folder.is_dir() else "missing"
        return self.weights or "hub"

    def load(self, device: str) -> None:
        open_clip = _open_clip()
        try:
            model, _, transform = open_clip.create_model_and_transforms(
                self.name, pretrained=str(Path(self.weights).expanduser()) if self._is_file() else self.weights,
                device=device)
            tokenizer = open_clip.get_tokenizer(self.name)
        except Exception as e:  # open_clip raises RuntimeError, ValueError, FileNotFoundError, HTTP errors...
            raise ClipdataError(f"cannot load open_clip model {self.name!r}"
                                f"{f' with weights {self.weights}' if self.weights else ''}: "
                                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                                hint="check the architecture name (open_clip.list_models()) and that the weights "
                                     "are its checkpoint") from None
        self.model, self.transform, self.tokenizer = model.eval(), transform, tokenizer

    def _is_file(self) -> bool:
        return bool(self.weights) and Path(self.weights).expanduser().is_file()

    @property
    def scalars(self) -> tuple[str, float, float]:
        bias = getattr(self.model, "logit_bias", None)
        scale = float(self.model.logit_scale.exp().item())
        return (SIGMOID, scale, float(bias.item())) if bias is not None else (SOFTMAX, scale, 0.0)

    def tokenize(self, texts) -> dict:
        return {"text": self.tokenizer(list(texts))}

    def text_features(self, tok: dict):
        return self.model.encode_text(tok["text"])

    def image_features(self, pixels):
        return self.model.encode_image(pixels)

    def preparer(self, exact: bool) -> "OpenClipPreprocess":
        return OpenClipPreprocess(self.transform, reduce=not exact)


class OpenClipPreprocess:
    """path -> open_clip's input tensor: decoded (EXIF applied, transparency on white), reduced
    for JPEGs on the fast path, then open_clip's own transforms. Picklable."""

    def __init__(self, transform, reduce: bool, draft_factor: float = 2.0, max_reduction: int = 4) -> None:
        self.transform, self.reduce = transform, reduce
        self.draft_factor, self.max_reduction = draft_factor, max_reduction
        self.target = _resize_target(transform)

    def __call__(self, path: str, observe=None):
        """`observe(decoded RGB image, full displayed (height, width))`, as FastPreprocess."""
        import warnings

        from PIL import Image, ImageOps

        from ..images import ORIENTATION, Unreadable, decode_reason
        from .preprocess import _SWAPS, JPEG_MAGIC, to_rgb

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(path)
                w, h = img.size
                shown = (w, h) if img.getexif().get(ORIENTATION, 1) in _SWAPS else (h, w)
                if self.reduce and self.target and img.format in ("JPEG", "MPO"):
                    with open(path, "rb") as fh:
                        if fh.read(3) == JPEG_MAGIC:
                            img.draft(img.mode if img.mode in ("RGB", "L") else None, self._needed(img))
                img = to_rgb(ImageOps.exif_transpose(img))
                if observe is not None:
                    observe(img, shown)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise Unreadable(f"larger than Pillow's safety limit ({e})") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise Unreadable(decode_reason(e)) from None
        return self.transform(img)

    def _needed(self, img) -> tuple[int, int]:
        """The smallest stored size a reduced decode may have: twice the resize target on the
        side that sets it, and no less than 1/max_reduction of the stored size."""
        w, h = img.size
        if isinstance(self.target, int):
            scale = self.draft_factor * self.target / min(w, h)
            need = (math.ceil(w * scale), math.ceil(h * scale))
        else:  # (height, width), squashed: either orientation may be stored
            side = self.draft_factor * max(self.target)
            need = (math.ceil(side), math.ceil(side))
        return max(need[0], math.ceil(w / self.max_reduction)), max(need[1], math.ceil(h / self.max_reduction))


def _resize_target(transform):
    """The first Resize's size in open_clip's transforms: an int (shortest edge) or (h, w)."""
    for t in getattr(transform, "transforms", []):
        if type(t).__name__ == "Resize":
            size = t.size
            if isinstance(size, int) or (isinstance(size, (list, tuple)) and len(size) == 1):
                return int(size if isinstance(size, int) else size[0])
            return tuple(int(s) for s in size)
    return None  # transforms this path does not know: the reduced decode is not used
