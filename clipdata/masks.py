"""Object masks: polygons and COCO run-length encodings, rasterised exactly as pycocotools
rasterises them (`frPyObjects` + `decode`, the union of an object's parts), but only inside
the window a crop takes: a mask on a 40-megapixel photo is never decoded whole.

A mask is a set of pixel positions in column-major order (position = x * height + y, as
COCO's RLE counts them). Both kinds become a sorted list of *toggles*: a pixel is inside when
an odd number of toggles lie at or before its position. Polygons give their toggles by
pycocotools' own rule (`rleFrPoly`: edges upsampled 5x, one toggle per column crossing,
downsampled); an RLE's toggles are the running sums of its counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

Polygon = tuple[float, ...]  # x0, y0, x1, y1, … in source pixels
SCALE = 5  # pycocotools' upsampling of polygon edges
# A polygon whose outline is longer than this many times the image's own is refused: its
# edges cost the rasteriser (here and in pycocotools) time in proportion to their length,
# and only a point far outside the image (a unit mistake, a 1e12) makes one that long.
MAX_PERIMETER = 64


@dataclass(frozen=True, slots=True)
class Mask:
    """An object's shape in source pixels: polygons (filled and united as pycocotools does),
    or a COCO RLE (`height`, `width`, compressed `counts` string)."""

    polygons: tuple[Polygon, ...] = ()
    rle: tuple[int, int, str] | None = None

    def extent(self) -> tuple[float, float, float, float] | None:
        """The box (x, y, w, h) of the mask: a polygon's extreme points (how COCO's `bbox`
        values are made), an RLE's set pixels (pycocotools' `toBbox`); None when empty."""
        if self.rle is not None:
            h, w, counts = self.rle
            runs = rle_counts(counts)
            return rle_extent(runs or [], h) if runs else None
        xs = [v for p in self.polygons for v in p[0::2]]
        ys = [v for p in self.polygons for v in p[1::2]]
        if not xs:
            return None
        return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)

    def coco(self) -> list[list[float]] | dict:
        """As a COCO `segmentation` (what the manifest records, and pycocotools reads)."""
        if self.rle is not None:
            h, w, counts = self.rle
            return {"size": [h, w], "counts": counts}
        return [list(p) for p in self.polygons]


def check_polygon(values: object) -> Polygon | str:
    """A flat x, y list as a polygon, or why it is not one (`empty_polygon` reasons name fewer
    than three points; anything not a finite number is `invalid`)."""
    if not isinstance(values, (list, tuple)):
        return "invalid: a polygon must be a list of x, y numbers"
    for v in values:
        if type(v) is not float and type(v) is not int:
            return "invalid: a polygon must be a list of x, y numbers"
    if len(values) % 2:
        return f"invalid: a polygon needs x, y pairs, got {len(values)} values"
    try:
        poly = tuple(float(v) for v in values)
    except OverflowError:  # an integer beyond a float (JSON has no limit on digits)
        return "invalid: a coordinate is not a finite number"
    if not all(math.isfinite(v) for v in poly):
        return "invalid: a coordinate is not a finite number"
    if len(poly) < 6:
        return f"empty: a polygon needs at least 3 points, got {len(poly) // 2}"
    return poly


# --- COCO RLE ---------------------------------------------------------------------------

def rle_counts(counts: object) -> list[int] | None:
    """Run lengths of a COCO RLE: a list of ints (uncompressed) or the compressed string
    (6-bit characters from "0", five payload bits each, a continuation bit; from the third
    run on, each value is a difference to the run two before). None when malformed."""
    if isinstance(counts, list):
        return counts if all(type(c) is int and c >= 0 for c in counts) else None
    if not isinstance(counts, str):
        return None
    out: list[int] = []
    value = shift = 0
    for ch in counts:
        c = ord(ch) - 48
        if not 0 <= c < 64:
            return None
        value |= (c & 0x1F) << shift
        shift += 5
        if c & 0x20:
            continue
        if c & 0x10:
            value -= 1 << shift  # the last chunk's top bit is the sign
        if len(out) > 2:
            value += out[-2]
        if value < 0:
            return None
        out.append(value)
        value = shift = 0
    return None if shift else out


def rle_string(runs: list[int]) -> str:
    """The compressed string of run lengths (pycocotools' `rleToString`)."""
    chars = []
    for i, n in enumerate(runs):
        x = n - runs[i - 2] if i > 2 else n
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return "".join(chars)


def rle_extent(runs: list[int], h: int) -> tuple[float, float, float, float] | None:
    """The box of an RLE's set pixels (column-major runs, background first), as `toBbox`."""
    x0 = y0 = None
    x1 = y1 = 0
    pos = 0
    for i, n in enumerate(runs):
        if i % 2 and n:
            (ax, ay), (bx, by) = divmod(pos, h), divmod(pos + n - 1, h)
            if bx > ax:  # the run wraps into the next column: it spans full height
                ay, by = 0, h - 1
            x0 = ax if x0 is None else min(x0, ax)
            y0 = ay if y0 is None else min(y0, ay)
            x1, y1 = max(x1, bx), max(y1, by)
        pos += n
    if x0 is None:
        return None
    return float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)


def check_rle(segm: dict) -> tuple[int, int, str] | str:
    """A COCO RLE object as (height, width, compressed counts), or why it is malformed."""
    size = segm.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(type(v) is int and 0 < v < 2**31 for v in size)):
        return 'an RLE needs "size": [height, width], positive 32-bit integers (as pycocotools keeps them)'
    h, w = size
    runs = rle_counts(segm.get("counts"))
    if runs is None or sum(runs) != h * w:
        return f'RLE "counts" that do not cover a {h}x{w} mask'
    counts = segm["counts"]
    return h, w, counts if isinstance(counts, str) else rle_string(runs)


def rle_from_rows(runs: list[int], left: int, top: int, width: int, height: int,
                  image_h: int, image_w: int) -> tuple[int, int, str] | str:
    """A mask given as row-major runs over a box (CVAT's `<mask rle=…>`, background first;
    runs that stop short leave the rest of the box background, as CVAT's own decoder does)
    as a COCO RLE of the whole image; or why it does not fit."""
    import re

    from PIL import Image

    if width <= 0 or height <= 0 or sum(runs) > width * height:
        return f"its runs are longer than its {width}x{height} box"
    if left < 0 or top < 0 or left + width > image_w or top + height > image_h:
        return "its box reaches outside the image"
    box = bytearray(width * height)
    pos = 0
    for i, n in enumerate(runs):
        if i % 2 and n:
            box[pos:pos + n] = b"\xff" * n
        pos += n
    columns = Image.frombytes("L", (width, height), bytes(box)).transpose(Image.Transpose.TRANSPOSE).tobytes()
    out: list[int] = []
    done = 0  # image positions accounted for
    for m in re.finditer(rb"\xff+", columns):
        a, b = m.span()
        while a < b:  # a box column is contiguous in the image; the next one is not
            c, r = divmod(a, height)
            stop = min(b, (c + 1) * height)
            start = (left + c) * image_h + top + r
            if out and start == done:
                out[-1] += stop - a  # continues the previous run
            else:
                out += [start - done, stop - a]
            done = start + stop - a
            a = stop
    out.append(image_h * image_w - done)
    return image_h, image_w, rle_string(out)


# --- rasterising ------------------------------------------------------------------------

def polygon_toggles(poly: Polygon, h: int, w: int) -> list[int]:
    """The toggles of one polygon on an h x w image, exactly as pycocotools' `rleFrPoly`
    finds them (C's truncating casts included: `int()` truncates toward zero too)."""
    k = len(poly) // 2
    xs = [int(SCALE * poly[2 * j] + .5) for j in range(k)]
    ys = [int(SCALE * poly[2 * j + 1] + .5) for j in range(k)]
    xs.append(xs[0])
    ys.append(ys[0])
    u: list[int] = []
    v: list[int] = []
    for j in range(k):
        x_s, x_e, y_s, y_e = xs[j], xs[j + 1], ys[j], ys[j + 1]
        dx, dy = abs(x_e - x_s), abs(y_s - y_e)
        flip = (dx >= dy and x_s > x_e) or (dx < dy and y_s > y_e)
        if flip:
            x_s, x_e, y_s, y_e = x_e, x_s, y_e, y_s
        if dx >= dy:
            s = (y_e - y_s) / dx if dx else 0.0
            for d in range(dx + 1):
                t = dx - d if flip else d
                u.append(t + x_s)
                v.append(int(y_s + s * t + .5))
        else:
            s = (x_e - x_s) / dy
            for d in range(dy + 1):
                t = dy - d if flip else d
                v.append(t + y_s)
                u.append(int(x_s + s * t + .5))
    out = []
    for j in range(1, len(u)):
        if u[j] == u[j - 1]:
            continue
        xd = float(u[j] if u[j] < u[j - 1] else u[j] - 1)
        xd = (xd + .5) / SCALE - .5
        if math.floor(xd) != xd or xd < 0 or xd > w - 1:
            continue
        yd = float(v[j] if v[j] < v[j - 1] else v[j - 1])
        yd = (yd + .5) / SCALE - .5
        yd = 0.0 if yd < 0 else float(h) if yd > h else yd
        out.append(int(xd) * h + math.ceil(yd))
    return out


def rle_toggles(runs: list[int]) -> list[int]:
    out, pos = [], 0
    for n in runs[:-1]:
        pos += n
        out.append(pos)
    return out


def too_long(poly: Polygon, h: int, w: int) -> bool:
    """Whether the polygon's outline exceeds MAX_PERIMETER times the image's."""
    xs, ys = poly[0::2], poly[1::2]
    length = sum(max(abs(xs[j] - xs[j - 1]), abs(ys[j] - ys[j - 1])) for j in range(len(xs)))
    return length > MAX_PERIMETER * 2 * (w + h)


def window(mask: Mask, size: tuple[int, int], region: tuple[int, int, int, int]):
    """The mask inside `region` (left, top, right, bottom) of an image of `size` (w, h), as
    a Pillow "L" image (255 inside), or the reason it cannot be cut (`mask_outside_image`
    with a detail). Only the window's pixels are ever written."""
    from PIL import Image

    w, h = size
    left, top, right, bottom = region
    ww, wh = right - left, bottom - top
    if mask.rle is not None:
        rh, rw, counts = mask.rle
        if (rh, rw) != (h, w):
            return f"its RLE is {rw}x{rh}, the image {w}x{h}"
        parts = [rle_toggles(rle_counts(counts) or [])]
    else:
        if any(too_long(p, h, w) for p in mask.polygons):
            return f"a polygon's outline is over {MAX_PERIMETER} times the image's (a point far outside the image)"
        parts = [sorted(polygon_toggles(p, h, w)) for p in mask.polygons]
    buf = bytearray(ww * wh)  # column-major: the window transposed
    ones = b"\xff" * wh
    end = h * w
    for toggles in parts:
        for i in range(0, len(toggles), 2):
            s = toggles[i]
            e = toggles[i + 1] if i + 1 < len(toggles) else end
            if e <= s:
                continue
            c0, c1 = s // h, (e - 1) // h
            for c in range(max(c0, left), min(c1, right - 1) + 1):
                r0 = s - c * h if c == c0 else 0
                r1 = e - c * h if c == c1 else h
                r0, r1 = max(r0, top), min(r1, bottom)
                if r1 > r0:
                    off = (c - left) * wh - top
                    buf[off + r0:off + r1] = ones[:r1 - r0]
    if 255 not in buf:
        return "no pixel of its mask lies inside the crop"
    return Image.frombytes("L", (wh, ww), bytes(buf)).transpose(Image.Transpose.TRANSPOSE)
