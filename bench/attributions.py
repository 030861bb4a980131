"""Server-side time of the Attributions tab's re-render from a cached analysis.

What the tab does when it opens, or when the opacity or the colour scale changes: the 14
Grad-CAM tiles written as PNG files, the strip's colourbar and notes, and the enlarged block as
a Plotly figure serialised to JSON. Printed beside one analysis (the model run it follows), in
the same run, so that the ratio holds on any machine.

    python bench/attributions.py [--weights kitchenware] [--sizes 150 299] [--repeats 7]

Goal: a re-render costs a small fraction of an analysis (the strip stays images, not figures).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import plotly.io as pio

from bench.common import bench_model
from xviz.app import explorer as ex
from xviz.app import views
from xviz.app.files import FileStore
from xviz.data.gallery import shipped_examples
from xviz.engine.analysis import analyze


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="kitchenware")
    parser.add_argument("--sizes", type=int, nargs="+", default=[150, 299])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    explorer = ex.Explorer(bench_model(args.weights))
    image = str(shipped_examples()[0])
    with tempfile.TemporaryDirectory() as folder:
        files = FileStore(Path(folder), max_age_s=None)
        print(f"{'size':>5} {'analysis ms':>12} {'tab re-render ms':>17} {'ratio':>6}")
        for size in args.sizes:
            session = explorer.start(image, size)
            a = explorer.analysis(session)

            def rerender(a=a) -> None:
                for tile, _ in views.gradcam_strip(a, 0.6, "shared"):
                    files.save_png(tile)
                views.gradcam_legend(a, "shared")
                figure, _ = views.gradcam_figure(a, "block14", 0.6, "shared")
                pio.to_json(figure)

            run = _median_ms(lambda s=size: analyze(explorer.model, image, size=s), 3)
            render = _median_ms(rerender, args.repeats)
            print(f"{size:>5} {run:>12.0f} {render:>17.1f} {render / run:>6.2f}")
        files.close()


if __name__ == "__main__":
    main()
