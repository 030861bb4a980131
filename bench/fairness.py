"""Two visitors at once: does one visitor's long job hold up another's upload?

    python bench/fairness.py [--weights kitchenware] [--photos 4] [--size 299]

The app is served in this process, as ``bench/browser.py`` serves it; each visitor is its own
Chromium context (its own session). Visitor B uploads ``--photos`` photos (each analysed
afresh) and the wait from the upload until its prediction is on screen is timed in the page
(``bench/browser.py``'s watcher):

1. idle: nobody else is on the server;
2. loaded: while visitor A's "feature visualizations of this grid page's channels" runs (a job
   of minutes: 64 channels x 128 steps), started just before.

Printed: B's waits in both phases and their ratio (the goal: loaded <= 2x idle), how far A's
page got meanwhile (its rows stream in; it is cancelled at the end to keep the run short), and
what a third visitor C who asks for a feature visualization of their own meanwhile is shown
(their place in the line). The first upload warms up and is not counted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.sync_api import sync_playwright

from app import build_demo
from bench.browser import ARGS, CHROMIUM, WATCH_JS, settle, uploaded
from bench.common import bench_model
from xviz.app.explorer import Explorer
from xviz.app.server import launch_options
from xviz.data.gallery import all_examples
from xviz.model.weights import kitchenware_file

FIRST_SCREEN = (
    "() => document.querySelectorAll('#depthwise-grid img, #pointwise-grid img').length === 2"
    " && document.querySelector('#prediction meter')"
)
CHANNEL = "?layer=block2_sepconv1&side=depthwise&channel=3"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="kitchenware" if kitchenware_file() else "random")
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--size", type=int, default=299)
    args = parser.parse_args()

    explorer = Explorer(bench_model(args.weights))
    demo = build_demo(explorer)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_options())
    url = demo.local_url
    photos = all_examples()[: args.photos + 1]
    print(
        f"xviz fairness bench: weights {args.weights}, {args.photos} uploads by visitor B at "
        f"{args.size} in each phase"
    )
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)

            def visitor(query: str = ""):
                page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                page.goto(url + query)
                page.wait_for_function(FIRST_SCREEN, timeout=180_000)
                settle(page)
                return page

            b = visitor()
            b.locator("#size").get_by_label(str(args.size)).check()
            settle(b)
            b.evaluate(WATCH_JS)

            def b_waits() -> list[float]:
                waits = []
                for i, photo in enumerate(photos):
                    got = uploaded(b, explorer, photo, ["prediction"])["prediction"]
                    settle(b)
                    if i:
                        waits.append(got)
                return waits

            idle = b_waits()
            a = visitor(CHANNEL)
            c = visitor(CHANNEL)
            a.locator("#featvis-page").click()
            a.get_by_text("channels 1-", exact=False).first.wait_for(timeout=60_000)
            c.locator("#featvis-make").click()
            c.wait_for_timeout(1500)
            c_sees = c.locator("#featvis").inner_text().replace("\n", " ").strip()
            loaded = b_waits()
            a_label = a.locator("#featvis-page-sheet").inner_text().replace("\n", " ").strip()
            a_progress = a.locator("#featvis-page-sheet .progress-text, #featvis-page-sheet")
            a_status = a_progress.first.inner_text().replace("\n", " ").strip()[:120]
            a.get_by_role("button", name="Cancel").first.click()
            c.get_by_role("button", name="Cancel").first.click()
    finally:
        demo.close()

    def line(name: str, waits: list[float]) -> str:
        return (
            f"{name:<34} median {statistics.median(waits):5.2f} s, max {max(waits):5.2f} s  "
            f"({', '.join(f'{w:.2f}' for w in waits)})"
        )

    print(line("B: upload -> prediction, idle", idle))
    print(line("B: ..., while A's page runs", loaded))
    ratio = statistics.median(loaded) / statistics.median(idle)
    worst = max(loaded) / statistics.median(idle)
    print(
        f"ratio loaded/idle: median {ratio:.2f}, worst {worst:.2f} "
        f"(goal <= 2): {'met' if ratio <= 2 else 'MISSED'}"
    )
    print(f"A's page meanwhile: {a_label or a_status!r}")
    print(f"C, who asked for a feature visualization meanwhile, is shown: {c_sees[:120]!r}")


if __name__ == "__main__":
    main()
