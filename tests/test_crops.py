import math

import pytest

from clipdata.crops import Padding, crop_region, valid_box
from clipdata.errors import OptionError


@pytest.mark.parametrize("box, size, kwargs, expected", [
    # whole-pixel boxes are taken exactly
    ((2, 2, 3, 1), (10, 5), {}, (2, 2, 5, 3)),
    # each edge rounds to the nearest pixel, halves go up
    ((1.4, 1.5, 2.2, 2.0), (10, 10), {}, (1, 2, 4, 4)),
    ((0.49, 0.5, 0.02, 0.49), (10, 10), {}, "empty_after_clamp"),
    # clamped to the image
    ((-5, -5, 10, 10), (8, 8), {}, (0, 0, 5, 5)),
    ((6, 6, 10, 10), (8, 8), {}, (6, 6, 8, 8)),
    # entirely outside: empty after clamping
    ((20, 20, 5, 5), (8, 8), {}, "empty_after_clamp"),
    ((-9, 0, 5, 5), (8, 8), {}, "empty_after_clamp"),
    # zero width
    ((3, 3, 0, 4), (8, 8), {}, "empty_after_clamp"),
    # minimum size applies to the crop actually taken
    ((0, 0, 3, 8), (8, 8), {"min_size": 4}, "smaller_than_min_size"),
    ((0, 0, 4, 8), (8, 8), {"min_size": 4}, (0, 0, 4, 8)),
    ((6, 0, 4, 8), (8, 8), {"min_size": 4}, "smaller_than_min_size"),
    # padding as a fraction of the box size, per axis
    ((10, 10, 10, 20), (100, 100), {"padding": Padding(0.1)}, (9, 8, 21, 32)),
    # padding in pixels
    ((10, 10, 10, 20), (100, 100), {"padding": Padding(3, pixels=True)}, (7, 7, 23, 33)),
    # square grows the short side around the centre
    ((10, 10, 10, 20), (100, 100), {"square": True}, (5, 10, 25, 30)),
    # ... before clamping: a square at the border is clipped
    ((0, 0, 10, 20), (100, 100), {"square": True}, (0, 0, 15, 20)),
    # padding then square
    ((10, 10, 10, 20), (100, 100), {"padding": Padding(2, True), "square": True}, (3, 8, 27, 32)),
])
def test_crop_region(box, size, kwargs, expected):
    assert crop_region(box, size, **kwargs) == expected


@pytest.mark.parametrize("raw, expected", [
    ([1, 2, 3, 4], (1.0, 2.0, 3.0, 4.0)),
    ((1.5, 2, 0, 0), (1.5, 2.0, 0.0, 0.0)),
    ([-3, -3, 1, 1], (-3.0, -3.0, 1.0, 1.0)),  # negative origin: clamped later, not invalid
    ([1, 2, -3, 4], None),  # negative size
    ([1, 2, 3], None),
    ([1, 2, 3, 4, 5], None),
    (["1", 2, 3, 4], None),
    ([True, 2, 3, 4], None),
    ([math.nan, 2, 3, 4], None),
    ([1, 2, math.inf, 4], None),
    (None, None),
    ({"x": 1}, None),
])
def test_valid_box(raw, expected):
    assert valid_box(raw) == expected


@pytest.mark.parametrize("text, expected", [
    (None, Padding(0.0)),
    ("0.1", Padding(0.1)),
    (".25", Padding(0.25)),
    ("8px", Padding(8.0, True)),
    (" 8 px ", Padding(8.0, True)),
    (0.2, Padding(0.2)),
    ("1e-2", Padding(0.01)),
    ("2.", Padding(2.0)),
])
def test_padding_parse(text, expected):
    assert Padding.parse(text) == expected


@pytest.mark.parametrize("text, says", [
    ("ten", "is not a number"), ("8 pixels", "is not a number"), ("1e3x", "is not a number"),
    ("nan", "is not a number"), ("-1", "must be zero or more"), ("-0.1", "must be zero or more"),
    ("-8px", "must be zero or more"), ("1e999", "must be zero or more"),
])
def test_padding_parse_rejects(text, says):
    """The line says what is wrong: a negative number was told it is not a number."""
    with pytest.raises(OptionError, match=says):
        Padding.parse(text)
