"""Forward first: an analysis hands out its prediction, then the maps a page shows at once
(``first``), before its backward pass, then its Grad-CAMs before the other maps; the cache
serves those early stages to whoever asks while the rest still runs."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from xviz.app import views
from xviz.engine.analysis import MAP_NAMES, STAGES, analyze
from xviz.engine.cache import AnalysisCache
from xviz.errors import AnalysisError
from xviz.model.xception import Xception

SIZE = 71
SHOWN = views.layer_map_names("block5_sepconv1")  # what a page shows at once


@pytest.fixture(scope="module")
def model() -> Xception:
    torch.manual_seed(0)
    return Xception(head="imagenet").eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def plain(model, image):
    """The analysis of a run with no early stages and no maps first: the reference."""
    return analyze(model, image, size=SIZE)


def assert_same_maps(got, reference, names=MAP_NAMES):
    for name in names:
        a, b = got.map(name), reference.map(name)
        np.testing.assert_array_equal(a.data, b.data)
        for statistic in ("low", "quantization_step", "mean", "max", "min", "positive"):
            np.testing.assert_array_equal(getattr(a, statistic), getattr(b, statistic))


def test_the_stages_come_in_order_and_hold_the_numbers_of_a_plain_run(model, image, plain):
    seen = []
    whole = analyze(model, image, size=SIZE, on_partial=seen.append, first=SHOWN)
    assert [a.stage for a in seen] == ["prediction", "view", "gradcam"]
    assert whole.stage == "complete"
    head, view, cams = seen
    # The prediction: the logits of a plain run, and its target (the top class), no maps yet.
    np.testing.assert_array_equal(head.logits, plain.logits)
    assert head.target == whole.target == int(np.argmax(plain.logits))
    assert not head.sepconvs and not head.gradcam and not head.has_maps(SHOWN)
    # The view: the maps asked for first and no other, as a plain run makes them.
    assert view.has_maps(SHOWN) and list(view.sepconvs) == ["block5_sepconv1"]
    assert not view.convs and not view.blocks and not view.gradcam
    assert not view.has_maps(["block5_sepconv2.depthwise", "block5_sepconv2.pointwise"])
    assert_same_maps(view, plain, SHOWN)
    # The Grad-CAMs, before the other maps; every one as a plain run's.
    assert len(cams.gradcam) == 14 and not cams.has_maps(["block1"])
    for block in plain.gradcam:
        np.testing.assert_array_equal(cams.gradcam[block], plain.gradcam[block])
        np.testing.assert_array_equal(cams.gradcam_raw[block], plain.gradcam_raw[block])
    # The whole: every map as a plain run's; the view's arrays are its own.
    assert_same_maps(whole, plain)
    assert whole.map(SHOWN[0]) is view.map(SHOWN[0])
    for name, (scale, shift) in plain.bn_affine.items():
        np.testing.assert_array_equal(whole.bn_affine[name][0], scale)
        np.testing.assert_array_equal(whole.bn_affine[name][1], shift)
    assert [s for s in STAGES if whole.reached(s)] == list(STAGES)
    assert head.reached("prediction") and not head.reached("view")
    assert view.reached("view") and not view.reached("gradcam")


def test_without_maps_first_the_grad_cams_follow_the_prediction(model, image, plain):
    seen = []
    whole = analyze(model, image, size=SIZE, on_partial=seen.append)
    assert [a.stage for a in seen] == ["prediction", "gradcam"]  # no view: nothing asked
    assert_same_maps(whole, plain)


def test_unknown_maps_are_refused_before_anything_runs(model, image):
    cache = AnalysisCache(64)
    for bad in (["block5_sepconv1.depthwise", "../../etc/passwd"], ["x" * 10_000]):
        with pytest.raises(AnalysisError, match="Unknown map"):
            analyze(model, image, size=SIZE, first=bad)
        with pytest.raises(AnalysisError, match="Unknown map"):
            cache.early(model, image, size=SIZE, maps=bad)
    assert cache.stats.misses == 0  # nothing ran
    for layer in ("block99_sepconv1", None, 3, "block5_sepconv1.depthwise", "block5"):
        with pytest.raises(AnalysisError, match="Unknown layer"):
            views.layer_map_names(layer)
    # Control: the layers a page offers name maps of the model.
    assert views.layer_map_names("block2_residual") == ("block2_residual", "block2")
    assert views.layer_map_names("block1_conv1") == ("block1_conv1", "block1")


def test_the_cache_serves_the_shown_maps_while_the_backward_pass_waits(model, image, plain):
    cache = AnalysisCache(64)
    view_out, release = threading.Event(), threading.Event()

    def run(fn, x, **settings):
        """The analysis, held after its view (before the backward pass) until released."""
        told = settings.pop("on_partial")

        def partial(a):
            told(a)
            if a.stage == "view":
                view_out.set()
                assert release.wait(60)

        return fn(model, x, **settings, on_partial=partial)

    early = cache.early(model, image, size=SIZE, run=run, stage="prediction", maps=SHOWN)
    assert early.stage == "view" and view_out.is_set() and not release.is_set()
    assert_same_maps(early, plain, SHOWN)
    # A second caller joins the same run (nothing computed twice).
    assert cache.early(model, image, size=SIZE, run=run, stage="prediction") is early
    done = {}
    waiters = {
        "whole": lambda: cache.analyze(model, image, size=SIZE, run=run),
        "gradcam": lambda: cache.early(model, image, size=SIZE, run=run, stage="gradcam"),
        "other map": lambda: cache.early(model, image, size=SIZE, run=run, maps=["block9"]),
    }
    threads = [
        threading.Thread(target=lambda k=k, f=f: done.__setitem__(k, f()))
        for k, f in waiters.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(0.5)
    assert not done  # each waits for the backward pass (control: the view was served)
    release.set()
    for thread in threads:
        thread.join(60)
    whole = done["whole"]
    assert whole.complete and len(whole.gradcam) == 14
    assert done["gradcam"].reached("gradcam") and done["other map"].has_maps(["block9"])
    assert whole.map(SHOWN[1]) is early.map(SHOWN[1])
    assert_same_maps(whole, plain)
    # Now cached: early answers with the whole.
    assert cache.early(model, image, size=SIZE, run=run, stage="prediction") is whole
    assert cache.stats.misses == 1


def test_an_error_reaches_whoever_waits_for_an_early_stage(model, image):
    cache = AnalysisCache(64)

    def run(fn, x, **settings):
        raise RuntimeError("the device is gone")

    with pytest.raises(RuntimeError, match="the device is gone"):
        cache.early(model, image, size=SIZE, run=run, stage="prediction", maps=SHOWN)
    # Nothing is left waiting: a later request computes afresh (and succeeds).
    assert cache.early(model, image, size=SIZE, stage="prediction").reached("prediction")
    assert cache.early(model, image, size=SIZE).complete
