"""The Attributions tab: Grad-CAM of the target class at all 14 blocks on one colour scale (or
each its own) with a score per block, one block enlarged with values, and Captum's input-level
and block-level methods on demand, with progress and cancel.

The strip and the enlarged block are drawn only while this tab is open, or when it opens; the
strip also comes with every new analysis while the tab is hidden, as HTML with its thumbnails
inlined, so that opening the tab shows it at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from xviz.app import explorer as ex
from xviz.app import views
from xviz.app.server import reported, ui_errors
from xviz.app.ui import faithfulness
from xviz.app.ui.js import STRIP_CLICKS
from xviz.app.ui.panels import Panel
from xviz.app.ui.shared import SECONDS_EVENTS, VIEW_EVENTS, Shared, arm_event
from xviz.errors import Cancelled
from xviz.methods.gradcam import REFERENCE, SCALES
from xviz.model.xception import BLOCKS
from xviz.render import html
from xviz.render.encode import data_url

TAB = "attributions"
# The strip's tiles show ~120-150 CSS pixels wide (7 a row on a laptop, 3 on a phone):
# 200-pixel thumbnails stay sharp at 1.3x device pixels and, at 299, cost 45% of the pixels
# to encode, send and decode; as JPEG (photos under a heatmap), 126 kB for all 14 instead of
# PNG's 849 kB. Clicking one shows the block's values at its own resolution.
# They are inlined (``data:`` URLs) rather than served files: a hidden tab's images are not
# fetched until it opens (Gradio's gallery even loads them lazily), and 14 requests then took
# 70-110 ms on 2 cores while the server drew other panels (bench/browser.py).
STRIP_SIDE = 200
STRIP_TITLE = "Grad-CAM per block, block1 (entry) to block14 (exit): click one to enlarge it"
BLOCK_NAMES = list(BLOCKS)
SCALE_CHOICES = [("one scale for all blocks", SCALES[0]), ("each block its own", SCALES[1])]
INTRO = (
    "**Where does the network look for the target class?** Grad-CAM weighs each block's "
    "channels by how much they raise the class's score and keeps where their sum is positive: "
    "bright = evidence for the class. Entry-flow blocks see edges and textures at fine "
    "resolution, the exit flow sees objects on a coarse grid. Click a block to enlarge it."
)
NOT_YET = "Press **Compute** to explain the target class in this image with the chosen method."
# Shown for a new image until its backward pass, which the Grad-CAMs need, is done.
COMPUTING = "Grad-CAM of this image's 14 blocks: computing (the backward pass)..."


@dataclass
class Attributions:
    alpha: gr.Slider
    strip: gr.HTML
    method: gr.Dropdown
    block: gr.Dropdown
    overlay: gr.Image
    heatmap: gr.Plot
    text: gr.Markdown


def build(shared: Shared) -> Attributions:
    explorer = shared.explorer
    gr.Markdown(INTRO)
    with gr.Row():
        alpha = gr.Slider(
            0.1,
            1.0,
            value=0.6,
            step=0.05,
            label="Heatmap opacity",
            info="How strongly the colours cover the photo: 1 hides it, 0.1 barely tints it",
        )
        scale = gr.Radio(
            SCALE_CHOICES,
            value=SCALES[0],
            label="Colour scale",
            info="One scale: colours compare between blocks. Each its own: every map shows "
            "its own detail",
            elem_id="gradcam-scale",
        )
    strip = gr.HTML(js_on_load=STRIP_CLICKS, elem_id="gradcam-strip", label=STRIP_TITLE)
    legend = gr.HTML(elem_id="gradcam-legend")
    notes = gr.Markdown(elem_classes="xviz-small")
    chosen = gr.State(REFERENCE)
    with gr.Row():
        # Side by side on a laptop, one above the other on a phone (a Row wraps below min_width).
        big = gr.Plot(label="Selected block", elem_id="gradcam-big", min_width=340)
        big_text = gr.Markdown(min_width=340)

    gr.Markdown(
        "**Input attributions**: which pixels (or, for the *at the block* methods, which "
        "positions of a block) raise or lower the target class's score, computed by Captum "
        "on demand (seconds to a minute)."
    )
    with gr.Row():
        method = gr.Dropdown(
            [(t, m) for m, t in views.METHOD_TITLES.items()],
            value="integrated_gradients",
            label="Method",
            min_width=240,
            info="Integrated Gradients: the classic, signed. Saliency: fastest, unsigned. "
            "Occlusion: greys out patches. The 'at the block' ones explain a block's output",
            elem_id="attr-method",
        )
        block = gr.Dropdown(
            BLOCK_NAMES,
            value=REFERENCE,
            label="Block (for the 'at the block' methods)",
            min_width=240,
            info="Guided Grad-CAM here is zero where this block's Grad-CAM above is blank",
            elem_id="attr-block",
        )
        with gr.Column(min_width=160):
            run_btn = gr.Button("Compute", variant="primary")
            cancel_btn = gr.Button("Cancel", variant="stop")
    text = gr.Markdown(NOT_YET, label="What it shows", elem_id="attr-text")
    with gr.Row():
        overlay = gr.Image(
            label="Attribution over the image",
            format="png",
            interactive=False,
            elem_id="attr-overlay",
            min_width=340,
            # The same for every result: the text above it says which method, class and colours.
            alt_text="The attribution laid over the photo; the text above says which method "
            "and class it shows and how to read its colours",
        )
        heatmap = gr.Plot(label="Attribution, with values", elem_id="attr-heatmap", min_width=340)
    faithfulness.build(shared, block)

    def tiles(a, alpha, scale, chosen) -> str:
        strip = views.gradcam_strip(a, alpha, scale, side=STRIP_SIDE)
        items = [
            (block, data_url(img, "jpeg"), caption)
            for block, (img, caption) in zip(BLOCK_NAMES, strip, strict=True)
        ]
        return html.strip_html(items, STRIP_TITLE, chosen)

    def cams(session, alpha, scale, chosen) -> tuple:
        """The strip of a new analysis and its legend."""
        a = explorer.early(session, stage="gradcam")
        bar, text = views.gradcam_legend(a, scale)
        return tiles(a, alpha, scale, chosen), bar, text

    def enlarged(session, alpha, scale, block, dark) -> tuple:
        """The enlarged block of a new analysis; the last attribution (of another image or
        class) is cleared."""
        a = explorer.early(session, stage="gradcam")
        figure, caption = views.gradcam_figure(a, block, alpha, scale, dark)
        return figure, caption, None, None, NOT_YET

    # Two panels, so that the strip is on the page before the browser draws the figure.
    shared.panels += [
        Panel(
            cams,
            [alpha, scale, chosen],
            [strip, legend, notes],
            tab=TAB,
            on_retarget=True,
            push=True,  # 14 thumbnails: on the page when the tab opens
            waiting=(f'<p class="xviz-small" role="status">{COMPUTING}</p>', "", ""),
        ),
        Panel(
            enlarged,
            [alpha, scale, chosen, shared.dark],
            [big, big_text, overlay, heatmap, text],
            tab=TAB,
            on_retarget=True,
            prefetch=True,
            waiting=(None, "", None, None, NOT_YET),
        ),
    ]

    @ui_errors
    def enlarge(session, alpha, scale, dark, evt: gr.EventData):
        """A block of the strip clicked (the page reports its name): it is shown enlarged."""
        chosen_block = reported(evt, "block")
        if chosen_block not in BLOCK_NAMES:  # (a client may report anything)
            raise ex.AnalysisError("Click a block of the strip: block1 to block14.")
        if session is None:
            return gr.skip(), gr.skip(), gr.skip()
        a = explorer.analysis(session)
        figure, caption = views.gradcam_figure(a, chosen_block, alpha, scale, dark)
        return chosen_block, figure, caption

    strip.click(
        enlarge,
        [shared.session, alpha, scale, shared.dark],
        [chosen, big, big_text],
        **VIEW_EVENTS,
    )

    @ui_errors
    def restyle(session, alpha, scale, block, dark):
        """The strip and the enlarged block in a new opacity or colour scale."""
        if session is None:
            return (gr.skip(),) * 5
        a = explorer.analysis(session)
        return (
            tiles(a, alpha, scale, block),
            *views.gradcam_legend(a, scale),
            views.gradcam_figure(a, block, alpha, scale, dark)[0],
            gr.skip(),
        )

    gr.on(
        [alpha.release, scale.change],
        restyle,
        [shared.session, alpha, scale, chosen, shared.dark],
        [strip, legend, notes, big, big_text],
        **VIEW_EVENTS,
    )

    @ui_errors
    def run(
        session,
        method,
        chosen_block,
        alpha,
        dark,
        request: gr.Request,
        progress=gr.Progress(),  # noqa: B008
    ):
        try:
            view = explorer.attribution(
                session,
                method,
                chosen_block,
                alpha,
                progress=lambda f, msg: progress(f, desc=msg),
                session_id=request.session_hash if request else "",
                dark=dark,
            )
        except Cancelled:  # the last result stays, without an error over it
            return gr.skip(), gr.skip(), gr.skip()
        return shared.png(view.overlay), view.figure, view.text

    run_btn.click(**arm_event(explorer, long=True)).success(
        run,
        [shared.session, method, block, alpha, shared.dark],
        [overlay, heatmap, text],
        api_name="attribute",
        **SECONDS_EVENTS,
    )

    def cancel(request: gr.Request) -> None:
        explorer.cancel(request.session_hash if request else "")
        gr.Info("Cancelled: the last result stays.")

    # No Gradio ``cancels``: killing the task can show "Error" over the kept result in the
    # browser; the run sees its own flag at the next Captum step and ends with nothing to send.
    cancel_btn.click(cancel, None, None, api_name=False, queue=False)
    return Attributions(alpha, strip, method, block, overlay, heatmap, text)
