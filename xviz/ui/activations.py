"""The Activations tab: a layer's two channel grids (depthwise | pointwise) and one channel large.

Every change of flow, block, layer, page, sort, colormap, scale or underlay re-renders the two
grids from the cached analysis in one round trip, outside the model queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from xviz import explorer as ex
from xviz.diagram import network_svg
from xviz.server import ui_errors
from xviz.ui.shared import VIEW_EVENTS, Panel, Shared

CMAPS = [ex.AUTO_CMAP, "viridis", "inferno", "magma", "cividis", "coolwarm"]


@dataclass
class Activations:
    sort: gr.Radio
    cmap: gr.Dropdown
    scale: gr.Radio
    overlay: gr.Slider
    page: gr.Number
    left: gr.Image
    right: gr.Image
    left_title: gr.Markdown
    right_title: gr.Markdown
    side: gr.Radio
    channel: gr.Number
    channel_image: gr.Image
    channel_text: gr.Markdown


def grid_column(title: str, elem_id: str) -> tuple[gr.Markdown, gr.Image]:
    """A title over a channel-grid image (PNG: maps must not be blurred by lossy WebP)."""
    with gr.Column():
        heading = gr.Markdown(title)
        image = gr.Image(
            label=f"{title} channel grid",
            format="png",
            interactive=False,
            show_label=False,
            elem_id=elem_id,
        )
    return heading, image


def build(shared: Shared) -> Activations:
    """The tab's layout and events; its grids are a panel of every new analysis."""
    explorer = shared.explorer
    with gr.Row():
        sort = gr.Radio(list(ex.SORTS), value="index", label="Sort channels by", elem_id="sort")
        cmap = gr.Dropdown(CMAPS, value=ex.AUTO_CMAP, label="Colormap", elem_id="cmap")
        scale = gr.Radio(list(ex.SCALES), value="shared", label="Colour scale")
        overlay = gr.Slider(0, 0.9, value=0, step=0.1, label="Image underlay")
    with gr.Row():
        prev_btn = gr.Button("◀ previous 64", size="sm")
        page = gr.Number(1, label="Page", precision=0, elem_id="page")
        next_btn = gr.Button("next 64 ▶", size="sm", elem_id="next-page")
    with gr.Row(equal_height=False):
        left_title, left = grid_column("Depthwise", "depthwise-grid")
        right_title, right = grid_column("Pointwise", "pointwise-grid")
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
        channel_image = gr.Image(label="Channel", format="png", interactive=False, scale=1)
    tab = Activations(
        sort, cmap, scale, overlay, page, left, right, left_title, right_title,
        side, channel, channel_image, channel_text,
    )  # fmt: skip

    def views(session, layer, sort, page, cmap, scale, overlay) -> tuple:
        """Both grids of ``layer`` and their titles, and the page shown."""
        a = explorer.analysis(session)
        v = explorer.layer_view(a, layer, sort, page, cmap, scale, overlay)
        return shared.png(v.left), shared.png(v.right), v.left_title, v.right_title, v.page

    view_in = [shared.session, shared.layer, sort, page, cmap, scale, overlay]
    view_out = [left, right, left_title, right_title, page]
    shared.panels.append(Panel(views, view_in[1:], view_out))

    @ui_errors
    def change_view(session, layer, sort, page, cmap, scale, overlay):
        if session is None:
            return [gr.skip()] * len(view_out)
        return views(session, layer, sort, page, cmap, scale, overlay)

    @ui_errors
    def change_block(session, block, *view_args):
        """A block picked: its first layer, the map, both grids, in one answer."""
        layers = ex.layers_of(block)
        size = session.size if session is not None else explorer.native_size
        shown = views(session, layers[0], *view_args) if session is not None else [gr.skip()] * 5
        return gr.update(choices=layers, value=layers[0]), network_svg(block, size), *shown

    @ui_errors
    def change_flow(session, flow, *view_args):
        blocks = ex.blocks_of(flow)
        return gr.update(choices=blocks, value=blocks[0]), *change_block(
            session, blocks[0], *view_args
        )

    after_layer = [sort, page, cmap, scale, overlay]
    shared.flow.input(
        change_flow,
        [shared.session, shared.flow, *after_layer],
        [shared.block, shared.layer, shared.netmap, *view_out],
        api_name=False,
        **VIEW_EVENTS,
    )
    shared.block.input(
        change_block,
        [shared.session, shared.block, *after_layer],
        [shared.layer, shared.netmap, *view_out],
        api_name=False,
        **VIEW_EVENTS,
    )
    for component in (shared.layer, sort, cmap, scale, overlay):
        component.input(change_view, view_in, view_out, api_name=False, **VIEW_EVENTS)
    # Also the API's way to page through a session's maps: /view.
    page.submit(change_view, view_in, view_out, api_name="view")

    def step(delta: int) -> Any:
        @ui_errors
        def stepped(session, layer, sort, page, *rest):
            turned = max(1, ex.whole_number(page or 1, "The page") + delta)
            if session is None:
                return [gr.skip()] * 4 + [turned]
            return change_view(session, layer, sort, turned, *rest)

        return stepped

    prev_btn.click(step(-1), view_in, view_out, api_name=False, **VIEW_EVENTS)
    next_btn.click(step(1), view_in, view_out, api_name=False, **VIEW_EVENTS)

    def pick(session, layer, sort, page, cmap, overlay, which, evt: gr.SelectData) -> list:
        """A tile clicked: that channel large, with its statistics."""
        if session is None:
            return [gr.skip()] * 4
        a = explorer.analysis(session)
        left_map, right_map, _, _ = ex.layer_maps(a, layer)
        _, channels, _, _ = ex.grid(left_map if which == "left" else right_map, sort, page)
        picked = ex.tile_at(evt.index[0], evt.index[1], channels)
        if picked is None:
            return [gr.skip()] * 4
        img, text = explorer.channel_view(a, layer, which, picked, cmap, overlay)
        return [which, picked, shared.png(img), text]

    @ui_errors
    def pick_left(session, layer, sort, page, cmap, overlay, evt: gr.SelectData) -> list:
        return pick(session, layer, sort, page, cmap, overlay, "left", evt)

    @ui_errors
    def pick_right(session, layer, sort, page, cmap, overlay, evt: gr.SelectData) -> list:
        return pick(session, layer, sort, page, cmap, overlay, "right", evt)

    pick_in = [shared.session, shared.layer, sort, page, cmap, overlay]
    pick_out = [side, channel, channel_image, channel_text]
    left.select(pick_left, pick_in, pick_out, api_name=False, **VIEW_EVENTS)
    right.select(pick_right, pick_in, pick_out, api_name=False, **VIEW_EVENTS)

    @ui_errors
    def show_channel(session, layer, which, number, cmap, overlay):
        if session is None:
            return gr.skip(), gr.skip()
        a = explorer.analysis(session)
        img, text = explorer.channel_view(a, layer, which, number, cmap, overlay)
        return shared.png(img), text

    channel.submit(
        show_channel,
        [shared.session, shared.layer, side, channel, cmap, overlay],
        [channel_image, channel_text],
        api_name=False,
        **VIEW_EVENTS,
    )
    return tab
