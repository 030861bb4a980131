"""The guided tour: six claims of the paper (``xviz.app.tour``), each one click from the first
screen, answered with the current image's numbers in the "Guided tour" tab."""

from __future__ import annotations

import gradio as gr

from xviz.app import tour as guide
from xviz.app.server import ui_errors
from xviz.app.ui.shared import MODEL_EVENTS, Shared
from xviz.model.xception import BLOCKS, SEPCONV_BLOCK
from xviz.render import cost_figures as plots
from xviz.render.trace_figures import trace_figure

TAB = "guide"
SHORT = {
    "depthwise": "depthwise",
    "pointwise": "pointwise",
    "cost": "cost",
    "relu": "no ReLU",
    "residual": "residuals",
    "gradcam": "where it looks",
}


def buttons(shared: Shared) -> list[tuple[gr.Button, guide.GuideStep]]:
    """The tour's buttons, in the row the header keeps for them."""
    with shared.tour:
        gr.Markdown("**Guided tour of the paper:**", elem_classes="xviz-small", min_width=120)
        return [
            (
                gr.Button(
                    f"{s.number}. {SHORT[s.key]}",
                    size="sm",
                    min_width=80,
                    scale=0,
                    elem_id=f"tour-{s.key}",
                    elem_classes="xviz-tour",
                ),
                s,
            )
            for s in guide.STEPS
        ]


def build(shared: Shared, row: list[tuple[gr.Button, guide.GuideStep]]) -> None:
    """The tab's layout; each tour button opens it on its step."""
    explorer = shared.explorer
    title = gr.Markdown(
        "Pick a step of the tour above: each checks one idea of the paper on this image.",
        elem_id="guide-title",
    )
    answer = gr.Markdown(elem_id="guide-answer")
    figure = gr.Plot(label="What the step shows", visible=False, elem_id="guide-figure")

    def run(chosen: guide.GuideStep):
        @ui_errors
        def answered(session, layer, dark):
            if session is None:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            layer = layer if layer in SEPCONV_BLOCK else guide.DEFAULT_LAYER
            analysis = explorer.analysis(session)
            made = explorer.runner(guide.answer_with, chosen.key, analysis, layer)
            heading = f"### {chosen.number}. {chosen.title}\n{chosen.text}\n\n*{chosen.reference}*"
            return (
                gr.Tabs(selected=TAB),
                TAB,
                heading,
                made.markdown,
                _figure(made, bool(dark)),
            )

        return answered

    for button, chosen in row:
        button.click(
            run(chosen),
            [shared.session, shared.layer, shared.dark],
            [shared.tabs, shared.tab, title, answer, figure],
            api_name=False,
            show_progress_on=[answer],  # not the tabs (see shared.quiet_progress)
            **MODEL_EVENTS,
        )


def _figure(made: guide.GuideAnswer, dark: bool) -> dict:
    """The step's chart: the trace, this layer's costs, or how far each block moved."""
    if made.trace is not None:
        return gr.update(value=trace_figure(made.trace, dark=dark), visible=True)
    if made.layer_cost is not None:
        c = made.layer_cost
        fig = plots.explorer_figure(c.in_channels, c.out_channels, c.kernel, c.out_side, dark)
        return gr.update(value=fig, visible=True)
    if made.ablation_result is not None:
        result = made.ablation_result
        flows = {b: spec.flow for b, spec in BLOCKS.items()}
        title = "How far each block's output moved (relative change, %)"
        fig = plots.block_change_figure(dict(result.block_change), flows, title, dark)
        return gr.update(value=fig, visible=True)
    return gr.update(value=None, visible=False)
