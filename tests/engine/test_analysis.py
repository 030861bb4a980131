"""analyze: names and shapes, captured maps against independent recomputation, one-pass
Grad-CAM against Captum's own LayerGradCam, statistics, storage, thread safety."""

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam

from tests.plain_forward import plain_forward
from tests.reference import REFERENCE_BLOCKS, REFERENCE_CONVS
from xviz.engine.analysis import MAP_KINDS, MAP_NAMES, Analysis, analyze, map_channels
from xviz.engine.hooks import hook_count
from xviz.errors import AnalysisError
from xviz.model.xception import Xception

# The 34 separable convs: name -> (depthwise channels M, pointwise channels N).
REFERENCE_SEPCONVS = {
    "block2_sepconv1": (64, 128),
    "block2_sepconv2": (128, 128),
    "block3_sepconv1": (128, 256),
    "block3_sepconv2": (256, 256),
    "block4_sepconv1": (256, 728),
    "block4_sepconv2": (728, 728),
    **{f"block{b}_sepconv{i}": (728, 728) for b in range(5, 13) for i in (1, 2, 3)},
    "block13_sepconv1": (728, 728),
    "block13_sepconv2": (728, 1024),
    "block14_sepconv1": (1024, 1536),
    "block14_sepconv2": (1536, 2048),
}
SIZE = 150


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def analysis(model, image) -> Analysis:
    return analyze(model, image, size=SIZE)


@pytest.fixture(scope="module")
def float32_maps(model, analysis):
    """Every map and every depthwise input, float32, from a plain hooked forward pass."""
    return plain_forward(model, analysis.image)


def side(block: str, size: int) -> int:
    return REFERENCE_BLOCKS[block][1 if size == 299 else 2]


def check_shapes(a: Analysis, size: int) -> None:
    assert list(a.sepconvs) == list(REFERENCE_SEPCONVS)
    blocks = list(REFERENCE_BLOCKS)
    for name, (m, n) in REFERENCE_SEPCONVS.items():
        block = name.split("_")[0]
        # A separable conv runs at the side of its block's input (pooling comes after).
        s = side(blocks[blocks.index(block) - 1], size)
        assert a.sepconvs[name].block == block
        assert a.sepconvs[name].depthwise.shape == (m, s, s), name
        assert a.sepconvs[name].pointwise.shape == (n, s, s), name
    for name, (c, *_) in REFERENCE_BLOCKS.items():
        assert a.blocks[name].shape == (c, side(name, size), side(name, size))
        assert a.gradcam_raw[name].shape == (side(name, size),) * 2
        assert a.gradcam[name].shape == (size, size)
    assert list(a.convs) == REFERENCE_CONVS
    assert [a.map(name).num_channels for name in MAP_NAMES] == [map_channels(n) for n in MAP_NAMES]
    assert {a.map(name).kind for name in MAP_NAMES} == set(MAP_KINDS)


def test_names_and_shapes_match_the_reference_at_150(analysis):
    check_shapes(analysis, SIZE)
    assert len(MAP_NAMES) == 34 * 2 + 6 + 14
    assert analysis.image.shape == (SIZE, SIZE, 3) and analysis.image.dtype == np.uint8


def test_every_array_is_read_only(analysis):
    arrays = [analysis.image, analysis.logits, analysis.probabilities]
    arrays += [*analysis.gradcam.values(), *analysis.gradcam_raw.values()]
    arrays += [a for pair in analysis.bn_affine.values() for a in pair]
    for m in analysis.maps.values():
        arrays += [m.data, m.low, m.quantization_step, m.mean, m.max, m.min, m.positive]
    assert not any(a.flags.writeable for a in arrays)


def test_shapes_and_storage_at_299(model):
    x = torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(1)) * 2 - 1
    a = analyze(model, x)
    check_shapes(a, 299)
    assert a.size == 299 and a.weights == "random"
    assert a.nbytes <= 64 * 2**20


def test_depthwise_output_recomputed_from_the_weights_equals_the_captured_one(
    model, analysis, float32_maps
):
    _, inputs = float32_maps
    for name, sepconv in model.sepconvs.items():
        x = inputs[f"{name}.depthwise"]  # (M, H, W)
        weight = sepconv.depthwise.weight  # (M, 1, 3, 3)
        with torch.no_grad():
            expected = F.conv2d(x[None], weight, padding=1, groups=weight.shape[0])[0].numpy()
        captured = analysis.sepconvs[name].depthwise
        tolerance = captured.quantization_step[:, None, None] / 2 + 1e-6
        assert np.all(np.abs(captured.array() - expected) <= tolerance), name


def test_pointwise_and_other_maps_match_a_plain_forward(analysis, float32_maps):
    outputs, _ = float32_maps
    for name in MAP_NAMES:
        stored, exact = analysis.map(name), outputs[name].numpy()
        tolerance = stored.quantization_step[:, None, None] / 2 + 1e-6
        assert np.all(np.abs(stored.array() - exact) <= tolerance), name
        flat = exact.reshape(exact.shape[0], -1)
        np.testing.assert_allclose(stored.mean, flat.mean(1), rtol=1e-4, atol=1e-7)
        # analyze runs channels-last: its convolutions round differently in the last bits.
        np.testing.assert_allclose(stored.max, flat.max(1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stored.min, flat.min(1), rtol=1e-5, atol=1e-6)
        # A value within rounding of zero may change sides: one pixel's worth of slack.
        np.testing.assert_allclose(stored.positive, (flat > 0).mean(1), atol=1.01 / flat.shape[1])


def test_sepconv_input_is_derived_within_the_stored_precision(analysis, float32_maps):
    _, inputs = float32_maps
    for name, previous in (
        ("block2_sepconv1", "block1"),
        ("block5_sepconv1", "block4"),
        ("block14_sepconv1", "block13"),
    ):
        step = analysis.blocks[previous].quantization_step[:, None, None]
        exact = inputs[f"{name}.depthwise"].numpy()
        assert np.all(np.abs(analysis.sepconv_input(name) - exact) <= step / 2 + 1e-6), name
    for name, previous in (
        ("block5_sepconv2", "block5_sepconv1"),
        ("block14_sepconv2", "block14_sepconv1"),
    ):
        scale, _ = analysis.bn_affine[previous]
        step = analysis.sepconvs[previous].pointwise.quantization_step
        tolerance = (np.abs(scale) * step)[:, None, None] / 2 + 1e-5
        exact = inputs[f"{name}.depthwise"].numpy()
        assert np.all(np.abs(analysis.sepconv_input(name) - exact) <= tolerance), name


def test_channel_orders_rank_by_each_statistic(analysis):
    m = analysis.sepconvs["block5_sepconv2"].pointwise
    for by in ("mean", "max", "positive"):
        order = m.order(by)
        assert sorted(order.tolist()) == list(range(728))
        assert np.all(np.diff(getattr(m, by)[order]) <= 0)
    assert m.order("index").tolist() == list(range(728))
    np.testing.assert_array_equal(m.channels([3, 1]), m.array()[[3, 1]])
    np.testing.assert_array_equal(m.channel(5), m.array()[5])
    with pytest.raises(AnalysisError):
        m.order("median")


def test_gradcam_equals_captums_layer_gradcam_for_every_block(model, analysis):
    x = torch.tensor(analysis.image).permute(2, 0, 1)[None].float() / 127.5 - 1
    for name, block in model.blocks.items():
        ref = LayerGradCam(model, block).attribute(x, analysis.target, relu_attributions=True)
        scale = ref.abs().max().item() + 1e-30
        ours = torch.tensor(analysis.gradcam_raw[name])
        assert (ours - ref[0, 0]).abs().max().item() <= 1e-4 * scale, name
        up = LayerAttribution.interpolate(ref, (SIZE, SIZE), "bilinear")[0, 0]
        assert (torch.tensor(analysis.gradcam[name]) - up).abs().max() <= 1e-4 * scale, name


def test_top_k_and_default_target_is_the_top_class(model, analysis):
    assert len(analysis.top) == 5
    assert analysis.target == analysis.top[0].index == int(analysis.logits.argmax())
    assert analysis.top[0].label == analysis.target_label == f"class {analysis.target}"
    probabilities = [p.probability for p in analysis.top]
    assert probabilities == sorted(probabilities, reverse=True)
    np.testing.assert_allclose(analysis.probabilities.sum(), 1, rtol=1e-5)


def test_explicit_target_by_index_or_label(model, analysis):
    small = torch.tensor(analysis.image[:71, :71]).permute(2, 0, 1).float() / 127.5 - 1
    by_index = analyze(model, small, target=7, size=71, top_k=2)
    model.labels = [f"name{i}" for i in range(1000)]
    try:
        by_label = analyze(model, small, target="name7", size=71)
    finally:
        model.labels = []
    assert by_index.target == by_label.target == 7 and len(by_index.top) == 2
    np.testing.assert_array_equal(by_index.gradcam["block5"], by_label.gradcam["block5"])
    for bad in (1000, -1, "no such class"):
        with pytest.raises(AnalysisError):
            analyze(model, small, target=bad, size=71)


def test_tensor_input_gives_back_the_exact_display_image(model, image):
    x = torch.from_numpy(image[:71, :71]).permute(2, 0, 1).float() / 127.5 - 1
    a = analyze(model, x, size=71, storage="float16")
    np.testing.assert_array_equal(a.image, image[:71, :71])
    assert a.blocks["block5"].data.dtype == np.float16


def test_model_is_left_as_it_was_also_after_an_error(model, image):
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        analyze(model, image[:71, :71], size=71)
        assert model.training and hook_count(model) == 0
        with torch.no_grad():
            saved = model.block5.sepconv1_bn.weight[0].item()
            model.block5.sepconv1_bn.weight[0] = float("nan")  # fails inside the forward pass
        try:
            with pytest.raises(AnalysisError, match="not finite"):
                analyze(model, image[:71, :71], size=71)
        finally:
            with torch.no_grad():
                model.block5.sepconv1_bn.weight[0] = saved
        assert model.training and hook_count(model) == 0
    finally:
        model.eval()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_no_classifier_head_is_an_analysis_error(image):
    with pytest.raises(AnalysisError, match="classifier"):
        analyze(Xception(head="none"), image[:71, :71], size=71)


def test_two_threads_give_the_same_results_as_one_after_the_other(model, image):
    images = [image[:71, :71], image[-71:, -71:]]
    sequential = [analyze(model, im, size=71) for im in images]
    results: list[Analysis | None] = [None, None]
    barrier = threading.Barrier(2)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = analyze(model, images[i], size=71)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for one, other in zip(sequential, results, strict=True):
        assert other is not None and one.target == other.target
        np.testing.assert_array_equal(one.logits, other.logits)
        for name in MAP_NAMES:
            np.testing.assert_array_equal(one.map(name).data, other.map(name).data)
        for name in one.gradcam:
            np.testing.assert_array_equal(one.gradcam[name], other.gradcam[name])
    assert hook_count(model) == 0


def test_frozen_parameters_give_the_same_gradcam(model, image):
    small = image[:71, :71]
    expected = analyze(model, small, target=4, size=71)
    model.requires_grad_(False)
    try:
        frozen = analyze(model, small, target=4, size=71)
    finally:
        model.requires_grad_(True)
    for name in expected.gradcam_raw:
        np.testing.assert_array_equal(frozen.gradcam_raw[name], expected.gradcam_raw[name])
    assert all(p.grad is None for p in model.parameters())  # no gradient reached the weights
