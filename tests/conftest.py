"""Shared fixtures: the app served on loopback with a small random model."""

import atexit
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest
import torch

# The tests mirror the package's tree; their shared helpers (raw_api, hostile, ...) live here.
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Gradio's upload cache (uploads, served outputs, exports) of this test run alone, so that the
# tests can look into it without seeing other processes' files.
os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="xviz-test-gradio-")
atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model():
    """A randomly initialised Xception with the ImageNet head, the same in every module."""
    from xviz.model.xception import Xception

    torch.manual_seed(0)
    return Xception(head="imagenet").eval()


def launch(demo) -> str:
    """Serve ``demo`` on a free loopback port with the app's launch options; its URL."""
    from xviz.app.server import launch_options

    port = _free_port()
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        **launch_options(),
    )
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="session")
def served_app():
    """(url, explorer) of the real app, launched once for the test session."""
    from app import build_demo
    from xviz.app.explorer import Explorer
    from xviz.model.xception import Xception

    torch.manual_seed(0)
    explorer = Explorer(Xception(head="imagenet").eval(), cache_mb=256)
    demo = build_demo(explorer)
    try:
        yield launch(demo), explorer
    finally:
        demo.close()


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def playwright():
    """Playwright's sync API for the browser tests: skipped without Debian's Chromium, failed
    where ``XVIZ_REQUIRE_BROWSER=1`` (CI) says it must be there."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("XVIZ_REQUIRE_BROWSER") == "1":
            pytest.fail(f"Chromium not found at {CHROMIUM}; install Debian's chromium")
        pytest.skip("Chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        yield p
