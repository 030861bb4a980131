"""The Cost tab: standard vs depthwise-separable convolution per layer, in theory and measured.

The figures follow the app's input size (``shared.size``) and the page's theme (``shared.dark``,
set when the page loads); both redraw them outside the model queue. Measuring runs in it.
"""

from __future__ import annotations

import time

import gradio as gr

from xviz.app.server import ui_errors
from xviz.app.ui.shared import LONG_EVENTS, VIEW_EVENTS, Shared
from xviz.engine.runner import MINUTES
from xviz.methods.cost import MeasureClock, NetworkCost, machine_speed, measure_all, network_cost
from xviz.render import cost_figures as plots

# KaTeX (bundled with Gradio) renders $...$ inline and $$...$$ on a line of its own.
LATEX = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "$", "right": "$", "display": False},
]

INTRO = r"""
Xception replaces each standard convolution by a **depthwise separable** one: first one small
filter per input channel (**depthwise**), then a 1×1 convolution that mixes the channels
(**pointwise**). For $M$ input channels, $N$ output channels, a $D_K \times D_K$ kernel and an
output of $D_G \times D_G$ positions, the multiply-adds are

- standard convolution: $M \cdot N \cdot D_K^2 \cdot D_G^2$
- depthwise separable: $M \cdot D_K^2 \cdot D_G^2 + M \cdot N \cdot D_G^2$
- their ratio: $\frac{1}{N} + \frac{1}{D_K^2}$, about $\frac{1}{9}$ for Xception's 3×3 kernels
  and hundreds of channels.

The charts count this for every layer of the network at the app's input size (chosen at the
top of the page). Hover a bar for its numbers; the buttons switch the scale between log and
linear.
"""


def measure_text(clock: MeasureClock, size: int, booked_s: float | None = None) -> str:
    """The measure button's text: how long measuring takes here at ``size``; on ZeroGPU, the
    GPU time it books (``booked_s``) from the visitor's daily quota."""
    if size in clock.took:
        return f"Show the timings again (measuring took {clock.took[size]:.0f} s)"
    if booked_s is not None:
        return f"Measure on ZeroGPU's GPU (books about {booked_s:.0f} s of your GPU quota)"
    return f"Measure on this machine (about {max(1, round(clock.predicted_s(size)))} s)"


def build(shared: Shared) -> None:
    model = shared.explorer.model
    runner = shared.explorer.runner
    device = next(model.parameters()).device

    def label(size: int) -> str:
        return measure_text(clock, size, runner.booked_s(measure_all, None, input_size=size))

    costs: dict[int, NetworkCost] = {}

    def network(size) -> NetworkCost:
        size = int(size)
        if size not in costs:
            costs[size] = network_cost(model, size)
        return costs[size]

    def figures(size, dark: bool) -> tuple:
        n = network(size)
        return (
            plots.madds_figure(n.layers, dark=dark),
            plots.params_figure(n.layers, dark=dark),
            plots.totals_figure(n, dark=dark),
        )

    # A block5 sepconv at the app's size: the middle flow, where most of the network is.
    middle = next(c for c in network(shared.size.value).layers if c.name == "block5_sepconv1")
    shape = (middle.in_channels, middle.out_channels, middle.kernel_size, middle.output_side)
    # Calibrated at start-up (about 0.1 s), before requests compete for the CPU.
    clock = MeasureClock(model, machine_speed(device))

    gr.Markdown(INTRO, latex_delimiters=LATEX)
    first = figures(shared.size.value, False)
    madds = gr.Plot(first[0], label="Multiply-adds per layer")
    params = gr.Plot(first[1], label="Parameters per layer")
    totals = gr.Plot(first[2], label="Whole network")

    gr.Markdown(
        "### Theory vs practice\n"
        "Fewer multiply-adds need not mean less time. Measuring times every separable conv "
        "of the network and a standard convolution of the same shape (random weights, batch 1) "
        f"on **{runner.where}**, at the app's input size."
    )
    native = int(shared.size.value)
    # Updated with the input size (which each page load sets) and after each measurement. Not
    # a function of its own: Gradio would make that a public "/lambda" endpoint.
    measure_btn = gr.Button(label(native), elem_id="measure")
    with gr.Row(equal_height=False):  # side by side on a laptop, one above the other on a phone
        with gr.Column(min_width=320):
            speed = gr.Plot(label="Theory vs practice", elem_id="speedup")
        with gr.Column(min_width=320):
            speed_text = gr.Markdown()

    gr.Markdown(
        "### Play with the formula\nSet the shape of one convolution and compare the two costs."
    )
    with gr.Row():
        m = gr.Slider(
            1, 2048, value=shape[0], step=1, label="M: input channels",
            info="how many maps come into the layer",
        )  # fmt: skip
        n = gr.Slider(
            1, 2048, value=shape[1], step=1, label="N: output channels",
            info="how many maps it makes; a standard filter looks at all M inputs",
        )  # fmt: skip
        k = gr.Slider(
            1, 7, value=shape[2], step=2, label="Kernel side",
            info="each filter sees a window this many pixels wide and high (3 in Xception)",
        )  # fmt: skip
        g = gr.Slider(
            1, 150, value=shape[3], step=1, label="Output side",
            info="the output map is this many positions wide and high",
        )  # fmt: skip
    one = gr.Plot(plots.explorer_figure(*shape), label="One layer")
    one_text = gr.Markdown(plots.explain(*shape), latex_delimiters=LATEX)

    def on_theme(size, dark, m, n, k, g) -> tuple:
        return (*figures(size, dark), plots.explorer_figure(int(m), int(n), int(k), int(g), dark))

    shared.dark.change(
        on_theme,
        [shared.size, shared.dark, m, n, k, g],
        [madds, params, totals, one],
        **VIEW_EVENTS,
    )

    def on_size(size, dark) -> tuple:
        # A speed-up figure of another size would mislead: it goes until measured again.
        return (*figures(size, dark), label(int(size)), None, "")

    shared.size.change(
        on_size,
        [shared.size, shared.dark],
        [madds, params, totals, measure_btn, speed, speed_text],
        **VIEW_EVENTS,
    )

    @ui_errors
    def measure(size, dark, progress=gr.Progress()):  # noqa: B008
        size = int(size)
        cached = size in clock.took
        started = time.perf_counter()
        results = runner.background(
            measure_all,
            runner.device,
            priority=MINUTES,
            input_size=size,
            progress=lambda i, total, name: progress(i / max(total, 1), desc=f"timing {name}"),
        )
        if not cached:  # a second run returns the cached timings at once
            clock.record(size, time.perf_counter() - started)
        return (
            plots.speedup_figure(results, dark=dark),
            plots.speedup_summary(results),
            label(size),
        )

    measure_btn.click(
        measure,
        [shared.size, shared.dark],
        [speed, speed_text, measure_btn],
        api_name=False,
        **LONG_EVENTS,
    )

    def explore(m, n, k, g, dark) -> tuple:
        m, n, k, g = int(m), int(n), int(k), int(g)
        return plots.explorer_figure(m, n, k, g, dark), plots.explain(m, n, k, g)

    for slider in (m, n, k, g):
        slider.release(explore, [m, n, k, g, shared.dark], [one, one_text], **VIEW_EVENTS)
