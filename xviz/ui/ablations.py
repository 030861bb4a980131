"""The Ablations tab: change the trained network for this image and see what moves."""

from __future__ import annotations

import gradio as gr

from xviz import explorer as ex
from xviz import plots
from xviz.model import BLOCKS
from xviz.server import ui_errors
from xviz.ui.activations import Activations
from xviz.ui.shared import MODEL_EVENTS, Shared


def build(shared: Shared, activations: Activations) -> None:
    """Layout and events; "zero one channel" takes the layer, map and channel of Activations."""
    explorer = shared.explorer
    gr.Markdown(
        "Change the pretrained network for this image only and see what moves. "
        "The paper (Figure 10) found a ReLU between depthwise and pointwise hurts "
        "when training; here you ask the trained network."
    )
    with gr.Row():
        kind = gr.Radio(
            [
                ("ReLU between depthwise and pointwise", "relu_between"),
                ("drop the residual connection", "drop_residual"),
                ("zero one channel (layer, map and channel above)", "zero_channel"),
            ],
            value="relu_between",
            label="Change",
        )
        blocks = gr.CheckboxGroup(list(BLOCKS)[1:], value=["block5"], label="Blocks")
    run_btn = gr.Button("Run ablation", variant="primary")
    text = gr.Markdown()
    with gr.Row():
        before = gr.Label(num_top_classes=5, label="Original prediction")
        after = gr.Label(num_top_classes=5, label="Ablated prediction")
    figure = gr.Plot(label="Block outputs")
    with gr.Row():
        original = gr.Image(label="Map, original", format="png", interactive=False)
        ablated = gr.Image(label="Map, ablated", format="png", interactive=False)

    @ui_errors
    def run(session, kind, chosen, layer, side, channel, cmap):
        result = explorer.ablation(session, kind, chosen or [], layer, side, channel)
        left, right = ex.compare_grids(result.original_map, result.ablated_map, cmap)
        described = "; ".join(a.describe() for a in result.ablations)
        flows = {b: spec.flow for b, spec in BLOCKS.items()}
        change = plots.block_change_figure(
            dict(result.block_change), flows, f"How far each block output moved: {described}"
        )
        summary = (
            f"**{described}**. Top-1 {'changed' if result.top1_changed else 'kept'}: "
            f"{result.original[0].label} → {result.ablated[0].label}. "
            f"P({result.target_label}) {result.target_probability_change:+.4f}; "
            f"KL(original ‖ ablated) = {result.kl_divergence:.4f} nats. "
            f"Maps below: `{result.watched}`, first 64 channels, on one colour scale. "
            "The model is restored."
        )
        return (
            {p.label: p.probability for p in result.original},
            {p.label: p.probability for p in result.ablated},
            summary,
            shared.png(left),
            shared.png(right),
            change,
        )

    run_btn.click(
        run,
        [
            shared.session, kind, blocks, shared.layer, activations.side, activations.channel,
            activations.cmap,
        ],
        [before, after, text, original, ablated, figure],
        api_name="ablate",
        **MODEL_EVENTS,
    )  # fmt: skip
