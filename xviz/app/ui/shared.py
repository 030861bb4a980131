"""What every tab of the app uses: the page's frame (title, image, prediction, the flow /
block / layer pickers and the network map) as one :class:`Shared`, the event settings, the
status line and the first step of a cancellable run.

What a tab shows of an analysis is a ``Panel`` (``panels.py``); how a new analysis reaches the
tabs is ``new_analysis.py``; links and the first screen are ``links.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from xviz.app import explorer as ex
from xviz.app import views
from xviz.app.files import FileStore
from xviz.app.server import SESSION_TTL_S, FilePathImage, ui_errors, weights_details, weights_line
from xviz.app.ui.js import BLOCK_CLICKS
from xviz.app.ui.panels import Panel, Prefetched
from xviz.data.gallery import all_examples, example_label
from xviz.engine.preprocess import ACCEPTED_FORMATS, MAX_FILE_BYTES, MAX_PIXELS
from xviz.engine.warmup import app_sizes
from xviz.model.xception import FLOWS
from xviz.render.network_map import network_map_html

DEFAULT_BLOCK = "block2"
# Events that run the model share one worker: one model computation at a time.
MODEL_EVENTS: dict[str, Any] = {"concurrency_id": "model", "concurrency_limit": 1}
# Long jobs (a page of feature visualizations, an attribution method of many passes, a
# faithfulness check, the cost measurement): their own slot, so that they never hold the model's
# events up. They run on the model's thread at a low priority (``Runner.background``) and let
# every more urgent call waiting pass between their steps; one at a time, the rest see their
# place in the line.
LONG_EVENTS: dict[str, Any] = {"concurrency_id": "long", "concurrency_limit": 1}
# Jobs of seconds (an attribution): their own slot too, at a priority between the two.
SECONDS_EVENTS: dict[str, Any] = {"concurrency_id": "seconds", "concurrency_limit": 1}
# Events that only render a cached analysis: answered at once, outside the queue.
# Not API endpoints (``api_name=False``): the HTTP API is the five documented ones.
VIEW_EVENTS: dict[str, Any] = {"queue": False, "show_progress": "hidden", "api_name": False}
# Drawing a tab's panels of an analysis: queued (it streams a panel at a time) but not behind
# the model's events. Should the analysis have left the cache, recomputing it still waits for
# the model, whose computations all run on one thread (xviz.engine.runner).
RENDER_EVENTS: dict[str, Any] = {
    "concurrency_id": "render",
    "concurrency_limit": 4,
    "show_progress": "hidden",
}


@dataclass(kw_only=True)
class Shared:
    """The app's shared components, the explorer behind them, and the tabs' panels."""

    explorer: ex.Explorer
    files: FileStore
    session: gr.State
    tab: gr.State  # the id of the open tab
    shown: gr.State  # tab id -> Session.key its lazy panels show
    image: FilePathImage
    size: gr.Radio
    prediction: gr.Label
    target: gr.Dropdown
    info: gr.Markdown
    netmap: gr.HTML
    flow: gr.Radio
    block: gr.Dropdown
    layer: gr.Dropdown
    dark: gr.Checkbox  # hidden: whether the page is in dark mode, for the figures' template
    link: gr.Textbox  # the link to the current view
    copy: gr.Button
    open_request: gr.State  # (side, channel) to show large with the next analysis (a link's)
    quiet: gr.HTML  # hidden: the only progress target of events that show none (see below)
    main: gr.Column  # the main column, where the tabs go
    tour: gr.Row  # under the title, for the guided tour's buttons
    panels: list[Panel] = field(default_factory=list)
    tabs: gr.Tabs | None = None  # set once the tabs exist
    prefetched: Prefetched = field(default_factory=Prefetched)

    def png(self, image: Any) -> str:
        """A rendered image as a served PNG file (see :class:`~xviz.app.files.FileStore`)."""
        return str(self.files.save_png(image))


INTRO = (
    "A pretrained **Xception** (Chollet 2017), inside: click a block of the map, then a tile, "
    "to see a channel and how its **depthwise** and **pointwise** halves compute it."
)


def build_header(explorer: ex.Explorer, files: FileStore) -> Shared:
    """The page's frame: a title, a side column (image, prediction, examples) and the main
    column with the network map and layer pickers, which the tabs then go into (``main``).

    Compact enough that the first channel grids show on a 1280x800 screen without scrolling.
    """
    native = explorer.native_size
    with gr.Row(equal_height=False, elem_id="header"):
        with gr.Column(scale=5, min_width=300):
            gr.Markdown(f"## xviz: inside Xception\n{INTRO}", elem_id="intro")
            tour = gr.Row(elem_id="tour")  # the guided tour's buttons (xviz/app/ui/tour.py)
        with gr.Column(scale=1, min_width=190):
            copy = gr.Button("Copy link to this view", size="sm", elem_id="copy-link")
            link = gr.Textbox(
                label="Link to this view",
                show_label=False,
                container=False,
                interactive=False,
                visible=False,
                elem_id="share-link",
            )
    session = gr.State(None, time_to_live=SESSION_TTL_S)
    tab = gr.State("activations")
    shown = gr.State({})
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=250, elem_id="side"):
            image = FilePathImage(
                label="Your image (drop, paste, webcam)",
                sources=["upload", "clipboard", "webcam"],
                type="filepath",
                height=170,
                elem_id="image-input",
            )
            examples = all_examples()
            gr.Examples(
                [[str(p)] for p in examples],
                inputs=[image],
                label="or an example",
                examples_per_page=len(examples),
                cache_examples=False,
                example_labels=[example_label(p) for p in examples],
            )
            prediction = gr.Label(
                num_top_classes=3, label="Prediction (top 3)", elem_id="prediction"
            )
            target = gr.Dropdown(
                [],
                label="Class to explain",
                info="Grad-CAM and the attributions show the evidence for this class",
                filterable=True,
                allow_custom_value=True,
            )
            size = gr.Radio(
                app_sizes(explorer.model),
                value=native,
                label="Input size (px)",
                info=f"the photo is resized to a square; these weights learnt at {native}",
                elem_id="size",
            )
            info = gr.Markdown("Pick an example or upload an image.", elem_classes="xviz-small")
            gr.Markdown(
                weights_line(explorer.model, explorer.runner.where), elem_classes="xviz-small"
            )
            with gr.Accordion("About the weights and the limits", open=False):
                gr.Markdown(weights_details(explorer.model), elem_classes="xviz-small")
                gr.Markdown(
                    f"Accepted: {', '.join(sorted(ACCEPTED_FORMATS))}; up to "
                    f"{MAX_FILE_BYTES // 2**20} MB and {MAX_PIXELS // 10**6} megapixels.",
                    elem_classes="xviz-small",
                )
        with gr.Column(scale=4, min_width=300) as main:
            netmap = gr.HTML(
                network_map_html(DEFAULT_BLOCK, native),
                label="Network map: click a block",
                js_on_load=BLOCK_CLICKS,
                elem_id="netmap",
                padding=False,
            )
            with gr.Row(equal_height=True, elem_id="pickers"):
                flow = gr.Radio(
                    list(FLOWS), value="entry", label="Flow", elem_id="flow", min_width=240
                )
                block = gr.Dropdown(
                    views.blocks_of("entry"),
                    value=DEFAULT_BLOCK,
                    label="Block",
                    allow_custom_value=True,
                    elem_id="block",
                    min_width=120,
                )
                layer = gr.Dropdown(
                    views.layers_of(DEFAULT_BLOCK),
                    value=views.layers_of(DEFAULT_BLOCK)[0],
                    label="Layer",
                    allow_custom_value=True,  # API callers may name any layer; xviz checks it
                    elem_id="layer",
                    min_width=170,
                )
    dark = gr.Checkbox(False, visible=False, label="dark mode")
    quiet = gr.HTML(visible=False, label="no progress shown")
    return Shared(
        explorer=explorer,
        files=files,
        session=session,
        tab=tab,
        shown=shown,
        image=image,
        size=size,
        prediction=prediction,
        target=target,
        info=info,
        netmap=netmap,
        flow=flow,
        block=block,
        layer=layer,
        dark=dark,
        link=link,
        copy=copy,
        open_request=gr.State(None),
        quiet=quiet,
        main=main,
        tour=tour,
    )


def quiet_progress(demo: gr.Blocks, shared: Shared) -> None:
    """Events that show no progress get ``shared.quiet`` as their only progress target.

    Gradio's page (6.31) keeps a loading status for the progress targets (``show_progress_on``,
    else the outputs) and the inputs of every event it has run, and at each status message of
    any event (queued, started, each streamed output, done) re-reads every one of them, copying
    its whole state (a figure's JSON, a grid's HTML), and for a layout block (tabs, a row, a
    column) everything inside it. Measured on 2 cores, one upload then cost the page 230-350 ms
    of such copies, most of it because the first screen's event named the tabs as an output,
    and the channel views the channel panel's rows: CPU the analysis and drawing needed.
    """
    for fn in demo.fns.values():
        if fn.show_progress == "hidden" and not fn.show_progress_on:
            fn.show_progress_on = [shared.quiet]


def arm_event(
    explorer: ex.Explorer, long: bool = False, reveal: gr.Component | None = None
) -> dict[str, Any]:
    """The instant first step of a run that Cancel can stop (``button.click(**arm_event(e))
    .then(run, ...)``): from the click on, a Cancel reaches the run even while it waits in the
    queue behind other visitors' (see :meth:`Explorer.arm`).

    A ``long`` job's arm refuses, with a message, while the visitor's last one still runs;
    chain it with ``.success(run, ...)`` so that the refused click runs nothing. ``reveal``:
    a hidden output to show at once, so that the place in the line and the progress have
    somewhere to appear.
    """

    @ui_errors
    def arm(request: gr.Request) -> Any:
        explorer.arm(request.session_hash if request else "", long=long)
        return None if reveal is None else gr.update(visible=True)

    return {"fn": arm, "inputs": None, "outputs": reveal, **VIEW_EVENTS}


DEVICE_NAMES = {"cpu": "the CPU", "cuda": "the GPU", "mps": "the GPU (MPS)"}


def status(analysis: Any) -> str:
    """The line under the prediction: what was analysed, with what, where and how fast (for
    an analysis whose backward pass still runs, that its Grad-CAMs are on their way)."""
    where = DEVICE_NAMES.get(analysis.device, analysis.device)
    if not analysis.complete:
        made, coming = {
            "prediction": ("prediction", "the maps and the Grad-CAMs"),
            "view": ("prediction and this layer's maps", "the Grad-CAMs and the other maps"),
            "gradcam": ("prediction and Grad-CAMs", "the maps of the other layers"),
        }[analysis.stage]
        passes = "Forward and backward pass" if analysis.reached("gradcam") else "Forward pass"
        return (
            f"{passes} at {analysis.size}x{analysis.size} with `{analysis.weights}` on "
            f"{where} in {analysis.elapsed_s:.2f} s: {made}; {coming} of "
            f"**{analysis.target_label}** follow..."
        )
    return (
        f"Analysed at {analysis.size}x{analysis.size} with `{analysis.weights}` on "
        f"{where} in {analysis.elapsed_s:.2f} s; Grad-CAM explains **{analysis.target_label}**."
    )
