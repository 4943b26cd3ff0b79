"""The fast image path: decode and preprocess one file into the model's input tensor.

A model's own image processor decodes the whole file, copies it between PIL and NumPy
several times and resizes from full resolution: ~44 ms per 1080p JPEG, ~320 ms per 12 MP
photo on one core. This path reads the same settings from the processor (size, crop,
resample filter, mean/std, RGB conversion) and applies them with the same arithmetic, but
decodes JPEGs at a reduced DCT scale (libjpeg's 1/2, 1/4, 1/8) that never goes below twice
the size the image is resized to, and resizes straight from the decoded pixels to the crop.
Pixels differ from the processor's only through that reduced decode; other formats match it.

SigLIP 2 NaFlex keeps the aspect ratio: the image is resized to the largest grid of whole
patches within `max_num_patches` (the processor's own size search), cut into patches and
padded, with the mask and grid shape the image tower takes beside the pixels.
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..images import ORIENTATION, Unreadable, decode_reason

JPEG_MAGIC = b"\xff\xd8\xff"
# EXIF orientations that swap width and height, and the transposes that undo each orientation
_SWAPS = (5, 6, 7, 8)
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
# torchvision InterpolationMode names -> Pillow filters (what transformers maps them to)
_PIL_FILTERS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
_BACKENDS = ("PilBackend", "TorchvisionBackend")


def _mode_name(decoder: str, draft_factor: float, max_reduction: int) -> str:
    return f"fast-{decoder}-x{draft_factor:g}-r{max_reduction}"


FAST_MODE = _mode_name("pillow", 2.0, 4)  # the cache mode of the default settings


Observer = Callable[[Image.Image, tuple[int, int]], None]


class UnsupportedProcessor(ValueError):
    """The processor does something this path does not reproduce; use the processor itself."""


def _field(size, key: str):
    if size is None:
        return None
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _normalising_table(processor, backend: str) -> np.ndarray:
    """(3, 256) float32: each channel's output for each 8-bit input, computed with the
    processor's own operations and dtypes, so normalisation is bit for bit the processor's."""
    x = np.arange(256, dtype=np.uint8)
    mean = processor.image_mean if processor.do_normalize else None
    std = processor.image_std if processor.do_normalize else None
    mean = [mean] * 3 if isinstance(mean, (int, float)) else mean
    std = [std] * 3 if isinstance(std, (int, float)) else std
    rows = []
    for c in range(3):
        if backend == "TorchvisionBackend":  # rescale fused into mean/std, in float32 torch
            import torch

            v = torch.from_numpy(x).to(torch.float32)
            if processor.do_normalize and processor.do_rescale:
                m = torch.tensor(mean, dtype=torch.float32) * (1.0 / processor.rescale_factor)
                s = torch.tensor(std, dtype=torch.float32) * (1.0 / processor.rescale_factor)
                v = (v - m[c]) / s[c]
            elif processor.do_normalize:
                v = (v - torch.tensor(mean, dtype=torch.float32)[c]) / torch.tensor(std, dtype=torch.float32)[c]
            elif processor.do_rescale:
                v = v * processor.rescale_factor
            rows.append(v.numpy())
        else:  # NumPy: rescale in float64 then float32, normalise in float32
            v = (x.astype(np.float64) * processor.rescale_factor).astype(np.float32) if processor.do_rescale \
                else x.astype(np.float32)
            if processor.do_normalize:
                v = (v - np.float32(mean[c])) / np.float32(std[c])
            rows.append(v.astype(np.float32))
    return np.stack(rows)


# Processors whose own steps are the backend's resize and crop, then only per-value arithmetic
# (ALIGN's EfficientNet: a rescale with an offset, and a second division by the std), so the
# processor itself, run on every 8-bit value once, gives the whole normalising table.
_POINTWISE_STEPS = {"EfficientNetImageProcessorPil": "PilBackend"}


def _probed_table(processor) -> np.ndarray:
    """(3, 256): the processor's output for each 8-bit value of each channel, without resizing."""
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)  # 1 x 256, RGB
    out = processor(images=Image.fromarray(ramp), do_resize=False, do_center_crop=False, return_tensors="np")
    return np.ascontiguousarray(out["pixel_values"][0][:, 0, :], dtype=np.float32)


def _resample(value, backend: str) -> int:
    if value is None:
        return Image.Resampling.BILINEAR
    if hasattr(value, "value") and isinstance(value.value, str):  # torchvision InterpolationMode
        return _PIL_FILTERS.get(value.value, Image.Resampling.BILINEAR)
    return int(value)


def _aspect_size(h: int, w: int, short: int, longest: int | None) -> tuple[int, int]:
    """transformers' resize target for shortest_edge (with an optional longest_edge cap)."""
    if longest is None:  # get_resize_output_image_size(default_to_square=False)
        lo, hi = (w, h) if w <= h else (h, w)
        new_lo, new_hi = short, int(short * hi / lo)
        return (new_hi, new_lo) if w <= h else (new_lo, new_hi)
    raw = None  # get_size_with_aspect_ratio
    if max(h, w) / min(h, w) * short > longest:
        raw = longest * min(h, w) / max(h, w)
        short = int(round(raw))
    if (h <= w and h == short) or (w <= h and w == short):
        return h, w
    if w < h:
        return (int(raw * h / w) if raw is not None else int(short * h / w)), short
    return short, (int(raw * w / h) if raw is not None else int(short * w / h))


@dataclass(frozen=True)
class FastPreprocess:
    """Decode + resize + crop + normalise as the model's processor specifies. Picklable,
    so DataLoader workers and Ray actors carry their own copy."""

    backend: str  # "PilBackend" or "TorchvisionBackend": whose resize arithmetic to follow
    resize: str | None  # "short" (shortest edge, aspect kept), "fixed" (height x width) or None
    size: tuple[int, ...]  # short: (shortest, longest or 0); fixed: (height, width)
    crop: tuple[int, int] | None  # (height, width)
    resample: int
    convert_rgb: bool  # the processor's setting; images reach the model as RGB either way (`to_rgb`)
    table: np.ndarray  # (3, 256) normalising table
    draft_factor: float = 2.0  # decode JPEGs no smaller than this times the resize target
    max_reduction: int = 4  # and at most 1/4 scale: libjpeg's 1/8 keeps only each block's mean
    decoder: str = "pillow"  # "pillow" (Image.draft) or "simplejpeg"

    @classmethod
    def from_processor(cls, processor, decoder: str = "pillow", draft_factor: float = 2.0,
                       max_reduction: int = 4) -> "FastPreprocess":
        """Read the settings of a transformers image processor (`processor.image_processor`);
        raises UnsupportedProcessor for one whose steps this path does not reproduce."""
        kind = type(processor)
        if kind.__name__ == "Siglip2ImageProcessorPil":  # NaFlex: its own steps, reproduced here
            if not processor.do_resize:
                raise UnsupportedProcessor(f"{kind.__name__} without its resize")
            return cls(backend="PilBackend", resize="patches",
                       size=(int(processor.patch_size), int(processor.max_num_patches)), crop=None,
                       resample=_resample(processor.resample, "PilBackend"), convert_rgb=True,
                       table=_normalising_table(processor, "PilBackend"), draft_factor=draft_factor,
                       max_reduction=max_reduction, decoder=decoder)
        backend = next((b for b in _BACKENDS if getattr(getattr(kind, "_preprocess", None), "__qualname__", "")
                        == f"{b}._preprocess"), None)
        pointwise = kind.__name__ in _POINTWISE_STEPS  # its own steps after the crop act on each value alone
        if pointwise:
            backend = _POINTWISE_STEPS[kind.__name__]
        if backend is None or any(getattr(kind, m).__qualname__.split(".")[0] not in (backend, "BaseImageProcessor")
                                  for m in ("preprocess", "resize", "center_crop", "process_image")):
            raise UnsupportedProcessor(f"{kind.__name__} has its own preprocessing steps")
        if getattr(processor, "do_pad", None):
            raise UnsupportedProcessor(f"{kind.__name__} pads images")
        size, resize = processor.size, None
        if processor.do_resize:
            short, longest = _field(size, "shortest_edge"), _field(size, "longest_edge")
            height, width = _field(size, "height"), _field(size, "width")
            if short:
                resize, dims = "short", (int(short), int(longest or 0))
            elif height and width:
                resize, dims = "fixed", (int(height), int(width))
            else:
                raise UnsupportedProcessor(f"{kind.__name__} resizes by {size}")
        crop = None
        if processor.do_center_crop:
            ch, cw = _field(processor.crop_size, "height"), _field(processor.crop_size, "width")
            if not (ch and cw):
                raise UnsupportedProcessor(f"{kind.__name__} crops by {processor.crop_size}")
            crop = (int(ch), int(cw))
        return cls(backend=backend, resize=resize, size=dims if resize else (), crop=crop,
                   resample=_resample(processor.resample, backend), convert_rgb=bool(processor.do_convert_rgb),
                   table=_probed_table(processor) if pointwise else _normalising_table(processor, backend),
                   draft_factor=draft_factor, max_reduction=max_reduction, decoder=decoder)

    @property
    def mode(self) -> str:
        """The cache's name for this path's pixels (the processor's own path is "processor"):
        decoders and scales that give other pixels never share cached embeddings."""
        return _mode_name(self.decoder, self.draft_factor, self.max_reduction)

    def target(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the displayed image is resized to, before the crop."""
        if self.resize == "short":
            return _aspect_size(height, width, self.size[0], self.size[1] or None)
        if self.resize == "fixed":
            return self.size
        if self.resize == "patches":
            return _naflex_size(height, width, *self.size)
        return height, width

    def __call__(self, path: str | Path, observe: Observer | None = None):
        """The (3, H, W) float32 input for one image file (NaFlex: a dict of the patches, their
        mask and the grid shape); Unreadable when it cannot be decoded."""
        import torch

        if self.resize == "patches":
            return {k: torch.from_numpy(v) for k, v in self.patches(self.pixels(path, observe)).items()}
        return torch.from_numpy(self.pixels(path, observe))

    def patches(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """NaFlex's inputs from (3, H, W) pixels: (max_num_patches, patch*patch*3) patches in
        row order, each patch's pixels row by row with channels last (the processor's layout),
        zero-padded; the mask (1: a patch, 0: padding); the (rows, columns) of the grid."""
        patch, most = self.size
        c, h, w = pixels.shape
        rows, cols = h // patch, w // patch
        grid = pixels.reshape(c, rows, patch, cols, patch).transpose(1, 3, 2, 4, 0).reshape(rows * cols, -1)
        values = np.zeros((most, grid.shape[1]), np.float32)
        values[:len(grid)] = grid
        mask = np.zeros(most, np.int32)
        mask[:len(grid)] = 1
        return {"pixel_values": values, "pixel_attention_mask": mask,
                "spatial_shapes": np.array([rows, cols], np.int64)}

    def pixels(self, path: str | Path, observe: Observer | None = None) -> np.ndarray:
        """`observe(decoded RGB image, full displayed (height, width))` sees the decode this
        path makes anyway: a caller measuring pixels needs no second decode."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img, box, shown = self._decode(Path(path))
                rgb = self._rgb(img)
                if observe is not None:
                    observe(rgb, shown)
                return self._finish(rgb, box, shown)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise Unreadable(f"larger than Pillow's safety limit ({e})") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise Unreadable(decode_reason(e)) from None

    # -- decoding ------------------------------------------------------------------------
    def _needed(self, width: int, height: int, orientation: int) -> tuple[int, int]:
        """Smallest stored (width, height) a reduced decode may have: twice the resize target,
        and no less than 1/max_reduction of the stored size."""
        dw, dh = (height, width) if orientation in _SWAPS else (width, height)
        th, tw = self.target(dh, dw)
        need_w, need_h = math.ceil(self.draft_factor * tw), math.ceil(self.draft_factor * th)
        need = (need_h, need_w) if orientation in _SWAPS else (need_w, need_h)
        return max(need[0], math.ceil(width / self.max_reduction)), max(need[1], math.ceil(height / self.max_reduction))

    def _decode(self, path: Path):
        """The image as displayed (EXIF orientation applied); the box, in its pixels, that
        covers the whole stored image (a reduced decode rounds its size up; None: all of it);
        and the full-resolution (height, width) as displayed, which sets the resize target."""
        data = path.read_bytes()
        img = Image.open(io.BytesIO(data))
        box = None
        if img.format in ("JPEG", "MPO") and self.resize and data.startswith(JPEG_MAGIC):  # MPO: many phones
            orientation = img.getexif().get(ORIENTATION, 1)
            shown = (img.width, img.height) if orientation in _SWAPS else (img.height, img.width)
            need = self._needed(img.width, img.height, orientation)
            if self.decoder == "simplejpeg" and img.mode in ("RGB", "L"):
                img, box = _simplejpeg(data, img.width, img.height, need)
            else:
                full = img.size
                scaled = img.draft(img.mode if img.mode in ("RGB", "L") else None, need)
                img.load()
                box = scaled[1] if scaled and img.size != full else None
            if orientation in _TRANSPOSE:
                img = img.transpose(_TRANSPOSE[orientation])
                if box is not None and orientation in _SWAPS:
                    box = (0.0, 0.0, box[3], box[2])
        else:
            img.load()
            orientation = img.getexif().get(ORIENTATION, 1)
            if orientation in _TRANSPOSE:
                img = img.transpose(_TRANSPOSE[orientation])
            shown = (img.height, img.width)
        return img, box, shown

    def _rgb(self, img: Image.Image) -> Image.Image:
        return to_rgb(img)

    # -- resize, crop, normalise ---------------------------------------------------------------
    def _finish(self, img: Image.Image, box, shown: tuple[int, int]) -> np.ndarray:
        full = box or (0.0, 0.0, float(img.width), float(img.height))
        th, tw = self.target(*shown)
        if self.backend == "TorchvisionBackend":
            return self._finish_torchvision(img, th, tw)
        crop = self.crop
        if box and self.resize and crop and crop[0] <= th and crop[1] <= tw:
            # resize only the part the crop keeps: same filter and source geometry (differs
            # from resize-then-crop by rounding only, so used only where pixels differ anyway)
            top, left = (th - crop[0]) // 2, (tw - crop[1]) // 2
            sx, sy = (full[2] - full[0]) / tw, (full[3] - full[1]) / th
            region = (full[0] + left * sx, full[1] + top * sy,
                      full[0] + (left + crop[1]) * sx, full[1] + (top + crop[0]) * sy)
            arr = np.asarray(img.resize((crop[1], crop[0]), self.resample, box=region))
            return self._normalise(arr)
        if self.resize:
            img = img.resize((tw, th), self.resample, box=box)
        arr = np.asarray(img)
        if crop:
            arr = _center_crop(arr, crop, torchvision=False)
        return self._normalise(arr)

    def _finish_torchvision(self, img: Image.Image, th: int, tw: int) -> np.ndarray:
        """torchvision's resize of the whole decoded image (a reduced decode's rounded-up
        edge, under one decoded pixel, is kept: torchvision takes no source box)."""
        import torch
        from torchvision.transforms.v2 import functional as tvF

        t = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
        if self.resize:
            mode = next(k for k, v in _PIL_FILTERS.items() if v == self.resample)
            t = tvF.resize(t, [th, tw], interpolation=tvF.InterpolationMode(mode), antialias=True)
        arr = t.permute(1, 2, 0).numpy()
        if self.crop:
            arr = _center_crop(arr, self.crop, torchvision=True)
        return self._normalise(arr)

    def _normalise(self, arr: np.ndarray) -> np.ndarray:
        """HWC uint8 -> CHW float32 through the per-channel table."""
        out = np.empty((3,) + arr.shape[:2], np.float32)
        for c in range(3):
            np.take(self.table[c], arr[..., c], out=out[c])
        return out


def to_rgb(img: Image.Image) -> Image.Image:
    """transformers' conversion: transparency composited on white, else Pillow's convert. Done
    for every family, also where a processor leaves conversion to its caller (SigLIP 2's does:
    the zero-shot pipeline converts first), so a transparent image means the same to each."""
    if img.mode == "RGB":
        return img
    if "A" in img.getbands() or img.info.get("transparency") is not None:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def _naflex_size(height: int, width: int, patch: int, most: int) -> tuple[int, int]:
    """The processor's own size search (its function, so the grid is always the same)."""
    try:
        from transformers.models.siglip2.image_processing_pil_siglip2 import get_image_size_for_max_num_patches
    except ImportError:  # transformers before the PIL backends
        from transformers.models.siglip2.image_processing_siglip2 import get_image_size_for_max_num_patches
    return get_image_size_for_max_num_patches(height, width, patch, most)


def _center_crop(arr: np.ndarray, crop: tuple[int, int], torchvision: bool) -> np.ndarray:
    """HWC centre crop, zero-padding an image smaller than the crop as each backend does."""
    h, w = arr.shape[:2]
    ch, cw = crop
    if ch > h or cw > w:
        nh, nw = max(ch, h), max(cw, w)
        top = (nh - h) // 2 if torchvision else math.ceil((nh - h) / 2)
        left = (nw - w) // 2 if torchvision else math.ceil((nw - w) / 2)
        padded = np.zeros((nh, nw, arr.shape[2]), arr.dtype)
        padded[top:top + h, left:left + w] = arr
        arr, h, w = padded, nh, nw
    top, left = (h - ch) // 2, (w - cw) // 2
    return arr[top:top + ch, left:left + cw]


def _simplejpeg(data: bytes, width: int, height: int, need: tuple[int, int]):
    """libjpeg-turbo through simplejpeg, at the smallest of its n/8 scales that covers `need`."""
    import simplejpeg

    arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=need[0], min_height=need[1])
    out_h, out_w = arr.shape[:2]
    if (out_w, out_h) == (width, height):
        return Image.fromarray(arr), None
    n = next((n for n in range(1, 17) if math.ceil(width * n / 8) == out_w and math.ceil(height * n / 8) == out_h), 8)
    return Image.fromarray(arr), (0.0, 0.0, width * n / 8, height * n / 8)


def load_image(path: str):
    """Decode fully, with EXIF orientation applied: what the model's own processor is given."""
    from PIL import ImageOps

    from ..images import open_image

    return ImageOps.exif_transpose(open_image(Path(path)))


class _Processor:
    """The model's own processor on the fully decoded image (--exact-preprocess), bit for bit.
    One tensor, or a dict of them for an image tower with several inputs (NaFlex)."""

    def __init__(self, image_processor, inputs: tuple[str, ...] = ("pixel_values",)) -> None:
        self.image_processor, self.inputs = image_processor, inputs

    def __call__(self, path: str, observe: Observer | None = None):
        img = to_rgb(load_image(path))
        if observe is not None:
            observe(img, (img.height, img.width))
        out = self.image_processor(images=img, return_tensors="pt")
        if self.inputs == ("pixel_values",):
            return out["pixel_values"][0]
        return {k: out[k][0] for k in self.inputs}


def preparer(image_processor, exact: bool, inputs: tuple[str, ...] = ("pixel_values",)) -> Callable[[str], object]:
    """path -> the model's input: the fast path (reduced-scale JPEG decode, then the
    processor's own resize, crop and normalisation) unless `exact`, or unless the processor
    has steps the fast path does not reproduce. `inputs`: what the image tower takes."""
    if not exact:
        try:
            return FastPreprocess.from_processor(image_processor)
        except UnsupportedProcessor:
            pass
    return _Processor(image_processor, inputs)
