"""Plotly figures of what separable convolutions cost, built from ``xviz.methods.cost`` results.

Every figure colours layers by flow with ``FLOW_COLORS`` (the app's network diagram uses
the same palette), has transparent backgrounds and takes ``dark=True`` for dark themes.
Hover texts carry exact numbers; axes say their units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from xviz.methods.cost import (
    BYTES_PER_VALUE,
    LatencyResult,
    LayerCost,
    NetworkCost,
    depthwise_cost,
    formula_ratio,
    pointwise_cost,
    standard_cost,
)

FLOW_ORDER: tuple[str, ...] = ("entry", "middle", "exit", "head")
FLOW_COLORS: dict[str, str] = {
    "entry": "#4C78A8",
    "middle": "#F58518",
    "exit": "#54A24B",
    "head": "#B279A2",
}
# Parts of a cost, where a figure splits it: standard twin, the two stages, BatchNorm.
PART_COLORS: dict[str, str] = {
    "standard": "#9D9DA6",
    "depthwise": "#E45756",
    "pointwise": "#4C78A8",
    "batchnorm": "#72B7B2",
}
# Standard bars: the flow colour, faded and hatched; separable bars: the flow colour, solid.
STANDARD_OPACITY = 0.45
STANDARD_PATTERN = "/"

_TRANSPARENT = "rgba(0,0,0,0)"
_GRID = "rgba(128,128,128,0.25)"


_LEGENDS: dict[str, dict] = {
    "top": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
    "right": {"orientation": "v", "x": 1.01, "y": 0.88, "yanchor": "top"},  # under the buttons
    "bottom": {"orientation": "h", "x": 0.5, "xanchor": "center", "y": -0.12, "yanchor": "top"},
}


def _style(
    fig: go.Figure, title: str, dark: bool, height: int = 520, legend: str = "top"
) -> go.Figure:
    """Shared look: theme template, transparent background, title, legend placement."""
    fig.update_layout(
        template="plotly_dark" if dark else "plotly_white",
        paper_bgcolor=_TRANSPARENT,
        plot_bgcolor=_TRANSPARENT,
        title={"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 16}},
        height=height,
        margin={"l": 70, "r": 30, "t": 90, "b": 60},
        legend={**_LEGENDS[legend], "groupclick": "toggleitem"},
        hoverlabel={"align": "left"},
    )
    fig.update_xaxes(gridcolor=_GRID, zerolinecolor=_GRID)
    fig.update_yaxes(gridcolor=_GRID, zerolinecolor=_GRID)
    return fig


def _scale_buttons(log: bool) -> list[dict]:
    """Linear / log toggle for the y axis, right of the plot above the legend (over the plot
    they would hide the title on a phone)."""
    return [
        {
            "type": "buttons",
            "direction": "right",
            "x": 1.01,
            "xanchor": "left",
            "y": 1.0,
            "yanchor": "top",
            "showactive": True,
            # Plotly draws the active button near-white whatever the theme: on a grey track it
            # reads as the selected segment; dark text stays readable on both, light or dark.
            "bgcolor": "#C4C9D1",
            "bordercolor": "#9CA3AF",
            "font": {"color": "#1F2937"},
            "active": 1 if log else 0,
            "buttons": [
                {"label": "linear", "method": "relayout", "args": [{"yaxis.type": "linear"}]},
                {"label": "log", "method": "relayout", "args": [{"yaxis.type": "log"}]},
            ],
        }
    ]


# Plotly draws HTML subscripts; a literal "D_K" would show its underscore.
_DK, _DF, _DG = "D<sub>K</sub>", "D<sub>F</sub>", "D<sub>G</sub>"
# Titles are two short lines, so that they fit a phone (Plotly does not wrap them).
_SMALL = "<span style='font-size:12px'>"
_FORMS = f"{_SMALL}hatched: standard conv; solid: real Xception</span>"


def _shape(layer: LayerCost) -> str:
    return (
        f"M={layer.in_channels} → N={layer.out_channels}, {_DK}={layer.kernel_size}, "
        f"stride {layer.stride}, {_DF}={layer.input_side} → {_DG}={layer.output_side}"
    )


def layer_hover(layer: LayerCost, metric: str) -> str:
    """Hover text of one layer for ``metric`` ``"madds"`` or ``"params"``, exact numbers."""
    unit = "multiply-adds" if metric == "madds" else "params"
    real = getattr(layer, metric)
    std = getattr(layer, f"standard_{metric}")
    lines = [f"<b>{layer.name}</b> ({layer.kind}, {layer.flow} flow)", _shape(layer)]
    if layer.kind == "sepconv":
        dw, pw = getattr(layer, f"depthwise_{metric}"), getattr(layer, f"pointwise_{metric}")
        lines += [
            f"standard conv: {std:,} {unit}",
            f"separable: {real:,} {unit} = depthwise {dw:,} + pointwise {pw:,}",
            f"ratio {real / std:.5f}; 1/N + 1/{_DK}² = {layer.formula_ratio:.5f}",
        ]
    else:
        lines.append(f"{layer.kind} (already standard): {real:,} {unit}")
    return "<br>".join(lines)


def _per_layer_figure(
    layers: Sequence[LayerCost], metric: str, title: str, y_title: str, log: bool, dark: bool
) -> go.Figure:
    names = [layer.name for layer in layers]
    fig = go.Figure()
    for form, label in (("standard", "standard conv"), ("separable", "real Xception")):
        for flow in FLOW_ORDER:
            rows = [layer for layer in layers if layer.flow == flow]
            if not rows:
                continue
            field = f"standard_{metric}" if form == "standard" else metric
            standard = form == "standard"
            fig.add_bar(
                name=f"{flow}",
                x=[layer.name for layer in rows],
                y=[getattr(layer, field) for layer in rows],
                offsetgroup=form,
                legendgroup=form,
                legendgrouptitle_text=label,
                marker={
                    "color": FLOW_COLORS[flow],
                    "opacity": STANDARD_OPACITY if standard else 1.0,
                    "pattern": {"shape": STANDARD_PATTERN if standard else ""},
                    "line": {"width": 0},
                },
                hovertext=[layer_hover(layer, metric) for layer in rows],
                hovertemplate="%{hovertext}<extra>" + label + "</extra>",
                meta={"form": form, "flow": flow},
            )
    _style(fig, title, dark, legend="right")
    fig.update_layout(
        barmode="group", bargap=0.2, bargroupgap=0.05, updatemenus=_scale_buttons(log)
    )
    fig.update_xaxes(
        title_text="layer (network order)",
        categoryorder="array",
        categoryarray=names,
        tickangle=-60,
        tickfont={"size": 10},
    )
    fig.update_yaxes(title_text=y_title, type="log" if log else "linear")
    return fig


def madds_figure(layers: Sequence[LayerCost], log: bool = True, dark: bool = False) -> go.Figure:
    """Figure 1: multiply-adds per layer, standard conv vs real Xception, grouped, by flow."""
    size = _input_size(layers)
    return _per_layer_figure(
        layers,
        "madds",
        f"Multiply-adds per layer at {size}×{size}<br>{_FORMS}",
        "multiply-adds per image (MACs)",
        log,
        dark,
    )


def params_figure(layers: Sequence[LayerCost], log: bool = True, dark: bool = False) -> go.Figure:
    """Figure 2: parameters per layer, standard conv vs real Xception, grouped, by flow."""
    return _per_layer_figure(
        layers,
        "params",
        f"Parameters per layer<br>{_FORMS}",
        "parameters (count)",
        log,
        dark,
    )


def _input_size(layers: Sequence[LayerCost]) -> int:
    """The network's input side, read from block1's first conv (the first layer)."""
    return layers[0].input_side


def totals_figure(net: NetworkCost, dark: bool = False) -> go.Figure:
    """Figure 3: whole-network params and multiply-adds, real Xception vs all-standard."""
    x = ["Xception", "all<br>standard"]  # short: no slanted labels on a phone
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            f"parameters: {net.params_ratio:.3f}×<br>({1 / net.params_ratio:.1f}× fewer)",
            f"multiply-adds: {net.madds_ratio:.3f}×<br>({1 / net.madds_ratio:.1f}× fewer)",
        ),
        horizontal_spacing=0.14,
    )
    for col, metric, unit in ((1, "params", "params"), (2, "madds", "multiply-adds")):
        for flow in FLOW_ORDER:
            rows = [layer for layer in net.layers if layer.flow == flow]
            if not rows:
                continue
            real = sum(getattr(layer, metric) for layer in rows)
            std = sum(getattr(layer, f"standard_{metric}") for layer in rows)
            fig.add_bar(
                name=f"{flow} flow" if flow != "head" else "classifier",
                x=x,
                y=[real, std],
                marker_color=FLOW_COLORS[flow],
                legendgroup=flow,
                showlegend=col == 1,
                hovertext=[f"{flow}: {real:,} {unit}", f"{flow}: {std:,} {unit}"],
                hovertemplate="%{x}<br>%{hovertext}<extra></extra>",
                row=1,
                col=col,
            )
        if metric == "params":
            fig.add_bar(
                name="BatchNorm γ, β",
                x=x,
                y=[net.bn_params, net.bn_params],
                marker_color=PART_COLORS["batchnorm"],
                hovertext=[f"BatchNorm γ, β: {net.bn_params:,} params"] * 2,
                hovertemplate="%{x}<br>%{hovertext}<extra></extra>",
                row=1,
                col=col,
            )
        totals = [getattr(net, metric), getattr(net, f"standard_{metric}")]
        for name, total in zip(x, totals, strict=True):
            fig.add_annotation(
                x=name,
                y=total,
                text=f"{total:,}",
                showarrow=False,
                yanchor="bottom",
                font={"size": 12},
                row=1,
                col=col,
            )
    size = net.input_size
    title = (
        f"Whole network at {size}×{size}<br>"
        f"{_SMALL}real Xception vs every sepconv made standard</span>"
    )
    _style(fig, title, dark, legend="bottom")
    fig.update_layout(barmode="stack", bargap=0.35, margin={"t": 120}, legend_y=-0.2)
    fig.update_xaxes(tickangle=0, tickfont={"size": 11})
    for subplot_title in fig.layout.annotations[:2]:  # make_subplots adds them first
        subplot_title.font.size = 13
    fig.update_yaxes(title_text="parameters (count)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="multiply-adds per image (MACs)", row=1, col=2)
    fig.update_yaxes(range=[0, net.standard_params * 1.12], row=1, col=1)
    fig.update_yaxes(range=[0, net.standard_madds * 1.12], row=1, col=2)
    return fig


def shape_groups(results: Sequence[LatencyResult]) -> list[list[LatencyResult]]:
    """Results grouped by shape ``(M, N, D_K, D_F)``, in network order of first appearance."""
    groups: dict[tuple[int, int, int, int], list[LatencyResult]] = {}
    for result in results:
        layer = result.layer
        key = (layer.in_channels, layer.out_channels, layer.kernel_size, layer.input_side)
        groups.setdefault(key, []).append(result)
    return list(groups.values())


def latency_hover(group: Sequence[LatencyResult]) -> str:
    """Hover text of layers sharing one shape: times, speed-ups and why theory is not met."""
    result, layer = group[0], group[0].layer
    names = [r.layer.name for r in group]
    if len(names) > 1:
        head = f"<b>{names[0]} … {names[-1]}</b> ({len(names)} layers, one shape)"
    else:
        head = f"<b>{names[0]}</b> ({layer.flow} flow)"
    lines = [
        head,
        _shape(layer),
        f"standard: {result.standard_ms:.3f} ms (IQR {result.standard_iqr_ms:.3f})",
        f"separable: {result.separable_ms:.3f} ms (IQR {result.separable_iqr_ms:.3f})",
        f"speed-up measured {result.measured_speedup:.2f}× vs predicted "
        f"{result.theoretical_speedup:.2f}×",
        f"depthwise: {result.depthwise_madds_share:.1%} of the multiply-adds, "
        f"{result.depthwise_time_share:.0%} of the time",
        f"multiply-adds per byte: depthwise {layer.depthwise_intensity:.1f}, "
        f"pointwise {layer.pointwise_intensity:.0f}, standard {layer.standard_intensity:.0f}",
    ]
    if result.measured_speedup < result.theoretical_speedup:
        if result.depthwise_time_share > 3 * result.depthwise_madds_share:
            lines.append(
                "<i>Short of theory: the depthwise stage is memory-bound (about one"
                "<br>multiply-add per byte moved), so its time does not shrink with its"
                "<br>multiply-adds.</i>"
            )
    else:
        megabytes = layer.standard_params * BYTES_PER_VALUE / 1e6
        lines.append(
            f"<i>Beats theory: the standard twin streams {megabytes:.0f} MB of weights for only"
            f"<br>{layer.output_side**2} output positions, so it is memory-bound too.</i>"
        )
    return "<br>".join(lines)


# Point labels of speedup_figure stand in a column left of the points (every 3x3 sepconv is
# predicted at 8.4-9x, so the points form a column), at least _LABEL_GAP_PX apart on a data
# area assumed _PLOT_SIDE_PX high (a phone's; a larger one only spreads the points).
_PLOT_SIDE_PX = 200
_LABEL_GAP_PX = 15
_LABEL_OFFSET_PX = 28


def _label_heights(y: Sequence[float], y_range: tuple[float, float]) -> list[float]:
    """Pixel heights (from the bottom) of labels for points at ``y`` (axis units) on an axis
    showing ``y_range``, ``_LABEL_GAP_PX`` apart: each at its point's height or above, unless
    that would push the top one out of the plot; then the column moves down from the top.

    Heights are within ``_PLOT_SIDE_PX`` (less half a gap), and so within any taller plot:
    the labels are drawn at their offsets from their points, which only spread apart there.
    """
    scale = _PLOT_SIDE_PX / (y_range[1] - y_range[0])
    wanted = [(value - y_range[0]) * scale for value in y]
    order = sorted(range(len(y)), key=lambda i: wanted[i])
    placed = [0.0] * len(y)
    below = -math.inf
    for i in order:  # bottom up, each at least a gap above the one below
        placed[i] = below = max(wanted[i], below + _LABEL_GAP_PX)
    above = _PLOT_SIDE_PX + _LABEL_GAP_PX / 2
    for i in reversed(order):  # top down, each at least a gap under the one above
        placed[i] = above = min(placed[i], above - _LABEL_GAP_PX)
    return placed


def _short_label(group: Sequence[LatencyResult]) -> str:
    """``b2·s1`` for block2_sepconv1; ``b5·s1 – b13·s1`` for a shared shape."""
    names = [r.layer.name.replace("block", "b").replace("_sepconv", "·s") for r in group]
    return names[0] if len(names) == 1 else f"{names[0]} – {names[-1]} ({len(names)})"


def speedup_range(results: Sequence[LatencyResult]) -> tuple[float, float]:
    """The one range of both axes of :func:`speedup_figure`: every predicted and measured
    speed-up and 1 (no speed-up), with a margin of a factor 1.6 above and 2.5 below (room
    for a note under 1x)."""
    values = [1.0]
    values += [r.theoretical_speedup for r in results] + [r.measured_speedup for r in results]
    return min(values) / 2.5, max(values) * 1.6


def speedup_figure(results: Sequence[LatencyResult], dark: bool = False) -> go.Figure:
    """Figure 4: predicted vs measured speed-up of each separable conv.

    Both axes are logarithmic with one range and one scale, so the reference line y = x
    (measured as predicted) is the square's diagonal. One point per distinct shape (the 24
    middle-flow sepconvs and block13_sepconv1 share one), coloured by the flow of its first
    layer, sized by how many layers share it; a dotted line marks no speed-up (y = 1).
    """
    if not results:
        raise ValueError("speedup_figure needs at least one LatencyResult")
    groups = shape_groups(results)
    low, high = speedup_range(results)
    log_range = [math.log10(low), math.log10(high)]
    sizes = [10 + 2 * len(group) ** 0.5 for group in groups]
    size_of = {id(group): size for group, size in zip(groups, sizes, strict=True)}
    fig = go.Figure()
    fig.add_scatter(
        name="theory met (y = x)",
        x=[low, high],
        y=[low, high],
        mode="lines",
        line={"color": PART_COLORS["standard"], "dash": "dash"},
        hoverinfo="skip",
    )
    for flow in FLOW_ORDER:
        rows = [group for group in groups if group[0].layer.flow == flow]
        if not rows:
            continue
        fig.add_scatter(
            name=f"{flow} flow",
            x=[group[0].theoretical_speedup for group in rows],
            y=[group[0].measured_speedup for group in rows],
            mode="markers",
            marker={
                "color": FLOW_COLORS[flow],
                "size": [size_of[id(group)] for group in rows],
                "opacity": 1.0,
                "line": {"width": 1, "color": "rgba(255,255,255,0.8)"},
            },
            hovertext=[latency_hover(group) for group in rows],
            hovertemplate="%{hovertext}<extra></extra>",
        )
    # Annotations on log axes take log10 coordinates; their arrows' offsets are in pixels.
    measured = [math.log10(group[0].measured_speedup) for group in groups]
    heights = _label_heights(measured, (log_range[0], log_range[1]))
    scale = _PLOT_SIDE_PX / (log_range[1] - log_range[0])
    for group, y, height in zip(groups, measured, heights, strict=True):
        fig.add_annotation(
            x=math.log10(group[0].theoretical_speedup),
            y=y,
            text=_short_label(group),
            font={"size": 11},
            xanchor="right",
            showarrow=True,
            arrowwidth=1,
            arrowhead=0,
            arrowcolor=PART_COLORS["standard"],
            standoff=size_of[id(group)] / 2,
            ax=-_LABEL_OFFSET_PX,
            ay=-(height - (y - log_range[0]) * scale),
        )
    fig.add_scatter(
        name="no speed-up (y = 1)",
        x=[low, high],
        y=[1, 1],
        mode="lines",
        line={"color": PART_COLORS["standard"], "dash": "dot", "width": 1},
        hoverinfo="skip",
    )
    # Where neither points (at the right: predicted 8.4-9x) nor their labels (left of them, at
    # their height or above) come, unless a layer measures below 1x: the top-left corner and
    # the strip under 1x at the left ("x domain": fractions of the square, whatever the axis).
    for x, y, anchor, text in (
        (0.02, 0.98, "top", "above the diagonal:<br>faster than predicted"),
        (0.14, 0.02, "bottom", "below it:<br>slower than predicted"),
    ):
        fig.add_annotation(
            x=x,
            y=y,
            xref="x domain",
            yref="y domain",
            xanchor="left",
            yanchor=anchor,
            align="left",
            showarrow=False,
            text=f"<i>{text}</i>",
            font={"size": 11},
        )
    _style(fig, f"Theory vs practice on {results[0].device}", dark, height=600)
    fig.update_layout(
        margin={"l": 70, "r": 20, "t": 60, "b": 150},
        legend={"orientation": "h", "x": 0, "y": -0.22, "yanchor": "top"},
    )
    ticks = [v for v in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100) if low <= v <= high]
    axis = {
        "type": "log",
        "range": log_range,
        "constrain": "domain",
        "tickvals": ticks,
        "ticktext": [f"{v:g}×" for v in ticks],
    }
    fig.update_xaxes(
        title_text="predicted speed-up (×, from multiply-adds)", constraintoward="left", **axis
    )
    fig.update_yaxes(
        title_text="measured speed-up (×, median times)", scaleanchor="x", scaleratio=1, **axis
    )
    return fig


def speedup_summary(results: Sequence[LatencyResult]) -> str:
    """Markdown: what :func:`speedup_figure` shows, in words, with its numbers."""
    if not results:
        raise ValueError("speedup_summary needs at least one LatencyResult")
    first = results[0]
    predicted = [r.theoretical_speedup for r in results]
    measured = [r.measured_speedup for r in results]
    dw_time = [r.depthwise_time_share for r in results]
    dw_madds = [r.depthwise_madds_share for r in results]
    lines = [
        f"**Theory**: counting multiply-adds, every separable conv should run "
        f"{min(predicted):.1f}–{max(predicted):.1f}× faster than a standard convolution of "
        f"the same shape (the x axis).",
        "",
        f"**Practice**: timed on {first.device} with {first.threads} threads (median of "
        f"{first.repeats} runs per layer), the speed-up is {min(measured):.1f}–"
        f"{max(measured):.1f}× (the y axis). Points on the dashed diagonal match the theory.",
        "",
        f"**Why below**: the depthwise stage does only {min(dw_madds):.1%}–{max(dw_madds):.1%}"
        f" of the multiply-adds but takes {min(dw_time):.0%}–{max(dw_time):.0%} of the time. "
        "It does about one multiply-add per byte it reads, so memory, not arithmetic, sets "
        "its speed.",
    ]
    if any(m > p for m, p in zip(measured, predicted, strict=True)):
        lines += [
            "",
            "**Why above**: a standard twin with large weights and few output positions is "
            "slowed by memory too, which makes the separable conv look even better.",
        ]
    lines += ["", "Hover a point for its times; the numbers vary from run to run."]
    return "\n".join(lines)


def explorer_figure(M: int, N: int, D_K: int, D_G: int, dark: bool = False) -> go.Figure:
    """Figure 5: params and multiply-adds of one standard vs separable conv, for any shape."""
    std = standard_cost(M, N, D_K, D_G)
    dw, pw = depthwise_cost(M, D_K, D_G), pointwise_cost(M, N, D_G)
    ratio = (dw.madds + pw.madds) / std.madds
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("parameters", "multiply-adds"), horizontal_spacing=0.14
    )
    x = ["standard", "separable"]
    for col, metric, unit in ((1, "params", "params"), (2, "madds", "multiply-adds")):
        parts = (
            ("standard", [getattr(std, metric), 0]),
            ("depthwise", [0, getattr(dw, metric)]),
            ("pointwise", [0, getattr(pw, metric)]),
        )
        for part, y in parts:
            fig.add_bar(
                name=part,
                x=x,
                y=y,
                marker_color=PART_COLORS[part],
                legendgroup=part,
                showlegend=col == 1,
                hovertext=[f"{part}: {value:,} {unit}" for value in y],
                hovertemplate="%{hovertext}<extra></extra>",
                row=1,
                col=col,
            )
        totals = [getattr(std, metric), getattr(dw, metric) + getattr(pw, metric)]
        texts = [
            f"{totals[0]:,}",
            f"{totals[1]:,}<br>= depthwise {getattr(dw, metric):,}"
            f"<br>+ pointwise {getattr(pw, metric):,}",
        ]
        for name, total, text in zip(x, totals, texts, strict=True):
            fig.add_annotation(
                x=name,
                y=total,
                text=text,
                showarrow=False,
                yanchor="bottom",
                row=1,
                col=col,
            )
        fig.update_yaxes(range=[0, totals[0] * 1.15], row=1, col=col)
    title = (
        f"separable = {ratio:.4f} × standard: {1 / ratio:.1f}× fewer<br>"
        f"{_SMALL}M={M}, N={N}, {_DK}={D_K}, {_DG}={D_G}; "
        f"1/N + 1/{_DK}² = {formula_ratio(N, D_K):.4f}</span>"
    )
    _style(fig, title, dark, height=460, legend="bottom")
    fig.update_layout(barmode="stack", bargap=0.35)
    fig.update_yaxes(title_text="parameters (count)", row=1, col=1)
    fig.update_yaxes(title_text="multiply-adds per image (MACs)", row=1, col=2)
    return fig


def explain(M: int, N: int, D_K: int, D_G: int) -> str:
    """Markdown: the two cost formulas (LaTeX between single dollars) with the numbers plugged
    in, and the ratio."""
    std = standard_cost(M, N, D_K, D_G)
    dw, pw = depthwise_cost(M, D_K, D_G), pointwise_cost(M, N, D_G)
    sep_params, sep_madds = dw.params + pw.params, dw.madds + pw.madds
    ratio = sep_madds / std.madds
    return "\n".join(
        [
            f"Input {D_G}×{D_G}×{M} (stride 1, 'same' padding), output {D_G}×{D_G}×{N}, "
            f"kernel {D_K}×{D_K}.",
            "",
            "**Standard convolution**",
            f"- parameters: $M \\cdot N \\cdot D_K^2$ = {M} · {N} · {D_K}² = **{std.params:,}**",
            f"- multiply-adds: $M \\cdot N \\cdot D_K^2 \\cdot D_G^2$ = {M} · {N} · {D_K}² · "
            f"{D_G}² = **{std.madds:,}**",
            "",
            "**Depthwise separable convolution** (depthwise + pointwise)",
            f"- parameters: $M \\cdot D_K^2 + M \\cdot N$ = {M} · {D_K}² + {M} · {N} = "
            f"{dw.params:,} + {pw.params:,} = **{sep_params:,}**",
            f"- multiply-adds: $M \\cdot D_K^2 \\cdot D_G^2 + M \\cdot N \\cdot D_G^2$ = "
            f"{M} · {D_K}² · {D_G}² + {M} · {N} · {D_G}² = {dw.madds:,} + {pw.madds:,} = "
            f"**{sep_madds:,}**",
            "",
            f"**Ratio** separable / standard = {sep_madds:,} / {std.madds:,} = **{ratio:.6f}**, "
            f"and $\\frac{{1}}{{N}} + \\frac{{1}}{{D_K^2}}$ = 1/{N} + 1/{D_K**2} = "
            f"**{formula_ratio(N, D_K):.6f}**: {1 / ratio:.2f}× fewer multiply-adds (and "
            "parameters).",
        ]
    )


def block_change_figure(
    changes: dict[str, float],
    flows: dict[str, str],
    title: str,
    dark: bool = False,
    changed: Sequence[str] = (),
) -> go.Figure:
    """How far each block's output moved under an ablation: relative L2 change per block,
    ||ablated - original|| / ||original||, in percent. The ``changed`` blocks (where the
    ablation is made) are outlined and marked "changed here"."""
    names = list(changes)
    values = [100 * changes[n] for n in names]
    outline = "#F9FAFB" if dark else "#111827"
    fig = go.Figure(
        go.Bar(
            x=names,
            y=values,
            marker={
                "color": [FLOW_COLORS[flows[n]] for n in names],
                "line": {"color": outline, "width": [2 if n in changed else 0 for n in names]},
            },
            hovertemplate="%{x}: its output moved by %{y:.3g}% of its size<extra></extra>",
        )
    )
    top = max(values, default=0) or 1.0
    for name in changed:
        if name in changes:
            fig.add_annotation(
                x=name, y=100 * changes[name], text="changed<br>here", showarrow=False,
                yanchor="bottom", font={"size": 11},
            )  # fmt: skip
    _style(fig, title, dark, height=340)
    fig.update_layout(margin={"l": 70, "r": 20, "t": 50, "b": 50}, showlegend=False)
    fig.update_yaxes(title_text="change of block output (%)", range=[0, 1.25 * top])
    return fig
