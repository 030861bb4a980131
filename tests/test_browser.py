"""End to end in a real headless Chromium (Debian's), driven by playwright.

Skipped when no Chromium is installed, unless XVIZ_REQUIRE_BROWSER=1 (CI sets it).
Screenshots go to XVIZ_SCREENSHOTS (default: the test's tmp dir).
"""

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "examples" / "coffee.jpg"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("XVIZ_REQUIRE_BROWSER") == "1":
            pytest.fail(f"Chromium not found at {CHROMIUM}; install Debian's chromium")
        pytest.skip("Chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    out = Path(os.environ.get("XVIZ_SCREENSHOTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _src(page, selector: str) -> str:
    return page.locator(f"{selector} img").first.get_attribute("src") or ""


def test_upload_explore_and_cost(browser, served_app, shots):
    url, _ = served_app
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.locator("input[type=file]").first.set_input_files(str(EXAMPLE))

    # The prediction, both channel grids and the Grad-CAM strip arrive.
    page.wait_for_selector("#depthwise-grid img", timeout=120_000)
    page.wait_for_selector("#pointwise-grid img", timeout=30_000)
    page.get_by_text("class ", exact=False).first.wait_for(timeout=30_000)
    page.screenshot(path=str(shots / "1_activations_entry.png"), full_page=True)
    entry_left, entry_right = _src(page, "#depthwise-grid"), _src(page, "#pointwise-grid")
    assert entry_left and entry_right

    # Switch to the middle flow (block5): both grids change.
    page.get_by_label("middle").check()
    page.wait_for_function(
        "([a, b]) => {"
        " const l = document.querySelector('#depthwise-grid img');"
        " const r = document.querySelector('#pointwise-grid img');"
        " return l && r && l.src !== a && r.src !== b; }",
        arg=[entry_left, entry_right],
        timeout=30_000,
    )
    page.screenshot(path=str(shots / "2_activations_middle.png"), full_page=True)

    # The Grad-CAM strip shows 14 images.
    page.get_by_role("tab", name="Attributions").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#gradcam-strip img').length >= 14", timeout=30_000
    )
    page.screenshot(path=str(shots / "3_attributions.png"), full_page=True)

    # The cost tab has Plotly plots.
    page.get_by_role("tab", name="Cost").click()
    page.locator(".js-plotly-plot:visible").first.wait_for(timeout=30_000)  # not the other tabs'
    assert page.locator(".js-plotly-plot").count() >= 3
    page.screenshot(path=str(shots / "4_cost.png"), full_page=True)

    # Export: a zip to download.
    page.get_by_role("tab", name="Export").click()
    page.get_by_role("button", name="Build zip").click()
    page.get_by_text(".zip", exact=False).first.wait_for(timeout=60_000)
    page.screenshot(path=str(shots / "5_export.png"), full_page=True)
    page.close()


def _attributions_tab(page, url: str) -> None:
    """Open the app, analyse the coffee photo and open the Attributions tab."""
    page.goto(url)
    page.locator("input[type=file]").first.set_input_files(str(EXAMPLE))
    page.wait_for_selector("#depthwise-grid img", timeout=120_000, state="attached")
    page.get_by_role("tab", name="Attributions").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#gradcam-strip img').length >= 14", timeout=60_000
    )
    page.wait_for_selector("#gradcam-big .js-plotly-plot", timeout=30_000)


def _pick_method(page, title: str) -> None:
    page.locator("#attr-method input").click()
    page.get_by_role("option", name=title, exact=True).click()


def test_the_gradcam_strip_wraps_on_a_phone_and_every_image_says_what_it_shows(
    browser, served_app, shots
):
    url, _ = served_app
    page = browser.new_page(viewport={"width": 390, "height": 844})
    _attributions_tab(page, url)
    page.locator("#gradcam-strip").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "attributions_phone.png"), full_page=True)
    width, inner = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= inner, f"the page scrolls sideways: {width} > {inner}"
    # Thumbnails wrap into rows that fit, all inside the gallery, and their captions are not cut.
    hidden = page.evaluate(
        "() => { const box = document.querySelector('#gradcam-strip').getBoundingClientRect();"
        " return [...document.querySelectorAll('#gradcam-strip .thumbnail-item')]"
        ".filter((e) => e.getBoundingClientRect().bottom > box.bottom + 1).length; }"
    )
    assert hidden == 0
    columns = page.evaluate(
        "() => new Set([...document.querySelectorAll('#gradcam-strip .thumbnail-item')]"
        ".map((e) => Math.round(e.getBoundingClientRect().left))).size"
    )
    assert 2 <= columns <= 3
    cut = page.evaluate(
        "() => [...document.querySelectorAll('#gradcam-strip .caption-label')]"
        ".filter((e) => e.scrollWidth > e.clientWidth + 1).length"
    )
    assert cut == 0
    alts = page.evaluate(
        "() => [...document.querySelectorAll('#gradcam-strip img')].map((i) => i.alt)"
    )
    assert len(alts) == 14 and all(alt.startswith(f"block{i} · ") for i, alt in enumerate(alts, 1))
    page.close()


def test_cancel_keeps_the_last_attribution(browser, served_app, shots):
    url, _ = served_app
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    _attributions_tab(page, url)
    _pick_method(page, "Saliency")
    page.get_by_role("button", name="Compute", exact=True).click()
    page.wait_for_selector("#attr-heatmap .js-plotly-plot", timeout=120_000)
    page.wait_for_selector("#attr-overlay img", timeout=30_000)
    before = _src(page, "#attr-overlay")
    text = page.locator("#attr-text").inner_text()
    assert "Saliency" in text
    alt = page.locator("#attr-overlay img").first.get_attribute("alt") or ""
    assert alt.startswith("The attribution laid over the photo")

    _pick_method(page, "Integrated Gradients")
    page.get_by_role("button", name="Compute", exact=True).click()
    page.get_by_text("integrated_gradients:", exact=False).first.wait_for(timeout=60_000)
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.wait_for_function(
        "() => !document.body.innerText.includes('integrated_gradients:')", timeout=30_000
    )
    page.screenshot(path=str(shots / "attributions_after_cancel.png"), full_page=True)
    assert _src(page, "#attr-overlay") == before
    assert page.locator("#attr-overlay img").first.is_visible()
    assert page.locator("#attr-heatmap .js-plotly-plot").first.is_visible()
    assert page.locator("#attr-text").inner_text() == text
    page.close()
