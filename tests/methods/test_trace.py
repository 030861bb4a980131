"""trace: every traced value equals the network's own float32 value, caught by plain hooks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.plain_forward import plain_forward
from xviz.engine.analysis import Analysis, analyze
from xviz.engine.hooks import hook_count
from xviz.errors import AnalysisError
from xviz.methods import trace as trace_module
from xviz.methods.trace import (
    ValueTrace,
    clear_cache,
    explain_value,
    linked_channels,
    sepconv_input,
    sepconv_steps,
)
from xviz.model.xception import SEPCONV_NAMES

SIZE = 150


@pytest.fixture(scope="module")
def analysis(model) -> Analysis:
    image = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return analyze(model, image, size=SIZE)


@pytest.fixture(scope="module")
def network(model, analysis):
    """Float32 input (by sepconv), depthwise and pointwise output of every sepconv, from
    PyTorch's own hooks on a plain forward pass (no xviz hook code involved)."""
    outputs, inputs = plain_forward(model, analysis.image)
    return {name: inputs[f"{name}.depthwise"] for name in model.sepconvs}, outputs


def positions(height: int, width: int) -> list[tuple[int, int]]:
    """The four corners, a point on each edge and one inside."""
    ym, xm = height // 2, width // 2
    return [
        (0, 0),
        (0, width - 1),
        (height - 1, 0),
        (height - 1, width - 1),
        (0, xm),
        (height - 1, xm),
        (ym, 0),
        (ym, width - 1),
        (ym, xm),
    ]


def check_sum(trace: ValueTrace, reference: torch.Tensor) -> None:
    """The trace adds up to the network's value within 1e-3 of the channel's range."""
    channel = reference[trace.channel]
    spread = float(channel.max() - channel.min())
    expected = float(channel[trace.y, trace.x])
    assert abs(trace.value - expected) <= 1e-3 * spread + 1e-7, (trace.map_name, trace.y, trace.x)
    assert trace.value == pytest.approx(float(trace.terms.sum()), rel=0, abs=1e-12)
    products = trace.inputs.astype(np.float64) * trace.weights.astype(np.float64)
    np.testing.assert_array_equal(trace.terms, products)


@pytest.mark.parametrize("sepconv", SEPCONV_NAMES)
def test_every_sepconv_traced_at_corners_edges_and_inside(model, analysis, network, sepconv):
    inputs, outputs = network
    features = inputs[sepconv]  # (M, H, W)
    depthwise, pointwise = outputs[f"{sepconv}.depthwise"], outputs[f"{sepconv}.pointwise"]
    m_in, height, width = features.shape
    n_out = pointwise.shape[0]
    rng = np.random.default_rng(SEPCONV_NAMES.index(sepconv))
    module = model.sepconvs[sepconv]
    for y, x in positions(height, width):
        d = int(rng.integers(m_in))
        trace = explain_value(model, analysis, f"{sepconv}.depthwise", d, y, x)
        check_sum(trace, depthwise)
        assert trace.input_channel == d and trace.sepconv == sepconv
        # The window by hand: input rows y-1..y+1, columns x-1..x+1, zero outside.
        for i in range(3):
            for j in range(3):
                r, c = y - 1 + i, x - 1 + j
                inside = 0 <= r < height and 0 <= c < width
                assert trace.padded[i, j] == (not inside)
                expected = float(features[d, r, c]) if inside else 0.0
                assert trace.inputs[i, j] == pytest.approx(expected, abs=1e-6)
        np.testing.assert_array_equal(trace.weights, module.depthwise.weight[d, 0].detach().numpy())
        assert trace.window == (y - 1, x - 1, y + 1, x + 1)

        n = int(rng.integers(n_out))
        trace = explain_value(model, analysis, f"{sepconv}.pointwise", n, y, x)
        check_sum(trace, pointwise)
        assert trace.inputs.shape == trace.weights.shape == trace.terms.shape == (m_in,)
        np.testing.assert_allclose(trace.inputs, depthwise[:, y, x].numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(
            trace.weights, module.pointwise.weight[n, :, 0, 0].detach().numpy()
        )
        assert trace.window is None and trace.padded is None and trace.input_channel is None


def test_first_and_last_channels(model, analysis, network):
    _, outputs = network
    for name in ("block2_sepconv1.depthwise", "block14_sepconv2.pointwise"):
        reference = outputs[name]
        for channel in (0, reference.shape[0] - 1):
            check_sum(explain_value(model, analysis, name, channel, 1, 1), reference)


def test_stored_map_value_and_range_are_carried(model, analysis, network):
    _, outputs = network
    trace = explain_value(model, analysis, "block4_sepconv2.pointwise", 5, 3, 2)
    stored = analysis.map("block4_sepconv2.pointwise")
    assert trace.map_value == pytest.approx(float(stored.channel(5)[3, 2]))
    assert abs(trace.map_value - trace.value) <= trace.map_step / 2 + 1e-6
    channel = outputs["block4_sepconv2.pointwise"][5]
    assert trace.channel_min == pytest.approx(float(channel.min()), rel=1e-5)
    assert trace.channel_max == pytest.approx(float(channel.max()), rel=1e-5)
    assert (trace.height, trace.width) == tuple(channel.shape)


def test_numpy_and_integral_float_indices_are_accepted(model, analysis):
    a = explain_value(model, analysis, "block5_sepconv1.depthwise", np.int64(3), 2.0, np.int32(1))
    b = explain_value(model, analysis, "block5_sepconv1.depthwise", 3, 2, 1)
    assert a.value == b.value and (a.channel, a.y, a.x) == (3, 2, 1)


def test_one_forward_per_layer_stopping_at_its_input(model, analysis):
    fresh = dataclasses.replace(analysis)  # same arrays, a new analysis: nothing cached for it
    modules = {"block1": model.block1, "block3": model.block3, "block14": model.block14}
    modules["classifier"] = model.classifier
    calls = dict.fromkeys(modules, 0)
    handles = [
        module.register_forward_pre_hook(
            lambda m, i, name=name: calls.__setitem__(name, calls[name] + 1)
        )
        for name, module in modules.items()
    ]
    try:
        explain_value(model, fresh, "block2_sepconv2.pointwise", 0, 0, 0)
        assert calls == {"block1": 1, "block3": 0, "block14": 0, "classifier": 0}
        explain_value(model, fresh, "block2_sepconv2.depthwise", 7, 5, 5)
        explain_value(model, fresh, "block2_sepconv2.pointwise", 9, 3, 3)
        sepconv_steps(model, fresh, "block2_sepconv2", "pointwise", 4)
        assert calls["block1"] == 1  # later clicks on the layer reuse the cached input
        explain_value(model, fresh, "block14_sepconv2.depthwise", 0, 0, 0)
        assert calls == {"block1": 2, "block3": 1, "block14": 1, "classifier": 0}
    finally:
        for handle in handles:
            handle.remove()
    assert hook_count(model) == 0


def test_cache_is_bounded_and_never_mixes_analyses(model, analysis, network, monkeypatch):
    limit = 3 * 2**20
    monkeypatch.setattr(trace_module._CACHE, "budget_bytes", limit)
    # The input is rebuilt from the analysed image: another image is another analysis.
    other = dataclasses.replace(analysis, image=np.zeros_like(analysis.image))
    a = sepconv_input(model, analysis, "block3_sepconv1")
    b = sepconv_input(model, other, "block3_sepconv1")
    assert not np.array_equal(a, b)
    np.testing.assert_allclose(a, network[0]["block3_sepconv1"].numpy(), atol=1e-5)
    assert not a.flags.writeable
    names = ("block5_sepconv1", "block2_sepconv1", "block2_sepconv2")  # 0.2, 1.3, 2.6 MB
    sizes = [sepconv_input(model, other, name).nbytes for name in names]
    assert sum(sizes) > limit
    assert trace_module._CACHE.stats.bytes <= limit
    newest = trace_module._cached(model, other, names[-1])
    assert newest is not None and trace_module._cached(model, other, names[0]) is None
    clear_cache()
    assert len(trace_module._CACHE) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("block5_sepconv9.depthwise", 0, 0, 0), "Unknown map"),
        (("x" * 10_000, 0, 0, 0), "Unknown map"),
        ((None, 0, 0, 0), "Unknown map"),
        (("block5", 0, 0, 0), "not half of a separable conv"),
        (("block1_conv1", 0, 0, 0), "not half of a separable conv"),
        (("block2_residual", 0, 0, 0), "not half of a separable conv"),
        (("block5_sepconv1.depthwise", -1, 0, 0), "Channel -1 is out of range"),
        (("block5_sepconv1.depthwise", 728, 0, 0), "channels 0 to 727"),
        (("block2_sepconv1.depthwise", 64, 0, 0), "channels 0 to 63"),
        (("block2_sepconv1.pointwise", 128, 0, 0), "channels 0 to 127"),
        (("block5_sepconv1.pointwise", 0, 9, 0), "Row 9 is out of range"),
        (("block5_sepconv1.pointwise", 0, 0, -1), "Column -1 is out of range"),
        (("block5_sepconv1.pointwise", 1.5, 0, 0), "whole number"),
        (("block5_sepconv1.pointwise", "3", 0, 0), "whole number"),
        (("block5_sepconv1.pointwise", True, 0, 0), "whole number"),
        (("block5_sepconv1.pointwise", 0, float("nan"), 0), "whole number"),
        (("block5_sepconv1.pointwise", 0, 0, None), "whole number"),
    ],
)
def test_bad_arguments_are_clear_analysis_errors(model, analysis, args, message):
    with pytest.raises(AnalysisError, match=message) as error:
        explain_value(model, analysis, *args)
    assert len(str(error.value)) < 300  # a long request value is not echoed back whole


def test_analysis_of_other_weights_is_refused(model, analysis):
    other = dataclasses.replace(analysis, weights="keras-imagenet")
    with pytest.raises(AnalysisError, match="analyse the image again"):
        explain_value(model, other, "block5_sepconv1.depthwise", 0, 0, 0)
    with pytest.raises(AnalysisError, match="analyse an image first"):
        explain_value(model, None, "block5_sepconv1.depthwise", 0, 0, 0)


def test_steps_follow_the_network(model, analysis, network):
    inputs, outputs = network
    weights = model.sepconvs["block6_sepconv2"].pointwise.weight[:, :, 0, 0]
    steps = sepconv_steps(model, analysis, "block6_sepconv2", "pointwise", 11)
    assert steps.picked == "pointwise" and steps.pointwise_channel == 11
    assert steps.depthwise_channel == int(weights[11].abs().argmax())
    d = steps.depthwise_channel
    np.testing.assert_allclose(steps.input_map, inputs["block6_sepconv2"][d].numpy(), atol=1e-6)
    np.testing.assert_array_equal(
        steps.kernel, model.sepconvs["block6_sepconv2"].depthwise.weight[d, 0].detach().numpy()
    )
    reference_dw = outputs["block6_sepconv2.depthwise"]
    reference_pw = outputs["block6_sepconv2.pointwise"]
    np.testing.assert_allclose(steps.depthwise_map, reference_dw[d].numpy(), atol=1e-5)
    np.testing.assert_array_equal(steps.pointwise_weights, weights[11].detach().numpy())
    np.testing.assert_allclose(steps.pointwise_map, reference_pw[11].numpy(), atol=1e-4)

    left = sepconv_steps(model, analysis, "block6_sepconv2", "left", 30)
    assert left.picked == "depthwise" and left.depthwise_channel == 30
    assert left.pointwise_channel == int(weights[:, 30].abs().argmax())
    chosen = sepconv_steps(model, analysis, "block6_sepconv2", "right", 11, partner=2)
    assert (chosen.depthwise_channel, chosen.pointwise_channel) == (2, 11)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("block5", "pointwise", 0), "Unknown separable conv"),
        (("block5_sepconv1", "middle", 0), "Unknown side"),
        (("block5_sepconv1", "pointwise", 728), "channels 0 to 727"),
        (("block14_sepconv1", "pointwise", 0, 1024), "channels 0 to 1023"),
        (("block14_sepconv1", "depthwise", 0, 1536), "channels 0 to 1535"),
    ],
)
def test_bad_step_arguments(model, analysis, args, message):
    with pytest.raises(AnalysisError, match=message):
        sepconv_steps(model, analysis, *args)


def test_describe_says_what_was_summed(model, analysis):
    corner = explain_value(model, analysis, "block3_sepconv1.depthwise", 2, 0, 0)
    text = corner.describe()
    assert "input channel 2's 3x3 window" in text and "5 of them in the zero padding" in text
    assert f"**{corner.value:.4g}**" in text and f"{corner.map_value:.4g}" in text
    inside = explain_value(model, analysis, "block3_sepconv1.pointwise", 2, 4, 4).describe()
    assert "128 products of the depthwise values" in inside and "padding" not in inside


def test_linked_channels_are_the_largest_pointwise_weights(model):
    # (N, M) pointwise weights read from the state dict, ranked here with a plain sort.
    w = model.state_dict()["block5.sepconv1.pointwise.weight"][:, :, 0, 0].abs().numpy()
    by_weight = sorted(range(w.shape[1]), key=lambda m: (-w[3, m], m))[:8]
    assert linked_channels(model, "block5_sepconv1", "right", 3) == by_weight
    column = sorted(range(w.shape[0]), key=lambda n: (-w[n, 5], n))[:4]
    assert linked_channels(model, "block5_sepconv1", "left", 5, 4) == column
    for side, channel in (("right", 728), ("left", -1), ("right", None)):
        assert linked_channels(model, "block5_sepconv1", side, channel) == []
    assert linked_channels(model, "block1_conv1", "right", 0) == []
