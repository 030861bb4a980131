"""What a channel responds to (in the channel panel): its feature visualization, made when
asked, with progress and cancel, and kept per weights, map and channel; the photos of the
dataset atlas where it fires most; and the visualizations of a whole grid page.

The atlas is the shipped one (``xviz/data/atlas``) or ``$XVIZ_ATLAS``, set by whoever runs the
server; a request names only a map and a channel, both checked.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image

from xviz.app import explorer as ex
from xviz.app import views
from xviz.app.server import ui_errors
from xviz.app.ui.shared import LONG_EVENTS, Shared, arm_event
from xviz.engine.runner import MINUTES
from xviz.errors import Cancelled
from xviz.methods.atlas import default_atlas
from xviz.methods.featurevis import VisualizationCache, visualize
from xviz.render.contact_sheets import contact_sheet, examples_strip, top_examples

SIZE = 150  # the feature visualizations' side: the kitchenware head's, and 4x cheaper than 299
# Channels optimised together when a page is visualized: a step of 8 at 150 takes about 0.5 s
# on two CPU cores, and another visitor's call waits for at most half of one (it runs between
# a step's forward and backward passes, or between two steps).
BATCH = 8
HELP = (
    "**What it responds to.** A *feature visualization* is a picture optimised, step by step, "
    "to make this channel's mean activation as large as it can be (Olah et al., Distill "
    "2017): it shows the pattern the channel looks for, not a photo. The *dataset examples* "
    "are the photos of the atlas where the channel's maximum is highest, cut to the region "
    "that maximum sees."
)


@dataclass
class RespondsPanel:
    picture: gr.Image
    examples: gr.Image
    examples_text: gr.Markdown

    @property
    def outputs(self) -> list[gr.Component]:
        return [self.picture, self.examples, self.examples_text]


def build(
    shared: Shared, shown: gr.State, sort: gr.Radio, page: gr.Number
) -> tuple[RespondsPanel, Any]:
    """The section's layout and its buttons' events (``sort`` and ``page``: the grids' order
    and page, for the page's visualizations); returns the panel and ``show``, which gives its
    values for a channel just opened (examples, and a visualization made before)."""
    explorer = shared.explorer
    atlas = default_atlas(explorer.model)
    visuals = VisualizationCache(budget_mb=96)
    with gr.Accordion("What it responds to", open=True, elem_id="responds"):
        gr.Markdown(HELP, elem_classes="xviz-small")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=200):
                picture = gr.Image(
                    label="Feature visualization",
                    format="png",
                    interactive=False,
                    elem_id="featvis",
                    height=220,
                )
                with gr.Row():
                    make = gr.Button(
                        "Make it", size="sm", variant="primary", elem_id="featvis-make"
                    )
                    stop = gr.Button("Cancel", size="sm", variant="stop", elem_id="featvis-cancel")
            with gr.Column(scale=3, min_width=260):
                examples = gr.Image(
                    label="Dataset examples: where it fires most",
                    format="png",
                    interactive=False,
                    elem_id="atlas-examples",
                )
                examples_text = gr.Markdown(elem_classes="xviz-small")
        page_btn = gr.Button(
            "Feature visualizations of this grid page's channels", size="sm", elem_id="featvis-page"
        )
        page_picture = gr.Image(
            label="This page's channels by what they detect",
            format="png",
            interactive=False,
            visible=False,
            elem_id="featvis-page-sheet",
        )
    panel = RespondsPanel(picture, examples, examples_text)
    # Feature visualizations are jobs of minutes: on the model's thread at the lowest
    # priority, letting every other call waiting pass between their steps.
    in_background = functools.partial(explorer.runner.background, priority=MINUTES)

    def map_of(session, shown_now) -> tuple[str, int]:
        if session is None or shown_now is None:
            raise ex.AnalysisError("Pick a channel first: click a tile of either grid.")
        layer, side, channel, _ = shown_now
        left, right, _, _ = views.layer_maps(explorer.layer(session, layer), layer)
        return (left if side == "left" else right).name, channel

    def show(session, layer: str, side: str, channel: int) -> list[Any]:
        """Values of ``outputs`` for a channel just opened."""
        left, right, _, _ = views.layer_maps(explorer.layer(session, layer), layer)
        name = (left if side == "left" else right).name
        made = visuals.cached(explorer.model, name, channel, SIZE)
        picture_value = shared.png(contact_sheet(made, columns=1)) if made else None
        if atlas is None:
            return [picture_value, None, "No dataset atlas is loaded on this server."]
        pairs = top_examples(atlas, name, channel)
        text = (
            f"The {len(pairs)} photos of the atlas ({atlas.metadata.get('images', '?')} "
            f"photos at {atlas.metadata.get('size', '?')} px) where {name} channel {channel} "
            "fires most, best first; the number is the channel's maximum on each."
        )
        return [picture_value, shared.png(examples_strip(pairs)), text]

    @ui_errors
    def made(session, shown_now, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        with explorer.long_run(request.session_hash if request else "") as cancel:
            name, channel = map_of(session, shown_now)
            try:
                vis = visuals.visualize(
                    explorer.model,
                    name,
                    [channel],
                    SIZE,
                    progress=lambda f, msg: progress(f, desc=msg),
                    cancel=cancel.is_set,
                    run=in_background,
                )
            except Cancelled:  # what was shown stays, without an error over it
                return gr.skip()
        return shared.png(contact_sheet(vis, columns=1))

    make.click(**arm_event(explorer, long=True)).success(
        made, [shared.session, shown], picture, api_name=False, **LONG_EVENTS
    )

    @ui_errors
    def page_made(
        session,
        shown_now,
        layer,
        sort,
        page,
        request: gr.Request,
        progress=gr.Progress(),  # noqa: B008
    ):
        with explorer.long_run(request.session_hash if request else "") as cancel:
            name, _ = map_of(session, shown_now)
            m = explorer.early(session, maps=[name]).map(name)
            channels = [int(c) for c in views.grid(m, sort, page).channels]
            chunks = [channels[i : i + BATCH] for i in range(0, len(channels), BATCH)]
            booked = [explorer.runner.booked_s(visualize, name, c, SIZE) for c in chunks]
            if None not in booked:  # on ZeroGPU: what it costs the visitor, before it starts
                gr.Info(
                    f"This page of {len(channels)} feature visualizations books about "
                    f"{sum(booked):.0f} s of GPU time from your daily ZeroGPU quota, in "
                    f"{len(chunks)} runs of {BATCH} channels; Cancel stops it."
                )
            sheets: list[Image.Image] = []
            for number, chunk in enumerate(chunks):
                start = number * BATCH

                def step(
                    fraction: float, message: str, start: int = start, n: int = len(chunk)
                ) -> None:
                    done = (start + fraction * n) / len(channels)
                    progress(done, desc=f"channels {start + 1}-{start + n}: {message}")

                try:
                    part = visuals.visualize(
                        explorer.model,
                        name,
                        chunk,
                        SIZE,
                        progress=step,
                        cancel=cancel.is_set,
                        run=in_background,
                    )
                except Cancelled:  # the rows made so far stay
                    return
                # Each row of the sheet is shown as soon as it is made.
                sheets.append(contact_sheet(part, columns=BATCH, tile=96))
                made_now = start + len(chunk)
                yield gr.update(
                    value=shared.png(_stacked(sheets)),
                    visible=True,
                    label=(
                        f"{name}: this page's {len(channels)} channels by what they detect"
                        if made_now == len(channels)
                        else f"{name}: channels 1-{made_now} of this page's {len(channels)} "
                        "so far..."
                    ),
                )

    page_btn.click(**arm_event(explorer, long=True, reveal=page_picture)).success(
        page_made,
        [shared.session, shown, shared.layer, sort, page],
        page_picture,
        api_name=False,
        **LONG_EVENTS,
    )

    def cancel(request: gr.Request) -> None:
        explorer.cancel(request.session_hash if request else "")
        gr.Info("Cancelling the feature visualization.")

    # No Gradio ``cancels``: it can mark the outputs as failed in the browser; the run sees
    # its own flag at its next step and ends, leaving what was shown.
    stop.click(cancel, None, None, api_name=False, queue=False)
    return panel, show


def _stacked(sheets: list[Image.Image]) -> Image.Image:
    """Contact sheets one under the other, as one picture."""
    width = max(s.width for s in sheets)
    out = Image.new("RGB", (width, sum(s.height for s in sheets)), (255, 255, 255))
    y = 0
    for sheet in sheets:
        out.paste(sheet, (0, y))
        y += sheet.height
    return out
