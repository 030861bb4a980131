"""The channel panel (in Activations): one channel large, the separable conv that makes it step
by step, and how one of its values is made, term by term.

- The enlarged map: click a position (or arrow keys and Enter) to trace its value.
- Step by step, for a separable conv: input channel -> its 3x3 depthwise filter -> depthwise
  output -> the pointwise weights (a bar per depthwise channel: click one to follow it) ->
  pointwise output (``xviz.methods.trace.sepconv_steps``).
- The trace of the clicked value (``xviz.explain_value``): the 3x3 window times the filter for a
  depthwise value; the largest weight x depthwise-value contributions of a pointwise value,
  where a bar opens that depthwise channel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from xviz.app import views
from xviz.app.server import reported, ui_errors
from xviz.app.ui import responds
from xviz.app.ui.js import PLOT_CLICKS, POSITION_CLICKS
from xviz.app.ui.responds import RespondsPanel
from xviz.app.ui.shared import VIEW_EVENTS, Shared
from xviz.methods.trace import explain_value, sepconv_steps
from xviz.model.xception import SEPCONV_BLOCK
from xviz.render import html
from xviz.render.trace_figures import steps_figures, trace_figure

TRACE_CHART = "trace-chart"
WEIGHTS_CHART = "steps-weights"
HINT = "Click a tile of either grid to see that channel large and how it is computed."


@dataclass
class ChannelPanel:
    """The panel's components and what the Activations events ask of it.

    ``outputs`` is every component the panel changes; ``cleared``, ``open``, ``steps`` and
    ``trace`` return values for all of them, in that order (``gr.skip()`` for what stays).
    """

    picture_output: gr.HTML
    stats: gr.Markdown
    steps_row: gr.Row
    step_plots: list[gr.Plot]
    trace_box: gr.Column
    trace_plot: gr.Plot
    trace_text: gr.Markdown
    shown: gr.State  # (layer, side, channel, partner) of the panel, or None
    bridge: gr.HTML
    shared: Shared
    responds: RespondsPanel
    respond: Callable[..., list[Any]]  # values of responds.outputs for a channel just opened

    @property
    def outputs(self) -> list[gr.Component]:
        return [
            self.picture_output, self.stats, self.steps_row, *self.step_plots, self.trace_box,
            self.trace_plot, self.trace_text, self.shown, *self.responds.outputs,
        ]  # fmt: skip

    def shown_in(self, values: list[Any]) -> tuple:
        """What the panel shows, (layer, side, channel, partner), from its output values."""
        return values[self.outputs.index(self.shown)]

    def values(self, given: dict) -> list[Any]:
        """``given`` ({component: value}) in the order of ``outputs``; the rest stays."""
        return [given.get(c, gr.skip()) for c in self.outputs]

    def cleared(self) -> list[Any]:
        return self.values(
            {
                self.picture_output: "",
                self.stats: HINT,
                self.steps_row: gr.update(visible=False),
                self.trace_box: gr.update(visible=False),
                self.trace_text: "",
                self.shown: None,
                **dict.fromkeys(self.responds.outputs),
            }
        )

    def view(self, session, layer, side, channel, cmap, overlay) -> views.ChannelView:
        explorer = self.shared.explorer
        analysis = explorer.layer(session, layer)
        return views.channel_view(analysis, layer, side, channel, cmap, overlay)

    def picture(self, view: views.ChannelView, mark: tuple[int, int] | None = None) -> str:
        """The enlarged channel as clickable HTML with its colourbar."""
        bar = html.colorbar_html(
            view.cmap,
            html.range_ticks(view.low, view.high, view.signed),
            f"activation of {view.map_name}, channel {view.channel}",
        )
        h, w = view.shape
        return html.channel_html(
            f"gradio_api/file={self.shared.png(view.image)}",
            view.image.size,
            view.shape,
            f"{view.map_name}, channel {view.channel}, {h}x{w}",
            bar,
            mark,
        )

    def open(self, session, layer, side, channel, cmap, overlay, dark) -> list[Any]:
        """A channel picked: picture, statistics, and the steps for a separable conv."""
        view = self.view(session, layer, side, channel, cmap, overlay)
        given = {
            self.picture_output: self.picture(view),
            self.trace_box: gr.update(visible=False),
            self.trace_text: "",
            **dict(
                zip(
                    self.responds.outputs,
                    self.respond(session, layer, side, view.channel),
                    strict=True,
                )
            ),
        }
        if layer not in SEPCONV_BLOCK:
            note = " Steps and value traces are shown for the separable convolutions."
            return self.values(
                given
                | {
                    self.stats: view.text + note,
                    self.steps_row: gr.update(visible=False),
                    self.shown: (layer, side, view.channel, None),
                }
            )
        hint = "  \nClick a position of the map to trace its value."
        return self.values(
            self._steps(session, layer, side, view.channel, None, dark)
            | given
            | {self.stats: view.text + hint}
        )

    def _steps(self, session, layer, side, channel, partner, dark, position=None) -> dict:
        explorer = self.shared.explorer
        analysis = explorer.analysis(session)  # (the input of a separable conv: other maps)
        made = explorer.runner(sepconv_steps, analysis, layer, side, channel, partner)
        figures = steps_figures(made, dark=bool(dark), position=position)
        partner = made.pointwise_channel if made.picked == "depthwise" else made.depthwise_channel
        return {
            self.steps_row: gr.update(visible=True),
            **dict(zip(self.step_plots, figures, strict=True)),
            self.shown: (layer, side, int(channel), partner),
        }

    def steps(self, session, layer, side, channel, partner, dark) -> list[Any]:
        """The step-by-step charts through ``partner`` (the other half's channel; default the
        one joined by the largest |weight|); the rest stays."""
        return self.values(self._steps(session, layer, side, channel, partner, dark))

    def trace(self, session, shown, y, x, cmap, overlay, dark) -> list[Any]:
        """How the value at (y, x) of the shown channel is made."""
        layer, side, channel, partner = shown
        if layer not in SEPCONV_BLOCK:
            note = "Value traces are shown for the separable convolutions."
            return self.values({self.trace_text: note})
        explorer = self.shared.explorer
        half = "depthwise" if side == "left" else "pointwise"
        made = explorer.runner(
            explain_value, explorer.analysis(session), f"{layer}.{half}", channel, y, x
        )
        view = self.view(session, layer, side, channel, cmap, overlay)
        return self.values(
            self._steps(session, layer, side, channel, partner, dark, (made.y, made.x))
            | {
                self.picture_output: self.picture(view, (made.y, made.x)),
                self.trace_box: gr.update(visible=True),
                self.trace_plot: trace_figure(made, dark=bool(dark)),
                self.trace_text: made.describe(),
            }
        )


def build(shared: Shared, sort: gr.Radio, page: gr.Number) -> ChannelPanel:
    """The panel's layout; Activations wires the picking, the panel its own clicks
    (``sort`` and ``page``: the grids', for the page's feature visualizations)."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=260):
            picture = gr.HTML(js_on_load=POSITION_CLICKS, elem_id="channel-view")
        with gr.Column(scale=3, min_width=260):
            stats = gr.Markdown(HINT, elem_id="channel-stats")
            trace_text = gr.Markdown(elem_id="trace-text")
            with gr.Column(visible=False) as trace_box:
                trace_plot = gr.Plot(
                    label="How the value is made",
                    elem_id=TRACE_CHART,
                    elem_classes="xviz-clickable-plot",
                )
    # Shown from the start: Gradio draws no chart that a page-load event makes visible and fills
    # at once (a link that opens a channel); an analysis without one hides it.
    with gr.Row(equal_height=False, elem_id="steps") as steps_row:
        step_plots = [
            gr.Plot(
                label=label,
                elem_id=name,
                min_width=170,
                elem_classes="xviz-clickable-plot" if name == WEIGHTS_CHART else None,
            )
            for name, label in (
                ("steps-input", "1. input channel"),
                ("steps-kernel", "2. depthwise filter"),
                ("steps-depthwise", "3. depthwise output"),
                (WEIGHTS_CHART, "4. pointwise weights"),
                ("steps-pointwise", "5. pointwise output"),
            )
        ]
    shown = gr.State(None)
    bridge = gr.HTML("", js_on_load=PLOT_CLICKS, elem_id="plot-clicks", padding=False)
    responds_panel, respond = responds.build(shared, shown, sort, page)
    return ChannelPanel(
        picture, stats, steps_row, step_plots, trace_box, trace_plot, trace_text, shown,
        bridge, shared, responds_panel, respond,
    )  # fmt: skip


def wire_trace(panel: ChannelPanel, cmap: gr.Dropdown, overlay: gr.Slider) -> None:
    """A click on the enlarged map traces the value there."""
    shared = panel.shared

    @ui_errors
    def clicked(session, shown, cmap, overlay, dark, evt: gr.EventData):
        if session is None or shown is None:
            return [gr.skip()] * len(panel.outputs)
        return panel.trace(
            session, shown, reported(evt, "y"), reported(evt, "x"), cmap, overlay, dark
        )

    panel.picture_output.click(
        clicked,
        [shared.session, panel.shown, cmap, overlay, shared.dark],
        panel.outputs,
        **VIEW_EVENTS,
    )
