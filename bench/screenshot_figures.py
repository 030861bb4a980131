"""Render every ``xviz.render.cost_figures`` figure to PNG, light and dark, for looking at them.

Kaleido is not needed: each figure is written as standalone HTML and photographed by
Playwright driving the system Chromium.

    python bench/screenshot_figures.py [--out /tmp/xviz_figs] [--repeats 3] [--size 299]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import plotly.graph_objects as go
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from xviz.methods.cost import measure_all, network_cost
from xviz.model.xception import Xception
from xviz.render import cost_figures as plots

BACKGROUNDS = {"light": "#ffffff", "dark": "#0b0f19"}  # Gradio's default light and dark


def figures(size: int, repeats: int, dark: bool) -> dict[str, go.Figure]:
    model = Xception()
    net = network_cost(model, size)
    results = measure_all(model, input_size=size, repeats=repeats)
    return {
        "1_madds": plots.madds_figure(net.layers, dark=dark),
        "2_params": plots.params_figure(net.layers, dark=dark),
        "3_totals": plots.totals_figure(net, dark=dark),
        "4_speedup": plots.speedup_figure(results, dark=dark),
        "5_explorer": plots.explorer_figure(728, 728, 3, 19, dark=dark),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/xviz_figs"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        sync_playwright() as pw,
        tempfile.TemporaryDirectory() as tmp,
    ):
        browser = pw.chromium.launch(
            executable_path=args.chromium, args=["--no-sandbox", "--headless", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1300, "height": 600})
        for theme, background in BACKGROUNDS.items():
            for name, fig in figures(args.size, args.repeats, theme == "dark").items():
                html = Path(tmp) / f"{name}.html"
                fig.write_html(html, include_plotlyjs=True, full_html=True)
                text = html.read_text().replace("<body>", f'<body style="background:{background}">')
                html.write_text(text)
                page.goto(html.as_uri())
                page.wait_for_selector(".main-svg")
                png = args.out / f"{name}_{theme}.png"
                page.locator(".plotly-graph-div").screenshot(path=png)
                print(png)
        browser.close()


if __name__ == "__main__":
    main()
