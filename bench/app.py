"""Server-side time of the app's interactions that re-render from a cached analysis.

Changing layer, page, sort, colormap, scale or channel must not re-run the model; this times
what such an event does on the server: fetch the analysis from the cache, render the two
channel grids (or the enlarged channel) and let Gradio's image component write the PNGs.

    python bench/app.py [--weights kitchenware] [--size 299] [--repeats 3]

Goal: median <= 150 ms on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gradio as gr

from bench.common import bench_model
from xviz.app import explorer as ex
from xviz.app import views
from xviz.data.gallery import shipped_examples
from xviz.model.xception import BLOCKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="kitchenware")
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    explorer = ex.Explorer(bench_model(args.weights))
    session = explorer.start(str(shipped_examples()[0]), args.size)
    started = time.perf_counter()
    explorer.analysis(session)
    print(
        f"weights {explorer.model.source.name if explorer.model.source else 'random'}, "
        f"input {args.size}x{args.size}; first analysis {time.perf_counter() - started:.2f} s"
    )
    left, right = gr.Image(format="png"), gr.Image(format="png")
    layers = [layer for block in BLOCKS for layer in views.layers_of(block)]
    views = list(itertools.product(layers, ("index", "mean"), (1, 2), ("auto", "viridis")))
    timings: dict[str, list[float]] = {"layer view": [], "channel view": []}
    for _ in range(args.repeats):
        for layer, sort, page, cmap in views:
            t = time.perf_counter()
            analysis = explorer.analysis(session)  # a cache hit: no model run
            view = views.layer_view(analysis, layer, sort, page, cmap, "shared")
            left.postprocess(view.left.image)
            right.postprocess(view.right.image)
            timings["layer view"].append(1000 * (time.perf_counter() - t))
        for layer in layers:
            t = time.perf_counter()
            analysis = explorer.analysis(session)
            left.postprocess(views.channel_view(analysis, layer, "right", 3).image)
            timings["channel view"].append(1000 * (time.perf_counter() - t))
    stats = explorer.cache.stats
    print(f"cache: {stats.misses} model run(s), {stats.hits} hits\n")
    print(f"{'interaction':<14} {'n':>5} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
    for name, values in timings.items():
        values.sort()
        p95 = values[int(0.95 * (len(values) - 1))]
        print(
            f"{name:<14} {len(values):>5} {statistics.median(values):>10.1f} "
            f"{p95:>8.1f} {values[-1]:>8.1f}"
        )
    print("\ngoal: median <= 150 ms")


if __name__ == "__main__":
    main()
