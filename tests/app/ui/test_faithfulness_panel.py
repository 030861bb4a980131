"""The "How much to trust these maps" section of the Attributions tab, in a real headless
Chromium through the served app: its curves and table hold the numbers an independent
computation gives (Captum's Saliency, pixels greyed in its order, the served model's softmax)."""

import numpy as np
import pytest
import torch
from captum.attr import Saliency

from tests.app.test_browser import EXAMPLES, LOAD_MS, browser, shots  # noqa: F401 (fixtures)
from xviz.engine.hooks import model_lock
from xviz.engine.preprocess import from_uint8, load_image, to_display

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning"),
]
SIZE = 150
STEPS = 16  # xviz.methods.faithfulness.DEFAULT_STEPS, written out: the reference is the test's


def saliency_deletion(model, path) -> tuple[np.ndarray, int]:
    """Independently: the deletion curve of Captum's Saliency map for the top class."""
    image = to_display(load_image(str(path)), SIZE)
    x = from_uint8(image[None])  # (1, 3, S, S)
    with model_lock(model), torch.no_grad():
        target = int(model(x)[0].argmax())
    with model_lock(model):
        values = Saliency(model).attribute(x.clone().requires_grad_(True), target=target)
    order = np.argsort(-values[0].sum(0).numpy().astype(np.float64).ravel(), kind="stable")
    images = []
    for i in range(STEPS + 1):
        removed = np.zeros(SIZE * SIZE, bool)
        removed[order[: round(i / STEPS * SIZE * SIZE)]] = True
        images.append(torch.where(torch.as_tensor(removed.reshape(SIZE, SIZE)), 0.0, x[0]))
    with model_lock(model), torch.no_grad():
        scores = torch.softmax(model(torch.stack(images)), dim=1)[:, target]
    return scores.numpy(), target


def test_the_check_shows_curves_and_scores_that_match_an_independent_computation(
    browser,  # noqa: F811
    served_app,
    shots,  # noqa: F811
):
    url, explorer = served_app
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url + f"?example=cat&size={SIZE}&tab=attributions")
    page.wait_for_function(
        "() => document.querySelectorAll('#gradcam-strip img').length >= 14", timeout=LOAD_MS
    )
    page.get_by_text("How much to trust these maps").click()
    # The cost is said first, once the section has opened (it renders after the click).
    page.wait_for_function(
        "() => document.querySelector('#faith').innerText.includes('images through the model')",
        timeout=30_000,
    )
    page.locator("#faith-run").click()
    page.wait_for_selector("#faith-table table", timeout=600_000)
    page.wait_for_selector("#faith-random .js-plotly-plot", timeout=30_000)
    page.locator("#faith-curves").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "faithfulness_panel.png"), full_page=True)

    expected, target = saliency_deletion(explorer.model, EXAMPLES / "cat.jpg")
    traces = page.evaluate(
        "() => document.querySelector('#faith-curves .js-plotly-plot').data"
        ".map((t) => [t.name, t.xaxis, Array.from(t.y)])"
    )
    deletion = {name: np.array(y) for name, axis, y in traces if axis == "x"}
    assert set(deletion) >= {"Saliency", "Grad-CAM", "random order (baseline)"}
    assert np.allclose(deletion["Saliency"], expected, rtol=1e-4, atol=1e-6)

    rows = page.locator("#faith-table tr").all_inner_texts()
    cells = {r.split("\t")[0].strip(): r.split("\t") for r in rows[1:]}
    area = float(np.trapezoid(expected, np.linspace(0, 1, STEPS + 1)))
    assert float(cells["Saliency"][1]) == pytest.approx(area, rel=5e-3)  # 3 significant digits
    assert set(cells) >= {"Integrated Gradients", "Occlusion", "centre first (baseline)"}
    text = page.locator("#faith-text").inner_text()
    assert f"class {target}" in text and "Guided Grad-CAM" in text
    assert page.get_by_text("Error", exact=True).count() == 0
    page.close()
