"""Tests of xviz.render.cost_figures: traces, order, exact hover numbers, and the explorer's
arithmetic."""

from __future__ import annotations

import itertools
import re

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from xviz.methods.cost import LatencyResult, LayerCost, NetworkCost, network_cost
from xviz.model.xception import BLOCKS, Xception
from xviz.render import cost_figures as plots


@pytest.fixture(scope="module")
def net() -> NetworkCost:
    return network_cost(Xception(head="imagenet"), 299)


def _fake_results(layers: tuple[LayerCost, ...]) -> list[LatencyResult]:
    """Latency results without timing anything: a slow depthwise stage in block2."""
    results = []
    for layer in layers:
        if layer.kind != "sepconv":
            continue
        slow = layer.block == "block2"
        results.append(
            LatencyResult(
                layer=layer,
                device="cpu",
                threads=2,
                repeats=5,
                standard_ms=40.0,
                standard_iqr_ms=1.0,
                separable_ms=20.0 if slow else 5.0,
                separable_iqr_ms=0.5,
                depthwise_ms=12.0 if slow else 0.4,
                pointwise_ms=8.0 if slow else 4.6,
            )
        )
    return results


@pytest.mark.parametrize(
    ("make", "metric"), [(plots.madds_figure, "madds"), (plots.params_figure, "params")]
)
def test_per_layer_figures(net: NetworkCost, make, metric: str) -> None:
    fig = make(net.layers)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 8  # 4 flows x (standard, separable)
    assert [t.name for t in fig.data] == [*plots.FLOW_ORDER, *plots.FLOW_ORDER]
    names = [layer.name for layer in net.layers]
    for form in ("standard", "separable"):
        traces = [t for t in fig.data if t.offsetgroup == form]
        assert [x for t in traces for x in t.x] == names  # network order
    assert list(fig.layout.xaxis.categoryarray) == names
    rows = {layer.name: layer for layer in net.layers}
    for trace in fig.data:
        field = metric if trace.offsetgroup == "separable" else f"standard_{metric}"
        for x, y, hover in zip(trace.x, trace.y, trace.hovertext, strict=True):
            assert y == getattr(rows[x], field)
            assert f"{getattr(rows[x], metric):,}" in hover
            assert f"{getattr(rows[x], f'standard_{metric}'):,}" in hover
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert labels == ["linear", "log"] and fig.layout.yaxis.type == "log"
    assert make(net.layers, log=False).layout.yaxis.type == "linear"
    assert "(" in fig.layout.yaxis.title.text  # unit


def test_totals_figure(net: NetworkCost) -> None:
    fig = plots.totals_figure(net, dark=True)
    assert len(fig.data) == 4 * 2 + 1  # flows in both panels, BatchNorm in the params panel
    params = [t for t in fig.data if t.xaxis == "x"]
    madds = [t for t in fig.data if t.xaxis == "x2"]
    assert sum(t.y[0] for t in params) == net.params == 22_855_952
    assert sum(t.y[1] for t in params) == net.standard_params
    assert sum(t.y[0] for t in madds) == net.madds
    assert sum(t.y[1] for t in madds) == net.standard_madds
    texts = [a.text for a in fig.layout.annotations]
    assert f"{net.madds:,}" in texts and f"{net.standard_params:,}" in texts
    assert any(f"{net.madds_ratio:.3f}" in t for t in texts)
    assert fig.layout.paper_bgcolor == fig.layout.plot_bgcolor == "rgba(0,0,0,0)"


def test_speedup_figure(net: NetworkCost) -> None:
    results = _fake_results(net.layers)
    fig = plots.speedup_figure(results)
    traces = {t.name: t for t in fig.data}
    assert list(traces) == [
        "theory met (y = x)", "entry flow", "middle flow", "exit flow", "no speed-up (y = 1)",
    ]  # fmt: skip
    points = [traces[f"{flow} flow"] for flow in ("entry", "middle", "exit")]
    assert sum(len(t.x) for t in points) == len(plots.shape_groups(results)) == 10
    hovers = [h for t in points for h in t.hovertext]
    assert sum("memory-bound" in h for h in hovers) >= 2  # the two slow block2 shapes
    assert any("25 layers" in h for h in hovers)  # middle flow + block13_sepconv1
    assert "ms" in hovers[0] and "×" in hovers[0]
    # Predicted and measured by hand: standard / separable multiply-adds and times.
    for t in points:
        for x, y, hover in zip(t.x, t.y, t.hovertext, strict=True):
            layer = next(r.layer for r in results if re.search(rf"\b{r.layer.name}\b", hover))
            assert x == pytest.approx(layer.standard_madds / layer.madds)
            assert y == (40.0 / 20.0 if layer.block == "block2" else 40.0 / 5.0)


def test_speedup_axes_are_one_log_scale_so_y_equals_x_is_the_diagonal(net: NetworkCost) -> None:
    results = _fake_results(net.layers)
    fig = plots.speedup_figure(results)
    x, y = fig.layout.xaxis, fig.layout.yaxis
    assert x.type == y.type == "log"
    assert tuple(x.range) == tuple(y.range)  # one range
    assert y.scaleanchor == "x" and y.scaleratio == 1  # one scale: a square
    assert x.constrain == y.constrain == "domain"  # the ranges stay as given
    # The range holds every point and 1 (no speed-up), with a margin.
    values = (
        [1.0] + [r.theoretical_speedup for r in results] + [r.measured_speedup for r in results]
    )
    low, high = 10 ** np.array(x.range)
    assert low < min(values) and high > max(values)
    diagonal = fig.data[0]
    assert list(diagonal.x) == list(diagonal.y) == pytest.approx([low, high])
    # One label per point, left of it, inside the plot, at least a gap apart (ay is the
    # label's offset from its point in pixels, negative upwards).
    labels = [a for a in fig.layout.annotations if a.showarrow]
    assert len(labels) == 10 and all(a.ax < 0 for a in labels)
    scale = plots._PLOT_SIDE_PX / (x.range[1] - x.range[0])  # pixels per decade assumed
    heights = sorted((a.y - x.range[0]) * scale - a.ay for a in labels)
    assert all(b - a >= plots._LABEL_GAP_PX - 1e-9 for a, b in itertools.pairwise(heights))
    assert 0 <= heights[0] and heights[-1] <= plots._PLOT_SIDE_PX


@pytest.mark.parametrize(
    "y",
    [
        [0.1, 0.2, 0.2, 0.25, 0.9],  # a crowd low: pushed up only
        [1.9, 1.95, 1.95, 2.0, 2.0, 2.0, 1.99, 1.98],  # a crowd at the top: moved down
        [0.0, 2.0],  # the ends of the axis
    ],
)
def test_point_labels_stay_apart_and_inside_the_plot(y) -> None:
    y_range = (0.0, 2.0)
    heights = plots._label_heights(y, y_range)
    side, gap = plots._PLOT_SIDE_PX, plots._LABEL_GAP_PX
    ordered = sorted(heights)
    assert all(b - a >= gap - 1e-9 for a, b in itertools.pairwise(ordered))
    assert max(heights) <= side - gap / 2 + 1e-9 and min(heights) >= -gap
    # Labels keep their points' order, and sit at their points when there is room.
    points = [v * side / 2.0 for v in y]
    assert sorted(range(len(y)), key=lambda i: (points[i], i)) == sorted(
        range(len(y)), key=lambda i: (heights[i], i)
    )
    if y == [0.1, 0.2, 0.2, 0.25, 0.9]:
        assert heights[0] == points[0] and heights[4] == points[4]
        assert all(h >= p for h, p in zip(heights, points, strict=True))


def test_speedup_summary_says_theory_and_practice(net: NetworkCost) -> None:
    results = _fake_results(net.layers)
    text = plots.speedup_summary(results)
    predicted = [r.theoretical_speedup for r in results]
    assert f"{min(predicted):.1f}–{max(predicted):.1f}×" in text
    assert "2.0–8.0×" in text  # measured: 40/20 in block2, 40/5 elsewhere
    shares = [12.0 / 20.0, 0.4 / 5.0]  # depthwise time share: block2, the others
    assert f"{min(shares):.0%}–{max(shares):.0%} of the time" in text
    assert "Why above" not in text  # no layer beat its prediction (8.0 < 8.4)


def test_explorer_figure_and_explain() -> None:
    fig = plots.explorer_figure(728, 728, 3, 19)
    by_name = {(t.name, t.xaxis): list(t.y) for t in fig.data}
    assert by_name[("standard", "x2")] == [728 * 728 * 9 * 361, 0]
    assert by_name[("depthwise", "x2")] == [0, 728 * 9 * 361]
    assert by_name[("pointwise", "x")] == [0, 728 * 728]
    assert "0.1125" in fig.layout.title.text
    text = plots.explain(728, 728, 3, 19)
    for number in (4_769_856, 1_721_918_016, 536_536, 2_365_272, 191_324_224, 193_689_496):
        assert f"{number:,}" in text
    ratio = 193_689_496 / 1_721_918_016
    assert f"{ratio:.6f}" in text and f"{1 / 728 + 1 / 9:.6f}" in text


def test_flow_palette_covers_every_flow(net: NetworkCost) -> None:
    assert {layer.flow for layer in net.layers} <= set(plots.FLOW_COLORS)


def _all_text(value) -> list[str]:
    """Every string in a figure's JSON (titles, hovers, annotations, ticks, legend)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _all_text(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _all_text(v)]
    return []


def _figures(net: NetworkCost, dark: bool) -> dict[str, go.Figure]:
    results = _fake_results(net.layers)
    flows = {b: spec.flow for b, spec in BLOCKS.items()}
    changes = {b: 0.1 * i for i, b in enumerate(BLOCKS)}
    return {
        "madds": plots.madds_figure(net.layers, dark=dark),
        "params": plots.params_figure(net.layers, dark=dark),
        "totals": plots.totals_figure(net, dark=dark),
        "speedup": plots.speedup_figure(results, dark=dark),
        "explorer": plots.explorer_figure(728, 728, 3, 19, dark=dark),
        "blocks": plots.block_change_figure(changes, flows, "t", dark=dark, changed=["block5"]),
    }


# Gradio's default page backgrounds (light, dark), behind the figures' transparent ones.
PAGE = {False: "#ffffff", True: "#0b0f19"}


@pytest.mark.parametrize("dark", [False, True])
def test_every_figure_follows_the_theme(net: NetworkCost, dark: bool) -> None:
    template = "plotly_dark" if dark else "plotly_white"
    for name, fig in _figures(net, dark).items():
        assert fig.layout.template == pio.templates[template], name
        assert fig.layout.paper_bgcolor == fig.layout.plot_bgcolor == "rgba(0,0,0,0)"
        # Text on the page passes WCAG AA (contrast ratio >= 4.5).
        font = fig.layout.template.layout.font.color
        assert _contrast(font, PAGE[dark]) >= 4.5, (name, font)
        for menu in fig.layout.updatemenus:  # log / linear buttons: their own background
            assert _contrast(menu.font.color, menu.bgcolor) >= 4.5
            # The active button: activeColor in plotly.js src/components/updatemenus/constants.js
            assert _contrast(menu.font.color, "#F4FAFF") >= 4.5


def _contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two colours."""
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _luminance(color: str) -> float:
    """Relative luminance (0 black .. 1 white) of '#RRGGBB' or 'rgb(r,g,b)'."""
    if color.startswith("#"):
        rgb = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    else:
        rgb = [int(v) for v in re.findall(r"\d+", color)[:3]]
    r, g, b = (
        ((c / 255 + 0.055) / 1.055) ** 2.4 if c / 255 > 0.04045 else c / 255 / 12.92 for c in rgb
    )
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_no_figure_prints_a_literal_underscore_subscript(net: NetworkCost) -> None:
    for name, fig in _figures(net, False).items():
        text = " ".join(_all_text(fig.to_plotly_json()["layout"]) + _all_text(
            [t.to_plotly_json() for t in fig.data]
        ))  # fmt: skip
        assert not re.search(r"D_[KFG]", text), name
    hover = plots.layer_hover(net.layers[2], "madds")
    assert "D<sub>K</sub>=3" in hover and "D<sub>G</sub>=" in hover


def test_explain_writes_the_formulas_as_latex() -> None:
    text = plots.explain(728, 728, 3, 19)
    formulas = re.findall(r"\$([^$]+)\$", text)
    assert r"M \cdot N \cdot D_K^2 \cdot D_G^2" in formulas
    assert r"M \cdot D_K^2 \cdot D_G^2 + M \cdot N \cdot D_G^2" in formulas
    assert r"\frac{1}{N} + \frac{1}{D_K^2}" in formulas
    outside = re.sub(r"\$[^$]+\$", "", text)
    assert "_" not in outside  # every subscript is inside the LaTeX


def test_block_change_figure_marks_the_changed_blocks() -> None:
    flows = {b: spec.flow for b, spec in BLOCKS.items()}
    changes = {b: (0.0 if i < 4 else 0.05 * i) for i, b in enumerate(BLOCKS)}
    fig = plots.block_change_figure(changes, flows, "t", changed=["block5", "block7"])
    bar = fig.data[0]
    assert list(bar.x) == list(BLOCKS)
    assert list(bar.y) == pytest.approx([100 * changes[b] for b in BLOCKS])  # percent
    widths = dict(zip(bar.x, bar.marker.line.width, strict=True))
    assert [b for b, w in widths.items() if w > 0] == ["block5", "block7"]
    marked = [a.x for a in fig.layout.annotations if "changed" in a.text]
    assert marked == ["block5", "block7"]
    assert fig.layout.yaxis.range[1] > max(bar.y)  # room for the marks
