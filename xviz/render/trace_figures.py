"""Plotly figures of how a separable conv computes: value traces and the step-by-step panel.

Built from ``xviz.methods.trace`` results, in the look of ``xviz.render.cost_figures``
(``dark=True`` for dark themes, transparent backgrounds). Signed values use the app's coolwarm
colormap centred on 0, non-negative ones viridis from 0, the same tables that colour the channel
grids.

Clickable parts carry what a click should open in ``customdata``: the depthwise channel of a
pointwise contribution or weight bar (None for the summed rest and the total).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from xviz.methods.trace import SepConvSteps, ValueTrace
from xviz.render.colormaps import get_lut
from xviz.render.cost_figures import _style

POSITIVE = "#C0392B"  # coolwarm's warm end, darkened for bars
NEGATIVE = "#2E5EAA"  # its cool end
TOTAL = "#7F7F7F"
HIGHLIGHT = "#F2C14E"  # the picked channel's bar and the traced position, in both themes
TOP_CONTRIBUTIONS = 8
"""Largest positive and largest negative pointwise contributions drawn one by one."""
TOP_WEIGHTS = 16
"""Pointwise weights drawn in the step-by-step panel, by absolute value."""
_STOPS = 32


def colorscale(name: str) -> list[list]:
    """A Plotly colorscale from one of ``xviz.render.colormaps``' tables (``_STOPS`` + 1 stops)."""
    lut = get_lut(name)
    index = np.linspace(0, len(lut) - 1, _STOPS + 1).round().astype(int)
    return [[i / _STOPS, f"rgb({r},{g},{b})"] for i, (r, g, b) in enumerate(lut[index])]


def _scale(values: np.ndarray) -> dict:
    """Heatmap colour arguments: coolwarm symmetric around 0 if any value is negative, else
    viridis from 0."""
    values = np.asarray(values, dtype=np.float64)
    high = float(np.abs(values).max()) if values.size else 0.0
    high = high if high > 0 else 1.0
    if (values < 0).any():
        return {"colorscale": colorscale("coolwarm"), "zmin": -high, "zmax": high}
    return {"colorscale": colorscale("viridis"), "zmin": 0.0, "zmax": high}


def _number(value: float) -> str:
    return f"{value + 0.0:.3g}"  # + 0.0 turns a -0.0 product into 0


def _small(fig: go.Figure, title: str, dark: bool, height: int) -> go.Figure:
    """``xviz.render.cost_figures``' look, sized for a panel of small figures."""
    _style(fig, title, dark, height=height)
    fig.update_layout(
        title_font_size=13, margin={"l": 40, "r": 20, "t": 60, "b": 40}, showlegend=False
    )
    return fig


def depthwise_trace_figure(trace: ValueTrace, dark: bool = False) -> go.Figure:
    """Input window x depthwise filter = products, three annotated 3x3 heatmaps, and the sum.

    Cells in the zero padding read "0 (pad)" and are outlined with a dashed line.
    """
    if trace.kind != "depthwise":
        raise ValueError(f"{trace.map_name} is not a depthwise map")
    top, left, bottom, right = trace.window
    rows, cols = list(range(top, bottom + 1)), list(range(left, right + 1))
    offsets = [-1, 0, 1]
    panels = (
        (
            f"input channel {trace.input_channel} around ({trace.y}, {trace.x})",
            trace.inputs,
            rows,
            cols,
        ),
        (f"depthwise filter {trace.channel}", trace.weights, offsets, offsets),
        ("products", trace.terms, rows, cols),
    )
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=[title for title, *_ in panels],
        horizontal_spacing=0.09,
    )
    for col, (title, values, ys, xs) in enumerate(panels, start=1):
        values = np.asarray(values, dtype=np.float64)
        text = [[_number(v) for v in row] for row in values]
        if col != 2:  # the filter has no padding: its 9 weights are all real
            for i, j in zip(*np.nonzero(trace.padded), strict=True):
                text[i][j] = "0 (pad)"
        fig.add_heatmap(
            z=values,
            x=[str(v) for v in xs],
            y=[str(v) for v in ys],
            text=text,
            texttemplate="%{text}",
            textfont={"size": 12},
            hovertemplate=f"{title}<br>row %{{y}}, column %{{x}}: %{{z:.6g}}<extra></extra>",
            showscale=False,
            xgap=1,
            ygap=1,
            row=1,
            col=col,
            **_scale(values),
        )
        fig.update_yaxes(autorange="reversed", row=1, col=col)
        fig.update_xaxes(scaleanchor=f"y{'' if col == 1 else col}", row=1, col=col)
        if col != 2:
            for i, j in zip(*np.nonzero(trace.padded), strict=True):
                fig.add_shape(
                    type="rect",
                    x0=j - 0.5,
                    x1=j + 0.5,
                    y0=i - 0.5,
                    y1=i + 0.5,
                    line={"dash": "dot", "width": 1.5, "color": TOTAL},
                    row=1,
                    col=col,
                )
    domains = [fig.layout[f"xaxis{'' if col == 1 else col}"].domain for col in (1, 2, 3)]
    for (_, end), (start, _), symbol in zip(domains[:-1], domains[1:], ("×", "="), strict=True):
        fig.add_annotation(
            x=(end + start) / 2,
            y=0.5,
            xref="paper",
            yref="paper",
            text=symbol,
            showarrow=False,
            font_size=22,
        )
    title = (
        f"{trace.map_name}[{trace.channel}] at (y={trace.y}, x={trace.x}) = "
        f"sum of the 9 products = <b>{trace.value:.4g}</b>"
    )
    return _small(fig, title, dark, height=300)


def pointwise_contributions(
    trace: ValueTrace, top: int = TOP_CONTRIBUTIONS
) -> tuple[list[int], list[float], float, int]:
    """The ``top`` largest positive then the ``top`` most negative terms of a pointwise trace,
    largest magnitude first: (depthwise channels, terms, sum of all other terms, how many)."""
    terms = np.asarray(trace.terms, dtype=np.float64)
    order = np.argsort(-terms, kind="stable")
    positive = [int(i) for i in order[:top] if terms[i] > 0]
    negative = [int(i) for i in order[::-1][:top] if terms[i] < 0]
    shown = positive + negative
    rest = np.ones(terms.size, dtype=bool)
    rest[shown] = False
    return shown, [float(terms[i]) for i in shown], float(terms[rest].sum()), int(rest.sum())


def pointwise_trace_figure(
    trace: ValueTrace, top: int = TOP_CONTRIBUTIONS, dark: bool = False
) -> go.Figure:
    """Waterfall of a pointwise value: largest positive and negative contributions (weight x
    depthwise value), the rest summed into one bar, then the total, which is the value.

    Each contribution's ``customdata`` is its depthwise channel (None for the rest and total).
    """
    if trace.kind != "pointwise":
        raise ValueError(f"{trace.map_name} is not a pointwise map")
    channels, terms, rest, others = pointwise_contributions(trace, top)
    labels = [f"ch {c}" for c in channels] + [f"rest ({others})", "sum"]
    hover = [
        f"depthwise channel {c}: weight {trace.weights[c]:+.4g} × value {trace.inputs[c]:+.4g}"
        f" = {t:+.4g}<br>click to open this depthwise channel"
        for c, t in zip(channels, terms, strict=True)
    ]
    hover += [
        f"the other {others} channels together: {rest:+.4g}",
        f"sum of all {trace.terms.size} terms: {trace.value:+.6g}",
    ]
    fig = go.Figure(
        go.Waterfall(
            x=labels,
            y=[*terms, rest, trace.value],
            measure=["relative"] * (len(terms) + 1) + ["total"],
            customdata=[*channels, None, None],
            text=[""] * len(terms) + [_number(rest), _number(trace.value)],
            textposition="outside",
            textfont={"size": 12},
            hovertext=hover,
            hoverinfo="text",
            increasing={"marker": {"color": POSITIVE}},
            decreasing={"marker": {"color": NEGATIVE}},
            totals={"marker": {"color": TOTAL}},
            connector={"line": {"width": 1, "color": TOTAL}},
        )
    )
    title = (
        f"{trace.map_name}[{trace.channel}] at (y={trace.y}, x={trace.x}) = sum of "
        f"{trace.terms.size} weight × depthwise value = <b>{trace.value:.4g}</b>"
    )
    _small(fig, title, dark, height=360)
    fig.update_xaxes(title_text="depthwise channel (largest contributions first)", tickangle=-45)
    fig.update_yaxes(title_text="contribution to the value")
    return fig


def trace_figure(trace: ValueTrace, dark: bool = False) -> go.Figure:
    """The trace's figure: :func:`depthwise_trace_figure` or :func:`pointwise_trace_figure`."""
    if trace.kind == "depthwise":
        return depthwise_trace_figure(trace, dark)
    return pointwise_trace_figure(trace, dark=dark)


class StepFigures(NamedTuple):
    """The five figures of the step-by-step panel, in reading order."""

    input: go.Figure
    kernel: go.Figure
    depthwise: go.Figure
    weights: go.Figure
    pointwise: go.Figure


def map_figure(
    values: np.ndarray,
    title: str,
    dark: bool = False,
    mark: tuple[int, int, int] | None = None,
) -> go.Figure:
    """One map (H, W) as a heatmap with a colourbar; a click reports (x, y) = (column, row).

    ``mark = (y, x, k)`` outlines the k x k square centred on row y, column x.
    """
    values = np.asarray(values, dtype=np.float64)
    fig = go.Figure(
        go.Heatmap(
            z=values,
            hovertemplate="row %{y}, column %{x}: %{z:.5g}<extra></extra>",
            colorbar={"thickness": 12, "len": 0.9},
            **_scale(values),
        )
    )
    if mark is not None:
        y, x, k = mark
        fig.add_shape(
            type="rect",
            x0=x - k / 2,
            x1=x + k / 2,
            y0=y - k / 2,
            y1=y + k / 2,
            line={"color": HIGHLIGHT, "width": 2.5},
        )
    _small(fig, title, dark, height=320)
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain")
    fig.update_xaxes(constrain="domain")
    return fig


def kernel_figure(kernel: np.ndarray, title: str, dark: bool = False) -> go.Figure:
    """A 3x3 depthwise filter as an annotated heatmap."""
    kernel = np.asarray(kernel, dtype=np.float64)
    offsets = [str(v) for v in range(-(kernel.shape[0] // 2), kernel.shape[0] // 2 + 1)]
    fig = go.Figure(
        go.Heatmap(
            z=kernel,
            x=offsets,
            y=offsets,
            text=[[_number(v) for v in row] for row in kernel],
            texttemplate="%{text}",
            textfont={"size": 13},
            hovertemplate="offset row %{y}, column %{x}: %{z:.6g}<extra></extra>",
            showscale=False,
            xgap=1,
            ygap=1,
            **_scale(kernel),
        )
    )
    _small(fig, title, dark, height=260)
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain")
    return fig


def weights_figure(
    weights: np.ndarray,
    title: str,
    selected: int | None = None,
    top: int = TOP_WEIGHTS,
    dark: bool = False,
) -> go.Figure:
    """The ``top`` pointwise weights by absolute value, one bar per depthwise channel
    (``customdata``), the ``selected`` one outlined."""
    weights = np.asarray(weights, dtype=np.float64)
    order = [int(i) for i in np.argsort(-np.abs(weights), kind="stable")[:top]]
    fig = go.Figure(
        go.Bar(
            x=[f"ch {i}" for i in order],
            y=[weights[i] for i in order],
            customdata=order,
            marker={
                "color": [POSITIVE if weights[i] > 0 else NEGATIVE for i in order],
                "line": {
                    "color": [HIGHLIGHT if i == selected else "rgba(0,0,0,0)" for i in order],
                    "width": 3,
                },
            },
            hovertemplate="depthwise channel %{customdata}: weight %{y:+.4g}"
            "<br>click to follow this channel<extra></extra>",
        )
    )
    _small(fig, title, dark, height=300)
    fig.update_xaxes(title_text="depthwise channel", tickangle=-45)
    fig.update_yaxes(title_text="pointwise weight")
    return fig


def steps_figures(
    steps: SepConvSteps, dark: bool = False, position: tuple[int, int] | None = None
) -> StepFigures:
    """The step-by-step panel of ``steps``; ``position = (y, x)`` marks a traced value (its
    3x3 window on the input, its cell on the two outputs)."""
    d, p, name = steps.depthwise_channel, steps.pointwise_channel, steps.sepconv
    m = steps.pointwise_weights.size
    k = steps.kernel.shape[0]

    def mark(size: int) -> tuple[int, int, int] | None:
        return None if position is None else (position[0], position[1], size)

    return StepFigures(
        input=map_figure(steps.input_map, f"1. input channel {d} of {name}", dark, mark(k)),
        kernel=kernel_figure(steps.kernel, f"2. its {k}x{k} depthwise filter", dark),
        depthwise=map_figure(
            steps.depthwise_map, f"3. depthwise output, channel {d}", dark, mark(1)
        ),
        weights=weights_figure(
            steps.pointwise_weights,
            f"4. pointwise weights of channel {p}: top {min(TOP_WEIGHTS, m)} of {m}",
            selected=d,
            dark=dark,
        ),
        pointwise=map_figure(
            steps.pointwise_map, f"5. pointwise output, channel {p}", dark, mark(1)
        ),
    )
