"""trace_plots: the figures show the trace's own numbers, and the bars add up to the value."""

from __future__ import annotations

import numpy as np
import plotly.io as pio
import pytest

from xviz.engine.analysis import Analysis, analyze
from xviz.methods.trace import explain_value, sepconv_steps
from xviz.render import trace_figures as trace_plots

SIZE = 71


@pytest.fixture(scope="module")
def analysis(model) -> Analysis:
    image = np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return analyze(model, image, size=SIZE)


def test_depthwise_figure_shows_window_filter_and_products(model, analysis):
    trace = explain_value(model, analysis, "block3_sepconv2.depthwise", 40, 0, 5)
    fig = trace_plots.depthwise_trace_figure(trace)
    window, kernel, products = (np.asarray(t.z, dtype=np.float64) for t in fig.data)
    np.testing.assert_array_equal(window, trace.inputs)
    np.testing.assert_array_equal(kernel, trace.weights)
    np.testing.assert_allclose(products, window * kernel, rtol=1e-12)
    assert f"{products.sum():.4g}" in fig.layout.title.text
    # Row 0 of the window is above the map: zero padding, said so and outlined.
    assert window[0].tolist() == [0, 0, 0] and trace.padded[0].all()
    assert list(fig.data[0].text[0]) == list(fig.data[2].text[0]) == ["0 (pad)"] * 3
    assert "0 (pad)" not in np.ravel(fig.data[1].text)
    dotted = [s for s in fig.layout.shapes if s.line.dash == "dot"]
    assert len(dotted) == 2 * int(trace.padded.sum())  # on the window and on the products
    assert list(fig.data[0].y) == ["-1", "0", "1"]  # input rows around y = 0


def brute_force_contributions(terms: np.ndarray, top: int) -> tuple[list[int], float]:
    pairs = list(enumerate(terms.tolist()))
    positive = [i for i, t in sorted(pairs, key=lambda p: -p[1]) if t > 0][:top]
    negative = [i for i, t in sorted(pairs, key=lambda p: p[1]) if t < 0][:top]
    shown = positive + negative
    rest = 0.0
    for i, t in pairs:
        if i not in shown:
            rest += t
    return shown, rest


@pytest.mark.parametrize("name", ["block4_sepconv1.pointwise", "block14_sepconv2.pointwise"])
def test_pointwise_bars_add_up_to_the_value(model, analysis, name):
    trace = explain_value(model, analysis, name, 7, 1, 2)
    fig = trace_plots.pointwise_trace_figure(trace, top=5)
    (bars,) = fig.data
    measures = list(bars.measure)
    assert measures[-1] == "total" and set(measures[:-1]) == {"relative"}
    relative = np.asarray(bars.y[:-1], dtype=np.float64)
    assert relative.sum() == pytest.approx(trace.value, rel=1e-9, abs=1e-12)
    assert bars.y[-1] == trace.value
    shown, rest = brute_force_contributions(np.asarray(trace.terms), 5)
    assert list(bars.customdata[:-2]) == shown
    assert bars.customdata[-2] is None and bars.customdata[-1] is None
    assert relative[-1] == pytest.approx(rest, rel=1e-9, abs=1e-12)
    for channel, y in zip(shown, relative, strict=False):
        assert y == trace.terms[channel]
        assert y == pytest.approx(float(trace.weights[channel]) * float(trace.inputs[channel]))
    assert bars.x[-2] == f"rest ({trace.terms.size - len(shown)})"


def test_trace_figure_picks_the_kind(model, analysis):
    depthwise = explain_value(model, analysis, "block5_sepconv1.depthwise", 0, 0, 0)
    pointwise = explain_value(model, analysis, "block5_sepconv1.pointwise", 0, 0, 0)
    assert len(trace_plots.trace_figure(depthwise).data) == 3
    assert trace_plots.trace_figure(pointwise).data[0].type == "waterfall"
    with pytest.raises(ValueError, match="not a pointwise"):
        trace_plots.pointwise_trace_figure(depthwise)
    with pytest.raises(ValueError, match="not a depthwise"):
        trace_plots.depthwise_trace_figure(pointwise)


def test_steps_figures_show_the_steps(model, analysis):
    steps = sepconv_steps(model, analysis, "block2_sepconv2", "pointwise", 3, partner=9)
    figs = trace_plots.steps_figures(steps, position=(4, 6))
    np.testing.assert_array_equal(np.asarray(figs.input.data[0].z), steps.input_map)
    np.testing.assert_array_equal(np.asarray(figs.kernel.data[0].z), steps.kernel)
    np.testing.assert_array_equal(np.asarray(figs.depthwise.data[0].z), steps.depthwise_map)
    np.testing.assert_array_equal(np.asarray(figs.pointwise.data[0].z), steps.pointwise_map)
    weights = steps.pointwise_weights
    top = sorted(range(weights.size), key=lambda i: -abs(float(weights[i])))[:16]
    bars = figs.weights.data[0]
    assert list(bars.customdata) == top
    assert list(bars.y) == [float(weights[i]) for i in top]
    colors = bars.marker.line.color
    outlined = [c for c, color in zip(top, colors, strict=True) if color != "rgba(0,0,0,0)"]
    assert outlined == ([9] if 9 in top else [])
    (window,) = figs.input.layout.shapes  # the 3x3 window around row 4, column 6
    assert (window.x0, window.x1, window.y0, window.y1) == (4.5, 7.5, 2.5, 5.5)
    (cell,) = figs.pointwise.layout.shapes
    assert (cell.x0, cell.x1, cell.y0, cell.y1) == (5.5, 6.5, 3.5, 4.5)
    assert not trace_plots.steps_figures(steps).input.layout.shapes


def test_signed_maps_are_centred_on_zero_and_unsigned_start_at_zero():
    signed = trace_plots.map_figure(np.array([[-1.0, 3.0]]), "t").data[0]
    assert (signed.zmin, signed.zmax) == (-3.0, 3.0)
    assert signed.colorscale == tuple(tuple(s) for s in trace_plots.colorscale("coolwarm"))
    unsigned = trace_plots.map_figure(np.array([[0.0, 2.0]]), "t").data[0]
    assert (unsigned.zmin, unsigned.zmax) == (0.0, 2.0)
    blank = trace_plots.map_figure(np.zeros((2, 2)), "t").data[0]
    assert (blank.zmin, blank.zmax) == (0.0, 1.0)  # a valid range, not 0..0


def test_figures_follow_the_theme(model, analysis):
    trace = explain_value(model, analysis, "block5_sepconv1.pointwise", 0, 0, 0)
    dark_font = pio.templates["plotly_dark"].layout.font.color
    light_font = pio.templates["plotly_white"].layout.font.color
    assert dark_font != light_font
    steps = sepconv_steps(model, analysis, "block5_sepconv1", "depthwise", 0)
    for dark, font in ((True, dark_font), (False, light_font)):
        figs = [trace_plots.trace_figure(trace, dark), *trace_plots.steps_figures(steps, dark)]
        for fig in figs:
            assert fig.layout.template.layout.font.color == font
            assert fig.layout.paper_bgcolor == "rgba(0,0,0,0)"
