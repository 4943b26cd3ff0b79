"""Pixel measures of one decoded image, taken in the embedding step's own decode (the
`measure` hook of clipdata.embedding), and the rules `check` applies to them. NumPy and
Pillow only; the thresholds and how each was chosen are in formats/check.md.

`measure(image, shown)` returns a `Measured`: a few numbers (size, brightness percentiles,
entropy, sharpness, colourfulness, and the raw inputs of cleanvision's blur score for the
agreement measurement) and a 16 x 16 RGB thumbnail, the pixel-level signature that confirms
near-duplicate candidates (`similarity`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageStat

THUMB = 16  # signature side: 16 x 16 x 3 = 768 values
CROPS = (1.0, 0.9, 0.8)  # a signature of the whole picture, and of its centre at 90% and 80%
SIG = THUMB * THUMB * 3
WORK_SIDE = 256  # brightness, entropy and colour are measured on at most this many pixels a side
BLUR_SIDE = 64  # blur is measured at cleanvision's resolution (MAX_RESOLUTION_FOR_BLURRY_DETECTION)
FIELDS = ("width", "height", "bright_p1", "bright_p5", "bright_p99", "entropy", "sharpness", "colour",
          "cv_blur", "cv_hist_std")

# Quality thresholds (formats/check.md says how each was chosen).
DARK = 0.32        # 99th brightness percentile below: dark (cleanvision's)
LIGHT = 0.95       # 5th brightness percentile above: light (cleanvision's 1 - 0.05)
LOW_INFO = 3.0     # entropy (bits) below: low information (cleanvision's 0.3 / 0.1)
ODD_ASPECT = 0.35  # min(w/h, h/w) below: odd aspect ratio (cleanvision's)
ODD_SIZE_IQR = 3.0  # sqrt(area) outside the quartiles +- 3 IQR (cleanvision's)
ODD_SIZE_RATIO = 1.5  # ... and at least this factor from the median (cleanvision flags any difference when IQR is 0)
TINY = 32          # shorter side below, in pixels
BLURRY = 0.30      # sharpness at 64 px below: blurry
GRAYSCALE = 4.0    # 99th percentile of the channel spread (0-255) below: grayscale, whatever the file's mode
QUALITY_TYPES = ("undecodable", "tiny", "dark", "light", "low_information", "blurry", "grayscale",
                 "odd_aspect_ratio", "odd_size")


@dataclass(frozen=True)
class Measured:
    values: np.ndarray  # float32, one per FIELDS
    thumb: bytes        # per CROPS share, THUMB x THUMB RGB, row-major

    def __getitem__(self, name: str) -> float:
        return float(self.values[FIELDS.index(name)])


def _brightness(rgb: np.ndarray) -> np.ndarray:
    """cleanvision's perceived brightness per pixel, 0..1."""
    r, g, b = (rgb[..., c].astype(np.float32) for c in range(3))
    return np.sqrt(0.241 * r * r + 0.691 * g * g + 0.068 * b * b) / 255


def sharpness(gray: np.ndarray) -> float:
    """How steep the image's steepest edges are for its contrast: the 99.5th percentile of
    the neighbour differences over the intensity range (0.5th to 99.5th percentile). A
    Gaussian blur of sigma s spreads an edge of contrast C so that its steepest step falls to
    about C / (2.5 s): the ratio falls with blur whatever the contrast or how few edges the
    picture has (a small sharp shape on a plain background stays sharp). NaN for a constant
    image (low information says that)."""
    g = gray.astype(np.float32)
    if g.shape[0] < 2 or g.shape[1] < 2:
        return float("nan")
    lo, hi = np.percentile(g, [0.5, 99.5])
    if hi - lo < 1:
        return float("nan")
    top = max(np.percentile(np.abs(np.diff(g, axis=1)), 99.5), np.percentile(np.abs(np.diff(g, axis=0)), 99.5))
    return float(top / (hi - lo))


def measure(image: Image.Image, shown: tuple[int, int]) -> Measured:
    """The measures of one decoded image; `shown` is its full displayed (height, width) (the
    decode may be at a reduced scale). Picklable: it runs in the loader's worker processes."""
    img = image if image.mode == "RGB" else image.convert("RGB")
    height, width = shown
    factor = max(1, max(img.size) // WORK_SIDE)
    work = img.reduce(factor) if factor > 1 else img
    rgb = np.asarray(work)
    bright = _brightness(rgb)
    p1, p5, p99 = np.percentile(bright, [1, 5, 99])
    spread = rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2)
    colour = float(np.percentile(spread, 99))
    ratio = max(img.width, img.height) / BLUR_SIDE
    small = img.resize((max(int(img.width // ratio), 1), max(int(img.height // ratio), 1))) if ratio > 1 else img
    gray = small.convert("L")
    edges = gray.filter(ImageFilter.FIND_EDGES)
    cv_blur = float(np.sqrt(ImageStat.Stat(edges).var[0]))
    cv_hist_std = float(np.std(gray.histogram()))
    values = np.array([width, height, p1, p5, p99, work.entropy(), sharpness(np.asarray(gray)), colour,
                       cv_blur, cv_hist_std], np.float32)
    thumb = b"".join(small.resize((THUMB, THUMB), Image.Resampling.BOX, box=_centre(small.size, s)).tobytes()
                     for s in CROPS)
    return Measured(values, thumb)


def _centre(size: tuple[int, int], share: float) -> tuple[float, float, float, float]:
    w, h = size
    return ((w - w * share) / 2, (h - h * share) / 2, (w + w * share) / 2, (h + h * share) / 2)


def pixel_hash(image: Image.Image) -> str:
    """A hash of the decoded pixels (mode and size included): the same picture re-saved
    without loss, or with other metadata, hashes the same."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{image.mode}:{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- signatures

def signatures(thumbs: list[bytes], crop: int = 0) -> np.ndarray:
    """(n, 768) float32 rows of the whole-picture thumbnails (`crop`: of CROPS[crop]), each
    minus its mean, scaled to unit length: the dot product of two rows is the Pearson
    correlation of their pixels (colour included). A constant thumbnail gives a zero row (it
    correlates with nothing)."""
    a = np.frombuffer(b"".join(t[crop * SIG:(crop + 1) * SIG] for t in thumbs), np.uint8).reshape(len(thumbs), -1)
    a = a.astype(np.float32)
    a -= a.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norm, out=np.zeros_like(a), where=norm > 1e-6)


def flipped(sig: np.ndarray) -> np.ndarray:
    """The signatures of the left-right mirrored thumbnails."""
    return np.ascontiguousarray(sig.reshape(len(sig), THUMB, THUMB, 3)[:, :, ::-1, :].reshape(sig.shape))


def crop_similarity(thumbs: list[bytes], pairs: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Pixel similarity of pairs (i, j): the best correlation of one whole picture with the
    other's whole picture or centre crop (90%, 80%), plain or mirrored. A copy that was
    re-encoded, resized, mirrored or centre-cropped scores about 0.97 to 1 (formats/check.md)."""
    out = np.empty(len(pairs), np.float32)
    for a in range(0, len(pairs), chunk):
        p = pairs[a:a + chunk]
        ti = [thumbs[i] for i in p[:, 0]]
        tj = [thumbs[j] for j in p[:, 1]]
        whole_i, whole_j = signatures(ti), signatures(tj)
        best = np.maximum(np.einsum("pd,pd->p", whole_i, whole_j), np.einsum("pd,pd->p", whole_i, flipped(whole_j)))
        for c in range(1, len(CROPS)):
            ci, cj = signatures(ti, c), signatures(tj, c)
            for x, y in ((whole_i, cj), (whole_j, ci)):
                best = np.maximum(best, np.maximum(np.einsum("pd,pd->p", x, y), np.einsum("pd,pd->p", x, flipped(y))))
        out[a:a + chunk] = best
    return out


# ---------------------------------------------------------------- quality rules

THRESHOLDS = {"dark": DARK, "light": LIGHT, "low_information": LOW_INFO, "blurry": BLURRY, "grayscale": GRAYSCALE,
              "odd_aspect_ratio": ODD_ASPECT, "tiny": TINY}


def quality_issues(values: np.ndarray, th: dict[str, float] | None = None) -> list[list[tuple[str, float]]]:
    """Per image (rows of FIELDS values), the quality types it has, each with its score;
    `th` overrides THRESHOLDS. Odd size is judged against the whole set, so it needs every
    row at once."""
    t = {**THRESHOLDS, **{k: v for k, v in (th or {}).items() if k in THRESHOLDS}}
    col = {f: values[:, k] for k, f in enumerate(FIELDS)} if len(values) else {f: np.zeros(0) for f in FIELDS}
    w, h = col["width"], col["height"]
    side = np.sqrt(w * h)
    out: list[list[tuple[str, float]]] = [[] for _ in range(len(values))]
    if not len(values):
        return out
    q1, med, q3 = np.percentile(side, [25, 50, 75])
    lo, hi = q1 - ODD_SIZE_IQR * (q3 - q1), q3 + ODD_SIZE_IQR * (q3 - q1)
    aspect = np.minimum(w / np.maximum(h, 1), h / np.maximum(w, 1))
    for i in range(len(values)):
        found = out[i]
        if min(w[i], h[i]) < t["tiny"]:
            found.append(("tiny", float(min(w[i], h[i]))))
        if col["bright_p99"][i] < t["dark"]:
            found.append(("dark", float(col["bright_p99"][i])))
        if col["bright_p5"][i] > t["light"]:
            found.append(("light", float(col["bright_p5"][i])))
        if col["entropy"][i] < t["low_information"]:
            found.append(("low_information", float(col["entropy"][i])))
        if col["sharpness"][i] < t["blurry"]:  # NaN (a constant image) is never blurry: it is low information
            found.append(("blurry", float(col["sharpness"][i])))
        if col["colour"][i] < t["grayscale"]:
            found.append(("grayscale", float(col["colour"][i])))
        if aspect[i] < t["odd_aspect_ratio"]:
            found.append(("odd_aspect_ratio", float(aspect[i])))
        if (side[i] < lo or side[i] > hi) and max(side[i] / med, med / max(side[i], 1e-9)) >= ODD_SIZE_RATIO:
            found.append(("odd_size", float(side[i])))
    return out


def cleanvision_issues(values: np.ndarray) -> list[set[str]]:
    """cleanvision 0.3.7's default rules on the same raw measures (for the agreement
    measurement; formats/check.md): blurry is its score 1 - exp(-0.01 b) plus the histogram
    term, below 0.29; odd size its IQR rule; grayscale it reads from the file's mode, which
    these measures do not keep (so it is left out here)."""
    col = {f: values[:, k] for k, f in enumerate(FIELDS)}
    side = np.sqrt(col["width"] * col["height"])
    q1, q3 = np.percentile(side, [25, 75])
    lo, hi = q1 - 3 * (q3 - q1), q3 + 3 * (q3 - q1)
    mid, gap = (lo + hi) / 2, hi - lo
    size_score = 1 - np.clip(np.abs(side - mid) / (gap if gap > 0 else mid), 0, 1)
    size_cut = 0.5 if gap > 0 else 1.0
    blur = 1 - np.exp(-0.01 * col["cv_blur"])
    std = 1 - np.exp(-0.01 * col["cv_hist_std"])
    std[std <= 0.18] = 0
    blur_score = np.minimum(blur + std, 1)
    aspect = np.minimum(col["width"] / col["height"], col["height"] / col["width"])
    out = []
    for i in range(len(values)):
        s = set()
        if col["bright_p99"][i] < 0.32:
            s.add("dark")
        if 1 - col["bright_p5"][i] < 0.05:
            s.add("light")
        if min(0.1 * col["entropy"][i], 1) < 0.3:
            s.add("low_information")
        if blur_score[i] < 0.29:
            s.add("blurry")
        if aspect[i] < 0.35:
            s.add("odd_aspect_ratio")
        if size_score[i] < size_cut:
            s.add("odd_size")
        out.append(s)
    return out
