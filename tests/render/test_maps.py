import io

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from xviz.render.colormaps import apply, get_lut
from xviz.render.encode import png_bytes
from xviz.render.maps import (
    NICE_STEPS,
    TICK_LENGTH,
    channel_grid,
    colorbar,
    colorbar_ticks,
    enlarge,
    heatmap,
    nice_ticks,
    normalize,
    overlay,
    page,
    shared_range,
    tick_labels,
    with_colorbar,
)

VIRIDIS = get_lut("viridis")
INFERNO = get_lut("inferno")
COOLWARM = get_lut("coolwarm")

# Channel 0 spans 0..3, channel 1 spans 0..6.
TWO = np.array([[[0, 1], [2, 3]], [[0, 2], [4, 6]]], dtype=np.float32)


def rgb(image: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    return image.getpixel((x, y))


# normalize


def test_shared_scale_uses_one_range_for_all_channels():
    expected = np.array([[[0, 1], [2, 3]], [[0, 2], [4, 6]]]) / 6
    np.testing.assert_allclose(normalize(TWO, "shared"), expected, atol=1e-6)


def test_channel_scale_gives_each_channel_its_own_range():
    expected = np.array([[[0, 1], [2, 3]], [[0, 1], [2, 3]]]) / 3
    np.testing.assert_allclose(normalize(TWO, "channel"), expected, atol=1e-6)


def test_signed_maps_put_zero_at_the_middle():
    maps = np.array([[[-2, 0], [1, 4]], [[-1, 0], [0, 0.5]]], dtype=np.float32)
    # shared: symmetric range [-4, 4]; channel: [-4, 4] and [-1, 1].
    shared = [[[0.25, 0.5], [0.625, 1.0]], [[0.375, 0.5], [0.5, 0.5625]]]
    channel = [[[0.25, 0.5], [0.625, 1.0]], [[0.0, 0.5], [0.5, 0.75]]]
    np.testing.assert_allclose(normalize(maps, "shared", signed=True), shared, atol=1e-6)
    np.testing.assert_allclose(normalize(maps, "channel", signed=True), channel, atol=1e-6)


@pytest.mark.parametrize("scale", ["shared", "channel"])
def test_constant_maps_give_no_nan(scale):
    zeros = np.zeros((2, 3, 3), dtype=np.float32)
    fives = np.full((2, 3, 3), 5.0, dtype=np.float32)
    np.testing.assert_array_equal(normalize(zeros, scale), 0.0)
    np.testing.assert_array_equal(normalize(fives, scale), 0.0)
    np.testing.assert_array_equal(normalize(zeros, scale, signed=True), 0.5)


def test_a_constant_channel_beside_a_varying_one():
    maps = np.stack([np.full((2, 2), 7.0), TWO[0]])
    out = normalize(maps, "channel")
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_allclose(out[1], TWO[0] / 3, atol=1e-6)


def test_clip_percentile_cuts_outliers():
    maps = np.arange(101, dtype=np.float32).reshape(1, 1, 101)
    # 1st and 99th percentiles of 0..100 are 1 and 99.
    out = normalize(maps, clip_percentile=99)[0, 0]
    assert out[0] == out[1] == 0.0
    assert out[99] == out[100] == 1.0
    assert out[50] == pytest.approx(49 / 98)
    # |-50..50| sorted is 0, 1, 1, 2, 2, ..., 50, 50: its 95th percentile is element 95 = 48.
    signed = normalize(maps - 50, signed=True, clip_percentile=95)[0, 0]
    assert signed[50] == 0.5
    assert signed[100] == 1.0
    assert signed[75] == pytest.approx(0.5 + 25 / (2 * 48))


def test_normalize_rejects_bad_arguments():
    with pytest.raises(ValueError, match="C, H, W"):
        normalize(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="scale"):
        normalize(TWO, "global")
    with pytest.raises(ValueError, match="clip_percentile"):
        normalize(TWO, clip_percentile=30)


@given(
    arrays(np.float32, (3, 4, 5), elements=st.floats(-1e6, 1e6, width=32)),
    st.sampled_from(["shared", "channel"]),
    st.booleans(),
    st.sampled_from([None, 99.5, 100]),
)
def test_normalize_always_lands_in_unit_range(maps, scale, signed, clip):
    out = normalize(maps, scale, signed, clip)
    assert out.shape == maps.shape
    assert out.dtype == np.float32
    assert np.all((out >= 0) & (out <= 1))


def test_page_slices_and_clamps():
    order = np.arange(130)[::-1]
    indices, n_pages = page(order, 0)
    assert n_pages == 3
    assert indices.tolist() == list(range(129, 65, -1))
    assert page(order, 2)[0].tolist() == [1, 0]
    assert page(order, 7)[0].tolist() == [1, 0]
    assert page(order, -3)[0].tolist() == indices.tolist()
    assert page(order, 1, per_page=100)[0].tolist() == list(range(29, -1, -1))


def test_page_of_nothing_is_one_empty_page():
    indices, n_pages = page([], 4)
    assert n_pages == 1
    assert len(indices) == 0


# channel_grid


@pytest.mark.parametrize(
    ("n", "columns", "size"),
    [(10, 4, (4 * 33 + 3, 3 * 33 + 3)), (8, 4, (135, 2 * 33 + 3)), (3, 8, (3 * 33 + 3, 36))],
)
def test_grid_size_follows_tile_columns_and_pad(n, columns, size):
    maps = np.random.default_rng(0).random((12, 5, 5), dtype=np.float32)
    grid = channel_grid(maps, range(n), tile=30, columns=columns, pad=3)
    assert grid.size == size
    assert grid.mode == "RGB"


def test_grid_tiles_show_lut_colours_in_nearest_blocks():
    # tile 32 from 2x2 maps: each value is a 16x16 block; shared range 0..6.
    grid = channel_grid(TWO, [1, 0], tile=32, columns=2, pad=2, labels=False)
    lut_of = {v: tuple(VIRIDIS[min(int(v / 6 * 256), 255)]) for v in (0, 1, 2, 3, 4, 6)}
    tile1 = {(2, 2): 0, (33, 2): 2, (2, 33): 4, (33, 33): 6}  # first tile is channel 1
    tile0 = {(36, 2): 0, (67, 2): 1, (36, 33): 2, (67, 33): 3}
    for (x, y), value in (tile1 | tile0).items():
        assert rgb(grid, x, y) == lut_of[value], (x, y)
    assert rgb(grid, 0, 0) == rgb(grid, 34, 10) == (255, 255, 255)


@pytest.mark.parametrize("side", [7, 64, 147])
def test_grid_tiles_are_the_coloured_map_shrunk_or_grown_by_pils_nearest(side):
    """Maps smaller and larger than their tile: each tile is PIL's NEAREST resize of the map
    coloured with the lookup table (the order of colouring and resizing must not show)."""
    maps = np.random.default_rng(side).random((2, side, side), dtype=np.float32) * 5
    grid = np.asarray(channel_grid(maps, [0, 1], tile=64, columns=2, pad=2, labels=False))
    low, high = float(maps.min()), float(maps.max())
    for i in range(2):
        index = np.clip(np.floor((maps[i] - low) / (high - low) * 256), 0, 255).astype(int)
        coloured = Image.fromarray(VIRIDIS[index].astype(np.uint8))
        expected = np.asarray(coloured.resize((64, 64), Image.Resampling.NEAREST))
        x = 2 + i * 66
        np.testing.assert_array_equal(grid[2:66, x : x + 64], expected)


def test_grid_labels_mark_the_top_left_corner_only():
    maps = np.full((3, 4, 4), 2.0, dtype=np.float32)
    plain = np.asarray(channel_grid(maps, [2], tile=64, labels=False))
    labelled = np.asarray(channel_grid(maps, [2], tile=64, labels=True))
    changed = np.argwhere((plain != labelled).any(axis=2))
    assert len(changed) > 0
    assert changed.min() >= 2  # inside the tile, not in the padding
    assert changed.max() < 2 + 32  # within the tile's top-left quarter


def test_grid_signed_defaults_to_diverging_with_zero_neutral():
    maps = np.array([[[-1.0, 0.0], [0.0, 1.0]]], dtype=np.float32)
    grid = channel_grid(maps, [0], signed=True, tile=32, labels=False)
    assert rgb(grid, 2 + 16, 2) == tuple(COOLWARM[128])
    assert rgb(grid, 2, 2) == tuple(COOLWARM[0])
    assert rgb(grid, 33, 33) == tuple(COOLWARM[255])


def test_grid_rejects_an_empty_page():
    with pytest.raises(ValueError, match="no channels"):
        channel_grid(TWO, [])


# enlarge, overlay, heatmap, colorbar


def test_enlarge_nearest_keeps_blocks_and_vmin_vmax():
    image = enlarge(TWO[0], "viridis", size=8)
    assert image.size == (8, 8)
    assert rgb(image, 0, 0) == tuple(VIRIDIS[0])
    assert rgb(image, 4, 0) == rgb(image, 7, 3) == tuple(VIRIDIS[85])  # 1/3 -> floor(256/3)
    assert rgb(image, 7, 7) == tuple(VIRIDIS[255])
    fixed = enlarge(TWO[0], "viridis", size=8, vmin=0, vmax=6)
    assert rgb(fixed, 7, 7) == tuple(VIRIDIS[128])  # 3 of 0..6


def test_enlarge_smooth_and_non_square():
    smooth = enlarge(TWO[0], "magma", size=8, smooth=True)
    assert smooth.size == (8, 8)
    assert len(np.unique(np.asarray(smooth).reshape(-1, 3), axis=0)) > 4  # not four blocks
    assert enlarge(np.zeros((2, 4)), size=8).size == (8, 4)


def test_overlay_alpha_zero_is_the_image_and_one_is_the_coloured_map():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    attr = rng.random((6, 6)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(overlay(image, attr, alpha=0.0)), image)
    coloured = apply((attr - attr.min()) / (attr.max() - attr.min()), "inferno")
    full = overlay(image, attr, alpha=1.0, clip_percentile=None)
    np.testing.assert_array_equal(np.asarray(full), coloured)


def test_overlay_upsamples_the_map_to_the_image():
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    out = overlay(image, TWO[0], alpha=1.0, clip_percentile=None)
    assert out.size == (8, 8)
    assert rgb(out, 0, 0) == tuple(INFERNO[0])
    assert rgb(out, 7, 7) == tuple(INFERNO[255])


def test_overlay_rejects_bad_inputs():
    with pytest.raises(ValueError, match="uint8"):
        overlay(np.zeros((4, 4, 3)), TWO[0])
    with pytest.raises(ValueError, match="alpha"):
        overlay(np.zeros((4, 4, 3), dtype=np.uint8), TWO[0], alpha=2)


def test_heatmap_defaults():
    attr = np.array([[-2.0, 0.0], [1.0, 2.0]], dtype=np.float32)
    signed = heatmap(attr, signed=True, clip_percentile=None)
    assert signed.size == (2, 2)
    assert rgb(signed, 1, 0) == tuple(COOLWARM[128])
    assert rgb(signed, 0, 0) == tuple(COOLWARM[0])
    unsigned = heatmap(np.abs(attr), signed=False, clip_percentile=None)
    assert rgb(unsigned, 1, 0) == tuple(INFERNO[0])
    assert rgb(unsigned, 0, 0) == rgb(unsigned, 1, 1) == tuple(INFERNO[255])


def test_colorbar_runs_from_first_to_last_colour():
    bar = colorbar("coolwarm", -1.5, 1.5, width=200, height=10)
    assert bar.size[0] == 200
    assert bar.size[1] > 10  # room for the labels
    first, last = _bar_ends(bar)
    assert rgb(bar, first, 5) == tuple(COOLWARM[0])
    assert rgb(bar, last, 5) == tuple(COOLWARM[255])


def _bar_ends(bar: Image.Image) -> tuple[int, int]:
    """First and last column of the coloured bar: the non-white pixels of its top row."""
    row = np.asarray(bar)[0]
    coloured = np.nonzero((row != 255).any(axis=1))[0]
    assert np.array_equal(coloured, np.arange(coloured[0], coloured[-1] + 1))  # no gaps
    return int(coloured[0]), int(coloured[-1])


@pytest.mark.parametrize(
    ("vmin", "vmax", "expected"),
    [
        (-1.5, 1.5, [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]),  # step 0.5: 7 ticks
        (0.0, 4.83, [0, 1, 2, 3, 4]),  # 0.5 would give 10
        (-0.37, 0.37, [-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3]),
        (0.0012, 0.0187, [0.0025, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175]),  # 2.5e-3
        (-12345.0, 98765.0, [0, 20_000, 40_000, 60_000, 80_000]),
        (3.0, 3.0, [3.0]),
    ],
)
def test_nice_ticks_by_hand(vmin, vmax, expected):
    np.testing.assert_allclose(nice_ticks(vmin, vmax, 7), expected, rtol=0, atol=1e-12)


@given(
    st.floats(-1e4, 1e4, allow_nan=False),
    st.floats(1e-3, 1e4, allow_nan=False),
    st.integers(2, 10),
)
def test_nice_ticks_are_the_finest_round_step_that_fits(low, span, max_ticks):
    # Ranges a colourbar meets: not a sliver far from 0, where float64 cannot count steps.
    assume(span >= 1e-3 * abs(low))
    high = low + span
    ticks = nice_ticks(low, high, max_ticks)
    assert 1 <= len(ticks) <= max_ticks
    tolerance = 1e-6 * span
    assert ticks[0] >= low - tolerance and ticks[-1] <= high + tolerance
    if len(ticks) < 2:
        return
    steps = np.diff(ticks)
    step = steps[0]
    np.testing.assert_allclose(steps, step, rtol=1e-9)
    mantissa = step / 10 ** np.floor(np.log10(step) + 1e-9)
    assert min(abs(mantissa - m) for m in (*NICE_STEPS, 10.0)) < 1e-6
    # Every tick is a multiple of the step, and no finer round step would have fitted.
    np.testing.assert_allclose(ticks / step, np.round(ticks / step), atol=1e-6)
    candidates = sorted(m * 10.0**e for m in NICE_STEPS for e in range(-12, 13))
    finer = [c for c in candidates if c < step * (1 - 1e-9)]
    for c in finer[-4:]:
        count = np.floor(high / c + 1e-6) - np.ceil(low / c - 1e-6) + 1
        assert count > max_ticks, (c, count)


def test_nice_ticks_refuse_bad_ranges():
    for args in ((1.0, 0.0), (0.0, float("inf")), (0.0, 1.0, 1)):
        with pytest.raises(ValueError):
            nice_ticks(*args)


def test_tick_labels_use_the_fewest_decimals():
    assert tick_labels([-1.0, -0.5, 0.0, 0.5]) == ["-1.0", "-0.5", "0.0", "0.5"]
    assert tick_labels([0.0025, 0.005]) == ["0.0025", "0.0050"]
    assert tick_labels([0.0, 20_000.0]) == ["0", "20,000"]
    assert tick_labels([-0.0, 1.0]) == ["0", "1"]  # no "-0"
    assert tick_labels([0.1 * 3, 0.2]) == ["0.3", "0.2"]  # 0.30000000000000004


@pytest.mark.parametrize(
    ("cmap", "vmin", "vmax"), [("viridis", 0.0, 6.2), ("coolwarm", -0.37, 0.37)]
)
def test_colorbar_ticks_sit_where_their_values_are(cmap, vmin, vmax):
    width, height = 320, 12
    bar = colorbar(cmap, vmin, vmax, width=width, height=height, font_size=12)
    first, last = _bar_ends(bar)
    lut = get_lut(cmap)
    assert rgb(bar, first, 3) == tuple(lut[0]) and rgb(bar, last, 3) == tuple(lut[255])
    margin, ticks = colorbar_ticks(vmin, vmax, width, font_size=12)
    assert first == margin and last == width - margin - 1
    values = [t.value for t in ticks]
    np.testing.assert_allclose(values, nice_ticks(vmin, vmax, len(ticks)), atol=1e-12)
    # Tick marks: dark pixels just below the bar exactly at the columns of their values.
    expected = [first + round((v - vmin) / (vmax - vmin) * (last - first)) for v in values]
    marks = np.asarray(bar)[height : height + TICK_LENGTH]
    for row in marks:
        assert np.nonzero((row < 128).all(axis=1))[0].tolist() == expected
    # One label under each mark: the dark columns of the text band form len(ticks) runs,
    # each centred on its mark.
    text = (np.asarray(bar)[height + TICK_LENGTH :] < 128).all(axis=2).any(axis=0)
    runs = _runs(np.nonzero(text)[0], gap=5)
    assert len(runs) == len(ticks)
    for (start, stop), column in zip(runs, expected, strict=True):
        assert abs((start + stop) / 2 - column) <= 3


def _runs(columns: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """Runs of columns whose neighbours are less than ``gap`` apart: (first, last) each."""
    runs: list[list[int]] = []
    for c in columns.tolist():
        if runs and c - runs[-1][1] < gap:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return [(a, b) for a, b in runs]


def test_a_narrow_colorbar_keeps_fewer_labels_apart():
    _, ticks = colorbar_ticks(0.0012, 0.0187, width=300, max_ticks=7, font_size=14)
    assert 2 <= len(ticks) < 7  # the 7 ticks of a wide bar would touch at 300 pixels
    bar = colorbar("viridis", 0.0012, 0.0187, width=300, height=12, font_size=14)
    text = (np.asarray(bar)[12 + TICK_LENGTH :] < 128).all(axis=2).any(axis=0)
    assert len(_runs(np.nonzero(text)[0], gap=10)) == len(ticks)  # at least 10 px apart
    _, wide = colorbar_ticks(0.0012, 0.0187, width=900, max_ticks=7, font_size=14)
    assert len(wide) == 7


def test_with_colorbar_puts_the_bar_under_the_image():
    image = Image.fromarray(np.full((30, 200, 3), 7, dtype=np.uint8))
    out = with_colorbar(image, "viridis", 0.0, 1.0, label="value")
    bar = colorbar("viridis", 0.0, 1.0, width=200, label="value")
    assert out.size == (200, 30 + 6 + bar.height)
    np.testing.assert_array_equal(np.asarray(out)[:30], np.asarray(image))
    np.testing.assert_array_equal(np.asarray(out)[36:], np.asarray(bar))


def test_shared_range_is_what_normalize_maps_to_0_and_1():
    rng = np.random.default_rng(5)
    maps = rng.normal(size=(3, 4, 4)).astype(np.float32)
    low, high = shared_range(maps)
    scaled = normalize(maps, "shared")
    assert scaled.reshape(-1)[maps.argmin()] == 0 and scaled.reshape(-1)[maps.argmax()] == 1
    assert (low, high) == (maps.min(), maps.max())
    low, high = shared_range(maps, signed=True)
    bound = np.abs(maps).max()
    assert (low, high) == (-bound, bound)
    signed = normalize(maps, "shared", signed=True)
    np.testing.assert_allclose(signed, 0.5 + maps / (2 * bound), atol=1e-6)
    assert shared_range(np.zeros((1, 2, 2)), signed=True) == (-1.0, 1.0)  # as normalize


# png_bytes (xviz.render.encode)


def test_png_round_trip():
    grid = channel_grid(TWO, [0, 1], tile=24)
    data = png_bytes(grid)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    decoded = Image.open(io.BytesIO(data))
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(grid))
