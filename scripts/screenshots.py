"""Screenshots of every tab of the app after analysing an example image (dev tool).

Launches ``app.py`` on loopback with the given weights, drives it in Debian's headless
Chromium with playwright, and writes one PNG per tab:

    python scripts/screenshots.py [--out screenshots] [--image assets/examples/coffee.jpg]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    parser.add_argument("--image", type=Path, default=ROOT / "assets/examples/coffee.jpg")
    parser.add_argument("--weights", default="kitchenware")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--size", type=int, choices=(150, 299), help="input size (native)")
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
    try:
        _wait(url)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": 1000})
            page.goto(url)
            if args.size:
                page.get_by_label(str(args.size), exact=True).check()
            page.locator("input[type=file]").first.set_input_files(str(args.image))
            page.wait_for_selector("#depthwise-grid img", timeout=120_000)
            page.get_by_label("middle").check()
            page.wait_for_timeout(2500)
            page.locator("#pointwise-grid img").first.click(position={"x": 200, "y": 140})
            page.wait_for_timeout(2000)
            page.screenshot(path=str(args.out / "activations.png"), full_page=True)

            page.get_by_role("tab", name="Attributions").click()
            page.get_by_role("button", name="Compute").click()
            page.wait_for_timeout(1000)
            page.get_by_text("Integrated Gradients", exact=False).last.wait_for(timeout=120_000)
            page.wait_for_timeout(20_000)
            page.screenshot(path=str(args.out / "attributions.png"), full_page=True)

            page.get_by_role("tab", name="Ablations").click()
            page.get_by_role("button", name="Run ablation").click()
            page.wait_for_selector(".js-plotly-plot", timeout=60_000)
            page.wait_for_timeout(2000)
            page.screenshot(path=str(args.out / "ablations.png"), full_page=True)

            page.get_by_role("tab", name="Cost").click()
            page.get_by_role("button", name="Measure on this machine", exact=False).click()
            page.wait_for_timeout(90_000)
            page.screenshot(path=str(args.out / "cost.png"), full_page=True)

            page.get_by_role("tab", name="Export").click()
            page.get_by_role("button", name="Build zip").click()
            page.wait_for_timeout(8000)
            page.screenshot(path=str(args.out / "export.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"screenshots in {args.out}/")


if __name__ == "__main__":
    main()
