"""guide: every number a step shows is the real one, recomputed here without xviz's code."""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict

import numpy as np
import pytest
import torch

from xviz.app import tour as guide
from xviz.engine.analysis import Analysis, analyze
from xviz.engine.hooks import hook_count
from xviz.errors import AnalysisError

SIZE = 150
LAYER = "block5_sepconv1"


@pytest.fixture(scope="module")
def model(model):
    """The shared random model (one per test module), its head scaled so that its logits
    spread over several units: ablations then move the probabilities measurably."""
    with torch.no_grad():
        model.classifier.weight.mul_(1000)
    return model


@pytest.fixture(scope="module")
def analysis(model) -> Analysis:
    image = np.random.default_rng(3).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return analyze(model, image, size=SIZE)


def model_input(analysis: Analysis) -> torch.Tensor:
    return torch.tensor(analysis.image).permute(2, 0, 1)[None].float() / 127.5 - 1


def run(model, analysis, hooks: dict) -> torch.Tensor:
    """Probabilities of a plain forward pass with PyTorch forward hooks {module: hook}."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks.items()]
    try:
        with torch.no_grad():
            return torch.softmax(model(model_input(analysis))[0].double(), dim=0)
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture(scope="module")
def halves(model, analysis) -> dict[str, torch.Tensor]:
    """Every depthwise and pointwise output, float32, from PyTorch's own hooks."""
    outputs: dict[str, torch.Tensor] = {}

    def keep(key):
        return lambda m, i, o: outputs.__setitem__(key, o[0].detach().clone())

    hooks = {}
    for name, module in model.sepconvs.items():
        hooks[module.depthwise] = keep(f"{name}.depthwise")
        hooks[module.pointwise] = keep(f"{name}.pointwise")
    run(model, analysis, hooks)
    return outputs


def sentences(text: str) -> int:
    return len(re.findall(r"[.!?](\s|$)", text))


def test_six_steps_with_paper_sections():
    assert [s.number for s in guide.STEPS] == [1, 2, 3, 4, 5, 6]
    assert len(set(guide.STEP_KEYS)) == 6
    for step in guide.STEPS:
        assert 2 <= sentences(step.text) <= 3, step.key
        assert step.reference.startswith("Chollet 2017, §"), step.key
        assert step.opens in ("trace", "cost", "ablation", "gradcam")
    assert "Figure 10" in guide.step("relu").reference and "§4.7" in guide.step(4).reference
    assert "Figure 9" in guide.step("residual").reference and "§4.6" in guide.step(5).reference


def test_unknown_step_or_layer_is_an_analysis_error(model, analysis):
    with pytest.raises(AnalysisError, match="Unknown guide step"):
        guide.step(7)
    with pytest.raises(AnalysisError, match="Unknown guide step"):
        guide.answer("x" * 1000, model, analysis)
    with pytest.raises(AnalysisError, match="Unknown separable conv"):
        guide.answer(1, model, analysis, layer="block5")
    with pytest.raises(AnalysisError, match="Unknown separable conv"):
        guide.answer(1, model, analysis, layer=["block5_sepconv1"])


@pytest.mark.parametrize("side", ["depthwise", "pointwise"])
def test_trace_steps_show_the_peak_channel_and_its_real_value(model, analysis, halves, side):
    answer = guide.answer(1 if side == "depthwise" else 2, model, analysis, layer=LAYER)
    reference = halves[f"{LAYER}.{side}"]  # (C, H, W)
    channel = int(reference.amax(dim=(1, 2)).argmax())
    y, x = np.unravel_index(int(reference[channel].argmax()), reference.shape[1:])
    numbers = answer.numbers
    assert (numbers["channel"], numbers["y"], numbers["x"]) == (channel, y, x)
    value = float(reference[channel, y, x])
    spread = float(reference[channel].max() - reference[channel].min())
    assert abs(numbers["value"] - value) <= 1e-3 * spread
    assert f"**{numbers['value']:.4g}**" in answer.markdown
    assert answer.trace.map_name == f"{LAYER}.{side}" and answer.trace.channel == channel
    if side == "depthwise":
        assert numbers["other_channels"] == reference.shape[0] - 1 == 727
        return
    # Pointwise: the terms by hand, from the hooked depthwise output and the weights.
    depthwise = halves[f"{LAYER}.depthwise"][:, y, x].double()
    weights = model.sepconvs[LAYER].pointwise.weight[channel, :, 0, 0].detach().double()
    terms = (depthwise * weights).tolist()
    assert numbers["positive"] == pytest.approx(sum(t for t in terms if t > 0), rel=1e-4)
    assert numbers["negative"] == pytest.approx(sum(t for t in terms if t < 0), rel=1e-4)
    total, running, count = sum(abs(t) for t in terms), 0.0, 0
    for magnitude in sorted((abs(t) for t in terms), reverse=True):
        running += magnitude
        count += 1
        if running >= total / 2:
            break
    assert numbers["half_share"] == count
    assert f"from the {count} largest of the 728 terms" in answer.markdown


def test_cost_step_uses_this_layers_shape(model, analysis, halves):
    answer = guide.answer("cost", model, analysis, layer="block2_sepconv2", measure=False)
    M, _, D_G = halves["block2_sepconv2.depthwise"].shape
    N = halves["block2_sepconv2.pointwise"].shape[0]
    assert (M, N, D_G) == (128, 128, 72)
    standard = M * N * 9 * D_G**2
    separable = M * 9 * D_G**2 + M * N * D_G**2
    numbers = answer.numbers
    assert (numbers["M"], numbers["N"], numbers["D_K"], numbers["D_G"]) == (M, N, 3, D_G)
    assert numbers["standard_madds"] == standard and numbers["madds"] == separable
    assert numbers["ratio"] == pytest.approx(separable / standard)
    assert numbers["formula_ratio"] == pytest.approx(1 / 128 + 1 / 9)
    assert f"{standard:,}" in answer.markdown and f"{separable:,}" in answer.markdown
    assert answer.latency is None and "Measured" not in answer.markdown


def test_cost_step_reports_the_measured_speed(model, analysis):
    answer = guide.answer(3, model, analysis, layer="block13_sepconv2")
    latency = answer.latency
    assert latency.layer.name == "block13_sepconv2" and latency.device == "cpu"
    speedup = latency.standard_ms / latency.separable_ms
    assert answer.numbers["measured_speedup"] == speedup
    assert f"**{speedup:.1f}×** faster" in answer.markdown


def test_relu_step_numbers(model, analysis, halves):
    answer = guide.answer("relu", model, analysis)
    assert answer.ablation == guide.preset(4)
    assert len(answer.ablation.blocks) == 13  # every block with separable convs
    values = [halves[name] for name in halves if name.endswith(".depthwise")]
    zeroed = sum(int((v <= 0).sum()) for v in values) / sum(v.numel() for v in values)
    assert answer.numbers["negative_share"] == pytest.approx(zeroed, abs=1e-3)
    assert f"{zeroed:.0%} of this image's depthwise values" in answer.markdown
    relu = {sep.depthwise: lambda m, i, o: torch.relu(o) for sep in model.sepconvs.values()}
    before = run(model, analysis, {})[analysis.target]
    after = run(model, analysis, relu)[analysis.target]
    assert abs(float(after - before)) > 1e-2 * float(before)  # the check below can tell
    assert answer.numbers["probability_before"] == pytest.approx(float(before), rel=1e-4)
    assert answer.numbers["probability_after"] == pytest.approx(float(after), rel=1e-4)
    assert hook_count(model) == 0


def test_residual_step_numbers(model, analysis):
    answer = guide.answer("residual", model, analysis)
    assert answer.ablation.blocks == tuple(f"block{b}" for b in range(2, 14))  # Figure 9

    def unresidual(block, inputs, output):
        """The residual removed by hand: the output minus the input (identity) or minus the
        1x1 conv + BN of the input (blocks 2, 3, 4, 13)."""
        if block.residual is not None:
            return output - block.residual_bn(block.residual(inputs[0]))
        return output - inputs[0]

    without = {model.blocks[b]: unresidual for b in answer.ablation.blocks}
    after = run(model, analysis, without)[analysis.target]
    before = answer.numbers["probability_before"]
    assert abs(float(after) - before) > 1e-2 * before  # the check below can tell
    assert answer.numbers["probability_after"] == pytest.approx(float(after), rel=1e-4)
    assert answer.ablation_result.ablations == (answer.ablation,)
    assert f"**{float(after):.3g}**" in answer.markdown


def test_gradcam_step_numbers(model, analysis):
    answer = guide.answer("gradcam", model, analysis)
    rows = {row["block"]: row for row in answer.numbers["blocks"]}
    assert list(rows) == [f"block{b}" for b in range(1, 15)]
    for block, cam in analysis.gradcam_raw.items():
        h, w = cam.shape
        peak, hot = cam.max(), 0
        for i in range(h):
            for j in range(w):
                hot += cam[i, j] >= 0.5 * peak
        assert rows[block]["hot_area"] == pytest.approx(hot / (h * w)), block
        full = analysis.gradcam[block]
        assert rows[block]["peak"] == np.unravel_index(np.argmax(full), full.shape)
        assert rows[block]["resolution"] == (h, w)


def test_blank_gradcam_is_said_so(model, analysis):
    cams = OrderedDict(analysis.gradcam_raw)
    cams["block13"] = np.zeros_like(cams["block13"])
    blank = dataclasses.replace(analysis, gradcam_raw=cams)
    answer = guide.answer(6, model, blank)
    row = next(r for r in answer.numbers["blocks"] if r["block"] == "block13")
    assert row["peak"] is None and row["hot_area"] == 0
    assert "| block13 | exit | 5×5 | blank: no positive evidence | - |" in answer.markdown
