"""Figures of the faithfulness check (``xviz.methods.faithfulness``): the deletion and insertion
curves of every method beside the baselines (dashed), and the randomisation row of maps.

In the look of ``xviz.render.cost_figures`` (``dark=True`` for dark themes, transparent
backgrounds).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from xviz.render.cost_figures import _style
from xviz.render.trace_figures import colorscale

# One colour per method (Tableau 10, as the cost figures' palette), grey for the baselines.
METHOD_COLORS: tuple[str, ...] = (
    "#4C78A8",
    "#F58518",
    "#E45756",
    "#72B7B2",
    "#54A24B",
    "#B279A2",
    "#FF9DA6",
    "#9D755D",
)
BASELINE_STYLES: dict[str, dict] = {
    "random": {"color": "#7F7F7F", "dash": "dash"},
    "centre": {"color": "#7F7F7F", "dash": "dot"},
}
# Maps of the randomisation row are shown at most this many pixels a side (hover stays exact
# enough, and 24 maps stay a small figure).
THUMB = 64


def curves_figure(
    curves: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    titles: dict[str, str],
    baselines: Sequence[str],
    title: str,
    dark: bool = False,
) -> go.Figure:
    """Deletion (left) and insertion (right) curves, one line per method and per baseline.

    Args:
        curves: name -> (fractions, deletion scores, insertion scores), methods first.
        titles: name -> the name shown in the legend.
        baselines: the names of ``curves`` drawn dashed (the orderings that know nothing).
    """
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "Deletion: most important pixels greyed first (lower is better)",
            "Insertion: put back into a blurred copy (higher is better)",
        ),
        horizontal_spacing=0.08,
    )
    colors = iter(METHOD_COLORS)
    for name, (fractions, deletion, insertion) in curves.items():
        if name in baselines:
            line = {**BASELINE_STYLES.get(name, {"color": "#7F7F7F", "dash": "dash"}), "width": 2}
        else:
            line = {"color": next(colors, "#333333"), "width": 2}
        for col, scores, kind in ((1, deletion, "deletion"), (2, insertion, "insertion")):
            fig.add_trace(
                go.Scatter(
                    x=list(fractions),
                    y=list(scores),
                    mode="lines",
                    name=titles.get(name, name),
                    legendgroup=name,
                    showlegend=col == 1,
                    line=line,
                    hovertemplate=(
                        f"{titles.get(name, name)}, {kind}<br>%{{x:.0%}} of the pixels: "
                        "probability %{y:.3f}<extra></extra>"
                    ),
                ),
                row=1,
                col=col,
            )
    _style(fig, title, dark, height=470, legend="bottom")
    fig.update_layout(margin={"l": 60, "r": 20, "t": 80, "b": 130})
    fig.update_layout(legend={"y": -0.2})  # below the axes' titles
    fig.update_annotations(font_size=12)
    fig.update_xaxes(title_text="fraction of pixels", tickformat=".0%", range=[0, 1])
    fig.update_yaxes(title_text="probability of the class", row=1, col=1)
    return fig


def _thumbnail(values: np.ndarray) -> np.ndarray:
    """|map| scaled to [0, 1] and shrunk to at most THUMB a side by block means: (t, t)."""
    a = np.abs(np.asarray(values, dtype=np.float64))
    step = max(1, int(np.ceil(a.shape[0] / THUMB)))
    side = a.shape[0] // step
    a = a[: side * step, : side * step].reshape(side, step, side, step).mean(axis=(1, 3))
    high = a.max()
    return a / high if high > 0 else a


def randomisation_figure(
    rows: list[tuple[str, list[tuple[str, np.ndarray]]]], title: str, dark: bool = False
) -> go.Figure:
    """A grid of maps: one row per method, the original then each randomisation cut.

    Args:
        rows: (method title, [(caption, (S, S) map), ...]) per row; every row has as many
            maps. Each map is shown as its absolute value on its own [0, 1] scale.
    """
    columns = max(len(maps) for _, maps in rows)
    captions = [caption for _, maps in rows for caption, _ in maps]
    fig = make_subplots(
        rows=len(rows),
        cols=columns,
        subplot_titles=captions,
        horizontal_spacing=0.02,
        vertical_spacing=0.06,
        row_titles=[name for name, _ in rows],
    )
    for r, (name, maps) in enumerate(rows, start=1):
        for c, (caption, values) in enumerate(maps, start=1):
            fig.add_trace(
                go.Heatmap(
                    z=_thumbnail(values),
                    zmin=0.0,
                    zmax=1.0,
                    colorscale=colorscale("inferno"),
                    showscale=False,
                    hovertemplate=f"{name}, {caption}<br>|map| %{{z:.2f}} of its maximum"
                    "<extra></extra>",
                ),
                row=r,
                col=c,
            )
    _style(fig, title, dark, height=190 * len(rows) + 90)
    fig.update_layout(margin={"l": 10, "r": 140, "t": 80, "b": 10})
    fig.update_annotations(font_size=11)
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", constrain="domain")
    for i in range(1, len(rows) * columns + 1):  # square pixels in every subplot
        suffix = "" if i == 1 else str(i)
        fig.layout[f"yaxis{suffix}"].scaleanchor = f"x{suffix}"
    return fig
