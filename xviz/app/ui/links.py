"""Links to a view (``?example=coffee&size=150&tab=activations&layer=...&channel=9``): what
a link may ask for, checked (a link is attacker-made), and the first screen a page opens on."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from xviz.app import explorer as ex
from xviz.app import views
from xviz.app.server import ui_errors
from xviz.app.ui.new_analysis import lazy_event, panel_outputs, render_panels
from xviz.app.ui.shared import MODEL_EVENTS, Shared, status
from xviz.checks import whole_number
from xviz.data.gallery import example_names
from xviz.errors import AnalysisError
from xviz.model.xception import BLOCKS
from xviz.render.network_map import network_map_html

# Gradio marks dark mode (the system's preference, or ?__theme=dark) with a "dark" class.
DARK_JS = """() => [document.documentElement, document.body]
    .some((e) => e.classList.contains('dark'))"""


DEFAULT_EXAMPLE = "coffee"


@dataclass(frozen=True)
class ViewParams:
    """The view a link asks for: ``?example=coffee&size=299&tab=activations&layer=...``."""

    example: str = DEFAULT_EXAMPLE
    size: int | None = None
    tab: str = "activations"
    layer: str | None = None
    side: str = "right"
    channel: int | None = None

    @classmethod
    def parse(cls, query: dict[str, str], tabs: Sequence[str]) -> ViewParams:
        """The parameters that make sense; the others are ignored (a link is attacker-made)."""
        names = example_names()
        example = query.get("example", DEFAULT_EXAMPLE)
        size = query.get("size", "")
        layer = query.get("layer")
        side = {"depthwise": "left", "pointwise": "right", "left": "left", "right": "right"}
        channel = query.get("channel", "")
        return cls(
            example=example if example in names else DEFAULT_EXAMPLE,
            size=_number(size, ex.MIN_SIZE, ex.MAX_SIZE),
            tab=query.get("tab") if query.get("tab") in tabs else "activations",
            layer=layer if isinstance(layer, str) and layer in ALL_LAYERS else None,
            side=side.get(query.get("side", "right"), "right"),
            channel=_number(channel, 0, None),
        )

    def query(self) -> str:
        parts = {"example": self.example, "size": self.size, "tab": self.tab}
        parts |= {"layer": self.layer, "side": self.side, "channel": self.channel}
        shown = {k: ("pointwise" if v == "right" else "depthwise") if k == "side" else v
                 for k, v in parts.items() if v is not None}  # fmt: skip
        return "?" + urllib.parse.urlencode(shown)


def _number(text: Any, low: int, high: int | None) -> int | None:
    """A link's whole number within bounds, or None: anything else in a link is ignored."""
    try:
        return whole_number(text, "A link's number", low, high, text=True)
    except AnalysisError:
        return None


ALL_LAYERS = frozenset(name for block in BLOCKS for name in views.layers_of(block))


def on_page_load(shared: Shared, demo: gr.Blocks) -> None:
    """A page opens on an analysed example (a link's view, else coffee.jpg), read from the
    analysis cache; the default example is analysed at start-up, so a warm server answers at
    once. The figures learn whether the page is dark."""
    explorer = shared.explorer
    eager = [p for p in shared.panels if p.tab is None]
    tab_ids = [t.id for t in shared.tabs.children] if shared.tabs else ["activations"]
    names = example_names()
    threading.Thread(
        target=lambda: explorer.analysis(explorer.start(names[DEFAULT_EXAMPLE])),
        name="xviz-first-screen",
        daemon=True,
    ).start()

    @ui_errors
    def load(dark: bool, request: gr.Request) -> dict:
        query = dict(request.query_params) if request else {}
        params = ViewParams.parse(query, tab_ids)
        asked_tab = query.get("tab") == params.tab
        size = params.size or explorer.native_size
        session = explorer.start(str(names[params.example]), size)
        analysis = explorer.analysis(session)
        layer = params.layer or shared.layer.value
        block = layer.split("_")[0]
        values = {c: c.value for p in eager for c in p.inputs}
        values |= {shared.layer: layer, shared.dark: bool(dark)}
        if params.channel is not None:
            values |= {shared.open_request: (params.side, params.channel)}
        return {
            shared.dark: bool(dark),
            shared.session: session,
            shared.image: str(names[params.example]),
            shared.size: size,
            shared.prediction: views.prediction(analysis),
            shared.target: gr.update(
                choices=views.target_choices(analysis), value=analysis.target_label
            ),
            shared.info: status(analysis),
            shared.flow: views.flow_of(block),
            shared.block: gr.update(choices=views.blocks_of(views.flow_of(block)), value=block),
            shared.layer: gr.update(choices=views.layers_of(block), value=layer),
            shared.netmap: network_map_html(block, size),
            # Only a link's tab: the visitor may have opened another while this loaded.
            shared.tabs: gr.Tabs(selected=params.tab) if asked_tab else gr.skip(),
            shared.tab: params.tab if asked_tab else gr.skip(),
        } | render_panels(shared, eager, session, values)

    outputs = {
        shared.dark, shared.session, shared.image, shared.size, shared.prediction,
        shared.target, shared.info, shared.flow, shared.block, shared.layer, shared.netmap,
        shared.tabs, shared.tab,
    } | panel_outputs(eager)  # fmt: skip
    demo.load(
        load,
        shared.dark,
        outputs,
        js=DARK_JS,
        api_name=False,
        show_progress_on=[shared.prediction],  # not the tabs (see ``quiet_progress``)
        show_progress="minimal",
        **MODEL_EVENTS,
    ).then(**lazy_event(shared))
