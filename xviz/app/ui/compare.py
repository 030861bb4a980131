"""The Compare tab: a second image beside the first, the same layer and channel, one scale.

The channel is the one shown large in Activations (or, before any is picked, pointwise
channel 0 of the current layer); both images run at the app's input size.
"""

from __future__ import annotations

import gradio as gr

from xviz.app import views
from xviz.app.server import FilePathImage, ui_errors
from xviz.app.ui.shared import MODEL_EVENTS, Shared
from xviz.data.gallery import all_examples, example_label
from xviz.render import html

TAB = "compare"


def build(shared: Shared, cmap: gr.Dropdown, shown: gr.State) -> tuple:
    """The tab's layout and events; ``cmap`` and ``shown`` are the Activations tab's.
    Returns what ``on_open`` wires to the tab."""
    explorer = shared.explorer
    gr.Markdown(
        "Put a second image **B** beside the one above (**A**): the same layer and channel, on "
        "one colour scale, so that you can see what the channel responds to in each."
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=240):
            second = FilePathImage(
                label="Image B (drop, paste, webcam)",
                sources=["upload", "clipboard", "webcam"],
                type="filepath",
                height=170,
                elem_id="image-b",
            )
            examples = all_examples()
            gr.Examples(
                [[str(p)] for p in examples],
                inputs=[second],
                label="or an example",
                examples_per_page=len(examples),
                cache_examples=False,
                example_labels=[example_label(p) for p in examples],
            )
        with gr.Column(scale=3, min_width=300):
            note = gr.Markdown("Pick image B.", elem_id="compare-note")
            with gr.Row():
                pred_a = gr.Label(num_top_classes=3, label="A: prediction", min_width=200)
                pred_b = gr.Label(num_top_classes=3, label="B: prediction", min_width=200)
            maps = gr.HTML(elem_id="compare-maps")

    @ui_errors
    def compared(session, image, layer, cmap, shown):
        if session is None or image is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        side, channel = ("right", 0)
        if shown is not None and shown[0] == layer:
            side, channel = shown[1], shown[2]
        first = explorer.analysis(session)
        b = explorer.analysis(explorer.start(image, session.size))
        view_a, view_b = views.compare_channel(first, b, layer, side, channel, cmap)
        bar = html.colorbar_html(
            view_a.cmap,
            html.range_ticks(view_a.low, view_a.high, view_a.signed),
            f"activation of {view_a.map_name}, channel {view_a.channel}, one scale for A and B",
        )
        h, w = view_a.shape
        pictures = "".join(
            f'<figure class="xviz-compare"><figcaption>{which}</figcaption>'
            f'<img src="gradio_api/file={shared.png(view.image)}" alt="{which}: '
            f'{view.map_name} channel {view.channel}, {h}x{w}"/></figure>'
            for which, view in (("A", view_a), ("B", view_b))
        )
        text = (
            f"**{view_a.map_name}, channel {view_a.channel}** at {session.size}x{session.size}. "
            f"A: {view_a.text.split('  ')[-1]}  \nB: {view_b.text.split('  ')[-1]}"
        )
        return (
            text,
            views.prediction(first),
            views.prediction(b),
            f'<div class="xviz-compare-row">{pictures}</div>{bar}',
        )

    inputs = [shared.session, second, shared.layer, cmap, shown]
    outputs = [note, pred_a, pred_b, maps]
    second.change(compared, inputs, outputs, api_name=False, **MODEL_EVENTS)
    return compared, inputs, outputs


def on_open(tab: gr.Tab, wired: tuple) -> None:
    """Opening the tab compares again: the layer or channel may have changed meanwhile."""
    compared, inputs, outputs = wired
    tab.select(compared, inputs, outputs, api_name=False, **MODEL_EVENTS)
