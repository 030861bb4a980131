"""What every tab of the app uses: the image and its analysis, the prediction, the flow / block /
layer pickers and the network map, and how a new analysis reaches the tabs.

A tab registers a :class:`Panel` for what it shows of an analysis. One event per image change
(``analysis_events``) decodes and analyses the image, sends the prediction, then renders every
panel: at once for the eager ones, and for a lazy one only while its tab is open; a lazy panel
catches up when its tab is opened. Nothing is rendered twice for one analysis.
"""

from __future__ import annotations

import itertools
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from xviz import explorer as ex
from xviz.diagram import network_map_html
from xviz.examples import all_examples, example_label, example_names
from xviz.files import FileStore
from xviz.model import FLOWS
from xviz.preprocess import ACCEPTED_FORMATS, MAX_FILE_BYTES, MAX_PIXELS
from xviz.server import SESSION_TTL_S, FilePathImage, ui_errors, weights_details, weights_line
from xviz.ui.js import BLOCK_CLICKS
from xviz.warmup import app_sizes

DEFAULT_BLOCK = "block2"
# Events that run the model share one worker: one model computation at a time.
MODEL_EVENTS: dict[str, Any] = {"concurrency_id": "model", "concurrency_limit": 1}
# Events that only render a cached analysis: answered at once, outside the queue.
# Not API endpoints (``api_name=False``): the HTTP API is the five documented ones.
VIEW_EVENTS: dict[str, Any] = {"queue": False, "show_progress": "hidden", "api_name": False}
# Drawing a tab's panels of an analysis: queued (it streams a panel at a time) but not behind
# the model's events. Should the analysis have left the cache, recomputing it still waits for
# the model, whose computations all run on one thread (xviz.worker).
RENDER_EVENTS: dict[str, Any] = {
    "concurrency_id": "render",
    "concurrency_limit": 4,
    "show_progress": "hidden",
}


@dataclass(frozen=True)
class Panel:
    """What one tab shows of an analysis.

    ``render(session, *inputs)`` returns the values of ``outputs``. A panel with a ``tab`` is
    lazy: it is rendered only while that tab is open, and when the tab opens.
    """

    render: Callable[..., Sequence[Any]]
    inputs: Sequence[gr.Component]
    outputs: Sequence[gr.Component]
    tab: str | None = None
    on_retarget: bool = False  # rendered again when the target class changes
    # Lazy and slow to draw: drawn in the background once an analysis is shown, so that
    # opening its tab finds it ready (see ``Prefetched``).
    prefetch: bool = False
    # Lazy, drawn ahead, and then sent to the page while its tab is hidden: the page keeps
    # the value until the tab opens and mounts it (Gradio 6.31 mounts a hidden tab's children
    # only then, ``render_children`` notwithstanding), so opening the tab needs no round trip.
    # For small pictures only: every new analysis sends it.
    push: bool = False


class Prefetched:
    """Lazy panels drawn ahead in a background thread, kept by panel, analysis and inputs
    (a few; the oldest go first). A tab that opens takes its panel from here, waiting for it
    if it is still being drawn, instead of drawing it again."""

    def __init__(self, keep: int = 16) -> None:
        self._keep = keep
        self._done: OrderedDict[tuple, Future] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xviz-prefetch")

    @staticmethod
    def key(panel: Panel, session: ex.Session, values: Sequence[Any]) -> tuple:
        return (id(panel), session.key, repr(values))

    def start(self, panel: Panel, session: ex.Session, values: Sequence[Any]) -> None:
        key = self.key(panel, session, values)
        with self._lock:
            if key in self._done:
                return
            self._done[key] = self._pool.submit(panel.render, session, *values)
            while len(self._done) > self._keep:
                self._done.popitem(last=False)

    def render(self, panel: Panel, session: ex.Session, values: Sequence[Any]) -> Sequence[Any]:
        with self._lock:
            ahead = self._done.get(self.key(panel, session, values))
        if ahead is not None and ahead.exception() is None:  # (waits for it to be drawn)
            return ahead.result()
        # Not drawn ahead, or that failed: drawn here, where an error reaches the page.
        return panel.render(session, *values)


@dataclass
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
        """A rendered image as a served PNG file (see :class:`~xviz.files.FileStore`)."""
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
            tour = gr.Row(elem_id="tour")  # the guided tour's buttons (xviz/ui/guide.py)
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
                    ex.blocks_of("entry"),
                    value=DEFAULT_BLOCK,
                    label="Block",
                    allow_custom_value=True,
                    elem_id="block",
                    min_width=120,
                )
                layer = gr.Dropdown(
                    ex.layers_of(DEFAULT_BLOCK),
                    value=ex.layers_of(DEFAULT_BLOCK)[0],
                    label="Layer",
                    allow_custom_value=True,  # API callers may name any layer; xviz checks it
                    elem_id="layer",
                    min_width=170,
                )
    dark = gr.Checkbox(False, visible=False, label="dark mode")
    quiet = gr.HTML(visible=False, label="no progress shown")
    return Shared(
        explorer, files, session, tab, shown, image, size, prediction, target, info, netmap,
        flow, block, layer, dark, link, copy, gr.State(None), quiet, main, tour,
    )  # fmt: skip


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
            size=int(size) if size.isdigit() and ex.MIN_SIZE <= int(size) <= ex.MAX_SIZE else None,
            tab=query.get("tab") if query.get("tab") in tabs else "activations",
            layer=layer if isinstance(layer, str) and layer in ALL_LAYERS else None,
            side=side.get(query.get("side", "right"), "right"),
            channel=int(channel) if channel.isdigit() else None,
        )

    def query(self) -> str:
        parts = {"example": self.example, "size": self.size, "tab": self.tab}
        parts |= {"layer": self.layer, "side": self.side, "channel": self.channel}
        shown = {k: ("pointwise" if v == "right" else "depthwise") if k == "side" else v
                 for k, v in parts.items() if v is not None}  # fmt: skip
        return "?" + urllib.parse.urlencode(shown)


ALL_LAYERS = frozenset(name for block in ex.BLOCKS for name in ex.layers_of(block))


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
            shared.prediction: explorer.prediction(analysis),
            shared.target: gr.update(
                choices=explorer.target_choices(analysis), value=analysis.target_label
            ),
            shared.info: status(analysis),
            shared.flow: ex.flow_of(block),
            shared.block: gr.update(choices=ex.blocks_of(ex.flow_of(block)), value=block),
            shared.layer: gr.update(choices=ex.layers_of(block), value=layer),
            shared.netmap: network_map_html(block, size),
            # Only a link's tab: the visitor may have opened another while this loaded.
            shared.tabs: gr.Tabs(selected=params.tab) if asked_tab else gr.skip(),
            shared.tab: params.tab if asked_tab else gr.skip(),
        } | _render(shared, eager, session, values)

    outputs = {
        shared.dark, shared.session, shared.image, shared.size, shared.prediction,
        shared.target, shared.info, shared.flow, shared.block, shared.layer, shared.netmap,
        shared.tabs, shared.tab,
    } | _outputs(eager)  # fmt: skip
    demo.load(
        load,
        shared.dark,
        outputs,
        js=DARK_JS,
        api_name=False,
        show_progress_on=[shared.prediction],  # not the tabs (see ``quiet_progress``)
        show_progress="minimal",
        **MODEL_EVENTS,
    ).then(**_lazy_event(shared))


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


def arm_event(explorer: ex.Explorer) -> dict[str, Any]:
    """The instant first step of a run that Cancel can stop (``button.click(**arm_event(e))
    .then(run, ...)``): from the click on, a Cancel reaches the run even while it waits in the
    queue behind other visitors' (see :meth:`Explorer.arm`)."""

    def arm(request: gr.Request) -> None:
        explorer.arm(request.session_hash if request else "")

    return {"fn": arm, "inputs": None, "outputs": None, **VIEW_EVENTS}


DEVICE_NAMES = {"cpu": "the CPU", "cuda": "the GPU", "mps": "the GPU (MPS)"}


def status(analysis: Any) -> str:
    """The line under the prediction: what was analysed, with what, where and how fast."""
    return (
        f"Analysed at {analysis.size}x{analysis.size} with `{analysis.weights}` on "
        f"{DEVICE_NAMES.get(analysis.device, analysis.device)} in {analysis.elapsed_s:.2f} s; "
        f"Grad-CAM explains **{analysis.target_label}**."
    )


def _pushed(tab: str) -> str:
    """The key of ``shown`` that says which analysis the pushed panels of ``tab`` show."""
    return f"{tab}/pushed"


def _inputs(panels: Sequence[Panel]) -> list[gr.Component]:
    """Every panel's inputs once, in order."""
    seen: dict[int, gr.Component] = {}
    for component in itertools.chain.from_iterable(p.inputs for p in panels):
        seen.setdefault(component._id, component)
    return list(seen.values())


def _outputs(panels: Sequence[Panel]) -> set[gr.Component]:
    return {c for p in panels for c in p.outputs}


def _render(
    shared: Shared,
    panels: Sequence[Panel],
    session: ex.Session,
    values: dict[gr.Component, Any],
) -> dict[gr.Component, Any]:
    out: dict[gr.Component, Any] = {}
    for panel in panels:
        given = [values[c] for c in panel.inputs]
        rendered = (
            shared.prefetched.render(panel, session, given)
            if panel.prefetch or panel.push
            else (panel.render(session, *given))
        )
        out |= dict(zip(panel.outputs, rendered, strict=True))
    return out


def _streamed(
    shared: Shared,
    panels: Sequence[Panel],
    session: ex.Session,
    given: dict[gr.Component, Any],
    last: dict[gr.Component, Any],
) -> Iterator[dict[gr.Component, Any]]:
    """A panel at a time, each on the page as soon as it is drawn; ``last`` comes with the
    last one (alone if there are none)."""
    for panel in panels[:-1]:
        yield _render(shared, [panel], session, given)
    yield _render(shared, panels[-1:], session, given) | last


def analysis_events(shared: Shared) -> None:
    """Wire what a new image, size or target does, once every tab has added its panels.

    The eager panels come with the analysis; then the lazy panels of the tab open by then
    (read after the analysis, so a tab opened meanwhile is served too).
    """
    explorer = shared.explorer
    eager = [p for p in shared.panels if p.tab is None]
    lazy = [p for p in shared.panels if p.tab is not None]
    eager_inputs = _inputs([*eager, *lazy])

    @ui_errors
    def on_image(image, size, session, tab, shown, *values) -> Iterator[dict]:
        """Analyse a new image (or size): the prediction first, then the open tab's own
        panels, then the eager ones; the other tabs' panels are drawn ahead in the
        background."""
        # Nothing to do: one unchanged output (yielding nothing would clear every output).
        unchanged = {shared.session: gr.skip()}
        if image is None:
            yield unchanged
            return
        new = explorer.start(image, size)
        if session is not None and new.same_input(session):
            yield unchanged  # the same picture again (Gradio reports one upload twice)
            return
        analysis = explorer.analysis(new)
        yield {
            shared.session: new,
            shared.prediction: explorer.prediction(analysis),
            shared.target: gr.update(
                choices=explorer.target_choices(analysis), value=analysis.target_label
            ),
            shared.info: status(analysis),
        }
        given = dict(zip(eager_inputs, values, strict=True))
        due = [p for p in lazy if p.tab == tab]
        if due:  # a tab with panels of its own is open: they are what the visitor sees
            yield from _streamed(shared, due, new, given, {shared.shown: {**shown, tab: new.key}})
        pushed = [p for p in lazy if p.push and p not in due]
        for panel in pushed:  # drawn on another thread while the eager panels are drawn here
            shared.prefetched.start(panel, new, [given[c] for c in panel.inputs])
        yield _render(shared, eager, new, given)
        for panel in lazy:
            if panel.prefetch and panel not in due:
                shared.prefetched.start(panel, new, [given[c] for c in panel.inputs])
        if pushed:  # after what shows, as soon as it is drawn
            now = {**shown, **({tab: new.key} if due else {})}
            now |= {_pushed(p.tab): new.key for p in pushed}
            yield _render(shared, pushed, new, given) | {shared.shown: now}

    gr.on(
        [shared.image.change, shared.size.change],
        on_image,
        [shared.image, shared.size, shared.session, shared.tab, shared.shown, *eager_inputs],
        {shared.session, shared.prediction, shared.target, shared.info, shared.shown}
        | _outputs(eager)
        | _outputs(lazy),
        api_name=False,
        # Progress on the prediction alone, and minimal (a timer in its corner, no overlay):
        # a timer on each of some 20 outputs repaints the page every frame, and on a small
        # machine the browser then takes the CPU the analysis needs. Measured on 2 cores at
        # 299 (bench/browser.py): the prediction came 0.05-0.1 s sooner than with the overlay.
        show_progress_on=[shared.prediction],
        show_progress="minimal",
        **MODEL_EVENTS,
    ).then(**_lazy_event(shared))

    retargeted = [p for p in eager if p.on_retarget]
    retarget_inputs = _inputs(retargeted)

    @ui_errors
    def on_target(session, label, *values) -> dict:
        if session is None:
            return {shared.session: gr.skip()}
        session = explorer.retarget(session, label)
        analysis = explorer.analysis(session)
        given = dict(zip(retarget_inputs, values, strict=True))
        return {shared.session: session, shared.info: status(analysis)} | _render(
            shared, retargeted, session, given
        )

    shared.target.input(
        on_target,
        [shared.session, shared.target, *retarget_inputs],
        {shared.session, shared.info} | _outputs(retargeted),
        api_name=False,
        **MODEL_EVENTS,
    ).then(**_lazy_event(shared))


def _lazy_event(shared: Shared, opened: str | None = None) -> dict[str, Any]:
    """The event that renders the lazy panels of the open tab (``opened``, or the tab the
    session is on) unless they already show the session's analysis."""
    lazy = [p for p in shared.panels if p.tab is not None]
    lazy_inputs = _inputs(lazy)

    @ui_errors
    def render(session, tab, shown, *values) -> Iterator[dict]:
        tab = opened or tab
        out: dict[gr.Component, Any] = {shared.tab: tab}
        due = [p for p in lazy if p.tab == tab]
        if session is None or not due or shown.get(tab) == session.key:
            yield out
            return
        given = dict(zip(lazy_inputs, values, strict=True))
        # What a new analysis pushed to the hidden tab is on the page already.
        due = [p for p in due if not (p.push and shown.get(_pushed(tab)) == session.key)]
        yield from _streamed(
            shared, due, session, given, out | {shared.shown: {**shown, tab: session.key}}
        )

    return {
        "fn": render,
        "inputs": [shared.session, shared.tab, shared.shown, *lazy_inputs],
        "outputs": {shared.tab, shared.shown} | _outputs(lazy),
        "api_name": False,
        **RENDER_EVENTS,
    }


def on_tab_open(shared: Shared, tab: gr.Tab, tab_id: str) -> None:
    """Remember which tab is open, and render its lazy panels for the current analysis."""
    tab.select(**_lazy_event(shared, opened=tab_id))
