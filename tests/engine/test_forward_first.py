"""Forward first: an analysis hands out its prediction and its maps before its backward pass,
and the cache serves those early stages to whoever asks while the rest still runs."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from xviz.engine.analysis import STAGES, analyze
from xviz.engine.cache import AnalysisCache
from xviz.model.xception import Xception

SIZE = 71


@pytest.fixture(scope="module")
def model() -> Xception:
    torch.manual_seed(0)
    return Xception(head="imagenet").eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def test_the_stages_come_in_order_and_hold_the_numbers_of_the_whole(model, image):
    seen = []
    whole = analyze(model, image, size=SIZE, on_partial=seen.append)
    assert [a.stage for a in seen] == ["prediction", "maps"] and whole.stage == "complete"
    head, maps = seen
    # The prediction: the logits of the whole, and its target (the top class), no maps yet.
    np.testing.assert_array_equal(head.logits, whole.logits)
    assert head.target == whole.target == int(np.argmax(whole.logits))
    assert not head.sepconvs and not head.gradcam
    # The maps: every one, equal to the whole's; Grad-CAM only in the whole.
    assert not maps.gradcam and len(whole.gradcam) == 14
    for name, m in whole.maps.items():
        np.testing.assert_array_equal(maps.map(name).data, m.data)
        np.testing.assert_array_equal(maps.map(name).mean, m.mean)
    # Against a run without the callback: the same analysis.
    plain = analyze(model, image, size=SIZE)
    np.testing.assert_array_equal(plain.logits, whole.logits)
    for block in plain.gradcam:
        np.testing.assert_array_equal(plain.gradcam[block], whole.gradcam[block])
    assert [s for s in STAGES if whole.reached(s)] == list(STAGES)
    assert head.reached("prediction") and not head.reached("maps")


def test_the_cache_serves_the_maps_while_the_backward_pass_waits(model, image):
    cache = AnalysisCache(64)
    maps_out, release = threading.Event(), threading.Event()

    def run(fn, x, **settings):
        """The analysis, held after its maps until the test releases it."""
        told = settings.pop("on_partial")

        def partial(a):
            told(a)
            if a.stage == "maps":
                maps_out.set()
                assert release.wait(60)

        return fn(model, x, **settings, on_partial=partial)

    early = cache.early(model, image, size=SIZE, run=run, stage="maps")
    assert early.stage == "maps" and maps_out.is_set() and not release.is_set()
    # A second caller joins the same run (nothing computed twice): its prediction is there.
    assert cache.early(model, image, size=SIZE, run=run, stage="prediction") is early
    done = []
    waiter = threading.Thread(
        target=lambda: done.append(cache.analyze(model, image, size=SIZE, run=run))
    )
    waiter.start()
    waiter.join(0.5)
    assert not done  # the whole waits for the backward pass (control)
    release.set()
    waiter.join(60)
    whole = done[0]
    assert whole.complete and len(whole.gradcam) == 14
    np.testing.assert_array_equal(whole.map("block5").data, early.map("block5").data)
    # Now cached: early answers with the whole.
    assert cache.early(model, image, size=SIZE, run=run) is whole
    assert cache.stats.misses == 1


def test_an_error_reaches_whoever_waits_for_an_early_stage(model, image):
    cache = AnalysisCache(64)

    def run(fn, x, **settings):
        raise RuntimeError("the device is gone")

    with pytest.raises(RuntimeError, match="the device is gone"):
        cache.early(model, image, size=SIZE, run=run)
    # Nothing is left waiting: a later request computes afresh (and succeeds).
    assert cache.early(model, image, size=SIZE).reached("maps")
