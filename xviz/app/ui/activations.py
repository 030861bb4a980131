"""The Activations tab: a layer's two channel grids (depthwise | pointwise) and one channel large.

The grids are HTML: the grid picture, a button over each tile (click, or Tab and Enter), and a
colourbar with numbers. Every change of flow, block, layer, page, sort, colormap, scale or
underlay re-renders them from the cached analysis in one round trip, outside the model queue.
A picked tile opens the channel panel (``xviz/app/ui/channel.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from xviz.app import views
from xviz.app.server import reported, ui_errors
from xviz.app.ui import channel as channel_panel
from xviz.app.ui.js import COPY_LINK, TILE_CLICKS
from xviz.app.ui.links import DEFAULT_EXAMPLE, ViewParams
from xviz.app.ui.panels import Panel
from xviz.app.ui.shared import VIEW_EVENTS, Shared
from xviz.checks import whole_number
from xviz.engine.cache import BoundedCache
from xviz.methods.trace import linked_channels
from xviz.render import html
from xviz.render.network_map import network_map_html

CMAPS = [views.AUTO_CMAP, "viridis", "inferno", "magma", "cividis", "coolwarm"]
SCALE_CHOICES = [("each tile its own", "channel"), ("one for all tiles", "shared")]
LINKED = 8  # strongest pointwise weights highlighted in the other grid
_CACHED_VIEWS = 64


@dataclass(frozen=True)
class Shown:
    """A rendered grid: its served picture and what the HTML needs to describe it."""

    src: str
    size: tuple[int, int]
    title: str
    grid: views.Grid
    labels: tuple[str, ...]


@dataclass
class Activations:
    sort: gr.Radio
    cmap: gr.Dropdown
    scale: gr.Radio
    overlay: gr.Slider
    page: gr.Number
    left: gr.HTML
    right: gr.HTML
    side: gr.Radio
    channel: gr.Number
    panel: channel_panel.ChannelPanel


def tile_labels(m: Any, g: views.Grid) -> tuple[str, ...]:
    """What each tile of ``g`` (a grid of map ``m``) says to a screen reader and a tooltip."""
    return tuple(
        f"{m.name} channel {c}: mean {html.number(m.mean[c])}, max {html.number(m.max[c])}, "
        f"min {html.number(m.min[c])}; colours from {html.number(lo)} to {html.number(hi)}"
        for c, lo, hi in zip(g.channels, g.low, g.high, strict=True)
    )


def build(shared: Shared) -> Activations:
    """The tab's layout and events; its grids are a panel of every new analysis."""
    explorer = shared.explorer
    with gr.Row(equal_height=True, elem_id="grid-nav"):
        prev_btn = gr.Button("◀ previous 64", size="sm", min_width=90, scale=0)
        page = gr.Number(
            1,
            label="Page of 64 channels",
            show_label=False,
            container=False,
            precision=0,
            elem_id="page",
            min_width=70,
            scale=0,
        )
        next_btn = gr.Button("next 64 ▶", size="sm", elem_id="next-page", min_width=90, scale=0)
    display = gr.Accordion("Display: order, colours, scale, photo under the maps", open=False)
    with display, gr.Row():
        sort = gr.Radio(
            list(views.SORTS),
            value="index",
            label="Order of the channels",
            info="by number, or by mean, maximum or share of positive pixels",
            elem_id="sort",
        )
        cmap = gr.Dropdown(
            CMAPS,
            value=views.AUTO_CMAP,
            label="Colours",
            info="auto: blue-red around 0 when a map has negative values",
            elem_id="cmap",
        )
        scale = gr.Radio(
            SCALE_CHOICES,
            value="channel",
            label="Colour scale",
            info="own range: each tile shows its pattern; one scale: tiles compare",
            elem_id="scale",
        )
        overlay = gr.Slider(
            0,
            0.9,
            value=0,
            step=0.1,
            label="Photo under the maps",
            info="0: maps only; more: see where in the photo a channel fires",
        )
    with gr.Row(equal_height=False):
        left = gr.HTML(
            js_on_load=TILE_CLICKS, elem_id="depthwise-grid", label="Left grid", min_width=300
        )
        right = gr.HTML(
            js_on_load=TILE_CLICKS, elem_id="pointwise-grid", label="Right grid", min_width=300
        )
    with gr.Row():
        side = gr.Radio(
            [("depthwise / conv (left)", "left"), ("pointwise / block (right)", "right")],
            value="left",
            label="Map of the channel shown large",
            info="click a tile instead: it picks both",
        )
        number = gr.Number(
            0, label="Channel shown large", precision=0, minimum=0, info="type a number, Enter"
        )
    panel = channel_panel.build(shared, sort, page)

    cache = BoundedCache(max_entries=_CACHED_VIEWS, size_of=lambda _: 0)

    def rendered(session, layer, sort, page, cmap, scale, overlay) -> tuple[Shown, Shown, Any]:
        """Both grids rendered once per view (a highlight changes only their HTML)."""
        key = (session.key, layer, sort, page, cmap, scale, overlay)
        cached = cache.get(key)
        if cached is not None:
            return cached
        a = explorer.layer(session, layer)  # its maps: no need to wait for the Grad-CAMs
        v = views.layer_view(a, layer, sort, page, cmap, scale, overlay)
        both = []
        for g, title in ((v.left, v.left_title), (v.right, v.right_title)):
            path = shared.png(g.image)
            m = a.map(g.map_name)
            both.append(Shown(path, g.image.size, title, g, tile_labels(m, g)))
        entry = (both[0], both[1], v)
        cache.put(key, entry)
        return entry

    def grid_html(s: Shown, selected: int | None, linked: list[int]) -> str:
        g = s.grid
        bar = html.grid_colorbar(g.cmap, g.low, g.high, g.signed, g.scale == "shared")
        return html.grid_html(
            f"gradio_api/file={s.src}",
            s.size,
            s.title,
            [int(c) for c in g.channels],
            s.labels,
            bar,
            (views.TILE, views.PAD, views.COLUMNS),
            selected=selected,
            linked=linked,
            alt=f"{g.map_name}: channels {g.channels[0]}-{g.channels[-1]} of page {g.page}",
        )

    def both_grids(
        session, layer, sort, page, cmap, scale, overlay, which, chosen, dark=None
    ) -> list:
        """Both grids of ``layer`` (``chosen`` of side ``which`` outlined) and the page."""
        lshown, rshown, v = rendered(session, layer, sort, page, cmap, scale, overlay)
        chosen = None if chosen is None else int(chosen)
        linked = linked_channels(explorer.model, layer, which, chosen, LINKED)
        on_left, on_right = (chosen, None) if which == "left" else (None, chosen)
        return [
            grid_html(lshown, on_left, linked if which == "right" else []),
            grid_html(rshown, on_right, linked if which == "left" else []),
            v.page,
        ]

    view_in = [shared.layer, sort, page, cmap, scale, overlay, side, number, shared.dark]
    view_out = [left, right, page]

    def analysed(session, *args) -> list:
        """A new analysis: fresh grids; the panel waits for a tile, unless a link names one."""
        *view_args, request = args
        if request is None:
            *shown, which, _, dark = view_args
            return [
                gr.skip(),
                gr.skip(),
                *both_grids(session, *shown, which, None),
                *panel.cleared(),
            ]
        layer, sort, page, cmap, scale, overlay, _, _, dark = view_args
        return pick(session, layer, sort, page, cmap, scale, overlay, *request, dark)

    shared.panels.append(
        Panel(analysed, [*view_in, shared.open_request], [side, number, *view_out, *panel.outputs])
    )

    @ui_errors
    def change_view(session, *args):
        if session is None:
            return [gr.skip()] * len(view_out)
        return both_grids(session, *args)

    @ui_errors
    def change_block(session, block, *rest):
        """A block picked (list or map): its first layer, the map, the grids, in one answer."""
        layers = views.layers_of(block)
        size = session.size if session is not None else explorer.native_size
        grids = both_grids(session, layers[0], *rest) if session is not None else [gr.skip()] * 3
        return [
            gr.update(value=views.flow_of(block)),
            gr.update(choices=views.blocks_of(views.flow_of(block)), value=block),
            gr.update(choices=layers, value=layers[0]),
            network_map_html(block, size),
            *grids,
            *panel.cleared(),
        ]

    @ui_errors
    def change_flow(session, flow, *rest):
        return change_block(session, views.blocks_of(flow)[0], *rest)

    after_layer = view_in[1:]
    block_out = [shared.flow, shared.block, shared.layer, shared.netmap, *view_out]
    block_out += panel.outputs
    shared.flow.input(
        change_flow, [shared.session, shared.flow, *after_layer], block_out, **VIEW_EVENTS
    )
    shared.block.select(
        change_block, [shared.session, shared.block, *after_layer], block_out, **VIEW_EVENTS
    )

    @ui_errors
    def map_clicked(
        session, sort, page, cmap, scale, overlay, which, chosen, dark, evt: gr.EventData
    ):
        rest = (sort, page, cmap, scale, overlay, which, chosen, dark)
        return change_block(session, reported(evt, "block"), *rest)

    shared.netmap.click(map_clicked, [shared.session, *after_layer], block_out, **VIEW_EVENTS)

    @ui_errors
    def change_layer(session, *args):
        if session is None:
            return [gr.skip()] * (len(view_out) + len(panel.outputs))
        return [*both_grids(session, *args), *panel.cleared()]

    shared.layer.select(
        change_layer, [shared.session, *view_in], [*view_out, *panel.outputs], **VIEW_EVENTS
    )
    for component in (sort, scale):
        component.input(change_view, [shared.session, *view_in], view_out, **VIEW_EVENTS)

    @ui_errors
    def restyle(session, shown, *args):
        """Colours or underlay changed: the grids, and the channel shown large if any."""
        if session is None:
            return [gr.skip()] * (len(view_out) + 1)
        _, _, _, cmap, _, overlay, _, _, _ = args
        picture = gr.skip()
        if shown is not None:
            layer, which, chosen, _ = shown
            picture = panel.picture(panel.view(session, layer, which, chosen, cmap, overlay))
        return [*both_grids(session, *args), picture]

    # A dropdown's "input" fires twice for one pick and a slider's at every step of a drag:
    # "select" and "release" fire once.
    for event in (cmap.select, overlay.release):
        event(
            restyle,
            [shared.session, panel.shown, *view_in],
            [*view_out, panel.picture_output],
            **VIEW_EVENTS,
        )
    page.submit(change_view, [shared.session, *view_in], view_out, **VIEW_EVENTS)

    def step(delta: int) -> Any:
        @ui_errors
        def stepped(session, layer, sort, page, *rest):
            turned = max(1, whole_number(page or 1, "The page", text=True) + delta)
            if session is None:
                return [gr.skip(), gr.skip(), turned]
            return change_view(session, layer, sort, turned, *rest)

        return stepped

    for button, delta in ((prev_btn, -1), (next_btn, 1)):
        button.click(step(delta), [shared.session, *view_in], view_out, **VIEW_EVENTS)

    @ui_errors
    def pick(session, layer, sort, page, cmap, scale, overlay, which, chosen, dark):
        """A channel picked: the grids outline it, the panel shows it."""
        if session is None:
            return [gr.skip()] * (2 + len(view_out) + len(panel.outputs))
        opened = panel.open(session, layer, which, chosen, cmap, overlay, dark)
        chosen = panel.shown_in(opened)[2]  # the channel shown, checked by the panel
        grids = both_grids(session, layer, sort, page, cmap, scale, overlay, which, chosen)
        return [which, chosen, *grids, *opened]

    pick_out = [side, number, *view_out, *panel.outputs]

    def on_tile(which: str) -> Any:
        @ui_errors
        def clicked(
            session, layer, sort, page, cmap, scale, overlay, side, number, dark,
            evt: gr.EventData,
        ):  # fmt: skip
            view = (layer, sort, page, cmap, scale, overlay)
            return pick(session, *view, which, reported(evt, "channel"), dark)

        return clicked

    for grid, which in ((left, "left"), (right, "right")):
        grid.click(on_tile(which), [shared.session, *view_in], pick_out, **VIEW_EVENTS)

    @ui_errors
    def typed(session, *args):
        return pick(session, *args)

    for component in (number.submit, side.input):
        component(typed, [shared.session, *view_in], pick_out, **VIEW_EVENTS)

    @ui_errors
    def follow(
        session, shown, layer, sort, page, cmap, scale, overlay, side, number, dark,
        evt: gr.EventData,
    ):  # fmt: skip
        """A bar of a chart clicked: a depthwise channel to follow."""
        if session is None or shown is None:
            return [gr.skip()] * len(pick_out)
        view = (layer, sort, page, cmap, scale, overlay)
        if reported(evt, "chart") == channel_panel.TRACE_CHART:  # open that depthwise channel
            return pick(session, *view, "left", reported(evt, "channel"), dark)
        # The weights chart: the same channel, its steps through that depthwise channel.
        _, which, chosen, _ = shown
        steps = panel.steps(session, layer, which, chosen, reported(evt, "channel"), dark)
        partner = panel.shown_in(steps)[3]
        grids = both_grids(session, *view, which, chosen)
        if which == "right":  # the followed depthwise channel outlined in the left grid
            grids[0] = grid_html(rendered(session, *view)[0], partner, [])
        return [gr.skip(), gr.skip(), *grids, *steps]

    panel.bridge.click(follow, [shared.session, panel.shown, *view_in], pick_out, **VIEW_EVENTS)
    channel_panel.wire_trace(panel, cmap, overlay)

    @ui_errors
    def link(session, size, tab, layer, shown) -> Any:
        """The query of this view (the page adds its own address and copies it)."""
        if session is None:
            return gr.skip()
        which, chosen = (shown[1], shown[2]) if shown and shown[0] == layer else ("right", None)
        query = ViewParams(
            session.example or DEFAULT_EXAMPLE, session.size, tab, layer, which, chosen
        ).query()
        return gr.update(value=query, visible=True)

    shared.copy.click(
        link,
        [shared.session, shared.size, shared.tab, shared.layer, panel.shown],
        shared.link,
        **VIEW_EVENTS,
    ).then(None, shared.link, shared.link, js=COPY_LINK, api_name=False)
    return Activations(sort, cmap, scale, overlay, page, left, right, side, number, panel)
