"""A long job on the model's thread lets an interactive call that waits run between its steps
(``Runner.background`` and ``pause()``), and both give what they give alone; a call that
waits behind a plain call, or behind a method that hooks the model, waits for all of it.

Nothing here is timed: each job reports its steps (``progress``), and the test asks at each
later step whether the interactive call has already finished.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from xviz.engine.analysis import analyze
from xviz.engine.hooks import hook_count
from xviz.engine.runner import MINUTES, SECONDS, Runner
from xviz.methods.attribution import attribute
from xviz.methods.featurevis import visualize

SIZE = 71  # the smallest input: these are about order, not pictures
MAP = "block3_sepconv2.pointwise"


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def alone(model, image):
    """The interactive call's result with nothing else running."""
    return analyze(model, image, size=SIZE)


class Interleaving:
    """A job's ``progress``: at its first step, an analysis is asked for from another thread
    (the test waits until it is in the model's queue); at every later step, whether that
    analysis has finished is recorded in ``finished``."""

    def __init__(self, runner: Runner, image: np.ndarray) -> None:
        self.runner, self.image = runner, image
        self.finished: list[bool] = []
        self.done = threading.Event()
        self.analysis = None
        self.hooks_seen: list[int] = []
        self._asker: threading.Thread | None = None

    def _ask(self) -> None:
        def probed(model, image):  # and what the model carries when the waiting call runs
            self.hooks_seen.append(hook_count(model))
            return analyze(model, image, size=SIZE)

        self.analysis = self.runner(probed, self.image)
        self.done.set()

    def __call__(self, fraction: float, message: str) -> None:
        if self._asker is None:
            self._asker = threading.Thread(target=self._ask)
            self._asker.start()
            deadline = time.monotonic() + 60
            while self.runner.thread.waiting == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
            assert self.runner.thread.waiting == 1, "the analysis never reached the queue"
            return
        self.finished.append(self.done.is_set())

    def join(self) -> None:
        assert self._asker is not None
        self._asker.join(timeout=120)
        assert self.done.is_set()


def _same_analysis(got, expected) -> None:
    np.testing.assert_array_equal(got.logits, expected.logits)
    np.testing.assert_array_equal(got.map("block5").data, expected.map("block5").data)


def test_a_feature_visualization_lets_a_waiting_analysis_run_at_its_next_step(model, image, alone):
    runner = Runner(model)
    by_itself = visualize(model, MAP, [0, 5], SIZE, steps=5)
    asked = Interleaving(runner, image)
    made = runner.background(
        visualize, MAP, [0, 5], SIZE, steps=5, progress=asked, priority=MINUTES
    )
    asked.join()
    # Asked for after step 1, the analysis ran within step 2.
    assert asked.finished == [True, True, True, True]
    assert asked.hooks_seen == [0]  # it found the plain model: no ReLU redirected
    _same_analysis(asked.analysis, alone)
    np.testing.assert_array_equal(made.images, by_itself.images)  # the job is unchanged
    np.testing.assert_array_equal(made.objective, by_itself.objective)


def test_control_behind_a_plain_call_the_analysis_waits_for_all_of_it(model, image, alone):
    runner = Runner(model)
    asked = Interleaving(runner, image)
    runner(visualize, MAP, [0, 5], SIZE, steps=5, progress=asked)
    asked.join()
    assert asked.finished == [False, False, False, False]
    _same_analysis(asked.analysis, alone)


def test_an_attribution_of_many_passes_lets_it_run_between_them(model, image, alone):
    runner = Runner(model)
    kwargs = {"target": 3, "size": SIZE, "n_steps": 4, "internal_batch_size": 1}
    by_itself = attribute(model, image, method="integrated_gradients", **kwargs)
    asked = Interleaving(runner, image)
    got = runner.background(
        attribute,
        image,
        method="integrated_gradients",
        progress=asked,
        priority=SECONDS,
        **kwargs,
    )
    asked.join()
    assert asked.finished == [True, True, True]
    assert asked.hooks_seen == [0]
    _same_analysis(asked.analysis, alone)
    np.testing.assert_array_equal(got.map, by_itself.map)


def test_control_a_method_that_hooks_the_model_does_not_pause(model, image, alone):
    runner = Runner(model)
    asked = Interleaving(runner, image)
    runner.background(
        attribute,
        image,
        target=3,
        size=SIZE,
        method="guided_gradcam",
        block="block4",
        progress=asked,
        priority=SECONDS,
    )
    asked.join()
    assert asked.finished == [False]  # its second pass ran with guided backprop's hooks
    _same_analysis(asked.analysis, alone)
