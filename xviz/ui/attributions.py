"""The Attributions tab: Grad-CAM of the target class at all 14 blocks, and Captum's input-level
and block-level methods on demand, with progress and cancel.

The Grad-CAM strip (14 overlays) is drawn only while this tab is open, or when it opens.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from xviz import explorer as ex
from xviz.model import BLOCKS
from xviz.server import ui_errors
from xviz.ui.shared import MODEL_EVENTS, Panel, Shared

TAB = "attributions"
BLOCK_NAMES = list(BLOCKS)


@dataclass
class Attributions:
    alpha: gr.Slider
    strip: gr.Gallery
    method: gr.Dropdown
    block: gr.Dropdown
    overlay: gr.Image
    heatmap: gr.Image
    text: gr.Markdown


def build(shared: Shared) -> Attributions:
    explorer = shared.explorer
    alpha = gr.Slider(0.1, 1.0, value=0.5, step=0.05, label="Heatmap opacity")
    strip = gr.Gallery(
        label="Grad-CAM of the target class, block 1 (entry) to block 14 (exit)",
        columns=7,
        height="auto",
        format="png",
        elem_id="gradcam-strip",
    )
    with gr.Row():
        big = gr.Image(label="Selected block", format="png", interactive=False)
        big_text = gr.Markdown("Click a block above to enlarge it.")
    with gr.Row():
        method = gr.Dropdown(
            [(t, m) for m, t in ex.METHOD_TITLES.items()],
            value="integrated_gradients",
            label="Input-level method",
        )
        block = gr.Dropdown(BLOCK_NAMES, value="block13", label="Block (for block methods)")
        run_btn = gr.Button("Compute", variant="primary")
        cancel_btn = gr.Button("Cancel", variant="stop")
    text = gr.Markdown()
    with gr.Row():
        overlay = gr.Image(label="Attribution over the image", format="png", interactive=False)
        heatmap = gr.Image(label="Attribution", format="png", interactive=False)

    def cams(session, alpha) -> tuple:
        a = explorer.analysis(session)
        return ([(shared.png(img), caption) for img, caption in explorer.gradcam_strip(a, alpha)],)

    shared.panels.append(Panel(cams, [alpha], [strip], tab=TAB, on_retarget=True))

    @ui_errors
    def enlarge(session, alpha, evt: gr.SelectData):
        a = explorer.analysis(session)
        chosen = BLOCK_NAMES[evt.index]
        img, caption = explorer.gradcam_view(a, chosen, alpha)  # only the one clicked
        return shared.png(img), f"Grad-CAM at **{chosen}** for **{a.target_label}**: {caption}"

    strip.select(enlarge, [shared.session, alpha], [big, big_text], api_name=False)

    @ui_errors
    def restyle(session, alpha):
        return gr.skip() if session is None else cams(session, alpha)[0]

    alpha.release(restyle, [shared.session, alpha], strip, api_name=False)

    @ui_errors
    def run(session, method, chosen, alpha, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        over, heat, description = explorer.attribution(
            session,
            method,
            chosen,
            alpha,
            progress=lambda f, msg: progress(f, desc=msg),
            session_id=request.session_hash if request else "",
        )
        return shared.png(over), shared.png(heat), description

    running = run_btn.click(
        run,
        [shared.session, method, block, alpha],
        [overlay, heatmap, text],
        api_name="attribute",
        **MODEL_EVENTS,
    )

    def cancel(request: gr.Request) -> None:
        explorer.cancel(request.session_hash if request else "")
        gr.Info("Cancelling the attribution.")

    cancel_btn.click(cancel, None, None, cancels=[running], api_name=False, queue=False)
    return Attributions(alpha, strip, method, block, overlay, heatmap, text)
