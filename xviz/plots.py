"""Plotly figures of what separable convolutions cost, built from ``xviz.cost`` results.

Every figure colours layers by flow with ``FLOW_COLORS`` (the app's network diagram uses
the same palette), has transparent backgrounds and takes ``dark=True`` for dark themes.
Hover texts carry exact numbers; axes say their units.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from xviz.cost import (
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
    "right": {"orientation": "v", "x": 1.01, "y": 1, "yanchor": "top"},
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
    """Linear / log toggle for the y axis, top right."""
    return [
        {
            "type": "buttons",
            "direction": "right",
            "x": 1.0,
            "xanchor": "right",
            "y": 1.02,
            "yanchor": "bottom",
            "showactive": True,
            # Plotly draws the active button near-white whatever the theme: keep dark text.
            "bgcolor": "#E5E7EB",
            "bordercolor": "#9CA3AF",
            "font": {"color": "#1F2937"},
            "active": 1 if log else 0,
            "buttons": [
                {"label": "linear", "method": "relayout", "args": [{"yaxis.type": "linear"}]},
                {"label": "log", "method": "relayout", "args": [{"yaxis.type": "log"}]},
            ],
        }
    ]


def _shape(layer: LayerCost) -> str:
    return (
        f"M={layer.in_channels} → N={layer.out_channels}, D_K={layer.kernel_size}, "
        f"stride {layer.stride}, D_F={layer.input_side} → D_G={layer.output_side}"
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
            f"ratio {real / std:.5f}; 1/N + 1/D_K² = {layer.formula_ratio:.5f}",
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
        f"Multiply-adds per layer at {size}×{size}: standard conv vs depthwise separable",
        "multiply-adds per image (MACs)",
        log,
        dark,
    )


def params_figure(layers: Sequence[LayerCost], log: bool = True, dark: bool = False) -> go.Figure:
    """Figure 2: parameters per layer, standard conv vs real Xception, grouped, by flow."""
    return _per_layer_figure(
        layers,
        "params",
        "Parameters per layer: standard conv vs depthwise separable",
        "parameters (count)",
        log,
        dark,
    )


def _input_size(layers: Sequence[LayerCost]) -> int:
    """The network's input side, read from block1's first conv (the first layer)."""
    return layers[0].input_side


def totals_figure(net: NetworkCost, dark: bool = False) -> go.Figure:
    """Figure 3: whole-network params and multiply-adds, real Xception vs all-standard."""
    x = ["real Xception", "all standard"]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            f"parameters: {net.params_ratio:.3f}× ({1 / net.params_ratio:.1f}× fewer)",
            f"multiply-adds: {net.madds_ratio:.3f}× ({1 / net.madds_ratio:.1f}× fewer)",
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
    title = f"Whole network at {size}×{size}: real Xception vs every sepconv standard"
    _style(fig, title, dark, legend="bottom")
    fig.update_layout(barmode="stack", bargap=0.35)
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


# Assumed plot area (px) and label metrics, for placing point labels without overlaps.
_PLOT_PX = (1100, 340)
_CHAR_PX, _LINE_PX = 6.5, 14
_LABEL_SPOTS = ("middle right", "middle left", "top center", "bottom center")


def _label_positions(
    points: Sequence[tuple[float, float, float, str]],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
) -> list[str]:
    """A ``textposition`` per ``(x, y, marker size, text)`` point, greedily avoiding overlaps.

    Works in approximate pixels of a ``_PLOT_PX`` plot; exact enough for a few labels.
    """
    width, height = _PLOT_PX
    px = [
        ((x - x_range[0]) / (x_range[1] - x_range[0]) * width,
         (y - y_range[0]) / (y_range[1] - y_range[0]) * height, size / 2 + 2, len(text) * _CHAR_PX)
        for x, y, size, text in points
    ]  # fmt: skip
    taken = [(cx - r, cy - r, cx + r, cy + r) for cx, cy, r, _ in px]  # markers

    def box(cx: float, cy: float, r: float, w: float, spot: str) -> tuple[float, ...]:
        h = _LINE_PX
        return {
            "middle right": (cx + r, cy - h / 2, cx + r + w, cy + h / 2),
            "middle left": (cx - r - w, cy - h / 2, cx - r, cy + h / 2),
            "top center": (cx - w / 2, cy + r, cx + w / 2, cy + r + h),
            "bottom center": (cx - w / 2, cy - r - h, cx + w / 2, cy - r),
        }[spot]

    def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
        dx = min(a[2], b[2]) - max(a[0], b[0])
        dy = min(a[3], b[3]) - max(a[1], b[1])
        return max(dx, 0) * max(dy, 0)

    spots = []
    for i, (cx, cy, r, w) in enumerate(px):
        others = [t for j, t in enumerate(taken) if j != i]
        spot = min(
            _LABEL_SPOTS,
            key=lambda s: sum(overlap(box(cx, cy, r, w, s), t) for t in others),
        )
        taken.append(box(cx, cy, r, w, spot))
        spots.append(spot)
    return spots


def _short_label(group: Sequence[LatencyResult]) -> str:
    """``b2·s1`` for block2_sepconv1; ``b5·s1 – b13·s1`` for a shared shape."""
    names = [r.layer.name.replace("block", "b").replace("_sepconv", "·s") for r in group]
    return names[0] if len(names) == 1 else f"{names[0]} – {names[-1]} ({len(names)})"


def speedup_figure(results: Sequence[LatencyResult], dark: bool = False) -> go.Figure:
    """Figure 4: predicted vs measured speed-up of each separable conv, with y = x.

    One point per distinct shape (the 24 middle-flow sepconvs and block13_sepconv1 share
    one), coloured by the flow of its first layer, sized by how many layers share it.
    """
    if not results:
        raise ValueError("speedup_figure needs at least one LatencyResult")
    groups = shape_groups(results)
    predicted = [group[0].theoretical_speedup for group in groups]
    # Every sepconv is 3x3, so predictions sit between 1/(1/64 + 1/9) and 9: zoom on them.
    left, right = min(predicted) - 0.25, max(predicted) + 0.25
    top = 1.1 * max([right] + [group[0].measured_speedup for group in groups])
    sizes = [10 + 2 * len(group) ** 0.5 for group in groups]
    spots = _label_positions(
        [
            (group[0].theoretical_speedup, group[0].measured_speedup, size, _short_label(group))
            for group, size in zip(groups, sizes, strict=True)
        ],
        (left, right + 0.15),
        (0, top),
    )
    spot_of = {id(group): spot for group, spot in zip(groups, spots, strict=True)}
    size_of = {id(group): size for group, size in zip(groups, sizes, strict=True)}
    fig = go.Figure()
    fig.add_scatter(
        name="theory met (y = x)",
        x=[left, right],
        y=[left, right],
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
            mode="markers+text",
            text=[_short_label(group) for group in rows],
            textposition=[spot_of[id(group)] for group in rows],
            textfont={"size": 11},
            marker={
                "color": FLOW_COLORS[flow],
                "size": [size_of[id(group)] for group in rows],
                "opacity": 1.0,
                "line": {"width": 1, "color": "rgba(255,255,255,0.8)"},
            },
            hovertext=[latency_hover(group) for group in rows],
            hovertemplate="%{hovertext}<extra></extra>",
        )
    dw_time = [r.depthwise_time_share for r in results]
    dw_madds = [r.depthwise_madds_share for r in results]
    fig.add_annotation(
        x=0.02,
        y=0.98,
        xref="paper",
        yref="paper",
        xanchor="left",
        yanchor="top",
        align="left",
        showarrow=False,
        text=(
            "Below the line: slower than the multiply-add count predicts. The depthwise stage<br>"
            f"does {min(dw_madds):.1%}–{max(dw_madds):.1%} of the multiply-adds but takes "
            f"{min(dw_time):.0%}–{max(dw_time):.0%} of the time: it is memory-bound.<br>"
            "Above it: the standard twin is memory-bound too (large weights, few positions)."
        ),
        font={"size": 12},
    )
    title = f"Theory vs practice: speed-up of separable over standard convs ({results[0].device})"
    _style(fig, title, dark)
    fig.update_xaxes(
        title_text="predicted speed-up (standard / separable multiply-adds, ×)",
        range=[left, right + 0.15],
    )
    fig.update_yaxes(
        title_text="measured speed-up (standard / separable median time, ×)", range=[0, top]
    )
    return fig


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
        f"M={M}, N={N}, D_K={D_K}, D_G={D_G}: separable = {ratio:.4f} × standard "
        f"(1/N + 1/D_K² = {formula_ratio(N, D_K):.4f}), {1 / ratio:.1f}× fewer"
    )
    _style(fig, title, dark, height=460, legend="bottom")
    fig.update_layout(barmode="stack", bargap=0.35)
    fig.update_yaxes(title_text="parameters (count)", row=1, col=1)
    fig.update_yaxes(title_text="multiply-adds per image (MACs)", row=1, col=2)
    return fig


def explain(M: int, N: int, D_K: int, D_G: int) -> str:
    """Markdown: the two cost formulas with the numbers plugged in, and the ratio."""
    std = standard_cost(M, N, D_K, D_G)
    dw, pw = depthwise_cost(M, D_K, D_G), pointwise_cost(M, N, D_G)
    sep_params, sep_madds = dw.params + pw.params, dw.madds + pw.madds
    ratio = sep_madds / std.madds
    return "\n".join(
        [
            f"Input {D_G}×{D_G}×{M} (stride 1, 'same'), output {D_G}×{D_G}×{N}, "
            f"kernel {D_K}×{D_K}.",
            "",
            "**Standard convolution**",
            f"- params: M·N·D_K² = {M}·{N}·{D_K}² = **{std.params:,}**",
            f"- multiply-adds: M·N·D_K²·D_G² = {M}·{N}·{D_K}²·{D_G}² = **{std.madds:,}**",
            "",
            "**Depthwise separable convolution** (depthwise + pointwise)",
            f"- params: M·D_K² + M·N = {M}·{D_K}² + {M}·{N} = {dw.params:,} + {pw.params:,} "
            f"= **{sep_params:,}**",
            f"- multiply-adds: M·D_K²·D_G² + M·N·D_G² = {M}·{D_K}²·{D_G}² + {M}·{N}·{D_G}² "
            f"= {dw.madds:,} + {pw.madds:,} = **{sep_madds:,}**",
            "",
            f"**Ratio** separable / standard = {sep_madds:,} / {std.madds:,} = **{ratio:.6f}**, "
            f"and 1/N + 1/D_K² = 1/{N} + 1/{D_K**2} = **{formula_ratio(N, D_K):.6f}**: "
            f"{1 / ratio:.2f}× fewer multiply-adds (and params).",
        ]
    )


def block_change_figure(
    changes: dict[str, float], flows: dict[str, str], title: str, dark: bool = False
) -> go.Figure:
    """How far each block's output moved under an ablation: relative L2 change per block."""
    names = list(changes)
    values = [100 * changes[n] for n in names]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=values,
            marker_color=[FLOW_COLORS[flows[n]] for n in names],
            hovertemplate="%{x}: output moved by %{y:.3g}% (relative L2)<extra></extra>",
        )
    )
    _style(fig, title, dark, height=340)
    fig.update_layout(margin={"l": 70, "r": 30, "t": 60, "b": 50}, showlegend=False)
    fig.update_yaxes(title_text="change of block output (%)", rangemode="tozero")
    return fig
