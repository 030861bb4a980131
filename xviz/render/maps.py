"""Render activation maps and attributions: numpy arrays in, PIL images or PNG bytes out.

Pure functions with no model or UI state. Maps are scaled to [0, 1] by `normalize`, coloured
through a lookup table from `xviz.render.colormaps` and resized: by nearest neighbour to show their
true resolution, or bilinearly before colouring so that no off-colormap colours appear.
"""

import math
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image, ImageDraw, ImageFont

from xviz.render.colormaps import DIVERGING, apply

Scale = Literal["shared", "channel"]
RGB = tuple[int, int, int]

LABEL_MIN_TILE = 24
"""Tiles smaller than this get no channel label: it would hide most of the map."""


def normalize(
    maps: ArrayLike,
    scale: Scale = "shared",
    signed: bool = False,
    clip_percentile: float | None = None,
) -> np.ndarray:
    """Scale maps (C, H, W) to float32 values in [0, 1].

    Args:
        scale: "shared" uses one range for all C maps, so they compare; "channel" gives each
            map its own range, so each shows its own detail.
        signed: the range is symmetric around 0 and 0 lands on 0.5 (for diverging colormaps).
        clip_percentile: if given (in (50, 100]), the range ends at this percentile (and at
            100 minus it) instead of the extremes, so a few outliers do not wash out the rest.

    A constant map becomes 0 (0.5 when signed, where it can only be all zeros), never NaN.
    """
    maps = np.asarray(maps, dtype=np.float32)
    low, high = value_range(maps, scale, signed, clip_percentile)
    flat = maps.reshape(len(maps), -1)
    out = _rescale(flat, low[:, None], high[:, None])
    if signed:  # a constant map is all zeros: the middle colour
        out = np.where((high > low)[:, None], out, 0.5)
    return np.clip(out, 0, 1).astype(np.float32, copy=False).reshape(maps.shape)


def value_range(
    maps: ArrayLike,
    scale: Scale = "shared",
    signed: bool = False,
    clip_percentile: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The values `normalize` maps to 0 and to 1, per map: (low (C,), high (C,)) float32.

    With "shared" every map has the same range; when signed it is symmetric, (-b, b).
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (C, H, W), got {maps.shape}")
    if scale not in ("shared", "channel"):
        raise ValueError(f"scale must be 'shared' or 'channel', got {scale!r}")
    flat = maps.reshape(len(maps), -1)
    axis = None if scale == "shared" else 1
    if signed:
        _, bound = _range(np.abs(flat), axis, clip_percentile)
        low, high = -bound, bound
    else:
        low, high = _range(flat, axis, clip_percentile)
    shape = (len(maps),)
    return (
        np.broadcast_to(low, (len(maps), 1)).reshape(shape).astype(np.float32),
        np.broadcast_to(high, (len(maps), 1)).reshape(shape).astype(np.float32),
    )


def _range(
    flat: np.ndarray, axis: int | None, clip_percentile: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Low and high ends of `flat` (C, N) over `axis`, kept broadcastable against it."""
    if clip_percentile is None:
        return flat.min(axis=axis, keepdims=True), flat.max(axis=axis, keepdims=True)
    if not 50 < clip_percentile <= 100:
        raise ValueError(f"clip_percentile must be in (50, 100], got {clip_percentile}")
    low, high = np.percentile(flat, [100 - clip_percentile, clip_percentile], axis, keepdims=True)
    return low, high


def _rescale(values: np.ndarray, low: ArrayLike, high: ArrayLike) -> np.ndarray:
    """Map [low, high] linearly onto [0, 1]; an empty range maps everything to 0."""
    span = np.asarray(high, dtype=np.float32) - low
    return (values - low) / np.where(span > 0, span, 1)


def page(order: ArrayLike, page_index: int, per_page: int = 64) -> tuple[np.ndarray, int]:
    """The slice of `order` shown on page `page_index` (clamped to the pages there are).

    Returns (indices, n_pages); there is always at least one page, possibly empty.
    """
    if per_page < 1:
        raise ValueError(f"per_page must be at least 1, got {per_page}")
    order = np.asarray(order)
    n_pages = max(1, -(-len(order) // per_page))
    page_index = min(max(page_index, 0), n_pages - 1)
    return order[page_index * per_page : (page_index + 1) * per_page], n_pages


def channel_grid(
    maps: ArrayLike,
    channels: Sequence[int] | np.ndarray,
    cmap: str | None = None,
    scale: Scale = "shared",
    signed: bool = False,
    clip_percentile: float | None = None,
    tile: int = 64,
    columns: int = 8,
    pad: int = 2,
    labels: bool = True,
    background: RGB = (255, 255, 255),
    numbers: Sequence[int] | np.ndarray | None = None,
    underlay: np.ndarray | None = None,
    alpha: float = 0.5,
) -> Image.Image:
    """A mosaic of the maps (C, H, W) of `channels`, in that order, `columns` tiles a row.

    `numbers` are the labels drawn on the tiles (default: `channels`), for when `maps` holds
    only the channels of one page. `underlay`, an RGB image (S, S, 3) uint8, is shrunk to a
    tile and blended under every tile with the map's weight `alpha`.

    Each map is scaled with `normalize` over the channels shown, stretched to tile x tile
    pixels by nearest neighbour (so each activation stays a visible block) and, if `labels`,
    marked with its channel number. cmap defaults to viridis, or coolwarm when signed.
    The image is columns' * (tile + pad) + pad wide and rows * (tile + pad) + pad high, where
    columns' = min(columns, len(channels)).
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (C, H, W), got {maps.shape}")
    channels = np.asarray(channels, dtype=np.intp).reshape(-1)
    if channels.size == 0:
        raise ValueError("no channels to draw")
    values = normalize(maps[channels], scale, signed, clip_percentile)  # (N, H, W)
    # Nearest neighbour commutes with colouring: colour whichever is smaller, the maps or the
    # tiles (a 9x9 map: 50x fewer pixels than its tile; a 147x147 one: 5x more).
    colours = _cmap_for(cmap, signed, "viridis")
    if values.shape[1] * values.shape[2] > tile * tile:
        tiles = apply(_nearest(values[..., None], (tile, tile))[..., 0], colours)
    else:
        tiles = _nearest(apply(values, colours), (tile, tile))
    if underlay is not None:
        small = np.asarray(Image.fromarray(underlay).resize((tile, tile), Image.BILINEAR))
        tiles = (alpha * tiles + (1 - alpha) * small[None].astype(np.float32)).astype(np.uint8)
    numbers = channels if numbers is None else np.asarray(numbers).reshape(-1)

    columns = min(columns, len(channels))
    rows = -(-len(channels) // columns)
    step = tile + pad
    canvas = np.empty((rows * step + pad, columns * step + pad, 3), dtype=np.uint8)
    # Filling from one contiguous row is ~100x faster than broadcasting a 3-tuple.
    canvas[:] = np.tile(np.asarray(background, dtype=np.uint8), (canvas.shape[1], 1))
    font_size = max(8, min(14, tile // 6))
    for i, (channel, rgb) in enumerate(zip(numbers, tiles, strict=True)):
        y, x = pad + (i // columns) * step, pad + (i % columns) * step
        canvas[y : y + tile, x : x + tile] = rgb
        if labels and tile >= LABEL_MIN_TILE:
            label = _label(str(channel), font_size)[:tile, :tile]
            canvas[y : y + label.shape[0], x : x + label.shape[1]] = label
    return Image.fromarray(canvas)


@lru_cache(maxsize=4096)
def _label(text: str, size: int) -> np.ndarray:
    """White text on a black box (h, w, 3) uint8: readable over any colormap."""
    # Cached as pixels because drawing text costs more than the rest of a grid page.
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    margin = 1
    box = Image.new("RGB", (right - left + 2 * margin, bottom - top + 2 * margin))
    ImageDraw.Draw(box).text((margin - left, margin - top), text, font=font, fill=(255, 255, 255))
    return np.asarray(box)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow's built-in font: no font file to ship; without FreeType it ignores `size`.
    return ImageFont.load_default(size=size)


def enlarge(
    map2d: ArrayLike,
    cmap: str = "viridis",
    size: int = 384,
    vmin: float | None = None,
    vmax: float | None = None,
    smooth: bool = False,
) -> Image.Image:
    """One map (H, W) coloured and enlarged so that its longer side is `size` pixels.

    vmin/vmax default to the map's own range (pass the grid's to keep its scale). Nearest
    neighbour shows the map's true resolution; `smooth` interpolates bilinearly instead.
    """
    map2d = _as_2d(map2d)
    low = map2d.min() if vmin is None else vmin
    high = map2d.max() if vmax is None else vmax
    values = _rescale(map2d, low, high)
    longer = max(map2d.shape)
    shape = (round(map2d.shape[0] * size / longer), round(map2d.shape[1] * size / longer))
    if smooth:
        return Image.fromarray(apply(_bilinear(values, shape), cmap))
    return Image.fromarray(_nearest(apply(values, cmap), shape))


def overlay(
    image_rgb: ArrayLike,
    map2d: ArrayLike,
    cmap: str | None = None,
    alpha: float = 0.5,
    signed: bool = False,
    clip_percentile: float | None = 99.0,
) -> Image.Image:
    """A map (h, w) upsampled bilinearly onto an image (H, W, 3) uint8 and alpha-blended.

    alpha 0 gives the image, 1 the coloured map. cmap defaults to inferno, coolwarm when
    signed; scaling as in `normalize`.
    """
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    values = normalize(_as_2d(map2d)[None], "shared", signed, clip_percentile)[0]
    rgb = apply(_bilinear(values, image.shape[:2]), _cmap_for(cmap, signed, "inferno"))
    blended = image * np.float32(1 - alpha) + rgb * np.float32(alpha)
    return Image.fromarray(np.rint(blended).astype(np.uint8))


def heatmap(
    attr: ArrayLike,
    signed: bool,
    cmap: str | None = None,
    clip_percentile: float | None = 99.0,
) -> Image.Image:
    """An attribution map (H, W) coloured at its own size.

    cmap defaults to inferno, or coolwarm when signed (0 is then the neutral middle colour).
    """
    values = normalize(_as_2d(attr)[None], "shared", signed, clip_percentile)[0]
    return Image.fromarray(apply(values, _cmap_for(cmap, signed, "inferno")))


def shared_range(
    maps: ArrayLike, signed: bool = False, clip_percentile: float | None = None
) -> tuple[float, float]:
    """The values that `normalize` with scale "shared" maps to 0 and 1, for a colourbar.

    Signed: (-b, b) with b the largest magnitude (1 when every value is 0, as in `normalize`).
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (C, H, W), got {maps.shape}")
    flat = maps.reshape(len(maps), -1)
    if signed:
        _, bound = _range(np.abs(flat), None, clip_percentile)
        b = float(bound.item()) or 1.0
        return -b, b
    low, high = _range(flat, None, clip_percentile)
    return float(low.item()), float(high.item())


NICE_STEPS = (1.0, 2.0, 2.5, 5.0)
"""Tick steps are one of these times a power of ten."""
TICK_LENGTH = 4
"""Pixels a colourbar's tick marks hang below the bar."""


def nice_ticks(vmin: float, vmax: float, max_ticks: int = 7) -> np.ndarray:
    """Round tick values in [vmin, vmax]: the multiples of the smallest step in
    `NICE_STEPS` x 10^k that gives at most `max_ticks` of them. (n,) float64.

    vmin == vmax gives that one value.
    """
    if not (np.isfinite(vmin) and np.isfinite(vmax)) or vmax < vmin:
        raise ValueError(f"need finite vmin <= vmax, got {vmin}, {vmax}")
    if max_ticks < 2:
        raise ValueError(f"max_ticks must be at least 2, got {max_ticks}")
    if vmax == vmin:
        return np.array([float(vmin)])
    exponent = math.floor(math.log10((vmax - vmin) / (max_ticks - 1)))
    for power in (exponent, exponent + 1):
        for mantissa in NICE_STEPS:
            step = mantissa * 10.0**power
            # A tolerance of a millionth of a step keeps ends such as 0.3 = 3 * 0.1.
            first = math.ceil(vmin / step - 1e-6)
            last = math.floor(vmax / step + 1e-6)
            if last - first + 1 <= max_ticks:
                return np.arange(first, last + 1) * step
    raise AssertionError("unreachable: a step of 10^(exponent + 1) always fits")


def tick_labels(ticks: ArrayLike) -> list[str]:
    """Tick values as text with the fewest decimals that tell them apart exactly."""
    ticks = np.asarray(ticks, dtype=np.float64).reshape(-1)
    scale = float(np.abs(ticks).max()) if ticks.size else 0.0
    tolerance = 1e-9 * max(scale, 1e-300)
    decimals = next(
        (d for d in range(12) if np.all(np.abs(np.round(ticks, d) - ticks) <= tolerance)), 12
    )
    # "+ 0.0" turns a -0.0 into 0.0, so that no "-0" is printed.
    return [f"{round(float(t), decimals) + 0.0:,.{decimals}f}" for t in ticks]


class Tick(NamedTuple):
    """One tick of a colourbar: its pixel column, its value and its label."""

    column: int
    value: float
    text: str


def colorbar_ticks(
    vmin: float, vmax: float, width: int, max_ticks: int = 7, font_size: int = 12
) -> tuple[int, list[Tick]]:
    """Where a `colorbar` `width` pixels wide puts its ticks -> (margin, ticks).

    The ticks are `nice_ticks(vmin, vmax, n)` for the largest n <= max_ticks whose labels
    stay apart (n = 2 at least). The bar runs from column `margin` to `width - margin - 1`,
    leaving room for the end labels; value v sits at column
    margin + round((v - vmin) / (vmax - vmin) * (width - 2 * margin - 1)).
    """
    font = _font(font_size)
    gap = font_size  # at least one em between neighbouring labels
    for n in range(max_ticks, 1, -1):
        values = nice_ticks(vmin, vmax, n)
        texts = tick_labels(values)
        lengths = [font.getlength(text) for text in texts]
        margin = math.ceil(max(lengths) / 2) + 2
        bar_width = width - 2 * margin
        if bar_width < 2:
            raise ValueError(f"a colourbar {width} pixels wide has no room for its labels")
        span = vmax - vmin
        columns = [
            margin + (round((v - vmin) / span * (bar_width - 1)) if span > 0 else 0) for v in values
        ]
        apart = all(
            right - left >= (a + b) / 2 + gap
            for (left, a), (right, b) in pairwise(zip(columns, lengths, strict=True))
        )
        if apart or n == 2:
            ticks = [Tick(c, float(v), t) for c, v, t in zip(columns, values, texts, strict=True)]
            return margin, ticks
    raise ValueError(f"max_ticks must be at least 2, got {max_ticks}")


def colorbar(
    cmap: str,
    vmin: float,
    vmax: float,
    width: int = 256,
    height: int = 16,
    max_ticks: int = 7,
    font_size: int = 12,
    label: str | None = None,
    foreground: RGB = (0, 0, 0),
    background: RGB = (255, 255, 255),
) -> Image.Image:
    """A horizontal colourbar `width` pixels wide: the colormap from vmin to vmax in a bar
    `height` pixels high, tick marks hanging `TICK_LENGTH` pixels below it with their values
    under them (placed by `colorbar_ticks`), and an optional `label` centred below those.
    """
    margin, ticks = colorbar_ticks(vmin, vmax, width, max_ticks, font_size)
    font = _font(font_size)
    numbers_top = height + TICK_LENGTH + 2
    label_top = numbers_top + font.getbbox("0123456789-,.")[3] + 4
    bottom = label_top + (font.getbbox(label)[3] if label else -4) + 2
    canvas = np.empty((bottom, width, 3), dtype=np.uint8)
    canvas[:] = np.tile(np.asarray(background, dtype=np.uint8), (width, 1))
    bar_width = width - 2 * margin
    canvas[:height, margin : margin + bar_width] = apply(np.linspace(0, 1, bar_width), cmap)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for column, _, text in ticks:
        draw.line([(column, height), (column, height + TICK_LENGTH - 1)], fill=foreground)
        text_width = draw.textlength(text, font=font)
        left = min(max(column - text_width / 2, 0), width - text_width)
        draw.text((left, numbers_top), text, font=font, fill=foreground)
    if label:
        left = max((width - draw.textlength(label, font=font)) / 2, 0)
        draw.text((left, label_top), label, font=font, fill=foreground)
    return image


def with_colorbar(image: Image.Image, cmap: str, vmin: float, vmax: float, **bar) -> Image.Image:
    """`image` with a `colorbar` of its width below it (`bar`: colorbar's other arguments)."""
    strip = colorbar(cmap, vmin, vmax, width=image.width, **bar)
    background = bar.get("background", (255, 255, 255))
    out = Image.new("RGB", (image.width, image.height + 6 + strip.height), background)
    out.paste(image.convert("RGB"), (0, 0))
    out.paste(strip, (0, image.height + 6))
    return out


def _as_2d(map2d: ArrayLike) -> np.ndarray:
    map2d = np.asarray(map2d, dtype=np.float32)
    if map2d.ndim != 2:
        raise ValueError(f"map must have shape (H, W), got {map2d.shape}")
    return map2d


def _cmap_for(cmap: str | None, signed: bool, unsigned_default: str) -> str:
    if cmap is not None:
        return cmap
    return DIVERGING[0] if signed else unsigned_default


def _nearest(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of images (..., h, w, 3) to (..., H, W, 3), `shape` = (H, W)."""
    # Sampling at output pixel centres, as PIL's NEAREST does; np.take is several times faster
    # than fancy indexing here.
    rows = ((np.arange(shape[0]) + 0.5) * (rgb.shape[-3] / shape[0])).astype(np.intp)
    cols = ((np.arange(shape[1]) + 0.5) * (rgb.shape[-2] / shape[1])).astype(np.intp)
    return np.take(np.take(rgb, rows, axis=-3), cols, axis=-2)


def _bilinear(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of one map (h, w) to `shape` (H, W)."""
    # Scalars, not colours, are interpolated: blended colours may not be on the colormap.
    image = Image.fromarray(values.astype(np.float32, copy=False))  # mode "F"
    resized = image.resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.asarray(resized)
