"""The Attributions tab's "How much to trust these maps" section: deletion and insertion curves
of every method beside a random and a centre ordering, Captum's infidelity and
max-sensitivity, and the cascading randomisation check (``xviz.methods.faithfulness``), with
the cost stated before it starts, progress and Cancel.
"""

from __future__ import annotations

import gradio as gr

from xviz.app import views
from xviz.app.server import ui_errors
from xviz.app.ui.shared import LONG_EVENTS, Shared, arm_event
from xviz.errors import Cancelled
from xviz.methods.faithfulness import planned_images

INTRO = (
    "**How much to trust these maps?** For each method: greying the pixels it ranks first "
    "should make the class's probability fall fast (*deletion*, Petsiuk et al. 2018), putting "
    "them back into a blurred copy should make it rise fast (*insertion*), both against a "
    "random order and a plain *centre first* guess. Then the weights are made random from the "
    "head down (exit flow, then middle, then entry: Adebayo et al. 2018): a map that stays the "
    "same explains the image, not the model."
)
NOT_YET = "Press **Check the maps** to score every method for this image and class."


def build(shared: Shared, block: gr.Dropdown) -> None:
    """The section, at the end of the Attributions tab; ``block`` is the tab's block picker
    (Grad-CAM and guided Grad-CAM are checked there)."""
    explorer = shared.explorer
    with gr.Accordion("How much to trust these maps", open=False, elem_id="faith"):
        cost = views.faithfulness_cost(
            planned_images(), explorer.native_size, explorer.runner.where
        )
        gr.Markdown(f"{INTRO}\n\n{cost}")
        with gr.Row():
            run_btn = gr.Button("Check the maps", variant="primary", elem_id="faith-run")
            cancel_btn = gr.Button("Cancel", variant="stop", elem_id="faith-cancel")
        text = gr.Markdown(NOT_YET, label="What the numbers say", elem_id="faith-text")
        curves = gr.Plot(label="Deletion and insertion curves", elem_id="faith-curves")
        table = gr.Markdown(label="Scores", elem_id="faith-table")
        randomisation = gr.Plot(label="Randomisation: the maps", elem_id="faith-random")

    @ui_errors
    def run(session, chosen_block, dark, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        try:
            view = explorer.faithfulness(
                session,
                chosen_block,
                progress=lambda f, msg: progress(f, desc=msg),
                session_id=request.session_hash if request else "",
                dark=dark,
            )
        except Cancelled:  # the last result stays, without an error over it
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return view.text, view.curves, view.table, view.randomisation

    run_btn.click(**arm_event(explorer, long=True)).success(
        run,
        [shared.session, block, shared.dark],
        [text, curves, table, randomisation],
        api_name=False,  # the page's own; the HTTP API stays the five documented endpoints
        **LONG_EVENTS,
    )

    def cancel(request: gr.Request) -> None:
        explorer.cancel(request.session_hash if request else "")
        gr.Info("Cancelled: the last result stays.")

    cancel_btn.click(cancel, None, None, api_name=False, queue=False)
