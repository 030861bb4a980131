"""Tests of xviz.plots: traces, order, exact hover numbers, and the explorer's arithmetic."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from xviz import plots
from xviz.cost import LatencyResult, LayerCost, NetworkCost, network_cost
from xviz.model import Xception


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
    assert fig.data[0].name == "theory met (y = x)"
    assert list(fig.data[0].x) == list(fig.data[0].y)
    assert [t.name for t in fig.data[1:]] == ["entry flow", "middle flow", "exit flow"]
    points = sum(len(t.x) for t in fig.data[1:])
    assert points == len(plots.shape_groups(results)) == 10
    hovers = [h for t in fig.data[1:] for h in t.hovertext]
    assert sum("memory-bound" in h for h in hovers) >= 2  # the two slow block2 shapes
    assert any("25 layers" in h for h in hovers)  # middle flow + block13_sepconv1
    assert "ms" in hovers[0] and "×" in hovers[0]


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
