"""Screenshots of the app for the README and for looking at (dev tool).

Launches ``app.py`` on loopback with the given weights and drives it in Debian's headless
Chromium with playwright:

    python scripts/screenshots.py [--out screenshots] [--weights kitchenware]

writes ``first_screen_1280x800.png`` and ``phone_390x844.png`` (the first screen, no click:
the app opens on an analysed example), ``channel_trace.png`` (a pointwise channel large, its
steps and the trace of one value), ``depthwise_trace.png``, ``guide.png``,
``attributions.png``, ``faithfulness.png`` (the Attributions tab's "How much to trust these
maps" panel after a check, palette-quantised), ``ablations.png``, ``cost.png``, ``dark.png``
and ``live.png`` (the Live tab streaming a clip of ``examples/coffee.jpg`` as the camera).
``--only live`` or ``--only faithfulness`` makes that one alone. The README's pictures are
``--out assets``' first two, the trace, the panel and the Live tab.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.camera_clip import write_clip  # noqa: E402 (the repository on the path first)

ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]
VIEW = "?layer=block5_sepconv1&side=pointwise&channel=9"
LIVE_CHANNEL = 16  # block2_sepconv1's depthwise channel shown large in live.png


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def _opened(browser, url: str, width: int, height: int, query: str = "") -> Page:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url + query)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#depthwise-grid img, #pointwise-grid img')]"
        ".filter((i) => i.complete && i.naturalWidth > 0).length === 2",
        timeout=180_000,
    )
    page.wait_for_timeout(2500)
    return page


def _live(p, url: str, out: Path) -> None:
    """The Live tab at 1280x800, scrolled to its top, a clip of the coffee example as the
    camera, a depthwise channel shown large."""
    photo = ROOT / "xviz" / "data" / "examples" / "coffee.jpg"
    clip = write_clip(Path(tempfile.mkdtemp()) / "coffee.y4m", [photo])
    camera = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}",
    ]
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[*ARGS, *camera])
    page = _opened(browser, url, 1280, 800, "?tab=live")
    page.get_by_text("Click to Access Webcam").click()
    page.locator("#live-camera").get_by_role("button", name="capture photo").click()
    page.wait_for_function("() => window.xvizLive && window.xvizLive.length > 20", timeout=60_000)
    page.locator(f"#live-depthwise [data-channel='{LIVE_CHANNEL}']").click()
    page.wait_for_timeout(3000)  # the page's meter: a full 3 s of frames
    page.evaluate(
        "() => window.scrollTo(0, document.querySelector('[role=tablist]')"
        ".getBoundingClientRect().top + window.scrollY - 8)"
    )
    page.wait_for_timeout(500)
    page.screenshot(path=str(out / "live.png"))
    browser.close()
    # 256 colours (octree: the colourbars keep their steps smooth), a third of the bytes.
    shot = Image.open(out / "live.png").convert("RGB")
    shot.quantize(256, method=Image.Quantize.FASTOCTREE).save(out / "live.png", optimize=True)


def _faithfulness(browser, url: str, out: Path) -> None:
    """The check of the coffee example at 150, its panel alone, as a 256-colour PNG."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(url + "?example=coffee&size=150&tab=attributions")
    page.wait_for_function(
        "() => document.querySelectorAll('#gradcam-strip img').length >= 14", timeout=180_000
    )
    page.get_by_text("How much to trust these maps").click()
    page.locator("#faith-run").click()
    page.wait_for_selector("#faith-table table", timeout=600_000)
    page.wait_for_selector("#faith-random .js-plotly-plot", timeout=60_000)
    page.wait_for_timeout(2000)
    path = out / "faithfulness.png"
    page.locator("#faith").screenshot(path=str(path))
    page.close()
    # Flat colours and text: a palette loses nothing visible and a lot of bytes.
    Image.open(path).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(
        path, optimize=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    parser.add_argument("--weights", default="kitchenware")
    parser.add_argument("--only", choices=["live", "faithfulness"], help="take only this picture")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    port = _free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "XVIZ_WEIGHTS": args.weights,
        "XVIZ_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py")], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    out = args.out
    try:
        _wait(url)
        with sync_playwright() as p:
            if args.only != "faithfulness":
                _live(p, url, out)
            if args.only == "live":
                return
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            _faithfulness(browser, url, out)
            if args.only == "faithfulness":
                browser.close()
                return
            page = _opened(browser, url, 1280, 800)
            page.screenshot(path=str(out / "first_screen_1280x800.png"))
            page.close()

            page = _opened(browser, url, 390, 844)
            page.screenshot(path=str(out / "phone_390x844.png"))
            page.close()

            page = _opened(browser, url, 1280, 800, VIEW)
            page.locator("#channel-view img").click(position={"x": 150, "y": 120})
            page.locator("#trace-chart .js-plotly-plot").wait_for(timeout=60_000)
            page.wait_for_timeout(2000)
            page.locator("#channel-view").scroll_into_view_if_needed()
            page.screenshot(path=str(out / "channel_trace.png"), full_page=True)
            page.close()

            page = _opened(browser, url, 1280, 800, VIEW.replace("pointwise", "depthwise"))
            page.locator("#channel-view img").click(position={"x": 150, "y": 120})
            page.locator("#trace-chart .js-plotly-plot").wait_for(timeout=60_000)
            page.wait_for_timeout(2000)
            page.screenshot(path=str(out / "depthwise_trace.png"), full_page=True)

            page.locator("#tour-pointwise").click()
            page.locator("#guide-figure .js-plotly-plot").wait_for(timeout=120_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / "guide.png"), full_page=True)

            page.get_by_role("tab", name="Attributions").click()
            page.wait_for_function(
                "() => document.querySelectorAll('#gradcam-strip img').length >= 14",
                timeout=120_000,
            )
            page.wait_for_timeout(2000)
            page.screenshot(path=str(out / "attributions.png"), full_page=True)

            page.get_by_role("tab", name="Ablations").click()
            page.get_by_role("button", name="Run ablation").click()
            page.wait_for_timeout(15_000)
            page.screenshot(path=str(out / "ablations.png"), full_page=True)

            page.get_by_role("tab", name="Cost").click()
            page.wait_for_timeout(3000)
            page.screenshot(path=str(out / "cost.png"), full_page=True)
            page.close()

            page = _opened(browser, url, 1280, 800, VIEW + "&__theme=dark")
            # The examples image loads lazily: once it is scrolled to.
            page.locator("#atlas-examples img").wait_for(state="attached", timeout=60_000)
            page.locator("#responds").scroll_into_view_if_needed()
            page.wait_for_timeout(2000)
            page.screenshot(path=str(out / "dark.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"screenshots in {out}/")


if __name__ == "__main__":
    main()
