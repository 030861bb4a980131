"""warm_up: it runs every input shape a click in the app runs, does nothing on the CPU unless
forced, and its background thread survives a failure."""

import logging

import numpy as np

from xviz.app.explorer import Explorer
from xviz.engine import warmup
from xviz.engine.hooks import hook_count
from xviz.engine.warmup import app_sizes, start_warm_up, warm_up
from xviz.methods.attribution import LAYER_METHODS

SIZE = 32
# Two methods and their batch patterns (a CPU test cannot afford all seven twice): batches of
# 4 with a backward pass to the input; batches of 4 and 2 at a layer.
METHODS_TESTED = ("smoothgrad", "layer_conductance")


class Shapes:
    """The (B, 3, S, S) input shapes the model's first block sees, via a forward pre-hook."""

    def __init__(self, model) -> None:
        self.seen: set[tuple[int, ...]] = set()
        self.handle = model.block1.register_forward_pre_hook(
            lambda module, args: self.seen.add(tuple(args[0].shape))
        )

    def close(self) -> set[tuple[int, ...]]:
        self.handle.remove()
        return self.seen


def test_the_warm_up_runs_every_shape_a_click_runs(model):
    warmed = Shapes(model)
    try:
        done = warm_up(model, sizes=[SIZE], methods=METHODS_TESTED, force=True)
    finally:
        warmed_shapes = warmed.close()
    expected = [f"analyze@{SIZE}", f"predict@{SIZE}"] + [f"{m}@{SIZE}" for m in METHODS_TESTED]
    assert done == expected

    # What the app runs: an upload's analysis, then each method at a block a user picked.
    explorer = Explorer(model, cache_mb=64)
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    clicked = Shapes(model)
    try:
        session = explorer.start(image, SIZE)
        explorer.analysis(session)
        for method in METHODS_TESTED:
            explorer.attribution(session, method, "block9" if method in LAYER_METHODS else "")
    finally:
        clicked_shapes = clicked.close()
    assert {(4, 3, SIZE, SIZE), (2, 3, SIZE, SIZE), (1, 3, SIZE, SIZE)} <= clicked_shapes
    assert clicked_shapes <= warmed_shapes
    assert hook_count(model) == 0


def test_nothing_runs_on_the_cpu_unless_forced(model):
    shapes = Shapes(model)
    try:
        assert warm_up(model) == []
        assert start_warm_up(model) is None
    finally:
        assert shapes.close() == set()


def test_the_app_sizes_are_the_weights_own_and_the_two_offered(model):
    assert app_sizes(model) == [150, 299]  # a model without weights expects 299


def test_the_thread_runs_the_warm_up_and_logs_a_failure(model, monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(warmup, "needs_warm_up", lambda m: True)
    monkeypatch.setattr(warmup, "warm_up", lambda m: calls.append(m) or ["analyze@299"])
    thread = start_warm_up(model)
    thread.join(10)
    assert calls == [model] and thread.daemon and not thread.is_alive()

    def fail(m):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(warmup, "warm_up", fail)
    with caplog.at_level(logging.WARNING, logger="xviz.engine.warmup"):
        thread = start_warm_up(model)
        thread.join(10)
    assert "warm-up stopped: CUDA out of memory" in caplog.text


def test_an_empty_method_list_warms_the_analysis_and_prediction_only(model):
    assert warm_up(model, sizes=[SIZE], methods=(), force=True) == [
        f"analyze@{SIZE}",
        f"predict@{SIZE}",
    ]
