"""HTML fragments of the app's maps: channel grids with a button per tile, an enlarged channel
that reports where it is clicked, the Grad-CAM strip, and colourbars with numbers. Strings in,
strings out: the images are URLs the caller gives (served files, or ``data:`` URLs); the UI
wires the clicks (``data-channel``, ``data-y/x``, ``data-block``).

Every tile and every map is reachable by keyboard (buttons, ``tabindex``) and says what it
shows (``aria-label``, ``title``, ``alt``), so that the maps are not pictures only.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

from xviz.render.colormaps import get_lut

GRADIENT_STOPS = 11


def number(value: float) -> str:
    """A value as a reader wants it on a colourbar: 3 significant digits, no "-0"."""
    text = f"{value:.3g}"
    return "0" if text in ("-0", "0") else text


def gradient_css(cmap: str, stops: int = GRADIENT_STOPS) -> str:
    """A CSS left-to-right linear-gradient that samples colormap ``cmap`` evenly."""
    lut = get_lut(cmap)
    parts = []
    for i in range(stops):
        r, g, b = lut[round(i * 255 / (stops - 1))]
        parts.append(f"rgb({r},{g},{b}) {100 * i / (stops - 1):.0f}%")
    return f"linear-gradient(to right, {', '.join(parts)})"


def colorbar_html(cmap: str, ticks: Sequence[tuple[float, str]], caption: str) -> str:
    """A horizontal colourbar of ``cmap`` with labels at fractions of its width.

    ``ticks``: (fraction in [0, 1], label). ``caption`` says what the colours measure.
    """
    labels = "".join(
        f'<span class="xviz-tick" style="left:{100 * f:.1f}%">{escape(label)}</span>'
        for f, label in ticks
    )
    return (
        f'<div class="xviz-colorbar" role="img" aria-label="{escape(caption)}">'
        f'<div class="xviz-colorbar-bar" style="background:{gradient_css(cmap)}"></div>'
        f'<div class="xviz-colorbar-ticks">{labels}</div>'
        f'<div class="xviz-colorbar-caption">{escape(caption)}</div></div>'
    )


def range_ticks(low: float, high: float, signed: bool) -> list[tuple[float, str]]:
    """Ticks at both ends and the middle (0 for a signed, symmetric range)."""
    return [(0.0, number(low)), (0.5, number((low + high) / 2)), (1.0, number(high))]


def grid_colorbar(cmap: str, low: np.ndarray, high: np.ndarray, signed: bool, shared: bool) -> str:
    """The colourbar of a channel grid: numbers on a shared scale, words when every tile has
    its own range (each tile's numbers are in its label)."""
    if shared:
        caption = "activation, one scale for every tile"
        return colorbar_html(cmap, range_ticks(float(low[0]), float(high[0]), signed), caption)
    if signed:
        ticks = [(0.0, "−max"), (0.5, "0"), (1.0, "+max")]
        caption = "activation; each tile from −its max |value| to +its max (hover a tile)"
    else:
        ticks = [(0.0, "min"), (1.0, "max")]
        caption = "activation; each tile from its own min to its max (hover a tile)"
    return colorbar_html(cmap, ticks, caption)


def grid_html(
    src: str,
    size: tuple[int, int],
    title: str,
    channels: Sequence[int],
    labels: Sequence[str],
    colorbar: str,
    geometry: tuple[int, int, int],
    selected: int | None = None,
    linked: Sequence[int] = (),
    alt: str = "",
) -> str:
    """A channel grid image with a button over each tile.

    Args:
        src: the image's URL; size: its (width, height) in pixels.
        channels: the channel of each tile, in drawing order; labels: what each tile says to a
            screen reader and in its tooltip.
        geometry: (tile, pad, columns) in pixels, as the grid was drawn.
        selected: the channel shown large (outlined); linked: channels related to it (dashed).
    """
    width, height = size
    tile, pad, columns = geometry
    step = tile + pad
    linked_set = {int(c) for c in linked}
    buttons = []
    for i, (channel, label) in enumerate(zip(channels, labels, strict=True)):
        x, y = pad + (i % columns) * step, pad + (i // columns) * step
        state = (
            " xviz-selected"
            if channel == selected
            else " xviz-linked"
            if int(channel) in linked_set
            else ""
        )
        buttons.append(
            f'<button type="button" class="xviz-tile{state}" data-channel="{int(channel)}" '
            f'style="left:{100 * x / width:.3f}%;top:{100 * y / height:.3f}%;'
            f'width:{100 * tile / width:.3f}%;height:{100 * tile / height:.3f}%" '
            f'aria-label="{escape(label)}" title="{escape(label)}"></button>'
        )
    return (
        f'<figure class="xviz-grid"><figcaption>{escape(title)}</figcaption>'
        f'<div class="xviz-grid-box"><img src="{escape(src)}" width="{width}" '
        f'height="{height}" alt="{escape(alt or title)}"/>{"".join(buttons)}</div>'
        f"{colorbar}</figure>"
    )


def strip_html(items: Sequence[tuple[str, str, str]], title: str, chosen: str | None = None) -> str:
    """The Grad-CAM strip: one button per block, its thumbnail over its caption.

    ``items``: (block, image URL, caption) in strip order; a click (or Enter) on a button
    reports its block (``data-block``); ``chosen``, the block shown enlarged, is outlined.
    """
    buttons = "".join(
        f'<button type="button" class="xviz-cam{" xviz-selected" if block == chosen else ""}" '
        f'data-block="{escape(block)}" aria-pressed="{str(block == chosen).lower()}" '
        f'title="{escape(caption)}: click to enlarge">'
        f'<img src="{escape(src)}" alt="{escape(caption)}"/>'
        f'<span class="xviz-cam-caption" aria-hidden="true">{escape(caption)}</span></button>'
        for block, src, caption in items
    )
    return (
        f'<figure class="xviz-strip"><figcaption>{escape(title)}</figcaption>'
        f'<div class="xviz-strip-cams">{buttons}</div></figure>'
    )


def channel_html(
    src: str,
    size: tuple[int, int],
    shape: tuple[int, int],
    alt: str,
    colorbar: str,
    mark: tuple[int, int] | None = None,
) -> str:
    """One channel enlarged; a click (or Enter on the focused map) reports its (y, x) in map
    coordinates, ``shape`` (h, w) being the map's own size; ``mark`` outlines one position."""
    width, height = size
    h, w = shape
    marker = ""
    if mark is not None:
        y, x = mark
        marker = (
            f'<span class="xviz-mark" style="left:{100 * x / w:.3f}%;top:{100 * y / h:.3f}%;'
            f'width:{100 / w:.3f}%;height:{100 / h:.3f}%"></span>'
        )
    return (
        f'<figure class="xviz-channel"><div class="xviz-channel-box" tabindex="0" '
        f'role="button" data-h="{h}" data-w="{w}" aria-label="{escape(alt)}. Click a position, '
        f'or use the arrow keys and Enter, to see how its value is computed.">'
        f'<img src="{escape(src)}" width="{width}" height="{height}" alt="{escape(alt)}"/>'
        f"{marker}</div>{colorbar}</figure>"
    )
