"""The Ablations and Cost tabs as a visitor and an API client meet them: the served app through
gradio_client (/ablate) and in a real Chromium (blocks offered per kind, the middle-flow
shortcut, the difference map, one input size, dark figures, the measured speed-up)."""

import json
import re

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.app.test_browser import browser  # noqa: F401  (the fixture)
from xviz.app.views import PAD, TILE
from xviz.model.xception import BLOCKS
from xviz.render.colormaps import get_lut

SIZE = 150
# /analyze's view settings (see test_app): layer, sort, cmap, scale, overlay, block, alpha
VIEW = ("block5_sepconv1", "index", "auto", "shared", 0, "block5", 0.5)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def client(served_app, photo):
    """A client whose session holds ``photo`` at ``SIZE``, analysed through /analyze."""
    url, _ = served_app
    client = Client(url, verbose=False)
    client.predict(handle_file(str(photo)), SIZE, *VIEW, api_name="/analyze")
    return client


def ablate(client, kind, blocks, layer="block5_sepconv1", side="left", channel=0):
    return client.predict(kind, blocks, layer, side, channel, "auto", False, api_name="/ablate")


# ---------------------------------------------------------------------------------------
# /ablate through gradio_client
# ---------------------------------------------------------------------------------------


def test_ablate_returns_the_difference_map_ablated_minus_original(client, served_app, photo):
    _, explorer = served_app
    *_, original, ablated, difference, _ = ablate(client, "zero_channel", [], channel=3)
    # Independently: the same ablation on the same image, and its maps subtracted by hand.
    result = explorer.ablation(
        explorer.start(str(photo), SIZE), "zero_channel", [], VIEW[0], "left", 3
    )
    before, after = result.original_map, result.ablated_map
    assert result.watched == "block5_sepconv1.depthwise"
    d = after.channel(3) - before.channel(3)  # the only channel that changed: -original
    np.testing.assert_array_equal(d, -before.channel(3))
    bound = np.abs(d).max()
    coolwarm = get_lut("coolwarm")
    with Image.open(difference) as img:
        grid = np.asarray(img.convert("RGB"))
    step = TILE + PAD
    h, w = before.shape[1:]
    x0 = PAD + 3 * step  # channel 3: first row, fourth column
    for y, x in [(2, 1), (h - 1, w - 1), (h // 2, w // 2)]:
        cy, cx = PAD + int((y + 0.5) * TILE / h), x0 + int((x + 0.5) * TILE / w)
        index = int((0.5 + d[y, x] / (2 * bound)) * 256)
        near = [coolwarm[i] for i in range(max(index - 1, 0), min(index + 1, 255) + 1)]
        assert any(np.array_equal(grid[cy, cx], c) for c in near), (y, x)
    # Every other channel did not move: the neutral middle of the scale.
    assert tuple(grid[PAD + 40, PAD + step + 40]) == tuple(coolwarm[128])
    for path in (original, ablated):
        with Image.open(path) as img:
            assert img.size == Image.open(difference).size


@pytest.mark.parametrize("block", ["block2", "block13"])
def test_ablate_drops_a_conv_residual_and_marks_its_block(client, block):
    before, after, text, *_, figure = ablate(client, "drop_residual", [block])
    bars = json.loads(figure["plot"])["data"][0]
    assert bars["x"] == list(BLOCKS)
    widths = dict(zip(bars["x"], bars["marker"]["line"]["width"], strict=True))
    assert [b for b, w in widths.items() if w > 0] == [block]
    upstream = list(BLOCKS)[: list(BLOCKS).index(block)]
    assert [v for b, v in zip(bars["x"], bars["y"], strict=True) if b in upstream] == [0] * len(
        upstream
    )  # blocks before the change do not move
    assert widths and bars["y"][list(BLOCKS).index(block)] > 0
    assert f"No residual connection in {block}" in text and "KL divergence" in text
    assert before["label"] and after["label"]


@pytest.mark.parametrize(
    ("kind", "blocks", "message"),
    [
        ("drop_residual", ["block14"], "block14' has no residual connection to drop"),
        ("relu_between", ["block1"], "'block1' (type: <class 'str'>) is not in the list of"),
        ("relu_between", [], "at least one block"),
    ],
)
def test_ablate_says_clearly_what_is_wrong(client, kind, blocks, message):
    with pytest.raises(Exception, match=re.escape(message)) as info:
        ablate(client, kind, blocks)
    assert "Traceback" not in str(info.value)


# ---------------------------------------------------------------------------------------
# In the browser
# ---------------------------------------------------------------------------------------


def _open(browser, url: str, theme: str = "light", size=(1280, 800)):  # noqa: F811
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.goto(f"{url}?__theme={theme}")
    page.wait_for_selector("#size", timeout=60_000)
    return page


def _open_tab(page, name: str) -> None:
    """Click a tab, from the "More tabs" menu where the tab bar has no room for it."""
    tab = page.get_by_role("tab", name=name)
    more = page.get_by_label("More tabs")
    # The tab bar is laid out after the page loads: wait until one of the two shows.
    for _ in range(600):
        if (tab.count() and tab.first.is_visible()) or more.is_visible():
            break
        page.wait_for_timeout(100)
    if tab.count() and tab.first.is_visible():
        tab.first.click()
    else:
        more.click()
        page.locator(".overflow-dropdown button", has_text=name).click()


def _offered(page) -> list[str]:
    return page.locator("#ablation-blocks label").all_inner_texts()


def _checked(page) -> list[str]:
    boxes = page.locator("#ablation-blocks input[type=checkbox]")
    return [
        page.locator("#ablation-blocks label").nth(i).inner_text()
        for i in range(boxes.count())
        if boxes.nth(i).is_checked()
    ]


@pytest.mark.browser
def test_only_valid_blocks_are_offered_and_the_middle_flow_shortcut(browser, served_app):  # noqa: F811
    url, _ = served_app
    page = _open(browser, url)
    _open_tab(page, "Ablations")
    names = [name.strip() for name in _offered(page)]
    assert names == [f"block{i}" for i in range(2, 15)]  # relu_between: the separable blocks
    page.get_by_label("drop the residual connection").check()
    page.wait_for_function(
        "() => !document.querySelector('#ablation-blocks').innerText.includes('block14')"
    )
    assert [n.strip() for n in _offered(page)] == [f"block{i}" for i in range(2, 14)]
    assert [n.strip() for n in _checked(page)] == ["block5"]  # kept: still valid
    page.locator("#ablation-middle").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#ablation-blocks input:checked').length == 8"
    )
    assert [n.strip() for n in _checked(page)] == [f"block{i}" for i in range(5, 13)]
    page.get_by_label("zero one channel", exact=False).check()
    page.locator("#ablation-blocks").wait_for(state="hidden")
    assert not page.locator("#ablation-middle").is_visible()
    page.close()


@pytest.mark.browser
def test_an_ablation_shows_original_ablated_and_difference(browser, served_app, photo):  # noqa: F811
    url, _ = served_app
    page = _open(browser, url, size=(390, 844))
    page.locator("input[type=file]").first.set_input_files(str(photo))
    page.wait_for_selector("#depthwise-grid img", state="attached", timeout=120_000)
    _open_tab(page, "Ablations")
    page.locator("#ablation-run").click()
    for elem in ("ablation-original", "ablation-ablated", "ablation-difference"):
        page.wait_for_selector(f"#{elem} img", timeout=120_000)
    assert "KL divergence" in page.locator("#ablation-summary").inner_text()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0  # nothing wider than the phone
    page.close()


def _plot_fonts(page) -> list[str]:
    """The resolved font colour of every Plotly figure on the page."""
    return page.evaluate(
        "() => [...document.querySelectorAll('.js-plotly-plot')]"
        ".map((g) => g._fullLayout && g._fullLayout.font.color)"
    )


@pytest.mark.browser
@pytest.mark.parametrize(("theme", "font"), [("light", "#2a3f5f"), ("dark", "#f2f5fa")])
def test_cost_figures_follow_the_theme(browser, served_app, theme, font):  # noqa: F811
    url, _ = served_app
    page = _open(browser, url, theme)
    _open_tab(page, "Cost")
    page.wait_for_function(
        "(font) => { const g = [...document.querySelectorAll('.js-plotly-plot')];"
        " return g.length >= 4 && g.every((d) => d._fullLayout"
        " && d._fullLayout.font.color == font); }",
        arg=font,
        timeout=30_000,
    )
    assert set(_plot_fonts(page)) == {font}  # the templates' font colours
    page.close()


@pytest.mark.browser
def test_one_input_size_and_a_measured_speedup_on_one_log_scale(browser, served_app):  # noqa: F811
    url, _ = served_app
    page = _open(browser, url)
    _open_tab(page, "Cost")
    assert page.locator("#size input[type=radio]").count() == 2  # the header's, no other
    page.locator("#size").get_by_label("150").check()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot .gtitle')]"
        ".some((t) => t.textContent.includes('150×150'))",
        timeout=30_000,
    )
    button = page.locator("#measure")
    assert re.fullmatch(r"Measure on this machine \(about \d+ s\)", button.inner_text())
    button.click()
    page.wait_for_selector("#speedup .js-plotly-plot", timeout=300_000)
    page.wait_for_function(
        "() => document.querySelector('#measure').innerText.includes('took')", timeout=30_000
    )
    assert re.fullmatch(r"Show the timings again \(measuring took \d+ s\)", button.inner_text())
    axes = page.evaluate(
        "() => { const l = document.querySelector('#speedup .js-plotly-plot')._fullLayout;"
        " return [l.xaxis.type, l.yaxis.type, l.xaxis.range, l.yaxis.range,"
        " l.xaxis._length, l.yaxis._length]; }"
    )
    x_type, y_type, x_range, y_range, width, height = axes
    assert x_type == y_type == "log" and x_range == pytest.approx(y_range)
    assert width == pytest.approx(height, abs=1)  # drawn square: y = x is the diagonal
    page.close()
