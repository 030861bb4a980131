"""Figures of the Attributions tab: an enlarged Grad-CAM and an attribution heatmap as Plotly
figures with a numbered colourbar and a value under the pointer (the strip's HTML colourbar is
``xviz.render.html.colorbar_html``, as every other).

In the look of ``xviz.render.cost_figures`` (``dark=True`` for dark themes, transparent
backgrounds) and coloured with the same tables as the images beside them
(``xviz.render.colormaps``).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from xviz.render.cost_figures import _style
from xviz.render.encode import data_url
from xviz.render.trace_figures import colorscale

HEIGHT = 460


def _square(fig: go.Figure, title: str, dark: bool, side: int) -> go.Figure:
    """Image axes: pixel (0, 0) at the top left, centred on integers as ``go.Image`` draws
    pixels, no grid, square."""
    _style(fig, title, dark, height=HEIGHT)
    fig.update_layout(margin={"l": 10, "r": 10, "t": 60, "b": 10}, title_font_size=14)
    edges = [-0.5, side - 0.5]
    fig.update_xaxes(visible=False, range=edges, constrain="domain")
    fig.update_yaxes(
        visible=False, range=edges[::-1], scaleanchor="x", scaleratio=1, constrain="domain"
    )
    return fig


def gradcam_figure(
    image: np.ndarray,
    cells: np.ndarray,
    captum: np.ndarray,
    zmax: float,
    alpha: float,
    title: str,
    unit: str,
    note: str | None = None,
    dark: bool = False,
) -> go.Figure:
    """One block's Grad-CAM at its own resolution over the image.

    Args:
        image: (S, S, 3) uint8, the picture the model saw.
        cells: (h, w) the map's values in ``unit``, one square per position of the block.
        captum: (h, w) the same map as Captum's ``LayerGradCam`` gives it, for the hover text.
        zmax: the value of the brightest colour (the strip's scale); 0 is the darkest.
        alpha: opacity of the map over the image.
        note: written across the figure (e.g. why the map is blank).
    """
    side = image.shape[0]
    h, w = cells.shape
    rows, cols = np.mgrid[0:h, 0:w]
    fig = go.Figure(go.Image(source=data_url(Image.fromarray(image)), hoverinfo="skip"))
    fig.add_trace(
        go.Heatmap(
            z=cells,
            x=(np.arange(w) + 0.5) * side / w - 0.5,  # cell centres in pixel coordinates
            y=(np.arange(h) + 0.5) * side / h - 0.5,
            zmin=0.0,
            zmax=zmax,
            colorscale=colorscale("inferno"),
            opacity=alpha,
            customdata=np.stack([rows, cols, captum], axis=-1),
            hovertemplate=(
                f"row %{{customdata[0]}}, column %{{customdata[1]}} of {h}x{w}<br>"
                f"{unit}: %{{z:.3g}}<br>Captum LayerGradCam: %{{customdata[2]:.3g}}<extra></extra>"
            ),
            colorbar={"title": {"text": unit, "side": "right"}, "thickness": 14},
        )
    )
    if note:
        fig.add_annotation(
            text=note,
            x=0.5,
            y=0.5,
            xref="paper",
            yref="paper",
            showarrow=False,
            font={"size": 14, "color": "#fff"},
            bgcolor="rgba(0,0,0,0.6)",
        )
    return _square(fig, title, dark, side)


def attribution_figure(
    values: np.ndarray,
    low: float,
    high: float,
    signed: bool,
    title: str,
    unit: str,
    dark: bool = False,
) -> go.Figure:
    """An attribution map (S, S) as a heatmap: coolwarm from ``low`` = -``high`` to ``high``
    when ``signed`` (0 the neutral middle), inferno from ``low`` to ``high`` otherwise; values
    beyond take the end colours, the hover text gives them exactly."""
    side = values.shape[0]
    fig = go.Figure(
        go.Heatmap(
            z=values.astype(np.float32),
            x=np.arange(side),
            y=np.arange(side),
            zmin=low,
            zmax=high,
            colorscale=colorscale("coolwarm" if signed else "inferno"),
            hovertemplate=f"x %{{x}}, y %{{y}}<br>{unit}: %{{z:.3g}}<extra></extra>",
            colorbar={"title": {"text": unit, "side": "right"}, "thickness": 14},
        )
    )
    return _square(fig, title, dark, side)
