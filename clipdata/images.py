"""Decoding, orienting, colour conversion and encoding of images, with Pillow."""
from __future__ import annotations

import io
import struct
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from PIL import Image, ImageOps

ORIENTATION = 0x0112
ENCODERS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}


class Unreadable(Exception):
    """The file is not a decodable image (corrupt, truncated, not an image, too large)."""


# What Pillow raises on a damaged or hostile file, across its plugins.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, ZeroDivisionError)
_WARNINGS = threading.Lock()  # warning filters are process-wide: threads take turns changing them


def decode_reason(e: BaseException) -> str:
    """Why a file did not decode, in one line a user can read. Pillow names what it failed to
    identify by repr, a path or `<_io.BytesIO object at 0x...>` (the caller names the file
    already): say what it means instead."""
    if isinstance(e, Image.UnidentifiedImageError):
        return "not an image Pillow can identify: another kind of file, or a damaged header"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@contextmanager
def _decoding(path: Path | BinaryIO) -> Iterator[None]:
    """Any decoding failure becomes Unreadable, with its reason."""
    try:
        yield
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise Unreadable(f"larger than Pillow's safety limit ({e})") from None
    except DECODE_ERRORS as e:
        raise Unreadable(decode_reason(e)) from None


def _open(path: Path | BinaryIO) -> Image.Image:
    """Image.open (the header only), a decompression bomb refused before any pixel is decoded."""
    with _WARNINGS, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


def open_image(path: Path) -> Image.Image:
    """Open and fully decode, so truncation is found here and not half-way through a crop."""
    with _decoding(path):
        img = _open(path)
        img.load()
        return img


def thumbnail_jpeg(path: Path | BinaryIO, side: int, quality: int = 85) -> bytes:
    """A JPEG of the image as displayed (EXIF orientation applied), at most `side` pixels on
    a side; a JPEG is decoded at reduced size (draft). Unreadable for a damaged file or a bomb."""
    with _decoding(path):
        with _open(path) as im:
            im.draft("RGB", (side, side))
            im = ImageOps.exif_transpose(im)
            im.thumbnail((side, side))
            buf = io.BytesIO()
            to_rgb(im).save(buf, "JPEG", quality=quality)
        return buf.getvalue()


def embedded_bytes(path: Path) -> bytes:
    """The image file a LabelMe JSON carries as base64 `imageData`."""
    import base64
    import binascii
    import json

    try:
        data = json.loads(Path(path).read_bytes()).get("imageData")
        return base64.b64decode(data, validate=True)
    except (OSError, ValueError, AttributeError, TypeError, binascii.Error) as e:
        raise Unreadable(f"its imageData is not base64 ({e})") from None


def open_embedded(path: Path) -> Image.Image:
    """open_image for the picture inside a LabelMe JSON."""
    import io

    return open_image(io.BytesIO(embedded_bytes(path)))  # type: ignore[arg-type]


def orient(img: Image.Image, width: int | None, height: int | None) -> tuple[Image.Image, bool]:
    """Apply EXIF orientation only when the annotated size is the transposed size.

    Annotation tools disagree: some label the pixels as stored, some the picture as displayed.
    An orientation of 5-8 swaps width and height, so the annotated size tells which one was
    labeled. For 2-4 (flips, 180°) the size cannot tell; the pixels are used as stored, as
    Pillow, torchvision and pycocotools-based loaders do. Returns (image, applied).
    """
    if width and height and (width, height) == (img.height, img.width) and img.width != img.height:
        if img.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8):  # EXIF parsed only when it can matter
            return ImageOps.exif_transpose(img), True
    return img, False


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB for any mode: transparency is composited on white — an alpha band, and a PNG's
    colour key (`tRNS` on an RGB, grey or palette image: the one colour that is transparent),
    as the embedding path does; 16/32-bit grey is scaled (not clipped) to 8 bits. An opaque
    RGB image is returned as is (no copy)."""
    keyed = img.info.get("transparency") is not None
    if img.mode == "RGB" and not keyed:
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        sixteen_bit = img.mode != "I"
        img = img.convert("I") if sixteen_bit else img
        scale = 1 / 256 if sixteen_bit or img.getextrema()[1] > 255 else 1
        return img.point(lambda v: v * scale).convert("L").convert("RGB")
    if img.mode == "F":
        return img.convert("L").convert("RGB")
    if keyed and img.mode in ("P", "RGB", "L", "1"):
        img = img.convert("RGBA")  # Pillow turns the key into alpha
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def save(img: Image.Image, f: BinaryIO, fmt: str, quality: int) -> None:
    """Encode into `f` without metadata except the colour profile; same input, same bytes."""
    options: dict = {}
    icc = img.info.get("icc_profile")
    if icc:
        options["icc_profile"] = icc
    if fmt == "jpg":
        options["quality"] = quality
    elif fmt == "webp":
        options["quality"] = quality
        options["method"] = 4
    img.save(f, ENCODERS[fmt], **options)
