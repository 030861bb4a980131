"""The Ablations tab: change the trained network for this image and see what moves."""

from __future__ import annotations

import gradio as gr

from xviz.app import views
from xviz.app.server import ui_errors
from xviz.app.ui.activations import Activations
from xviz.app.ui.shared import MODEL_EVENTS, VIEW_EVENTS, Shared
from xviz.methods.ablation import VALID_BLOCKS, AblationResult
from xviz.model.xception import BLOCKS, FLOWS
from xviz.render import cost_figures as plots

KIND_CHOICES = [
    ("ReLU between depthwise and pointwise", "relu_between"),
    ("drop the residual connection", "drop_residual"),
    ("zero one channel (the layer, map and channel chosen in Activations)", "zero_channel"),
]
KIND_INFO = {
    "relu_between": "Blocks 2-14, the ones with separable convolutions: a ReLU is put between "
    "the depthwise and the pointwise half of each.",
    "drop_residual": "Blocks 2-13, the ones with a residual connection: the block's output is "
    "its separable-conv branch alone, without the shortcut added.",
    "zero_channel": "One channel of one map set to zero: pick the layer at the top, and the map "
    "and channel under the channel grids of the Activations tab.",
}
DEFAULT_KIND = "relu_between"
MIDDLE_FLOW = list(FLOWS["middle"])  # block5..block12

EXPLAINED = (
    "**How to read this.** *KL divergence* is one number for how much the whole list of class "
    "probabilities moved: 0 means the ablated network predicts exactly as the original one, "
    "and it grows as probability moves to other classes (in nats: from a sure answer to a "
    "50/50 toss-up between two classes is 0.69). The bars show, for each block, the "
    "*relative change* of its output: the size of (ablated − original) as a percentage of the "
    "original output's size, so 10% means the block's output moved by a tenth of itself. "
    "Blocks before the change stay at 0."
)


def summary(result: AblationResult) -> str:
    """Markdown: what was changed, what happened to the prediction, and how to read it."""
    described = "; ".join(a.describe() for a in result.ablations)
    before = result.original_probabilities[result.target]
    after = result.ablated_probabilities[result.target]
    top1 = (
        f"the top class changed from **{result.original[0].label}** to "
        f"**{result.ablated[0].label}**"
        if result.top1_changed
        else f"the top class is still **{result.original[0].label}**"
    )
    return (
        f"**{described[0].upper()}{described[1:]}**: {top1}; the probability of "
        f"**{result.target_label}** went from {before:.1%} to {after:.1%}. "
        f"KL divergence (original ‖ ablated) = **{result.kl_divergence:.4f}** nats. "
        f"Maps below: `{result.watched}` (the first map the change reaches), its first "
        f"{min(views.PER_PAGE, result.original_map.num_channels)} channels. The model is restored "
        f"after each run ({result.elapsed_s:.1f} s).\n\n{EXPLAINED}"
    )


def map_column(title: str, elem_id: str) -> gr.Image:
    """A title over a map image whose colourbar is drawn into it."""
    with gr.Column(min_width=280):
        gr.Markdown(title)
        return gr.Image(
            label=title, format="png", interactive=False, show_label=False, elem_id=elem_id
        )


def build(shared: Shared, activations: Activations) -> None:
    """Layout and events; "zero one channel" takes the layer, map and channel of Activations."""
    explorer = shared.explorer
    gr.Markdown(
        "Change the pretrained network for this image only and see what moves. The paper "
        "(Figure 10) found that a ReLU between depthwise and pointwise hurts when *training*; "
        "here you ask the *trained* network. Removing a residual connection shows how much a "
        "block relies on its shortcut."
    )
    with gr.Row():
        kind = gr.Radio(
            KIND_CHOICES,
            value=DEFAULT_KIND,
            label="Change",
            info="What to change in the trained network, for this image only",
            elem_id="ablation-kind",
        )
        with gr.Column():
            block_boxes = gr.CheckboxGroup(
                list(VALID_BLOCKS[DEFAULT_KIND]),
                value=["block5"],
                label="Blocks",
                info=KIND_INFO[DEFAULT_KIND],
                elem_id="ablation-blocks",
            )
            middle = gr.Button(
                "All middle-flow blocks (block5 to block12)", size="sm", elem_id="ablation-middle"
            )
    run_btn = gr.Button("Run ablation", variant="primary", elem_id="ablation-run")
    text = gr.Markdown(label="Summary", elem_id="ablation-summary")
    with gr.Row():
        before = gr.Label(num_top_classes=5, label="Original prediction")
        after = gr.Label(num_top_classes=5, label="Ablated prediction")
    figure = gr.Plot(label="How far each block's output moved", elem_id="ablation-blocks-moved")
    with gr.Row(equal_height=False):
        original = map_column("**Original** map", "ablation-original")
        ablated = map_column("**Ablated** map (same colour scale)", "ablation-ablated")
        difference = map_column(
            "**Difference**: ablated − original (red: went up, blue: went down)",
            "ablation-difference",
        )

    def on_kind(kind, chosen) -> dict:
        """Offer only the blocks this kind can change; keep the chosen ones that still fit."""
        valid = VALID_BLOCKS.get(kind, ())
        kept = [b for b in chosen or [] if b in valid] or (["block5"] if valid else [])
        return {
            block_boxes: gr.update(
                choices=list(valid), value=kept, info=KIND_INFO.get(kind, ""), visible=bool(valid)
            ),
            middle: gr.update(visible=bool(valid)),
        }

    kind.change(on_kind, [kind, block_boxes], [block_boxes, middle], **VIEW_EVENTS)
    middle.click(lambda: MIDDLE_FLOW, None, block_boxes, **VIEW_EVENTS)

    @ui_errors
    def run(session, kind, blocks, layer, side, channel, cmap, dark):
        result = explorer.ablation(session, kind, blocks or [], layer, side, channel)
        maps = views.compared_maps(result.original_map, result.ablated_map, cmap)
        flows = {b: spec.flow for b, spec in BLOCKS.items()}
        changed = [b for a in result.ablations for b in a.changed_blocks]
        moved = plots.block_change_figure(
            dict(result.block_change),
            flows,
            "How far each block's output moved",
            dark=dark,
            changed=changed,
        )
        return (
            {p.label: p.probability for p in result.original},
            {p.label: p.probability for p in result.ablated},
            summary(result),
            shared.png(maps.original),
            shared.png(maps.ablated),
            shared.png(maps.difference),
            moved,
        )

    run_btn.click(
        run,
        [
            shared.session, kind, block_boxes, shared.layer, activations.side, activations.channel,
            activations.cmap, shared.dark,
        ],
        [before, after, text, original, ablated, difference, figure],
        api_name="ablate",
        **MODEL_EVENTS,
    )  # fmt: skip
