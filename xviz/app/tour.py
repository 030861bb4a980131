"""A guided path through the paper's claims, each answered with the current image's numbers.

Six steps (:data:`STEPS`), each a claim of Chollet 2017 ("Xception: Deep Learning with
Depthwise Separable Convolutions", arXiv 1610.02357) in two or three sentences with the
section it comes from. :func:`answer` fills one step in for an analysed image: the numbers
as markdown and as a dict, plus what the app's views need to show it (a value trace, the
layer's cost and measured speed, a preset ablation and its result). Section numbers are those
of the arXiv v3 text (4 Apr 2017).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xviz.engine.analysis import Analysis, model_device
from xviz.errors import AnalysisError
from xviz.methods.ablation import (
    RESIDUAL_BLOCKS,
    SEPARABLE_BLOCKS,
    Ablation,
    AblationResult,
    ablate,
)
from xviz.methods.cost import LatencyResult, LayerCost, layer_costs, measure_latency
from xviz.methods.trace import ValueTrace, explain_value, sepconv_steps
from xviz.model.xception import BLOCKS, SEPCONV_BLOCK, Xception

DEFAULT_LAYER = "block5_sepconv1"
"""The first middle-flow separable conv: 728 -> 728 channels, the network's typical shape."""
HOT = 0.5
"""A Grad-CAM cell is "hot" at or above this fraction of its block's maximum."""


@dataclass(frozen=True)
class GuideStep:
    """One claim of the paper. ``opens`` names the app view that answers it: ``"trace"``,
    ``"cost"``, ``"ablation"`` or ``"gradcam"``."""

    number: int
    key: str
    title: str
    text: str
    reference: str
    opens: str


STEPS: tuple[GuideStep, ...] = (
    GuideStep(
        1,
        "depthwise",
        "A depthwise filter sees one channel",
        "A depthwise convolution is a spatial convolution performed independently over each "
        "channel of its input: each 3×3 filter slides over one channel and nothing else. "
        "Click any value of a depthwise map to see its 3×3 window, the filter and the nine "
        "products that add up to it.",
        "Chollet 2017, §1.2 (the continuum between convolutions and separable convolutions)",
        "trace",
    ),
    GuideStep(
        2,
        "pointwise",
        "A pointwise filter mixes all channels",
        "The pointwise convolution that follows is a 1×1 convolution: each output value is a "
        "weighted sum of all the depthwise values at one position, projecting them onto a new "
        "channel space. Splitting a convolution like this rests on the paper's hypothesis "
        "that spatial and cross-channel correlations can be mapped entirely separately.",
        "Chollet 2017, §1.2 and §3 (the Xception hypothesis)",
        "trace",
    ),
    GuideStep(
        3,
        "cost",
        "Separable costs about 1/N + 1/D_K² of a standard convolution",
        "A standard D_K×D_K convolution from M to N channels costs M·N·D_K² multiply-adds per "
        "position; depthwise then pointwise cost M·D_K² + M·N, a ratio of 1/N + 1/D_K², about "
        "9 times fewer for 3×3 filters. Xception spends the savings on depth at the parameter "
        "count of Inception V3 (22.9 M vs 23.6 M) and still trains marginally slower (28 vs "
        "31 steps/s): the paper expects faster depthwise kernels to close that gap.",
        "Chollet 2017, §4.5.2 and Table 3; the ratio: Howard et al. 2017 (MobileNets, "
        "arXiv 1704.04861), §3.1",
        "cost",
    ),
    GuideStep(
        4,
        "relu",
        "No ReLU between depthwise and pointwise works better",
        "Inception follows both of its convolutions with a ReLU; a separable convolution has "
        "no non-linearity between its depthwise and pointwise steps. Trained with a ReLU or an "
        "ELU inserted there, Xception converged more slowly and ended worse on ImageNet, "
        "perhaps because a one-channel-deep feature space loses information through it.",
        "Chollet 2017, §4.7 and Figure 10 (also §1.2)",
        "ablation",
    ),
    GuideStep(
        5,
        "residual",
        "Residual connections matter",
        "All 14 blocks but the first and last have a linear residual connection around them. "
        "Without any, Xception converged more slowly and to a worse accuracy on ImageNet, "
        "though the paper adds that residual connections are not required for stacks of "
        "separable convolutions in general.",
        "Chollet 2017, §3 and §4.6, Figure 9",
        "ablation",
    ),
    GuideStep(
        6,
        "gradcam",
        "Where the network looks, block by block",
        "The image goes through the entry flow (blocks 1-4, the maps shrinking), the middle "
        "flow repeated eight times (blocks 5-12) and the exit flow (blocks 13-14). Grad-CAM "
        "weighs each block's channels by the gradient of the chosen class (by default the top "
        "prediction) and shows where that block's evidence for it lies.",
        "Chollet 2017, §3 and Figure 5; Grad-CAM: Selvaraju et al. 2017, arXiv 1610.02391",
        "gradcam",
    ),
)
STEP_KEYS: tuple[str, ...] = tuple(step.key for step in STEPS)


@dataclass(frozen=True, eq=False)
class GuideAnswer:
    """One step filled in for one image: ``markdown`` to show, the same ``numbers`` as values,
    and what the step's view shows (only the fields of that view are set)."""

    step: GuideStep
    markdown: str
    numbers: dict[str, Any]
    trace: ValueTrace | None = None
    layer_cost: LayerCost | None = None
    latency: LatencyResult | None = None
    ablation: Ablation | None = None
    ablation_result: AblationResult | None = field(default=None, repr=False)


def step(key: int | str) -> GuideStep:
    """A step by number (1-6) or key (:data:`STEP_KEYS`)."""
    for candidate in STEPS:
        if key == candidate.number or key == candidate.key:
            return candidate
    raise AnalysisError(f"Unknown guide step {str(key)[:40]!r}: use 1-6 or one of {STEP_KEYS}.")


def preset(key: int | str) -> Ablation | None:
    """The ablation a step applies; None for steps without one.

    Step 4: a ReLU between depthwise and pointwise in all 34 separable convs, as in the
    paper's Figure 10. Step 5: no residual connection at all (blocks 2-13: the 4 residual
    1x1 convs and the 8 identities), as in its Figure 9.
    """
    chosen = step(key)
    if chosen.key == "relu":
        return Ablation.relu_between(SEPARABLE_BLOCKS)
    if chosen.key == "residual":
        return Ablation.drop_residual(RESIDUAL_BLOCKS)
    return None


def answer(
    key: int | str,
    model: Xception,
    analysis: Analysis,
    layer: str = DEFAULT_LAYER,
    measure: bool = True,
) -> GuideAnswer:
    """Step ``key`` answered with ``analysis``' numbers.

    Args:
        layer: the separable conv steps 1-3 use (the app's current layer).
        measure: step 3 times the layer and its standard twin on the model's device
            (``xviz.methods.cost.measure_latency``, cached per shape); False skips the timing.

    Steps 1-2 trace the channel with the largest value at its peak (float32); steps 4-5 run
    the preset ablation (two forward passes).
    """
    chosen = step(key)
    if not isinstance(layer, str) or layer not in SEPCONV_BLOCK:
        raise AnalysisError(
            f"Unknown separable conv {str(layer)[:40]!r}: use e.g. {DEFAULT_LAYER!r}."
        )
    if chosen.key == "depthwise":
        return _depthwise(chosen, model, analysis, layer)
    if chosen.key == "pointwise":
        return _pointwise(chosen, model, analysis, layer)
    if chosen.key == "cost":
        return _cost(chosen, model, analysis, layer, measure)
    if chosen.key in ("relu", "residual"):
        return _ablation(chosen, model, analysis)
    return _gradcam(chosen, analysis)


def answer_with(model: Xception, key: int | str, analysis: Analysis, layer: str) -> GuideAnswer:
    """:func:`answer` with the model first, as an ``xviz.engine.runner.Runner`` calls functions."""
    return answer(key, model, analysis, layer)


def _peak_trace(model: Xception, analysis: Analysis, layer: str, side: str) -> ValueTrace:
    """The trace of the channel with the largest maximum, at its float32 peak."""
    stored = analysis.map(f"{layer}.{side}")
    channel = int(np.argmax(stored.max))
    steps = sepconv_steps(model, analysis, layer, side, channel)
    values = steps.depthwise_map if side == "depthwise" else steps.pointwise_map
    y, x = np.unravel_index(int(np.argmax(values)), values.shape)
    return explain_value(model, analysis, f"{layer}.{side}", channel, int(y), int(x))


def _signed(value: float) -> str:
    return f"{value:+.4g}"


def _depthwise(chosen: GuideStep, model: Xception, analysis: Analysis, layer: str) -> GuideAnswer:
    trace = _peak_trace(model, analysis, layer, "depthwise")
    channels = analysis.map(trace.map_name).num_channels
    terms = " ".join(_signed(t) for t in trace.terms.ravel())
    markdown = (
        f"In **{layer}**, depthwise channel {trace.channel} peaks at (y={trace.y}, "
        f"x={trace.x}). That value is 9 products of input channel {trace.input_channel}'s 3×3 "
        f"window and its filter: {terms} = **{trace.value:.4g}**. None of the other "
        f"{channels - 1} input channels enters it."
    )
    numbers = {
        "layer": layer,
        "channel": trace.channel,
        "y": trace.y,
        "x": trace.x,
        "value": trace.value,
        "terms": int(trace.terms.size),
        "other_channels": channels - 1,
    }
    return GuideAnswer(chosen, markdown, numbers, trace=trace)


def half_share(terms: np.ndarray) -> int:
    """How many of the largest |terms| make up half of the sum of all |terms|."""
    magnitudes = np.sort(np.abs(np.asarray(terms, dtype=np.float64)))[::-1]
    total = magnitudes.sum()
    if total == 0:
        return 0
    return int(np.searchsorted(np.cumsum(magnitudes), total / 2) + 1)


def _pointwise(chosen: GuideStep, model: Xception, analysis: Analysis, layer: str) -> GuideAnswer:
    trace = _peak_trace(model, analysis, layer, "pointwise")
    terms = trace.terms
    positive, negative = float(terms[terms > 0].sum()), float(terms[terms < 0].sum())
    half = half_share(terms)
    markdown = (
        f"In **{layer}**, pointwise channel {trace.channel} peaks at (y={trace.y}, "
        f"x={trace.x}): the sum of all {terms.size} depthwise values there, each times its "
        f"weight, = {positive:+.4g} (positive terms) {negative:+.4g} (negative terms) = "
        f"**{trace.value:.4g}**. Half of the total contribution comes from the {half} largest "
        f"of the {terms.size} terms."
    )
    numbers = {
        "layer": layer,
        "channel": trace.channel,
        "y": trace.y,
        "x": trace.x,
        "value": trace.value,
        "terms": int(terms.size),
        "positive": positive,
        "negative": negative,
        "half_share": half,
    }
    return GuideAnswer(chosen, markdown, numbers, trace=trace)


def _cost(
    chosen: GuideStep, model: Xception, analysis: Analysis, layer: str, measure: bool
) -> GuideAnswer:
    cost = next(row for row in layer_costs(model, analysis.size) if row.name == layer)
    M, N, D_K, D_G = cost.in_channels, cost.out_channels, cost.kernel_size, cost.output_side
    markdown = (
        f"**{layer}** at {analysis.size}×{analysis.size}: M={M}, N={N}, D_K={D_K}, D_G={D_G}. "
        f"A standard convolution would take {cost.standard_madds:,} multiply-adds; depthwise "
        f"{cost.depthwise_madds:,} + pointwise {cost.pointwise_madds:,} = {cost.madds:,}, "
        f"**{cost.ratio:.4f}** of it (1/{N} + 1/{D_K**2} = {cost.formula_ratio:.4f}), "
        f"{cost.speedup:.1f}× fewer."
    )
    numbers: dict[str, Any] = {
        "layer": layer,
        "M": M,
        "N": N,
        "D_K": D_K,
        "D_G": D_G,
        "madds": cost.madds,
        "standard_madds": cost.standard_madds,
        "ratio": cost.ratio,
        "formula_ratio": cost.formula_ratio,
    }
    latency = None
    if measure:
        latency = measure_latency(cost, model_device(model))
        markdown += (
            f" Measured here ({latency.device}): standard {latency.standard_ms:.2f} ms, "
            f"separable {latency.separable_ms:.2f} ms, **{latency.measured_speedup:.1f}×** "
            f"faster against {latency.theoretical_speedup:.1f}× predicted; the depthwise step "
            f"does {latency.depthwise_madds_share:.1%} of the multiply-adds but takes "
            f"{latency.depthwise_time_share:.0%} of the time."
        )
        numbers |= {
            "standard_ms": latency.standard_ms,
            "separable_ms": latency.separable_ms,
            "measured_speedup": latency.measured_speedup,
        }
    return GuideAnswer(chosen, markdown, numbers, layer_cost=cost, latency=latency)


def negative_share(analysis: Analysis) -> float:
    """Fraction of all depthwise values of the image that are not positive (what a ReLU
    between depthwise and pointwise would set to zero), from the maps' float32 statistics."""
    zeroed = total = 0.0
    for pair in analysis.sepconvs.values():
        channels, height, width = pair.depthwise.shape
        zeroed += float((1 - pair.depthwise.positive.astype(np.float64)).sum()) * height * width
        total += channels * height * width
    return zeroed / total


def _ablation(chosen: GuideStep, model: Xception, analysis: Analysis) -> GuideAnswer:
    ablation = preset(chosen.key)
    result = ablate(model, analysis, ablation)
    label = result.target_label
    before = float(result.original_probabilities[result.target])
    after = float(result.ablated_probabilities[result.target])
    top1 = result.ablated[0]
    outcome = (
        f"the top class stays **{top1.label}**"
        if not result.top1_changed
        else f"the top class changes from **{result.original[0].label}** to **{top1.label}**"
    )
    numbers: dict[str, Any] = {
        "target": label,
        "probability_before": before,
        "probability_after": after,
        "top1_after": top1.label,
        "kl_divergence": result.kl_divergence,
    }
    if chosen.key == "relu":
        share = negative_share(analysis)
        numbers["negative_share"] = share
        lead = (
            f"{share:.0%} of this image's depthwise values are negative or zero: a ReLU between "
            f"depthwise and pointwise sets them all to zero. With it in all 34 separable convs, "
        )
    else:
        blocks = ablation.blocks
        lead = f"Without the residual connections of the middle flow ({blocks[0]}-{blocks[-1]}), "
    markdown = (
        f"{lead}P({label}) goes from {before:.3g} to **{after:.3g}** and {outcome} "
        f"(KL divergence {result.kl_divergence:.3g} nats). This network was trained with "
        f"{'no such ReLU' if chosen.key == 'relu' else 'them'}, so the change measures what "
        f"the trained network relies on, not the training result of the paper's figure."
    )
    return GuideAnswer(chosen, markdown, numbers, ablation=ablation, ablation_result=result)


def gradcam_summary(analysis: Analysis) -> list[dict[str, Any]]:
    """Per block: flow, Grad-CAM resolution, hot area (share of cells at or above ``HOT`` of
    the block's maximum; 0 for a blank map) and the peak's (y, x) in the image (None if blank)."""
    rows = []
    for block, cam in analysis.gradcam_raw.items():
        peak = float(cam.max())
        blank = peak <= 0
        full = analysis.gradcam[block]
        where = (
            None if blank else tuple(int(v) for v in np.unravel_index(np.argmax(full), full.shape))
        )
        rows.append(
            {
                "block": block,
                "flow": BLOCKS[block].flow,
                "resolution": cam.shape,
                "hot_area": 0.0 if blank else float((cam >= HOT * peak).mean()),
                "peak": where,
            }
        )
    return rows


def _gradcam(chosen: GuideStep, analysis: Analysis) -> GuideAnswer:
    rows = gradcam_summary(analysis)
    lines = [
        f"Grad-CAM of **{analysis.target_label}** ({analysis.target_probability:.1%}), "
        f"per block: the share of the map at least {HOT:.0%} as hot as its peak, and where "
        f"that peak falls in the {analysis.size}×{analysis.size} image.",
        "",
        "| block | flow | map | hot area | peak (y, x) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        h, w = row["resolution"]
        hot = "blank: no positive evidence" if row["peak"] is None else f"{row['hot_area']:.0%}"
        peak = "-" if row["peak"] is None else f"{row['peak'][0]}, {row['peak'][1]}"
        lines.append(f"| {row['block']} | {row['flow']} | {h}×{w} | {hot} | {peak} |")
    numbers = {"blocks": rows}
    return GuideAnswer(chosen, "\n".join(lines), numbers)
