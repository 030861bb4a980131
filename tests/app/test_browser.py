"""End to end in a real headless Chromium (Debian's), driven by playwright.

Skipped when no Chromium is installed, unless XVIZ_REQUIRE_BROWSER=1 (CI sets it).
Screenshots go to XVIZ_SCREENSHOTS (default: the test's tmp dir).
"""

import os
import re
import shutil
import threading
from pathlib import Path

import pytest
import torch

from xviz.app import views
from xviz.engine.analysis import analyze
from xviz.engine.hooks import Capture, model_lock
from xviz.engine.preprocess import preprocess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
EXAMPLES = Path(__file__).resolve().parents[2] / "xviz" / "data" / "examples"
LOAD_MS = 180_000  # the first screen runs the model on a loaded 2-core CPU

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    out = Path(os.environ.get("XVIZ_SCREENSHOTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    return out


def open_page(browser, url: str, width: int = 1280, height: int = 800, query: str = ""):
    """A page on the app, once its first screen (an analysed example) is there, without an
    error anywhere (Gradio marks the outputs of a failed event "Error")."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url + query)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#depthwise-grid img, #pointwise-grid img')]"
        ".filter((i) => i.complete && i.naturalWidth > 0).length === 2",
        timeout=LOAD_MS,
    )
    page.wait_for_timeout(1500)  # the events the first screen sets off (image, tab) settle
    assert page.get_by_text("Error", exact=True).count() == 0
    return page


def src(page, selector: str) -> str:
    return page.locator(f"{selector} img").first.get_attribute("src") or ""


def wait_changed(page, selector: str, before: str, timeout: int = 60_000) -> None:
    page.wait_for_function(
        "([sel, old]) => { const i = document.querySelector(sel + ' img');"
        " return i && i.src !== old && i.complete; }",
        arg=[selector, before],
        timeout=timeout,
    )


def top_label(model, path: Path, size: int) -> str:
    with model_lock(model), torch.inference_mode():
        return f"class {int(model(preprocess(str(path), size))[0].argmax())}"


def test_the_first_screen_shows_an_analysed_example_without_a_click(browser, served_app, shots):
    url, explorer = served_app
    page = open_page(browser, url)
    page.screenshot(path=str(shots / "first_screen_1280x800.png"))
    expected = top_label(explorer.model, EXAMPLES / "coffee.jpg", explorer.native_size)
    assert page.locator("#prediction h2").inner_text() == expected
    for selector in ("#netmap svg", "#depthwise-grid img", "#pointwise-grid img"):
        box = page.locator(selector).locator("visible=true").first.bounding_box()
        assert box and box["y"] < 800, selector  # on the first screen, no scrolling
    page.close()


def test_a_phone_screen_needs_no_sideways_scrolling_and_text_stays_readable(
    browser, served_app, shots
):
    url, _ = served_app
    page = open_page(browser, url, width=390, height=844)
    page.screenshot(path=str(shots / "phone_390x844.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    smallest_html = page.evaluate(
        """() => Math.min(...[...document.querySelectorAll('body *')]
          .filter((e) => e.offsetParent !== null && !(e instanceof SVGElement)
                  && [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim()))
          .map((e) => parseFloat(getComputedStyle(e).fontSize)))"""
    )
    smallest_map = page.evaluate(
        """() => Math.min(...[...document.querySelectorAll('#netmap svg')]
          .filter((s) => s.getBoundingClientRect().width > 0)
          .flatMap((s) => [...s.querySelectorAll('text')].map((t) =>
            parseFloat(t.getAttribute('font-size')) * s.getBoundingClientRect().width
              / s.viewBox.baseVal.width)))"""
    )
    assert smallest_html >= 11 and smallest_map >= 11, (smallest_html, smallest_map)
    page.close()


def test_a_link_restores_the_view(browser, served_app, shots):
    url, explorer = served_app
    query = "?example=cat&size=150&tab=attributions&layer=block5_sepconv1&side=pointwise&channel=9"
    page = open_page(browser, url, query=query)
    assert page.get_by_role("tab", name="Attributions").get_attribute("aria-selected") == "true"
    page.wait_for_function(
        "() => document.querySelectorAll('#gradcam-strip img').length >= 14", timeout=LOAD_MS
    )
    page.screenshot(path=str(shots / "link_attributions.png"))
    assert page.locator("#prediction h2").inner_text() == top_label(
        explorer.model, EXAMPLES / "cat.jpg", 150
    )
    assert page.locator("#size").get_by_label("150").is_checked()
    page.get_by_role("tab", name="Activations").click()
    page.locator("#layer input").wait_for()  # the tab renders after the click
    assert page.locator("#layer input").input_value() == "block5_sepconv1"
    page.locator("#channel-stats").get_by_text("block5_sepconv1.pointwise, channel 9").wait_for()
    # The selected tile is outlined in the pointwise grid.
    assert page.locator('#pointwise-grid .xviz-selected[data-channel="9"]').count() == 1
    page.close()


def test_copy_link_gives_a_link_to_the_same_view(browser, served_app):
    url, _ = served_app
    page = open_page(browser, url)
    page.locator("#pointwise-grid .xviz-tile").nth(5).click()
    page.locator("#channel-stats").get_by_text(".pointwise, channel 5").wait_for()
    page.locator("#copy-link").click()
    link = page.locator("#share-link textarea, #share-link input").first
    page.wait_for_function(
        "() => { const e = document.querySelector('#share-link textarea, #share-link input');"
        " return e && e.value.startsWith('http'); }"
    )
    shared = link.input_value()
    assert "channel=5" in shared and "side=pointwise" in shared and "example=coffee" in shared
    other = open_page(browser, shared.split("?")[0], query="?" + shared.split("?")[1])
    other.locator('#pointwise-grid .xviz-selected[data-channel="5"]').wait_for()
    page.close()
    other.close()


def test_tiles_and_blocks_are_picked_by_keyboard(browser, served_app):
    url, _ = served_app
    page = open_page(browser, url)
    tile = page.locator("#depthwise-grid .xviz-tile").nth(3)
    tile.focus()
    page.keyboard.press("Tab")  # to the next tile: the tiles are in the tab order
    assert page.evaluate("document.activeElement.dataset.channel") == "4"
    page.keyboard.press("Enter")
    page.locator("#channel-stats").get_by_text(".depthwise, channel 4").wait_for()
    block = page.locator("#netmap svg [data-block=block6]").locator("visible=true").first
    block.focus()
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('#layer input').value === 'block6_sepconv1'"
    )
    assert page.locator("#block input").input_value() == "block6"
    page.close()


def test_clicking_a_map_position_traces_its_value(browser, served_app, shots):
    """The trace's sum equals the network's own value, captured here by a forward hook."""
    url, explorer = served_app
    page = open_page(browser, url, query="?layer=block5_sepconv1&side=pointwise&channel=9")
    picture = page.locator("#channel-view img")
    picture.wait_for()
    picture.click(position={"x": 30, "y": 50})
    text = page.locator("#trace-text")
    text.get_by_text("sum of").wait_for(timeout=60_000)
    page.locator(f"#{'trace-chart'} .js-plotly-plot").wait_for()
    page.screenshot(path=str(shots / "trace_pointwise.png"), full_page=True)
    found = re.search(r"at \(y=(\d+), x=(\d+)\) = .*= \*?\*?(-?[\d.e+-]+)", text.inner_text())
    assert found, text.inner_text()
    y, x, shown = int(found[1]), int(found[2]), float(found[3])
    model = explorer.model
    pointwise = {"pw": model.block5.sepconv1.pointwise}
    with model_lock(model), torch.inference_mode(), Capture(pointwise) as cap:
        model(preprocess(str(EXAMPLES / "coffee.jpg"), explorer.native_size))
    assert shown == pytest.approx(float(cap.outputs["pw"][0, 9, y, x]), rel=1e-3, abs=1e-4)
    page.close()


def test_one_analysis_per_image_change(browser, served_app):
    url, explorer = served_app
    page = open_page(browser, url)
    before = explorer.cache.stats.misses
    grid = src(page, "#depthwise-grid")
    page.locator("#image-input input[type=file]").set_input_files(str(EXAMPLES / "rocket.jpg"))
    wait_changed(page, "#depthwise-grid", grid)
    page.wait_for_timeout(2000)  # Gradio reports an upload twice: let the second arrive
    assert explorer.cache.stats.misses == before + 1
    page.locator("#size").get_by_label("150").check()
    page.get_by_text("Analysed at 150x150", exact=False).wait_for(timeout=60_000)
    page.wait_for_timeout(1000)
    assert explorer.cache.stats.misses == before + 2
    page.close()


def test_figures_follow_dark_mode(browser, served_app):
    url, _ = served_app
    page = open_page(
        browser, url, query="?__theme=dark&layer=block5_sepconv1&side=depthwise&channel=3"
    )
    plot = "#steps-kernel .js-plotly-plot"
    page.locator(plot).wait_for(timeout=60_000)
    color = page.evaluate(f"document.querySelector('{plot}')._fullLayout.font.color")
    r, g, b = (
        (int(v) for v in re.findall(r"\d+", color)[:3])
        if "rgb" in color
        else (int(color[i : i + 2], 16) for i in (1, 3, 5))
    )
    assert (r + g + b) / 3 > 180, color  # light text on the dark page
    page.close()


def test_explore_every_tab(browser, served_app, shots):
    url, _ = served_app
    page = open_page(browser, url, width=1400, height=1000)
    entry_left, entry_right = src(page, "#depthwise-grid"), src(page, "#pointwise-grid")
    page.locator("#flow").get_by_label("middle").check()
    wait_changed(page, "#depthwise-grid", entry_left)
    wait_changed(page, "#pointwise-grid", entry_right)
    page.screenshot(path=str(shots / "2_activations_middle.png"), full_page=True)

    # The Grad-CAM strip is there when its tab opens; the enlarged block is drawn then.
    page.get_by_role("tab", name="Attributions").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#gradcam-strip img').length >= 14", timeout=60_000
    )
    page.locator("#gradcam-big .js-plotly-plot").wait_for(timeout=60_000)
    page.screenshot(path=str(shots / "3_attributions.png"), full_page=True)

    page.get_by_role("tab", name="Cost").click()
    page.locator(".js-plotly-plot:visible").first.wait_for(timeout=30_000)  # not the other tabs'
    assert page.locator(".js-plotly-plot").count() >= 3
    page.screenshot(path=str(shots / "4_cost.png"), full_page=True)

    page.get_by_role("tab", name="Export").click()
    page.get_by_role("button", name="Build zip").click()
    page.get_by_text(".zip", exact=False).first.wait_for(timeout=60_000)
    page.screenshot(path=str(shots / "5_export.png"), full_page=True)
    page.close()


def test_a_new_images_gradcam_strip_is_there_when_its_tab_opens(
    browser, served_app, monkeypatch, tmp_path
):
    """Sent with the analysis while its tab is hidden: opening the tab draws it no second time."""
    from PIL import Image, ImageOps

    from xviz.app import views
    from xviz.methods.gradcam import SCALES

    url, explorer = served_app
    page = open_page(browser, url)
    drawn = []
    original = views.gradcam_strip
    monkeypatch.setattr(
        views, "gradcam_strip", lambda *a, **k: drawn.append(1) or original(*a, **k)
    )
    grid = src(page, "#depthwise-grid")
    photo = tmp_path / "mirrored-rocket.png"  # a picture no other test has analysed
    ImageOps.mirror(Image.open(EXAMPLES / "rocket.jpg")).save(photo)
    page.locator("#image-input input[type=file]").set_input_files(str(photo))
    wait_changed(page, "#depthwise-grid", grid)
    page.wait_for_timeout(2000)  # the analysis' last output (the hidden strip) has gone out
    assert len(drawn) == 1
    page.get_by_role("tab", name="Attributions").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#gradcam-strip img').length === 14", timeout=60_000
    )
    page.locator("#gradcam-big .js-plotly-plot").wait_for(timeout=60_000)
    page.wait_for_timeout(1000)
    alts = page.evaluate(
        "() => [...document.querySelectorAll('#gradcam-strip img')].map((i) => i.alt)"
    )
    a = explorer.analysis(explorer.start(str(photo), explorer.native_size))
    assert alts == [c for _, c in original(a, 0.5, SCALES[0])]  # this photo's, not coffee's
    assert len(drawn) == 1
    page.close()


def _attributions_tab(page, url: str) -> None:
    """Open the app (its first screen analyses the coffee photo) and the Attributions tab."""
    page.goto(url)
    page.wait_for_function(
        "() => document.querySelectorAll('#depthwise-grid img, #pointwise-grid img').length == 2",
        timeout=LOAD_MS,
    )
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
    # Thumbnails wrap into rows that fit, all inside the strip, and their captions are not cut.
    hidden = page.evaluate(
        "() => { const box = document.querySelector('#gradcam-strip').getBoundingClientRect();"
        " return [...document.querySelectorAll('#gradcam-strip .xviz-cam')]"
        ".filter((e) => e.getBoundingClientRect().bottom > box.bottom + 1).length; }"
    )
    assert hidden == 0
    columns = page.evaluate(
        "() => new Set([...document.querySelectorAll('#gradcam-strip .xviz-cam')]"
        ".map((e) => Math.round(e.getBoundingClientRect().left))).size"
    )
    assert 2 <= columns <= 3
    cut = page.evaluate(
        "() => [...document.querySelectorAll('#gradcam-strip .xviz-cam-caption')]"
        ".filter((e) => e.scrollWidth > e.clientWidth + 1).length"
    )
    assert cut == 0
    alts = page.evaluate(
        "() => [...document.querySelectorAll('#gradcam-strip img')].map((i) => i.alt)"
    )
    assert len(alts) == 14 and all(alt.startswith(f"block{i} · ") for i, alt in enumerate(alts, 1))
    page.close()


def test_a_block_of_the_strip_clicked_or_keyed_is_enlarged(browser, served_app):
    url, _ = served_app
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    _attributions_tab(page, url)
    big = page.locator("#gradcam-big")
    page.locator('#gradcam-strip [data-block="block7"]').click()
    big.get_by_text("at block7").wait_for(timeout=30_000)
    pressed = page.evaluate(
        "() => [...document.querySelectorAll('#gradcam-strip [aria-pressed=true]')]"
        ".map((b) => b.dataset.block)"
    )
    assert pressed == ["block7"]
    page.keyboard.press("Tab")  # to block8's button
    page.keyboard.press("Enter")
    big.get_by_text("at block8").wait_for(timeout=30_000)
    page.close()


def test_cancel_keeps_the_last_attribution(browser, served_app, shots):
    url, _ = served_app
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    _attributions_tab(page, url)
    _pick_method(page, "Saliency")
    page.get_by_role("button", name="Compute", exact=True).click()
    page.wait_for_selector("#attr-heatmap .js-plotly-plot", timeout=120_000)
    page.wait_for_selector("#attr-overlay img", timeout=30_000)
    before = src(page, "#attr-overlay")
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
    assert src(page, "#attr-overlay") == before
    assert page.locator("#attr-overlay img").first.is_visible()
    assert page.locator("#attr-heatmap .js-plotly-plot").first.is_visible()
    assert page.locator("#attr-text").inner_text() == text
    page.close()


def test_each_tour_step_is_one_click_from_the_first_screen(browser, served_app, shots):
    url, _ = served_app
    page = open_page(browser, url)
    for key, title in (("depthwise", "A depthwise filter sees one channel"), ("relu", "No ReLU")):
        page.locator(f"#tour-{key}").click()
        page.locator("#guide-title").get_by_text(title).wait_for(timeout=120_000)
        assert page.get_by_role("tab", name="Guided tour").get_attribute("aria-selected") == "true"
        page.locator("#guide-figure .js-plotly-plot").wait_for(timeout=60_000)
        assert "Chollet 2017" in page.locator("#guide-title").inner_text()
        page.screenshot(path=str(shots / f"guide_{key}.png"), full_page=True)
    page.close()


def test_compare_shows_the_same_channel_of_two_images_on_one_scale(browser, served_app, shots):
    url, _ = served_app
    page = open_page(browser, url, query="?layer=block5_sepconv1&side=pointwise&channel=9")
    page.get_by_role("tab", name="Compare").click()
    page.locator("#image-b input[type=file]").set_input_files(str(EXAMPLES / "cat.jpg"))
    page.locator("#compare-maps img").nth(1).wait_for(timeout=120_000)
    note = page.locator("#compare-note").inner_text()
    assert "block5_sepconv1.pointwise, channel 9" in note
    assert page.locator("#compare-maps img").count() == 2
    page.screenshot(path=str(shots / "compare.png"), full_page=True)
    page.close()


def test_a_channel_shows_what_it_responds_to(browser, served_app, shots):
    """Dataset examples at once (the shipped atlas does not fit a random model: it says so);
    the feature visualization when asked, and it is kept for the next time."""
    url, _ = served_app
    page = open_page(browser, url, query="?layer=block2_sepconv1&side=depthwise&channel=3")
    page.locator("#featvis-make").click()
    page.locator("#featvis img").wait_for(timeout=180_000)
    page.screenshot(path=str(shots / "responds.png"), full_page=True)
    assert "atlas" in page.locator("#responds").inner_text()
    page.locator("#depthwise-grid .xviz-tile").nth(4).click()  # another channel: no picture
    page.locator("#channel-stats").get_by_text("channel 4").wait_for()
    page.locator("#featvis img").wait_for(state="detached", timeout=30_000)
    page.locator("#depthwise-grid .xviz-tile").nth(3).click()  # back: the kept picture
    page.locator("#featvis img").wait_for(timeout=30_000)
    page.close()


class _HeldAfterTheMaps:
    """The served runner, with every new analysis held after its forward pass (its prediction
    and the maps of the layer on screen handed out, stage "view") until ``release`` is set;
    everything else passes through."""

    def __init__(self, runner) -> None:
        self._runner = runner
        self.maps_out = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def __call__(self, fn, /, *args, **kwargs):
        told = kwargs.get("on_partial")
        if fn is not analyze or told is None:
            return self._runner(fn, *args, **kwargs)

        def partial(a):
            told(a)
            if a.stage == "view":
                self.maps_out.set()
                assert self.release.wait(120)

        return self._runner(fn, *args, **{**kwargs, "on_partial": partial})


def test_the_prediction_comes_before_the_backward_pass_and_nothing_stale_is_shown(
    browser, served_app, monkeypatch, tmp_path
):
    """An upload's prediction and grids are on screen while its backward pass is held; the
    Attributions tab opened then says its Grad-CAMs are coming, never the last image's strip,
    and fills in with this image's once the backward pass is done."""
    from PIL import Image, ImageOps

    from xviz.app.ui.attributions import COMPUTING
    from xviz.methods.gradcam import SCALES

    url, explorer = served_app
    page = open_page(browser, url)
    page.get_by_role("tab", name="Attributions").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#gradcam-strip img').length === 14", timeout=60_000
    )
    last_alts = page.evaluate(
        "() => [...document.querySelectorAll('#gradcam-strip img')].map((i) => i.alt)"
    )
    page.get_by_role("tab", name="Activations").click()
    page.wait_for_timeout(1500)  # its grids drawn again (new files) before the upload
    held = _HeldAfterTheMaps(explorer.runner)
    monkeypatch.setattr(explorer, "runner", held)
    grid, before = src(page, "#depthwise-grid"), page.locator("#prediction").inner_text()
    photo = tmp_path / "flipped-cat.png"  # a picture no other test has analysed
    ImageOps.flip(Image.open(EXAMPLES / "cat.jpg")).save(photo)
    try:
        page.locator("#image-input input[type=file]").set_input_files(str(photo))
        assert held.maps_out.wait(120)
        wait_changed(page, "#depthwise-grid", grid)
        assert not held.release.is_set()
        assert page.locator("#prediction").inner_text() != before  # the new prediction, early
        page.get_by_role("tab", name="Attributions").click()  # opened mid-analysis
        page.get_by_text(COMPUTING).wait_for(timeout=30_000)
        shown = page.evaluate(
            "() => [...document.querySelectorAll('#gradcam-strip img')].map((i) => i.alt)"
        )
        assert shown == []  # not the last image's strip (control: it had 14)
        assert len(last_alts) == 14
    finally:
        held.release.set()
    page.wait_for_function(
        "() => document.querySelectorAll('#gradcam-strip img').length === 14", timeout=60_000
    )
    alts = page.evaluate(
        "() => [...document.querySelectorAll('#gradcam-strip img')].map((i) => i.alt)"
    )
    a = explorer.analysis(explorer.start(str(photo), explorer.native_size))
    assert alts == [c for _, c in views.gradcam_strip(a, 0.5, SCALES[0])]
    assert page.get_by_text(COMPUTING).count() == 0
    page.close()
