"""gradcam and the Grad-CAM views of the explorer: every block in one unit, agreement with
block14, blank maps said so, the strip on one colour scale, the enlarged block's values.

References: the block output and its gradient taken with a plain forward hook and autograd,
numpy's corrcoef, the colour table applied by hand, the served image decoded back.
"""

import base64
import dataclasses
import io
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from xviz.app import explorer as ex
from xviz.app import views
from xviz.engine.preprocess import from_uint8
from xviz.errors import AnalysisError
from xviz.methods import gradcam
from xviz.model.xception import Xception
from xviz.render.colormaps import get_lut
from xviz.render.html import number

SIZE = 96  # block1 47x47 ... block4-12 6x6, block13-14 3x3


@pytest.fixture(scope="module")
def explorer() -> ex.Explorer:
    torch.manual_seed(0)
    return ex.Explorer(Xception(head="imagenet").eval(), cache_mb=256)


@pytest.fixture(scope="module")
def analysis(explorer):
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return explorer.analysis(explorer.start(image, SIZE))


def blanked(analysis, block: str):
    """The analysis with ``block``'s Grad-CAM zero everywhere, as ReLU leaves a negative map."""
    raw, full = OrderedDict(analysis.gradcam_raw), OrderedDict(analysis.gradcam)
    raw[block] = np.zeros_like(raw[block])
    full[block] = np.zeros_like(full[block])
    return dataclasses.replace(analysis, gradcam_raw=raw, gradcam=full)


def hooked_gradcam_summed(model, analysis, block: str) -> np.ndarray:
    """ReLU(sum_c (sum over positions of dlogit/dA_c) A_c), upsampled bilinearly to (S, S)."""
    kept = {}
    handle = model.blocks[block].register_forward_hook(lambda m, i, o: kept.setdefault("a", o))
    try:
        x = from_uint8(analysis.image[None]).requires_grad_(True)
        logit = model(x)[0, analysis.target]
    finally:
        handle.remove()
    activation = kept["a"]  # (1, C, h, w)
    (gradient,) = torch.autograd.grad(logit, activation)
    weights = gradient.sum(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True)).detach()
    return F.interpolate(cam, (SIZE, SIZE), mode="bilinear")[0, 0].numpy()


def test_per_area_is_gradcam_with_gradients_summed_over_the_positions(explorer, analysis):
    for block in ("block1", "block4", "block13", "block14"):
        ours = gradcam.per_area(analysis, block)
        reference = hooked_gradcam_summed(explorer.model, analysis, block)
        assert reference.max() > 0, block  # the comparison means something
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4 * reference.max())


def test_agreement_is_the_correlation_with_block14_and_none_for_a_blank_map(analysis):
    cams = {cam.block: cam for cam in gradcam.block_cams(analysis)}
    reference = gradcam.per_area(analysis, "block14").ravel()
    for block, cam in cams.items():
        expected = np.corrcoef(gradcam.per_area(analysis, block).ravel(), reference)[0, 1]
        assert cam.agreement == pytest.approx(expected, abs=1e-6), block
    assert cams["block14"].agreement == pytest.approx(1.0)
    blank = {cam.block: cam for cam in gradcam.block_cams(blanked(analysis, "block7"))}
    assert blank["block7"].blank and blank["block7"].agreement is None
    nothing = {cam.block: cam for cam in gradcam.block_cams(blanked(analysis, "block14"))}
    assert all(cam.agreement is None for cam in nothing.values())


def expected_tile(analysis, values: np.ndarray, vmax: float, alpha: float) -> np.ndarray:
    """The image with ``values`` / ``vmax`` coloured through inferno's table laid over it."""
    index = np.clip(np.floor(values / vmax * 256), 0, 255).astype(int)  # matplotlib's binning
    rgb = get_lut("inferno")[index].astype(np.float64)
    return analysis.image * (1 - alpha) + rgb * alpha


def test_the_strip_draws_every_block_with_one_vmax_or_each_its_own(explorer, analysis):
    peaks = {
        b: float((analysis.gradcam[b] * analysis.gradcam_raw[b].size).max())
        for b in analysis.gradcam
    }
    vmax = max(peaks.values())
    hottest = max(peaks, key=peaks.get)
    cooler = min((b for b in peaks if peaks[b] > 0), key=peaks.get)
    assert peaks[cooler] < vmax / 2  # the two scales differ visibly for this block
    alpha = 0.5
    blocks = list(analysis.gradcam)
    for scale in ("shared", "block"):
        strip = dict(zip(blocks, views.gradcam_strip(analysis, alpha, scale), strict=True))
        for block in (hottest, cooler):
            top = vmax if scale == "shared" else peaks[block]
            values = analysis.gradcam[block] * analysis.gradcam_raw[block].size
            tile = np.asarray(strip[block][0], dtype=np.float64)
            difference = np.abs(tile - expected_tile(analysis, values, top, alpha))
            assert difference.max() <= 1.0, (scale, block)
    shared = np.asarray(views.gradcam_strip(analysis, alpha, "shared")[blocks.index(cooler)][0])
    own = np.asarray(views.gradcam_strip(analysis, alpha, "block")[blocks.index(cooler)][0])
    assert shared.astype(int).sum() < own.astype(int).sum()  # darker on the shared scale


def test_captions_give_size_agreement_and_blank(explorer, analysis):
    a = blanked(analysis, "block13")
    captions = [caption for _, caption in views.gradcam_strip(a, 0.5, "block")]
    cams = {cam.block: cam for cam in gradcam.block_cams(a)}
    assert captions[12] == "block13 · 3x3 · blank: no positive evidence"
    assert captions[13].startswith("block14 · 3x3 · the reference · max ")
    h, w = a.gradcam_raw["block5"].shape
    expected = f"block5 · {h}x{w} · agreement {cams['block5'].agreement:.2f} · max "
    assert captions[4] == expected + number(cams["block5"].peak)
    bar, notes = views.gradcam_legend(a, "shared")
    label = a.target_label
    assert f"No positive evidence for {label} at block13" in notes
    assert "Agreement" in notes and "One colour scale" in notes
    vmax = max(cam.peak for cam in cams.values())
    assert ">0<" in bar and f">{number(vmax)}<" in bar
    bar, notes = views.gradcam_legend(analysis, "block")
    assert "its largest value" in bar and "Blank" not in notes


def decoded(uri: str) -> np.ndarray:
    head, data = uri.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def test_enlarged_block_shows_each_position_on_the_strips_scale(explorer, analysis):
    cams = {cam.block: cam for cam in gradcam.block_cams(analysis)}
    vmax = max(cam.peak for cam in cams.values())
    for scale, top in (("shared", vmax), ("block", cams["block5"].peak)):
        figure, text = views.gradcam_figure(analysis, "block5", 0.4, scale)
        photo, heat = figure.data
        np.testing.assert_array_equal(decoded(photo.source), analysis.image)
        raw = analysis.gradcam_raw["block5"]
        np.testing.assert_allclose(heat.z, raw * raw.size, rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(heat.customdata)[..., 2], raw)
        assert heat.zmin == 0 and heat.zmax == pytest.approx(top) and heat.opacity == 0.4
        assert f"agreement with block14 {cams['block5'].agreement:.2f}" in text
    blank = blanked(analysis, "block13")
    label = analysis.target_label
    for scale in ("shared", "block"):  # a blank map has no scale of its own: the shared one
        figure, text = views.gradcam_figure(blank, "block13", 0.5, scale)
        assert text.endswith(gradcam.blank_reason(label, "block13"))
        assert figure.layout.annotations[0].text == f"No positive evidence for {label} here"
        assert figure.data[1].zmax == pytest.approx(max(c.peak for c in gradcam.block_cams(blank)))


def test_bad_scale_or_block_is_an_analysis_error(explorer, analysis):
    with pytest.raises(AnalysisError, match="scale"):
        views.gradcam_strip(analysis, 0.5, "log")
    with pytest.raises(AnalysisError, match="block"):
        views.gradcam_figure(analysis, "block15")
    with pytest.raises(AnalysisError, match="opacity"):
        views.gradcam_strip(analysis, float("nan"))


def test_strip_thumbnails_are_the_full_tiles_scaled_down(explorer, analysis):
    full = views.gradcam_strip(analysis, 0.5, "shared")
    side = SIZE // 3
    small = views.gradcam_strip(analysis, 0.5, "shared", side=side)
    assert [c for _, c in small] == [c for _, c in full]
    for (big, _), (thumb, _) in zip(full, small, strict=True):
        assert thumb.size == (side, side)
        # Each thumbnail pixel is the mean of the 3x3 full-size pixels it covers.
        pixels = np.asarray(big, dtype=np.float64)[: side * 3, : side * 3]
        means = pixels.reshape(side, 3, side, 3, 3).mean(axis=(1, 3))
        assert np.abs(np.asarray(thumb, dtype=np.float64) - means).max() <= 1.0
    same = views.gradcam_strip(analysis, 0.5, "shared", side=10_000)  # never scaled up
    assert all(a.size == b.size for (a, _), (b, _) in zip(same, full, strict=True))
