import numpy as np
import pytest

from xviz.render.colormaps import (
    _LUT_FILE,
    COLORMAPS,
    DIVERGING,
    NAN_RGB,
    SEQUENTIAL,
    apply,
    get_lut,
)

# Read from matplotlib 3.11 (`matplotlib.colormaps[name](i, bytes=True)`), independently of the
# stored tables; viridis' ends are its published hex codes #440154 and #fde725.
MATPLOTLIB = {
    "viridis": [(68, 1, 84), (32, 144, 140), (253, 231, 36)],
    "inferno": [(0, 0, 3), (187, 55, 84), (252, 254, 164)],
    "magma": [(0, 0, 3), (182, 54, 121), (251, 252, 191)],
    "cividis": [(0, 34, 77), (124, 123, 120), (253, 231, 55)],
    "coolwarm": [(58, 76, 192), (221, 220, 219), (179, 3, 38)],
}


def test_names_are_sequential_plus_diverging_and_match_the_lut_file():
    assert COLORMAPS == SEQUENTIAL + DIVERGING
    assert set(MATPLOTLIB) == set(COLORMAPS)
    with np.load(_LUT_FILE) as data:
        assert sorted(data.files) == sorted(COLORMAPS)


@pytest.mark.parametrize("name", COLORMAPS)
def test_lut_ends_and_middle_equal_matplotlib(name):
    lut = get_lut(name)
    assert lut.shape == (256, 3)
    assert lut.dtype == np.uint8
    assert [tuple(lut[i].tolist()) for i in (0, 128, 255)] == MATPLOTLIB[name]


def test_lut_is_read_only():
    with pytest.raises(ValueError):
        get_lut("viridis")[0] = 0


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"jet.*viridis.*coolwarm"):
        get_lut("jet")
    with pytest.raises(ValueError, match="viridis"):
        apply(np.zeros((2, 2)), "jet")


def test_apply_bins_values_like_matplotlib():
    # matplotlib: index floor(v * 256), 1.0 -> 255, below 0 -> 0, above 1 -> 255.
    values = np.array([0.0, 0.5, 1.0, 0.0039, 1 / 256, 0.999, -0.1, 1.5])
    expected = get_lut("viridis")[[0, 128, 255, 0, 1, 255, 0, 255]]
    np.testing.assert_array_equal(apply(values, "viridis"), expected)


def test_apply_keeps_shape_and_paints_nan_grey():
    values = np.full((2, 3, 4), 0.5)
    values[1, 2, 3] = np.nan
    rgb = apply(values, "inferno")
    assert rgb.shape == (2, 3, 4, 3)
    assert rgb.dtype == np.uint8
    assert tuple(rgb[1, 2, 3]) == NAN_RGB
    assert tuple(rgb[0, 0, 0]) == MATPLOTLIB["inferno"][1]
