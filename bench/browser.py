"""What a user waits for in a real browser, against what the model itself costs, in one run.

    python bench/browser.py [--weights kitchenware] [--photos 5] [--rounds 1] [--sizes 299 150]
        [--uploads-only]

The app (``app.build_demo``) is served in this process; Debian's Chromium (headless, driven by
playwright) uploads each photo and changes the view, and every wait is timed in the page, from
the action (the press of a click or key; for an upload, its file input's change event) until
what it brings is on screen (images loaded and decoded):

- upload -> prediction: the top-5 label shows the new image's classes;
- upload -> prediction + grids: and both channel grids of the current layer;
- upload -> + 14 Grad-CAMs: then the Attributions tab is opened at once, until its Grad-CAM
  strip shows this image's 14 overlays (the goal: <= 2.0x one plain forward + backward);
- flow, block, layer, page, sort, colormap: one change each, until both grids are new
  (goal: median <= 0.3 s);
- on Attributions: the same uploads (analysed afresh) with the Attributions tab open, until
  the prediction and until the strip's 14 overlays show.

One plain forward + backward (the model on its own: a forward pass and the gradient of the top
logit to the input, as the analysis needs) is timed in the same process three times before each
size's photos, and once after every upload while the page is idle; the ratios divide by its
median. Each upload is analysed afresh (the analysis cache is emptied before it); the first
photo warms up. Needs Chromium at /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("XVIZ_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for app.py

import torch
from playwright.sync_api import Page, sync_playwright

from app import build_demo
from bench.common import bench_model
from xviz.app.explorer import Explorer
from xviz.app.server import launch_options
from xviz.data.gallery import all_examples
from xviz.model.weights import kitchenware_file
from xviz.model.xception import Xception

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]

# In the page: a snapshot of what an action changes, and a watcher that resolves with the
# milliseconds from the action (its pointer or key press) until each milestone holds (checked
# every animation frame).
# An image counts once it is displayed, loaded and decoded.
WATCH_JS = """
() => {
  const imgs = (sel) => [...document.querySelectorAll(sel + ' img')];
  const shown = (i) => i.complete && i.naturalWidth > 0 && i.offsetParent !== null;
  const grids = () => imgs('#depthwise-grid').concat(imgs('#pointwise-grid'));
  const tab = (name) => [...document.querySelectorAll('button[role=tab]')]
    .find((b) => b.innerText.trim() === name);
  const state = () => ({
    // The probabilities the label shows (the label's text also holds a progress timer).
    pred: [...document.querySelectorAll('#prediction meter')]
      .map((m) => m.getAttribute('value')).join(','),
    grids: grids().map((i) => i.src),
    cams: imgs('#gradcam-strip').map((i) => i.src),
  });
  window.xvizWatch = (names) => {
    const before = state();
    // The wait starts when the user acts (the press of a click, a key), not when the script
    // that plays the user starts to: it first waits for the target to stop moving.
    // An upload starts when the chosen file reaches the page (its input's change event).
    let t0 = performance.now();
    let started = false;
    const types = ['pointerdown', 'keydown', 'change'];
    const start = (event) => {
      if (started || (event.type === 'change' && event.target.type !== 'file')) return;
      started = true;
      t0 = performance.now();
      types.forEach((type) => document.removeEventListener(type, start, {capture: true}));
    };
    types.forEach((type) => document.addEventListener(type, start, {capture: true}));
    const times = {};
    const tests = {
      prediction: () => {
        const t = state().pred;
        return t.trim() !== '' && t !== before.pred;
      },
      grids: () => grids().length === 2
        && grids().every((i) => shown(i) && !before.grids.includes(i.src)),
      // Opens the Attributions tab once the grids are there, then waits for the strip.
      cams: () => {
        if (!('grids' in times)) return false;
        return strip();
      },
      // The Attributions tab already open: the strip alone.
      strip: () => strip(),
    };
    const strip = () => {
        const t = tab('Attributions');
        if (t.getAttribute('aria-selected') !== 'true') t.click();
        const c = imgs('#gradcam-strip');
        return c.length >= 14 && c.every((i) => shown(i) && !before.cams.includes(i.src));
    };
    window.xvizDone = new Promise((resolve) => {
      const check = () => {
        for (const n of names) {
          if (!(n in times) && tests[n]()) times[n] = performance.now() - t0;
        }
        if (names.every((n) => n in times)) resolve(times);
        else requestAnimationFrame(check);
      };
      check();
    });
  };
}
"""
UPLOAD = ["prediction", "grids", "cams"]
# (name, what the user does first, the action timed); each action is followed by the wait for
# both grids to change. A dropdown is opened first: the wait starts at the pick.
CHANGES = [
    ("flow", None, lambda page: page.locator("#flow").get_by_label("middle").check()),
    ("block", lambda page: opened(page, "block"), lambda page: pick(page, "block7")),
    ("layer", lambda page: opened(page, "layer"), lambda page: pick(page, "block7_sepconv2")),
    ("page", None, lambda page: page.locator("#next-page").click()),
    (
        "sort",
        lambda page: display(page),
        lambda page: page.locator("#sort").get_by_label("mean").check(),
    ),
    ("colormap", lambda page: opened(display(page), "cmap"), lambda page: pick(page, "viridis")),
]
RESET = [
    lambda page: page.locator("#flow").get_by_label("entry").check(),
    lambda page: display(page).locator("#sort").get_by_label("index").check(),
    lambda page: choose(display(page), "cmap", "auto"),
]


def fwd_bwd_s(model: Xception, size: int, runs: int = 3) -> list[float]:
    """Seconds of one plain forward + backward (top logit -> input), each of ``runs``."""
    times = []
    for _ in range(runs):
        x = torch.rand(1, 3, size, size) * 2 - 1
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        started = time.perf_counter()
        logits = model(x)
        logits[0, int(logits[0].argmax())].backward()
        times.append(time.perf_counter() - started)
    return times


def timed(page: Page, names: list[str], action: Callable[[], object]) -> dict[str, float]:
    """Seconds from ``action()`` until each milestone in ``names`` holds."""
    page.evaluate("(names) => window.xvizWatch(names)", names)
    action()
    ms = page.evaluate("() => window.xvizDone")
    return {name: ms[name] / 1000 for name in names}


def uploaded(page: Page, explorer: Explorer, photo: Path, names: list[str]) -> dict[str, float]:
    """Seconds from uploading ``photo`` (analysed afresh: the cache is emptied first) until
    each milestone in ``names`` holds."""
    explorer.cache.clear()
    page.evaluate(WATCH_JS)
    upload = page.locator("#image-input input[type=file]")
    return timed(page, names, lambda: upload.set_input_files(str(photo)))


def display(page: Page) -> Page:
    """The page with the display options in view (a closed accordion holds them)."""
    if not page.locator("#sort").is_visible():
        page.get_by_text("Display: order, colours", exact=False).first.click()
        page.locator("#sort").wait_for()
    return page


def opened(page: Page, elem_id: str) -> Page:
    """The page with the Gradio dropdown ``#elem_id`` open."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option").first.wait_for()
    return page


def pick(page: Page, option: str) -> None:
    """Pick ``option`` in the open dropdown."""
    page.get_by_role("option", name=option, exact=True).click()


def choose(page: Page, elem_id: str, option: str) -> None:
    """Pick ``option`` in the Gradio dropdown ``#elem_id``."""
    pick(opened(page, elem_id), option)


def settle(page: Page) -> None:
    """Back on Activations, and no event left running (the page shows no progress)."""
    page.get_by_role("tab", name="Activations").click()
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('.progress-text, .eta-bar')")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="kitchenware" if kitchenware_file() else "random")
    parser.add_argument("--photos", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1, help="uploads of each photo")
    parser.add_argument("--sizes", type=int, nargs="+", default=[299, 150])
    parser.add_argument(
        "--uploads-only", action="store_true", help="no flow, block, ... changes (quicker)"
    )
    args = parser.parse_args()

    explorer = Explorer(bench_model(args.weights))
    demo = build_demo(explorer)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_options())
    photos = all_examples()[: args.photos + 1]  # the first one warms up
    uploads = [(i == 0 and r == 0, p) for r in range(args.rounds) for i, p in enumerate(photos)]
    results: dict[int, dict[str, list[float]]] = {}
    references: dict[int, list[float]] = {}
    print(
        f"xviz browser bench: weights {args.weights}, {torch.get_num_threads()} torch threads, "
        f"{len(photos) - 1} photos x {args.rounds}, Chromium headless at 1280x900"
    )
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(demo.local_url)
            # The first screen's analysis done (it sets the size: a pick before would be undone).
            page.wait_for_function(
                "() => document.querySelectorAll('#depthwise-grid img, #pointwise-grid img')"
                ".length === 2 && document.querySelector('#prediction meter')",
                timeout=120_000,
            )
            settle(page)
            page.evaluate(WATCH_JS)
            for size in args.sizes:
                page.locator("#size").get_by_label(str(size)).check()
                settle(page)  # (the example analysed again at this size)
                references[size] = fwd_bwd_s(explorer.model, size)
                rows: dict[str, list[float]] = {}
                for warm_up, photo in uploads:
                    got = uploaded(page, explorer, photo, UPLOAD)
                    settle(page)
                    for name, prepare, action in [] if args.uploads_only else CHANGES:
                        if prepare is not None:
                            prepare(page)
                        got[name] = timed(page, ["grids"], lambda a=action: a(page))["grids"]
                    for action in [] if args.uploads_only else RESET:
                        action(page)
                    settle(page)
                    references[size] += fwd_bwd_s(explorer.model, size, runs=1)
                    if not warm_up:
                        for name, seconds in got.items():
                            rows.setdefault(name, []).append(seconds)
                # Uploads with the Attributions tab open.
                page.get_by_role("tab", name="Attributions").click()
                page.wait_for_timeout(300)
                for warm_up, photo in uploads:
                    got = uploaded(page, explorer, photo, ["prediction", "strip"])
                    got = {f"attributions {name}": value for name, value in got.items()}
                    page.wait_for_timeout(300)  # the hidden grids sent after the strip
                    page.wait_for_function("() => !document.querySelector('.progress-text')")
                    references[size] += fwd_bwd_s(explorer.model, size, runs=1)
                    if not warm_up:
                        for name, seconds in got.items():
                            rows.setdefault(name, []).append(seconds)
                settle(page)
                results[size] = rows
            browser.close()
    finally:
        demo.close()

    for size in args.sizes:
        ref = statistics.median(references[size])
        print(
            f"\n{size}x{size}: one plain forward + backward {ref * 1000:.0f} ms (median of "
            f"{len(references[size])}, taken between the uploads)"
        )
        print(f"  {'wait':<34} {'median s':>9} {'max s':>7} {'x fwd+bwd':>10}")
        labels = {
            "prediction": "upload -> prediction",
            "grids": "upload -> prediction + grids",
            "cams": "upload -> + 14 Grad-CAMs (goal 2.0x)",
            "attributions prediction": "on Attributions: -> prediction",
            "attributions strip": "on Attributions: -> 14 Grad-CAMs",
        }
        for name, values in results[size].items():
            med = statistics.median(values)
            label = labels.get(name, f"{name} change (goal 0.3 s)")
            print(f"  {label:<34} {med:>9.2f} {max(values):>7.2f} {med / ref:>10.2f}")


if __name__ == "__main__":
    main()
