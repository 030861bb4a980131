"""faithfulness: deletion/insertion curves against a hand computation on a linear model,
Captum's metrics called directly, Spearman and SSIM against independent references, and the
cascading randomisation check, which never changes the served model."""

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam, Saliency
from captum.metrics import infidelity, sensitivity_max
from torch import nn

from xviz.engine.analysis import analyze, model_input
from xviz.engine.hooks import hook_count
from xviz.errors import AnalysisError, Cancelled
from xviz.methods import faithfulness as fa

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")
SIZE = 71
BLOCK = "block4"
TARGET = 3


class Linear(nn.Module):
    """logits = (W . x, 0): the target's probability is a sigmoid of a linear score, and
    input x gradient is that score's exact split over the pixels."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight  # (3, S, S)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x * self.weight).sum(dim=(1, 2, 3))  # (B,)
        return torch.stack([score, torch.zeros_like(score)], dim=1)  # (B, 2)


@pytest.fixture(scope="module")
def linear():
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(3, 8, 8, generator=g)
    x = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1
    return Linear(weight), x


def hand_probability(weight: np.ndarray, image: np.ndarray) -> float:
    """Softmax of (score, 0) for class 0, by hand."""
    score = float((weight * image).sum())
    return 1.0 / (1.0 + math.exp(-score))


def test_deletion_and_insertion_of_a_linear_model_match_a_hand_computation(linear):
    model, x = linear
    w, image = model.weight.numpy(), x[0].numpy()
    contributions = (w * image).sum(axis=0)  # input x gradient, exact here: (8, 8)
    steps = 8
    (deletion, insertion) = fa.curves(model, x, {"ixg": contributions}, 0, steps, batch=3)["ixg"]
    order = np.argsort(-contributions.reshape(-1), kind="stable")
    blur = fa.blurred(x, fa.BLUR_SIGMA * 8)[0].numpy()
    deleted, inserted = [], []
    for i in range(steps + 1):
        removed = np.zeros(64, bool)
        removed[order[: round(i / steps * 64)]] = True
        mask = removed.reshape(8, 8)
        deleted.append(hand_probability(w, np.where(mask, 0.0, image)))
        inserted.append(hand_probability(w, np.where(mask, image, blur)))
    assert deletion.scores == pytest.approx(deleted, abs=1e-6)
    assert insertion.scores == pytest.approx(inserted, abs=1e-6)
    assert deletion.fractions == pytest.approx([i / steps for i in range(steps + 1)])
    by_hand = sum((deleted[i] + deleted[i + 1]) / 2 / steps for i in range(steps))
    assert deletion.area == pytest.approx(by_hand, abs=1e-6)
    assert insertion.area == pytest.approx(
        sum((inserted[i] + inserted[i + 1]) / 2 / steps for i in range(steps)), abs=1e-6
    )


def test_an_ideal_map_deletes_faster_than_random_and_an_inverted_one_slower(linear):
    model, x = linear
    ideal = (model.weight * x[0]).sum(0).numpy()
    maps = {"ideal": ideal, "random": fa.random_map(8, seed=2), "inverted": -ideal}
    scored = fa.curves(model, x, maps, 0, steps=16)
    deletion = {name: curves[0].area for name, curves in scored.items()}
    insertion = {name: curves[1].area for name, curves in scored.items()}
    assert deletion["ideal"] < deletion["random"] < deletion["inverted"]
    assert insertion["ideal"] > insertion["random"] > insertion["inverted"]


def test_blur_keeps_a_constant_image_and_spreads_an_impulse_as_a_gaussian():
    constant = torch.full((1, 3, 12, 12), 0.25)
    assert torch.allclose(fa.blurred(constant, 1.0), constant, atol=1e-6)
    impulse = torch.zeros(1, 1, 15, 15)
    impulse[0, 0, 7, 7] = 1.0
    taps = np.exp(-0.5 * np.arange(-3, 4) ** 2)
    taps /= taps.sum()
    expected = np.zeros((15, 15))
    expected[4:11, 4:11] = np.outer(taps, taps)
    assert np.allclose(fa.blurred(impulse, 1.0)[0, 0].numpy(), expected, atol=1e-6)


def test_infidelity_and_sensitivity_are_captums_own(linear):
    model, x = linear
    values = (model.weight * x[0]).sum(0).numpy()
    got = fa.infidelity_of(model, x, values, 0, samples=6, seed=5)
    generator = torch.Generator().manual_seed(5)

    def perturb(inputs):
        noise = torch.randn(inputs.shape, generator=generator) * fa.INFIDELITY_NOISE
        return noise, inputs - noise

    attribution = torch.as_tensor(values)[None, None].expand(1, 3, 8, 8) / 3
    expected = infidelity(
        model, perturb, x, attribution, target=0, n_perturb_samples=6,
        max_examples_per_batch=6, normalize=True,
    )  # fmt: skip
    assert got == pytest.approx(float(expected[0]), rel=1e-5)

    def saliency(m, inputs, target):
        return Saliency(m).attribute(inputs.clone().requires_grad_(True), target=target)[0]

    got = fa.sensitivity_of(lambda m, i, t: saliency(m, i, t).sum(0).numpy(), model, x, 0, 3, 7)
    generator = torch.Generator().manual_seed(7)

    def uniform(inputs, radius):
        noise = (torch.rand(inputs.shape, generator=generator) * 2 - 1) * radius
        return (inputs + noise).clamp(-1, 1)

    def explain(inputs, target):
        if isinstance(inputs, tuple):  # the unperturbed call: Captum answers in kind
            return (Saliency(model).attribute(inputs[0], target=target).sum(1),)
        return Saliency(model).attribute(inputs, target=target).sum(1)

    expected = sensitivity_max(
        explain, x, perturb_func=uniform, perturb_radius=fa.SENSITIVITY_RADIUS,
        n_perturb_samples=3, max_examples_per_batch=3, target=0,
    )  # fmt: skip
    assert got == pytest.approx(float(expected[0]), rel=1e-5)


def test_spearman_matches_pandas_and_a_hand_computed_case_with_ties():
    # Ranks (1, 2, 3, 4, 5) and (1, 2, 3.5, 5, 3.5): 8 / sqrt(10 * 9.5).
    assert fa.spearman(np.array([1, 2, 3, 4, 5]), np.array([5, 6, 7, 8, 7])) == pytest.approx(
        8 / math.sqrt(95)
    )
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, (9, 7)).astype(float)  # many ties
    b = a + rng.normal(0, 2, a.shape)
    frame = pd.DataFrame({"a": a.ravel(), "b": b.ravel()})
    assert fa.spearman(a, b) == pytest.approx(frame.corr(method="spearman").loc["a", "b"])
    assert fa.spearman(a, -a) == pytest.approx(-1.0)
    assert math.isnan(fa.spearman(np.ones((3, 3)), a[:3, :3]))


def naive_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 by the definition: weighted statistics of every 11 x 11 window."""
    taps = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    window = np.outer(taps, taps)
    window /= window.sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (window * pa).sum(), (window * pb).sum()
            va = (window * (pa - ma) ** 2).sum()
            vb = (window * (pb - mb) ** 2).sum()
            cov = (window * (pa - ma) * (pb - mb)).sum()
            values.append(
                (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
            )
    return float(np.mean(values))


def test_ssim_matches_its_definition_and_hand_computed_cases():
    rng = np.random.default_rng(1)
    a = rng.random((16, 20))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    assert fa.ssim(a, a) == pytest.approx(1.0)
    assert fa.ssim(a, b) == pytest.approx(naive_ssim(a, b), abs=1e-10)
    assert fa.ssim(a, b) < 0.9
    # Two constant images: only the luminance term is left, (2xy + C1) / (x^2 + y^2 + C1).
    c1 = 0.01**2
    got = fa.ssim(np.full((12, 12), 0.2), np.full((12, 12), 0.6))
    assert got == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1))
    with pytest.raises(AnalysisError, match="at least 11"):
        fa.ssim(np.zeros((5, 5)), np.zeros((5, 5)))


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(4).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def checked(model, image):
    """One full run on the small random model, the served model's tensors and logits before
    it, and what the model looked like at each pause."""
    before = {name: t.detach().clone() for name, t in model.state_dict().items()}
    x = model_input(model, image, None, SIZE)[0]
    with torch.no_grad():
        logits = model(x)
    pauses = []

    def pause():
        same = all(torch.equal(t, before[n]) for n, t in model.state_dict().items())
        pauses.append((hook_count(model), same))

    result = fa.faithfulness(
        model, image, target=TARGET, block=BLOCK, size=SIZE, steps=8,
        randomised=("saliency", "guided_gradcam", "gradcam"), sensitivity=("gradcam",),
        pause=pause,
    )  # fmt: skip
    return result, before, logits, x, pauses


def test_the_served_model_is_left_bit_identical_and_paused_clean(model, checked):
    result, before, logits, x, pauses = checked
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, tensor in after.items():
        assert torch.equal(tensor, before[name]), name
    with torch.no_grad():
        assert torch.equal(model(x), logits)
    assert len(pauses) > 10 and all(pauses), pauses  # no hooks, the real weights, every time
    # Control: the copy did change, so the check measured something.
    gradcam = result.methods["gradcam"].randomised
    assert [r.cut for r in gradcam] == list(fa.CUTS)
    assert not np.allclose(result.randomised_maps["entry"]["gradcam"], result.maps["gradcam"])


def test_the_result_has_every_score_and_is_json(checked):
    result, *_ = checked
    assert list(result.methods) == list(fa.CHECKED) and list(result.baselines) == [
        "random",
        "centre",
    ]
    for scores in (*result.methods.values(), *result.baselines.values()):
        for curve in (scores.deletion, scores.insertion):
            assert len(curve.scores) == 9 and 0 <= curve.area <= 1
    assert result.methods["gradcam"].sensitivity is not None
    assert result.methods["saliency"].sensitivity is None
    assert result.methods["occlusion"].randomised == ()
    assert all(result.maps[m].shape == (SIZE, SIZE) for m in fa.CHECKED)
    text = json.dumps(result.to_json(), allow_nan=False)
    assert json.loads(text)["methods"]["saliency"]["deletion"]["area"] == pytest.approx(
        result.methods["saliency"].deletion.area
    )


def test_reported_metrics_equal_captum_called_directly(model, checked):
    result, _, _, x, _ = checked
    generator = torch.Generator().manual_seed(0)

    def perturb(inputs):
        noise = torch.randn(inputs.shape, generator=generator) * fa.INFIDELITY_NOISE
        return noise, inputs - noise

    attribution = torch.as_tensor(result.maps["saliency"])[None, None].expand(x.shape) / 3
    with torch.no_grad():
        expected = infidelity(
            model, perturb, x, attribution, target=TARGET,
            n_perturb_samples=fa.INFIDELITY_SAMPLES,
            max_examples_per_batch=fa.INFIDELITY_SAMPLES, normalize=True,
        )  # fmt: skip
    assert result.methods["saliency"].infidelity == pytest.approx(float(expected[0]), rel=1e-4)

    generator = torch.Generator().manual_seed(0)

    def uniform(inputs, radius):
        noise = (torch.rand(inputs.shape, generator=generator) * 2 - 1) * radius
        return (inputs + noise).clamp(-1, 1)

    def cams(inputs, target):
        batch = inputs[0] if isinstance(inputs, tuple) else inputs
        with torch.enable_grad():
            cam = LayerGradCam(model, model.blocks[BLOCK]).attribute(
                batch.clone().requires_grad_(True), target=target, relu_attributions=True
            )
        out = LayerAttribution.interpolate(cam, (SIZE, SIZE), "bilinear")[:, 0]
        return (out,) if isinstance(inputs, tuple) else out  # Captum answers in kind

    expected = sensitivity_max(
        cams, x, perturb_func=uniform, perturb_radius=fa.SENSITIVITY_RADIUS,
        n_perturb_samples=fa.SENSITIVITY_SAMPLES,
        max_examples_per_batch=fa.SENSITIVITY_SAMPLES, target=TARGET,
    )  # fmt: skip
    assert result.methods["gradcam"].sensitivity == pytest.approx(float(expected[0]), rel=1e-4)


def test_the_gradcam_scored_is_the_one_the_analysis_shows(model, image, checked):
    result, *_ = checked
    shown = analyze(model, image, target=TARGET, size=SIZE).gradcam[BLOCK]
    assert np.allclose(result.maps["gradcam"], shown, atol=1e-5 * max(np.abs(shown).max(), 1e-12))


def sobel(model, x, target):
    """An edge map of the image alone: a fake attribution that ignores the model."""
    grey = x.detach().mean(dim=1, keepdim=True)  # (1, 1, S, S)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])[None, None]
    gx, gy = F.conv2d(grey, kx, padding=1), F.conv2d(grey, kx.transpose(2, 3), padding=1)
    return torch.sqrt(gx**2 + gy**2)[0, 0].numpy()


def test_an_input_only_map_survives_every_randomisation_and_gradients_do_not(model, image):
    x = model_input(model, image, None, SIZE)[0]
    explainers = {
        "sobel": sobel,
        "saliency": fa.method_explainer("saliency", BLOCK),
        "gradcam": fa.method_explainer("gradcam", BLOCK),
    }
    originals = {name: explain(model, x, TARGET) for name, explain in explainers.items()}
    scores, maps = fa.cascade(model, x, TARGET, explainers, originals, seed=3)
    assert [r.cut for r in scores["sobel"]] == list(fa.CUTS)
    for r in scores["sobel"]:
        assert r.spearman == pytest.approx(1.0) and r.ssim == pytest.approx(1.0)
    for name in ("saliency", "gradcam"):
        entry = scores[name][-1]
        assert not entry.spearman > 0.9, (name, entry)  # NaN (a blank map) counts as dropped
    assert set(maps) == set(fa.CUTS)


def test_smoothgrad_is_the_same_for_a_seed_and_leaves_the_global_generator_alone(model, image):
    x = model_input(model, image, None, SIZE)[0]
    torch.manual_seed(11)
    state = torch.random.get_rng_state()
    first = fa.method_explainer("smoothgrad", BLOCK, seed=5)(model, x, TARGET)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(12)  # another global state: the map does not follow it
    assert np.array_equal(fa.method_explainer("smoothgrad", BLOCK, seed=5)(model, x, TARGET), first)
    # Control: another seed is other noise, so the seed is what fixed the map.
    other = fa.method_explainer("smoothgrad", BLOCK, seed=6)(model, x, TARGET)
    assert not np.array_equal(other, first)


def test_cascading_reinitialises_from_the_head_down(model):
    copied = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    for module in fa.cut_modules(copied, "exit"):
        fa.reinitialise(module, generator)
    changed = {
        name.split(".")[0]
        for name, t in copied.state_dict().items()
        if not torch.equal(t, model.state_dict()[name])
    }
    assert changed == {"classifier", "block13", "block14"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"methods": ("magic",)}, "Unknown method 'magic'"),
        ({"cuts": ("head",)}, "Unknown randomisation cut"),
        ({"block": "block99"}, "needs a block"),
        ({"steps": 1}, "2 to 64 steps"),
        ({"batch": 0}, "1 to 64 images"),
        ({"target": 5000}, "out of range"),
    ],
)
def test_bad_settings_are_clear_errors(model, image, settings, message):
    with pytest.raises(AnalysisError, match=message):
        fa.faithfulness(model, image, size=SIZE, **settings)


def test_cancel_stops_the_check(model, image):
    with pytest.raises(Cancelled):
        fa.faithfulness(model, image, size=SIZE, methods=("saliency",), cancel=lambda: True)
