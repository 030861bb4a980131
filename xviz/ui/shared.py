"""What every tab of the app uses: the image and its analysis, the prediction, the flow / block /
layer pickers and the network map, and how a new analysis reaches the tabs.

A tab registers a :class:`Panel` for what it shows of an analysis. One event per image change
(``analysis_events``) decodes and analyses the image, sends the prediction, then renders every
panel: at once for the eager ones, and for a lazy one only while its tab is open; a lazy panel
catches up when its tab is opened. Nothing is rendered twice for one analysis.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from xviz import explorer as ex
from xviz.diagram import network_svg
from xviz.examples import all_examples
from xviz.files import FileStore
from xviz.model import FLOWS
from xviz.preprocess import ACCEPTED_FORMATS, MAX_FILE_BYTES, MAX_PIXELS
from xviz.server import SESSION_TTL_S, FilePathImage, header_markdown, ui_errors

DEFAULT_BLOCK = "block2"
# Events that run the model share one worker: one model computation at a time.
MODEL_EVENTS: dict[str, Any] = {"concurrency_id": "model", "concurrency_limit": 1}
# Events that only render a cached analysis: answered at once, outside the queue.
VIEW_EVENTS: dict[str, Any] = {"queue": False, "show_progress": "hidden"}


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
    panels: list[Panel] = field(default_factory=list)

    def png(self, image: Any) -> str:
        """A rendered image as a served PNG file (see :class:`~xviz.files.FileStore`)."""
        return str(self.files.save_png(image))


def build_header(explorer: ex.Explorer, files: FileStore) -> Shared:
    """The top of the page: image input, prediction, network map and layer pickers."""
    native = explorer.native_size
    gr.Markdown(header_markdown(explorer.model))
    session = gr.State(None, time_to_live=SESSION_TTL_S)
    tab = gr.State("activations")
    shown = gr.State({})
    with gr.Row():
        with gr.Column(scale=2):
            image = FilePathImage(
                label="Image (upload, drop, paste or webcam)",
                sources=["upload", "clipboard", "webcam"],
                type="filepath",
                height=300,
                elem_id="image-input",
            )
            size = gr.Radio(
                sorted({native, 299, 150}),
                value=native,
                label="Input size (px)",
                info=f"{native} is what these weights were trained at",
                elem_id="size",
            )
            gr.Examples(
                [[str(p)] for p in all_examples()],
                inputs=[image],
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
            prediction = gr.Label(
                num_top_classes=5, label="Prediction (top 5)", elem_id="prediction"
            )
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
        flow = gr.Radio(list(FLOWS), value="entry", label="Flow", elem_id="flow")
        block = gr.Dropdown(
            ex.blocks_of("entry"),
            value=DEFAULT_BLOCK,
            label="Block",
            allow_custom_value=True,
            elem_id="block",
        )
        layer = gr.Dropdown(
            ex.layers_of(DEFAULT_BLOCK),
            value=ex.layers_of(DEFAULT_BLOCK)[0],
            label="Layer",
            allow_custom_value=True,  # API callers may name any layer; xviz checks it
            elem_id="layer",
        )
    dark = gr.Checkbox(False, visible=False, label="dark mode")
    return Shared(
        explorer, files, session, tab, shown, image, size, prediction, target, info, netmap,
        flow, block, layer, dark,
    )  # fmt: skip


# Gradio marks dark mode (the system's preference, or ?__theme=dark) with a "dark" class.
DARK_JS = """() => [document.documentElement, document.body]
    .some((e) => e.classList.contains('dark'))"""


def on_page_load(shared: Shared, demo: gr.Blocks) -> None:
    """What happens when a page opens: the figures learn whether the page is dark."""
    demo.load(None, None, shared.dark, js=DARK_JS)


def status(analysis: Any) -> str:
    return (
        f"Analysed at {analysis.size}x{analysis.size} with `{analysis.weights}` in "
        f"{analysis.elapsed_s:.2f} s: 34 separable convs (depthwise + pointwise), 6 convs, "
        f"14 blocks, Grad-CAM of **{analysis.target_label}** for every block."
    )


def _inputs(panels: Sequence[Panel]) -> list[gr.Component]:
    """Every panel's inputs once, in order."""
    seen: dict[int, gr.Component] = {}
    for component in itertools.chain.from_iterable(p.inputs for p in panels):
        seen.setdefault(component._id, component)
    return list(seen.values())


def _outputs(panels: Sequence[Panel]) -> set[gr.Component]:
    return {c for p in panels for c in p.outputs}


def _render(
    panels: Sequence[Panel], session: ex.Session, values: dict[gr.Component, Any]
) -> dict[gr.Component, Any]:
    out: dict[gr.Component, Any] = {}
    for panel in panels:
        rendered = panel.render(session, *(values[c] for c in panel.inputs))
        out |= dict(zip(panel.outputs, rendered, strict=True))
    return out


def analysis_events(shared: Shared) -> None:
    """Wire what a new image, size or target does, once every tab has added its panels.

    The eager panels come with the analysis; then the lazy panels of the tab open by then
    (read after the analysis, so a tab opened meanwhile is served too).
    """
    explorer = shared.explorer
    eager = [p for p in shared.panels if p.tab is None]
    eager_inputs = _inputs(eager)

    @ui_errors
    def on_image(image, size, session, *values) -> Iterator[dict]:
        """Analyse a new image (or size): the prediction first, then the eager panels."""
        if image is None:
            return
        new = explorer.start(image, size)
        if session is not None and new.same_input(session):
            return  # the same picture again (Gradio reports one upload twice)
        analysis = explorer.analysis(new)
        yield {
            shared.session: new,
            shared.prediction: explorer.prediction(analysis),
            shared.target: gr.update(
                choices=explorer.target_choices(analysis), value=analysis.target_label
            ),
            shared.info: status(analysis),
        }
        yield _render(eager, new, dict(zip(eager_inputs, values, strict=True)))

    gr.on(
        [shared.image.change, shared.size.change],
        on_image,
        [shared.image, shared.size, shared.session, *eager_inputs],
        {shared.session, shared.prediction, shared.target, shared.info} | _outputs(eager),
        api_name=False,
        **MODEL_EVENTS,
    ).then(**_lazy_event(shared))

    retargeted = [p for p in eager if p.on_retarget]
    retarget_inputs = _inputs(retargeted)

    @ui_errors
    def on_target(session, label, *values) -> dict:
        if session is None:
            return {}
        session = explorer.retarget(session, label)
        analysis = explorer.analysis(session)
        given = dict(zip(retarget_inputs, values, strict=True))
        return {shared.session: session, shared.info: status(analysis)} | _render(
            retargeted, session, given
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
    def render(session, tab, shown, *values) -> dict:
        tab = opened or tab
        out: dict[gr.Component, Any] = {shared.tab: tab}
        due = [p for p in lazy if p.tab == tab]
        if session is None or not due or shown.get(tab) == session.key:
            return out
        given = dict(zip(lazy_inputs, values, strict=True))
        return out | _render(due, session, given) | {shared.shown: {**shown, tab: session.key}}

    return {
        "fn": render,
        "inputs": [shared.session, shared.tab, shared.shown, *lazy_inputs],
        "outputs": {shared.tab, shared.shown} | _outputs(lazy),
        "api_name": False,
        **MODEL_EVENTS,
    }


def on_tab_open(shared: Shared, tab: gr.Tab, tab_id: str) -> None:
    """Remember which tab is open, and render its lazy panels for the current analysis."""
    tab.select(**_lazy_event(shared, opened=tab_id))
