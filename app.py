"""xviz web app: the layout and its events. All work is done by ``xviz`` (see xviz/explorer.py).

Run ``python app.py`` (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` are honoured).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
from gradio.utils import get_upload_folder

from xviz import explorer as ex
from xviz import plots
from xviz.cost import measure_all, network_cost
from xviz.diagram import network_svg
from xviz.errors import XvizError
from xviz.examples import all_examples
from xviz.exports import ExportStore
from xviz.model import BLOCKS, FLOWS
from xviz.preprocess import ACCEPTED_FORMATS, MAX_FILE_BYTES, MAX_PIXELS
from xviz.server import (
    LAUNCH_OPTIONS,
    QUEUE_SIZE,
    RETENTION_S,
    SESSION_TTL_S,
    FilePathImage,
    XvizBlocks,
    header_markdown,
    make_explorer,
    ui_errors,
    unavailable_demo,
)

BLOCK_NAMES = list(BLOCKS)
DEFAULT_BLOCK = "block2"
CMAPS = [ex.AUTO_CMAP, "viridis", "inferno", "magma", "cividis", "coolwarm"]


def grid_column(title: str, elem_id: str) -> tuple[gr.Markdown, gr.Image]:
    """A title over a channel-grid image (PNG: maps must not be blurred by lossy WebP)."""
    with gr.Column():
        heading = gr.Markdown(title)
        image = gr.Image(
            label=title, format="png", interactive=False, show_label=False, elem_id=elem_id
        )
    return heading, image


def build_demo(explorer: ex.Explorer | None = None, retention_s: float = RETENTION_S) -> gr.Blocks:
    """The app around one model; ``explorer`` defaults to the weights ``load_model`` picks.

    ``retention_s``: how long uploads and exported files are kept.
    """
    explorer = explorer or make_explorer()
    model = explorer.model
    native = explorer.native_size
    sizes = sorted({native, 299, 150})
    # Exports live in Gradio's upload folder, so that it serves them without a copy.
    exports = ExportStore(Path(get_upload_folder()) / "xviz-exports", max_age_s=retention_s)
    net = {s: network_cost(model, s) for s in (299, 150)}

    # --- handlers: each one xviz call, shaped for the components ---------------------------

    def views(session: ex.Session, layer, sort, page, cmap, scale, overlay, block):
        a = explorer.analysis(session)
        v = explorer.layer_view(a, layer, sort, page, cmap, scale, overlay)
        return (
            v.left,
            v.right,
            v.left_title,
            v.right_title,
            gr.update(value=v.page, maximum=v.pages),
            network_svg(block, a.size),
        )

    @ui_errors
    def analyze(image, size, layer, sort, cmap, scale, overlay, block, alpha):
        if image is None:
            return [gr.skip()] * 12
        session = explorer.start(image, int(size))
        a = explorer.analysis(session)
        choices = explorer.target_choices(a)
        return (
            session,
            explorer.prediction(a),
            gr.update(choices=choices, value=a.target_label),
            *views(session, layer, sort, 1, cmap, scale, overlay, block),
            explorer.gradcam_strip(a, alpha),
            status(a),
            gr.update(value=None),
        )

    def status(a) -> str:
        return (
            f"Analysed at {a.size}x{a.size} with `{a.weights}` in {a.elapsed_s:.2f} s: "
            f"34 separable convs (depthwise + pointwise), 6 convs, 14 blocks, "
            f"Grad-CAM of **{a.target_label}** for every block."
        )

    @ui_errors
    def predict(image, size):
        """Top-5 classes and probabilities of one image."""
        session = explorer.start(image, int(size) if size else None)
        return explorer.prediction(explorer.analysis(session))

    @ui_errors
    def retarget(session, label, alpha):
        if session is None:
            return gr.skip(), gr.skip(), gr.skip()
        session = explorer.retarget(session, label)
        a = explorer.analysis(session)
        return session, explorer.gradcam_strip(a, alpha), status(a)

    @ui_errors
    def change_view(session, layer, sort, page, cmap, scale, overlay, block):
        if session is None:
            return [gr.skip()] * 6
        return views(session, layer, sort, page, cmap, scale, overlay, block)

    def change_flow(flow):
        blocks = ex.blocks_of(flow)
        return gr.update(choices=blocks, value=blocks[0])

    def change_block(block, session):
        layers = ex.layers_of(block)
        size = session.size if session is not None else native
        return gr.update(choices=layers, value=layers[0]), network_svg(block, size)

    def step_page(page, delta):
        return max(1, int(page or 1) + delta)

    @ui_errors
    def pick_channel(session, layer, sort, page, cmap, overlay, side, evt: gr.SelectData):
        if session is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        a = explorer.analysis(session)
        left, right, _, _ = ex.layer_maps(a, layer)
        m = left if side == "left" else right
        _, channels, _, _ = ex.grid(m, sort, page)
        channel = ex.tile_at(evt.index[0], evt.index[1], channels)
        if channel is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        img, text = explorer.channel_view(a, layer, side, channel, cmap, overlay)
        return side, channel, img, text

    def pick_left(session, layer, sort, page, cmap, overlay, evt: gr.SelectData):
        return pick_channel(session, layer, sort, page, cmap, overlay, "left", evt)

    def pick_right(session, layer, sort, page, cmap, overlay, evt: gr.SelectData):
        return pick_channel(session, layer, sort, page, cmap, overlay, "right", evt)

    @ui_errors
    def show_channel(session, layer, side, channel, cmap, overlay):
        if session is None:
            return gr.skip(), gr.skip()
        a = explorer.analysis(session)
        return explorer.channel_view(a, layer, side, channel, cmap, overlay)

    @ui_errors
    def enlarge_cam(session, alpha, evt: gr.SelectData):
        a = explorer.analysis(session)
        block = BLOCK_NAMES[evt.index]
        img, caption = explorer.gradcam_view(a, block, alpha)  # only the one clicked
        return img, f"Grad-CAM at **{block}** for **{a.target_label}**: {caption}"

    @ui_errors
    def restyle_cams(session, alpha):
        if session is None:
            return gr.skip()
        return explorer.gradcam_strip(explorer.analysis(session), alpha)

    @ui_errors
    def run_attribution(
        session,
        method,
        block,
        alpha,
        request: gr.Request,
        progress=gr.Progress(),  # noqa: B008
    ):
        session_id = request.session_hash if request else ""
        return explorer.attribution(
            session,
            method,
            block,
            alpha,
            progress=lambda f, msg: progress(f, desc=msg),
            session_id=session_id,
        )

    def cancel(request: gr.Request):
        explorer.cancel(request.session_hash if request else "")
        gr.Info("Cancelling the attribution.")

    @ui_errors
    def run_ablation(session, kind, blocks, layer, side, channel, cmap):
        result = explorer.ablation(session, kind, blocks or [], layer, side, channel)
        before = {p.label: p.probability for p in result.original}
        after = {p.label: p.probability for p in result.ablated}
        orig, abl = ex.compare_grids(result.original_map, result.ablated_map, cmap)
        flows = {b: BLOCKS[b].flow for b in BLOCKS}
        desc = "; ".join(a.describe() for a in result.ablations)
        fig = plots.block_change_figure(
            dict(result.block_change), flows, f"How far each block output moved: {desc}"
        )
        text = (
            f"**{desc}**. Top-1 {'changed' if result.top1_changed else 'kept'}: "
            f"{result.original[0].label} → {result.ablated[0].label}. "
            f"P({result.target_label}) {result.target_probability_change:+.4f}; "
            f"KL(original ‖ ablated) = {result.kl_divergence:.4f} nats. "
            f"Maps below: `{result.watched}`, first 64 channels, on one colour scale. "
            "The model is restored."
        )
        return before, after, text, orig, abl, fig

    def forget(request: gr.Request):
        explorer.forget(request.session_hash)

    @ui_errors
    def export(session):
        """A zip of this session's analysis, in a folder of its own."""
        path = exports.new_file(explorer.export_name(session))
        return str(explorer.export_zip(session, path))

    def cost_figures(size):
        n = net[int(size)]
        return (
            plots.madds_figure(n.layers),
            plots.params_figure(n.layers),
            plots.totals_figure(n),
        )

    @ui_errors
    def measure(size, progress=gr.Progress()):  # noqa: B008
        results = measure_all(
            model,
            next(model.parameters()).device,
            input_size=int(size),
            progress=lambda i, n, name: progress(i / max(n, 1), desc=f"timing {name}"),
        )
        return plots.speedup_figure(results)

    def explore_cost(m, n, k, g):
        m, n, k, g = int(m), int(n), int(k), int(g)
        return plots.explorer_figure(m, n, k, g), plots.explain(m, n, k, g)

    # --- layout ----------------------------------------------------------------------------

    with XvizBlocks(
        title="xviz: inside Xception",
        delete_cache=(int(min(max(retention_s // 2, 1), 60)), int(retention_s)),
    ) as demo:
        gr.Markdown(header_markdown(model))
        session = gr.State(None, time_to_live=SESSION_TTL_S)
        with gr.Row():
            with gr.Column(scale=2):
                image_in = FilePathImage(
                    label="Image (upload, drop, paste or webcam)",
                    sources=["upload", "clipboard", "webcam"],
                    type="filepath",
                    height=300,
                )
                with gr.Row():
                    size = gr.Radio(
                        sizes,
                        value=native,
                        label="Input size (px)",
                        info=f"{native} is what these weights were trained at",
                    )
                    analyze_btn = gr.Button("Analyze", variant="primary")
                gr.Examples(
                    [[str(p)] for p in all_examples()],
                    inputs=[image_in],
                    label="Examples",
                    examples_per_page=12,
                    cache_examples=False,
                )
                gr.Markdown(
                    f"Accepted: {', '.join(sorted(ACCEPTED_FORMATS))}; up to "
                    f"{MAX_FILE_BYTES // 2**20} MB and {MAX_PIXELS // 10**6} megapixels.",
                    elem_classes="xviz-small",
                )
            with gr.Column(scale=2):
                prediction = gr.Label(num_top_classes=5, label="Prediction (top 5)")
                target = gr.Dropdown(
                    [],
                    label="Attribution target class",
                    info="Grad-CAM and the input attributions explain this class",
                    filterable=True,
                    allow_custom_value=True,
                )
                info = gr.Markdown("Upload an image or pick an example.")
        netmap = gr.HTML(network_svg(DEFAULT_BLOCK, native), label="Network map")
        with gr.Row():
            flow = gr.Radio(list(FLOWS), value="entry", label="Flow")
            block = gr.Dropdown(
                ex.blocks_of("entry"), value=DEFAULT_BLOCK, label="Block", allow_custom_value=True
            )
            layer = gr.Dropdown(
                ex.layers_of(DEFAULT_BLOCK),
                value=ex.layers_of(DEFAULT_BLOCK)[0],
                label="Layer",
                allow_custom_value=True,  # API callers may name any layer; xviz checks it
            )
        with gr.Tabs():
            with gr.Tab("Activations", id="activations"):
                with gr.Row():
                    sort = gr.Radio(list(ex.SORTS), value="index", label="Sort channels by")
                    cmap = gr.Dropdown(CMAPS, value=ex.AUTO_CMAP, label="Colormap")
                    scale = gr.Radio(list(ex.SCALES), value="shared", label="Colour scale")
                    overlay = gr.Slider(0, 0.9, value=0, step=0.1, label="Image underlay")
                with gr.Row():
                    prev_btn = gr.Button("◀ previous 64", size="sm")
                    page = gr.Number(1, label="Page", precision=0, minimum=1, maximum=100)
                    next_btn = gr.Button("next 64 ▶", size="sm")
                with gr.Row(equal_height=False):
                    left_title, left_img = grid_column("Depthwise", "depthwise-grid")
                    right_title, right_img = grid_column("Pointwise", "pointwise-grid")
                gr.Markdown("Click a tile to see that channel large.")
                with gr.Row():
                    with gr.Column(scale=1):
                        side = gr.Radio(
                            [("depthwise / conv", "left"), ("pointwise / block", "right")],
                            value="left",
                            label="Map",
                        )
                        channel = gr.Number(0, label="Channel", precision=0, minimum=0)
                        channel_text = gr.Markdown()
                    channel_img = gr.Image(
                        label="Channel", format="png", interactive=False, scale=1
                    )
            with gr.Tab("Attributions", id="attributions"):
                alpha = gr.Slider(0.1, 1.0, value=0.5, step=0.05, label="Heatmap opacity")
                cams = gr.Gallery(
                    label="Grad-CAM of the target class, block 1 (entry) to block 14 (exit)",
                    columns=7,
                    height="auto",
                    format="png",
                    elem_id="gradcam-strip",
                )
                with gr.Row():
                    cam_big = gr.Image(label="Selected block", format="png", interactive=False)
                    cam_text = gr.Markdown("Click a block above to enlarge it.")
                with gr.Row():
                    method = gr.Dropdown(
                        [(t, m) for m, t in ex.METHOD_TITLES.items()],
                        value="integrated_gradients",
                        label="Input-level method",
                    )
                    attr_block = gr.Dropdown(
                        BLOCK_NAMES, value="block13", label="Block (for block methods)"
                    )
                    attr_btn = gr.Button("Compute", variant="primary")
                    cancel_btn = gr.Button("Cancel", variant="stop")
                attr_text = gr.Markdown()
                with gr.Row():
                    attr_over = gr.Image(label="Over the image", format="png", interactive=False)
                    attr_heat = gr.Image(label="Attribution", format="png", interactive=False)
            with gr.Tab("Ablations", id="ablations"):
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
                    abl_blocks = gr.CheckboxGroup(BLOCK_NAMES[1:], value=["block5"], label="Blocks")
                abl_btn = gr.Button("Run ablation", variant="primary")
                abl_text = gr.Markdown()
                with gr.Row():
                    abl_before = gr.Label(num_top_classes=5, label="Original")
                    abl_after = gr.Label(num_top_classes=5, label="Ablated")
                abl_plot = gr.Plot(label="Block outputs")
                with gr.Row():
                    abl_orig = gr.Image(label="Map, original", format="png", interactive=False)
                    abl_new = gr.Image(label="Map, ablated", format="png", interactive=False)
            with gr.Tab("Cost", id="cost"):
                gr.Markdown(
                    "Standard vs depthwise-separable convolution for every layer of this "
                    "network. Standard: M·N·D_K²·D_G² multiply-adds; separable: "
                    "M·D_K²·D_G² + M·N·D_G², a ratio of 1/N + 1/D_K²."
                )
                cost_size = gr.Radio([299, 150], value=299, label="Input size (px)")
                first = cost_figures(299)
                madds_plot = gr.Plot(first[0], label="Multiply-adds per layer")
                params_plot = gr.Plot(first[1], label="Parameters per layer")
                totals_plot = gr.Plot(first[2], label="Whole network")
                with gr.Row():
                    measure_btn = gr.Button("Measure on this machine (about 30 s on 2 CPU cores)")
                speed_plot = gr.Plot(label="Theory vs practice")
                gr.Markdown("**Play with the formula**")
                with gr.Row():
                    m_in = gr.Slider(1, 2048, value=728, step=1, label="M (input channels)")
                    n_in = gr.Slider(1, 2048, value=728, step=1, label="N (output channels)")
                    k_in = gr.Slider(1, 7, value=3, step=2, label="D_K (kernel)")
                    g_in = gr.Slider(1, 150, value=19, step=1, label="D_G (output side)")
                explore0 = plots.explorer_figure(728, 728, 3, 19)
                explore_plot = gr.Plot(explore0, label="One layer")
                explore_text = gr.Markdown(plots.explain(728, 728, 3, 19))
            with gr.Tab("Export", id="export"):
                gr.Markdown(
                    "Download this analysis: the input, the first page of every map and the "
                    "Grad-CAM overlays as PNG, predictions and per-channel statistics as JSON."
                )
                export_btn = gr.Button("Build zip", elem_id="export-button")
                export_file = gr.File(label="Analysis (zip)", interactive=False)

        # --- events --------------------------------------------------------------------------
        view_in = [session, layer, sort, page, cmap, scale, overlay, block]
        view_out = [left_img, right_img, left_title, right_title, page, netmap]
        model_events = {"concurrency_id": "model", "concurrency_limit": 1}

        analyze_inputs = [image_in, size, layer, sort, cmap, scale, overlay, block, alpha]
        analyze_outputs = [session, prediction, target, *view_out, cams, info, export_file]
        analyze_btn.click(
            analyze, analyze_inputs, analyze_outputs, api_name="analyze", **model_events
        )
        image_in.change(analyze, analyze_inputs, analyze_outputs, api_name=False, **model_events)
        size.change(analyze, analyze_inputs, analyze_outputs, api_name=False, **model_events)
        # API only: the same upload component, a JSON answer ({label: probability}).
        predict_btn = gr.Button(visible=False)
        predict_json = gr.JSON(visible=False)
        predict_btn.click(
            predict, [image_in, size], predict_json, api_name="predict", **model_events
        )

        target.input(
            retarget,
            [session, target, alpha],
            [session, cams, info],
            api_name=False,
            **model_events,
        )
        flow.change(change_flow, flow, block, api_name=False)
        block.change(change_block, [block, session], [layer, netmap], api_name=False)
        for component in (layer, sort, cmap, scale, overlay):
            component.change(change_view, view_in, view_out, api_name=False)
        # Also the API's way to page through a session's maps: /view.
        page.submit(change_view, view_in, view_out, api_name="view")
        prev_btn.click(lambda p: step_page(p, -1), page, page, api_name=False).then(
            change_view, view_in, view_out, api_name=False
        )
        next_btn.click(lambda p: step_page(p, 1), page, page, api_name=False).then(
            change_view, view_in, view_out, api_name=False
        )
        pick_in = [session, layer, sort, page, cmap, overlay]
        pick_out = [side, channel, channel_img, channel_text]
        left_img.select(pick_left, pick_in, pick_out, api_name=False)
        right_img.select(pick_right, pick_in, pick_out, api_name=False)
        channel.submit(
            show_channel,
            [session, layer, side, channel, cmap, overlay],
            [channel_img, channel_text],
            api_name=False,
        )
        cams.select(enlarge_cam, [session, alpha], [cam_big, cam_text], api_name=False)
        alpha.release(restyle_cams, [session, alpha], cams, api_name=False)
        attr_event = attr_btn.click(
            run_attribution,
            [session, method, attr_block, alpha],
            [attr_over, attr_heat, attr_text],
            api_name="attribute",
            **model_events,
        )
        cancel_btn.click(cancel, None, None, cancels=[attr_event], api_name=False, queue=False)
        abl_btn.click(
            run_ablation,
            [session, kind, abl_blocks, layer, side, channel, cmap],
            [abl_before, abl_after, abl_text, abl_orig, abl_new, abl_plot],
            api_name="ablate",
            **model_events,
        )
        cost_size.change(
            cost_figures, cost_size, [madds_plot, params_plot, totals_plot], api_name=False
        )
        measure_btn.click(measure, cost_size, speed_plot, api_name=False, **model_events)
        for slider in (m_in, n_in, k_in, g_in):
            slider.release(
                explore_cost, [m_in, n_in, k_in, g_in], [explore_plot, explore_text], api_name=False
            )
        export_btn.click(export, session, export_file, api_name=False)
        demo.unload(forget)

    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=4)
    return demo


def _stop_on_sigterm() -> None:
    """SIGTERM (``docker stop``, a Space restart) stops the server as Ctrl-C does, so that the
    clean-up at exit runs (exports are deleted) instead of the process just vanishing."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main() -> None:
    # xviz says in the log which weights it tries, downloads (with progress) and skips;
    # other libraries keep their default (warnings only).
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("xviz").setLevel(logging.INFO)
    try:
        demo = build_demo()
    except XvizError as err:  # e.g. corrupt weights: say which file and what is wrong
        if not os.environ.get("SPACE_ID"):
            raise SystemExit(f"xviz cannot start: {err}") from None
        # On Hugging Face Spaces (which sets SPACE_ID) an exit is restarted in a loop: serve
        # a page that says what happened; the details (paths, URLs) stay in the log.
        logging.getLogger("xviz").error("xviz cannot start: %s", err)
        demo = unavailable_demo()
    _stop_on_sigterm()
    demo.launch(**LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()
