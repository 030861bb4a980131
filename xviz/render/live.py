"""The Live tab's picture of one frame, as one HTML fragment: the two channel grids (one JPEG
each, inlined: JPEG encodes a grid several times faster than PNG), the channel shown large
with its colourbar, the top-3 classes and a line for the page's frame-rate meter. Strings and
arrays in, a string out; nothing is served as a file, so a frame reaches the page in one
message.
"""

from __future__ import annotations

from html import escape

import numpy as np

from xviz.engine.analysis import Prediction
from xviz.engine.live import LiveMaps
from xviz.render import html
from xviz.render import maps as render
from xviz.render.encode import data_url

TILE = 48  # 8 columns of 48 px: a grid 402 px wide, as wide as the Activations tab's
COLUMNS = 8
PAD = 2
LARGE = 240


def _cmap(values: np.ndarray) -> tuple[str, bool]:
    """A diverging map centred on 0 when the values have negatives (as the Activations tab's
    ``auto``), else viridis."""
    signed = bool((values < 0).any())
    return ("coolwarm" if signed else "viridis"), signed


def grid_figure(
    values: np.ndarray, channels: np.ndarray, title: str, map_name: str, selected: int | None
) -> str:
    """One map's page: a JPEG of its tiles (each on its own colour range) with a button per
    tile (``data-channel``) and the grid's colourbar in words."""
    cmap, signed = _cmap(values)
    picture = render.channel_grid(
        values,
        np.arange(len(channels)),
        cmap=cmap,
        scale="channel",
        signed=signed,
        tile=TILE,
        columns=COLUMNS,
        pad=PAD,
        numbers=channels,
    )
    low, high = render.value_range(values, "channel", signed)
    labels = [
        f"{map_name} channel {c}: from {html.number(lo)} to {html.number(hi)}; click: show large"
        for c, lo, hi in zip(channels, low, high, strict=True)
    ]
    return html.grid_html(
        data_url(picture, "jpeg"),
        picture.size,
        title,
        [int(c) for c in channels],
        labels,
        html.grid_colorbar(cmap, low, high, signed, shared=False),
        (TILE, PAD, COLUMNS),
        selected=selected,
        alt=f"{map_name}: channels {channels[0]}-{channels[-1]}, this frame",
    )


def large_figure(m: LiveMaps) -> str:
    """The channel shown large, on its own range, with a colourbar in numbers."""
    name = f"{m.layer}.{m.side}"
    cmap, signed = _cmap(m.large)
    low, high = render.value_range(m.large[None], "channel", signed)
    picture = render.enlarge(m.large, cmap, size=LARGE, vmin=float(low[0]), vmax=float(high[0]))
    h, w = m.large.shape
    caption = f"{name}, channel {m.channel} ({h}x{w}), this frame"
    bar = html.colorbar_html(cmap, html.range_ticks(float(low[0]), float(high[0]), signed), caption)
    return (
        f'<figure class="xviz-live-large"><img src="{data_url(picture, "jpeg")}" '
        f'width="{picture.width}" height="{picture.height}" alt="{escape(caption)}"/>'
        f"{bar}</figure>"
    )


def top_html(top: list[Prediction] | None, age_s: float | None) -> str:
    """The top classes as bars, with how old the frame they are of is."""
    if not top:
        return '<div class="xviz-live-top"><p>Prediction: on the next frames.</p></div>'
    rows = "".join(
        f'<li><span class="xviz-live-class">{escape(p.label)}</span>'
        f'<meter min="0" max="1" value="{p.probability:.4f}"></meter>'
        f"<span>{100 * p.probability:.1f}%</span></li>"
        for p in top
    )
    age = "" if age_s is None else f" (of a frame {age_s:.1f} s ago)"
    return (
        f'<div class="xviz-live-top" id="live-prediction"><p>Prediction, top {len(top)}{age}:</p>'
        f"<ol>{rows}</ol></div>"
    )


def live_html(
    m: LiveMaps,
    frame: str,
    top: list[Prediction] | None,
    top_age_s: float | None,
    status: str,
) -> str:
    """The whole view of one frame. ``frame`` identifies the camera frame it shows (the page's
    meter matches it to the frame's capture time); ``status`` is the line under the maps."""
    selected = {m.side: m.channel}
    grids = [
        grid_figure(
            getattr(m, half),
            getattr(m, f"{half}_channels"),
            f"{title}: channels {getattr(m, f'{half}_channels')[0]}-"
            f"{getattr(m, f'{half}_channels')[-1]} of {getattr(m, f'num_{half}')} (before BN)",
            f"{m.layer}.{half}",
            selected.get(half),
        )
        for half, title in (("depthwise", "Depthwise 3x3"), ("pointwise", "Pointwise 1x1"))
    ]
    return (
        f'<div class="xviz-live" data-frame="{escape(frame)}">'
        f'<div class="xviz-live-grids"><div id="live-depthwise">{grids[0]}</div>'
        f'<div id="live-pointwise">{grids[1]}</div></div>'
        f'<div class="xviz-live-side">{large_figure(m)}{top_html(top, top_age_s)}</div>'
        f'<p class="xviz-live-status xviz-small">{escape(status)} '
        f'<span class="xviz-live-meter"></span></p></div>'
    )


def message_html(text: str) -> str:
    """What the view shows instead of maps: a frame that could not be read, a bad request."""
    return (
        f'<div class="xviz-live" role="status">'
        f'<p class="xviz-live-message">{escape(text)}</p></div>'
    )
