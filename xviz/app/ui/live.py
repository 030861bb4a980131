"""The Live tab: the browser's camera streams frames; for the chosen layer, a page of its
depthwise and pointwise maps, one channel large and the top-3 classes follow them.

Gradio's streaming webcam posts a frame every ``STREAM_EVERY`` seconds; the server keeps only
the latest frame of a stream (each post replaces the one before: ``gradio/routes.py``
``/stream/{event_id}``) and computes the next as soon as the last is done, so a slow server
drops frames instead of queueing them, and the maps shown are at most about two frames' work
old. What each frame costs and shows is ``xviz/app/live.py``; the page measures its own frame
rate and capture-to-screen delay (``LIVE_METER``).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from xviz.app import live
from xviz.app.server import SESSION_TTL_S, FilePathImage, reported, ui_errors
from xviz.app.ui.js import CAMERA_PROBLEM, CAMERA_RELEASE, FREEZE, LIVE_CLICKS, LIVE_METER
from xviz.app.ui.shared import VIEW_EVENTS, Shared
from xviz.engine.live import LIVE_LAYERS, PER_PAGE, SIDES
from xviz.errors import XvizError
from xviz.render.live import message_html

TAB = "live"
DEFAULT_LAYER = "block2_sepconv1"
STREAM_EVERY = 0.1  # s between two frames the page captures: at most 10 frames/s
TIME_LIMIT_S = 180  # a stream ends after this; a visitor who leaves holds it no longer
STREAMS = 4  # streams served at once; more wait for one to end
# The camera asks for a small picture: the model sees 150 or 299 pixels, and a 1920 x 1440
# frame (Gradio's default ask) costs the phone and the server more to encode, send and decode.
CAMERA = {"video": {"width": {"ideal": 480}, "height": {"ideal": 360}}}

HELP = (
    "Click the camera's box, then **Record**, to start the stream, and **Stop** to stop it and "
    "release the camera; move something in front of the camera and watch the channels respond. "
    "**Freeze** opens the frame on screen in the full analysis, as an upload would. The browser "
    "asks before it shares the camera; if it is refused or there is none, the maps' box says so "
    "and every other tab still works with uploads."
)


def where_line(shared: Shared) -> str:
    """Where the frames are computed; on ZeroGPU, why not on the GPU."""
    runner = shared.explorer.runner
    if runner.cpu is runner:
        return f"Frames are computed on {runner.where}."
    return (
        f"Frames are computed on {runner.cpu.where}, not the GPU: on this Space each GPU call "
        "counts against your daily GPU quota, which a stream would spend in seconds."
    )


def build(shared: Shared) -> None:
    """The tab's layout and events."""
    explorer = shared.explorer
    gr.Markdown(f"{HELP} {where_line(shared)}", elem_classes="xviz-small")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            camera = FilePathImage(
                sources=["webcam"],
                streaming=True,
                type="filepath",
                label="Camera",
                webcam_options=gr.WebcamOptions(mirror=False, constraints=CAMERA),
                height=220,
                elem_id="live-camera",
            )
            freeze = gr.Button(
                "Freeze: analyse this frame", variant="primary", elem_id="live-freeze"
            )
            layer = gr.Dropdown(
                list(LIVE_LAYERS),
                value=DEFAULT_LAYER,
                label="Layer",
                info="any separable conv: entry flow (block2-4), middle (5-12), exit (13-14)",
                elem_id="live-layer",
            )
            with gr.Row():
                page = gr.Number(
                    1, label=f"Page of {PER_PAGE} channels", precision=0, minimum=1, min_width=90
                )
                side = gr.Radio(
                    list(SIDES),
                    value="pointwise",
                    label="Shown large",
                    min_width=150,
                )
            channel = gr.Number(
                0, label="Channel shown large", precision=0, minimum=0, info="or click a tile"
            )
        with gr.Column(scale=3, min_width=300):
            view = gr.HTML(
                message_html("Start the camera: the maps of each frame show here."),
                js_on_load=LIVE_METER + LIVE_CLICKS + CAMERA_PROBLEM + CAMERA_RELEASE,
                elem_id="live-view",
                padding=False,
            )
    state = gr.State(None, time_to_live=SESSION_TTL_S)
    shown = gr.Textbox("", visible=False, label="the frame on screen")  # FREEZE fills it

    @ui_errors
    def on_frame(frame, size, layer, page, side, channel, tab, session) -> tuple[Any, Any]:
        """One frame: its view, or one sentence on what is wrong with it (the stream goes on)."""
        if frame is None or tab != TAB:  # a stream left running behind another tab
            return gr.skip(), gr.skip()
        session = session or live.LiveSession()
        try:
            shown = live.show_frame(explorer, session, frame, size, layer, page, side, channel)
        except XvizError as err:
            return message_html(str(err)), session
        return shown, session

    camera.stream(
        on_frame,
        [camera, shared.size, layer, page, side, channel, shared.tab, state],
        [view, state],
        stream_every=STREAM_EVERY,
        time_limit=TIME_LIMIT_S,
        concurrency_id="live",
        concurrency_limit=STREAMS,
        show_progress="hidden",
        api_name=False,
    )

    def clicked(evt: gr.EventData) -> tuple[Any, Any]:
        """A tile picked: it is shown large from the next frame on."""
        picked, tile = reported(evt, "channel"), reported(evt, "side")
        if not isinstance(picked, int) or isinstance(picked, bool) or picked < 0:
            return gr.skip(), gr.skip()  # a client's value: checked, and clamped per frame
        return picked, tile if tile in SIDES else gr.skip()

    view.click(clicked, None, [channel, side], **VIEW_EVENTS)

    @ui_errors
    def frozen(key, session) -> dict:
        path = live.freeze(shared.files, session, key)
        return {
            shared.image: str(path),
            shared.tabs: gr.Tabs(selected="activations"),
            shared.tab: "activations",
        }

    freeze.click(
        frozen,
        [shown, state],
        [shared.image, shared.tabs, shared.tab],
        js=FREEZE,
        api_name=False,
        show_progress="hidden",
    )
