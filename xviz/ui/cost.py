"""The Cost tab: standard vs depthwise-separable convolution per layer, in theory and measured."""

from __future__ import annotations

import gradio as gr

from xviz import plots
from xviz.cost import measure_all, network_cost
from xviz.server import ui_errors
from xviz.ui.shared import MODEL_EVENTS, Shared

SIZES = (299, 150)


def build(shared: Shared) -> None:
    model = shared.explorer.model
    costs = {s: network_cost(model, s) for s in SIZES}

    def figures(size) -> tuple:
        n = costs[int(size)]
        return plots.madds_figure(n.layers), plots.params_figure(n.layers), plots.totals_figure(n)

    gr.Markdown(
        "Standard vs depthwise-separable convolution for every layer of this "
        "network. Standard: M·N·D_K²·D_G² multiply-adds; separable: "
        "M·D_K²·D_G² + M·N·D_G², a ratio of 1/N + 1/D_K²."
    )
    size = gr.Radio(list(SIZES), value=SIZES[0], label="Input size (px)")
    first = figures(SIZES[0])
    madds = gr.Plot(first[0], label="Multiply-adds per layer")
    params = gr.Plot(first[1], label="Parameters per layer")
    totals = gr.Plot(first[2], label="Whole network")
    measure_btn = gr.Button("Measure on this machine (about 30 s on 2 CPU cores)")
    speed = gr.Plot(label="Theory vs practice")
    gr.Markdown("**Play with the formula**")
    with gr.Row():
        m = gr.Slider(1, 2048, value=728, step=1, label="M (input channels)")
        n = gr.Slider(1, 2048, value=728, step=1, label="N (output channels)")
        k = gr.Slider(1, 7, value=3, step=2, label="D_K (kernel)")
        g = gr.Slider(1, 150, value=19, step=1, label="D_G (output side)")
    one = gr.Plot(plots.explorer_figure(728, 728, 3, 19), label="One layer")
    one_text = gr.Markdown(plots.explain(728, 728, 3, 19))

    size.change(figures, size, [madds, params, totals], api_name=False)

    @ui_errors
    def measure(size, progress=gr.Progress()):  # noqa: B008
        results = measure_all(
            model,
            next(model.parameters()).device,
            input_size=int(size),
            progress=lambda i, total, name: progress(i / max(total, 1), desc=f"timing {name}"),
        )
        return plots.speedup_figure(results)

    measure_btn.click(measure, size, speed, api_name=False, **MODEL_EVENTS)

    def explore(m, n, k, g) -> tuple:
        m, n, k, g = int(m), int(n), int(k), int(g)
        return plots.explorer_figure(m, n, k, g), plots.explain(m, n, k, g)

    for slider in (m, n, k, g):
        slider.release(explore, [m, n, k, g], [one, one_text], api_name=False)
