"""HTTP API endpoints that no control of the page triggers: ``/predict`` and ``/analyze``.

Their outputs are hidden components of their own, named for the API page; ``/analyze`` also
sets the session's image, so that ``/view``, ``/attribute`` and ``/ablate`` work on it after.
"""

from __future__ import annotations

import gradio as gr

from xviz.app import views
from xviz.app.server import ui_errors
from xviz.app.ui.activations import Activations
from xviz.app.ui.attributions import Attributions
from xviz.app.ui.shared import MODEL_EVENTS, Shared, status
from xviz.render.network_map import network_map_html


def build(shared: Shared, activations: Activations, attributions: Attributions) -> None:
    """The endpoints; ``/analyze`` takes the view settings of the tabs as parameters."""
    explorer = shared.explorer
    with gr.Group(visible=False):
        predict_btn = gr.Button("predict")
        top5 = gr.JSON(label="Top 5 classes and their probabilities")
        analyze_btn = gr.Button("analyze")
        prediction = gr.Label(num_top_classes=5, label="Prediction (top 5)")
        target = gr.Textbox(label="Attribution target class")
        depthwise = gr.Image(label="Depthwise channel grid", format="png")
        pointwise = gr.Image(label="Pointwise channel grid", format="png")
        depthwise_title = gr.Markdown(label="Depthwise title")
        pointwise_title = gr.Markdown(label="Pointwise title")
        page = gr.Number(label="Page shown and pages", precision=0)
        netmap = gr.HTML(label="Network map (SVG)")
        cams = gr.Gallery(label="Grad-CAM of blocks 1-14", format="png")
        info = gr.Markdown(label="Status")
        export = gr.File(label="Analysis zip (none)")
        view_btn = gr.Button("view")
        view_page = gr.Number(label="Page shown", precision=0)

    @ui_errors
    def predict(image, size) -> dict[str, float]:
        """Top-5 classes and probabilities of one image."""
        session = explorer.start(image, size)
        return views.prediction(explorer.early(session, stage="prediction"))

    predict_btn.click(
        predict, [shared.image, shared.size], top5, api_name="predict", **MODEL_EVENTS
    )

    @ui_errors
    def analyze(image, size, layer, sort, cmap, scale, overlay, block, alpha) -> tuple:
        """Everything at once: prediction, one layer's grids, the map and all 14 Grad-CAMs."""
        if image is None:
            return (gr.skip(),) * 12
        session = explorer.start(image, size)
        a = explorer.analysis(session)
        v = views.layer_view(a, layer, sort, 1, cmap, scale, overlay)
        strip = [(shared.png(img), caption) for img, caption in views.gradcam_strip(a, alpha)]
        return (
            session,
            views.prediction(a),
            a.target_label,
            shared.png(v.left.image),
            shared.png(v.right.image),
            v.left_title,
            v.right_title,
            gr.update(value=v.page, maximum=v.pages),
            network_map_html(block, a.size),
            strip,
            status(a),
            None,
        )

    analyze_btn.click(
        analyze,
        [shared.image, shared.size, shared.layer, activations.sort, activations.cmap,
         activations.scale, activations.overlay, shared.block, attributions.alpha],
        [shared.session, prediction, target, depthwise, pointwise, depthwise_title,
         pointwise_title, page, netmap, cams, info, export],
        api_name="analyze",
        **MODEL_EVENTS,
    )  # fmt: skip

    @ui_errors
    def view(session, layer, sort, page, cmap, scale, overlay, block) -> tuple:
        """One page of both grids of ``layer`` for the session's image (set by /analyze);
        ``block`` is taken for the API's old signature and not used."""
        a = explorer.layer(session, layer)
        v = views.layer_view(a, layer, sort, page, cmap, scale, overlay)
        return (
            shared.png(v.left.image), shared.png(v.right.image), v.left_title, v.right_title,
            v.page,
        )  # fmt: skip

    view_btn.click(
        view,
        [shared.session, shared.layer, activations.sort, activations.page, activations.cmap,
         activations.scale, activations.overlay, shared.block],
        [depthwise, pointwise, depthwise_title, pointwise_title, view_page],
        api_name="view",
    )  # fmt: skip
