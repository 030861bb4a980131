"""xviz.engine.zerogpu without ZeroGPU: the runner's routing, fallback and booking, with a stand-in
for the ``spaces`` package's decorated functions (``tests/app/test_zerogpu_harness.py`` runs the
real package).

The stand-in runs a job the way the package's worker does, in this process: ``run_job`` /
``stream_job`` on the worker's copy of the model, the job pickled and unpickled on the way
(as the package's queues do), or it refuses as the package does, with a ``gr.Error`` titled
"ZeroGPU ...".
"""

from __future__ import annotations

import pickle

import gradio as gr
import numpy as np
import pytest

from xviz.app.explorer import Explorer
from xviz.engine import zerogpu
from xviz.engine.analysis import analyze
from xviz.engine.runner import INTERACTIVE, SECONDS, Runner
from xviz.errors import AnalysisError, Cancelled
from xviz.methods.attribution import attribute
from xviz.methods.featurevis import visualize

SIZE = 64


class StandIn:
    """The decorated functions ``install()`` would return; ``refuse`` makes them raise."""

    def __init__(self) -> None:
        self.refuse: BaseException | None = None
        self.jobs: list[zerogpu.Job] = []
        self.closed = 0

    def run(self, job):
        if self.refuse is not None:
            raise self.refuse
        job = pickle.loads(pickle.dumps(job))  # what crosses to the worker process
        self.jobs.append(job)
        return pickle.loads(pickle.dumps(zerogpu.run_job(job)))

    def stream(self, job):
        if self.refuse is not None:
            raise self.refuse
        job = pickle.loads(pickle.dumps(job))
        self.jobs.append(job)
        inner = zerogpu.stream_job(job)
        try:
            for item in inner:
                yield pickle.loads(pickle.dumps(item))
        finally:
            self.closed += 1
            inner.close()


@pytest.fixture
def gpu(model, monkeypatch):
    """(runner, stand-in, notices): a ZeroGPURunner whose worker copy lives on the CPU."""
    stand_in = StandIn()
    monkeypatch.setattr(zerogpu, "_decorated", {"run": stand_in.run, "stream": stand_in.stream})
    notices: list[str] = []
    runner = zerogpu.ZeroGPURunner(model, notify=notices.append, gpu_device="cpu")
    return runner, stand_in, notices


@pytest.fixture
def image():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def test_a_call_runs_on_the_workers_copy_and_gives_what_the_cpu_gives(gpu, model, image):
    runner, stand_in, notices = gpu
    got = runner(analyze, image, size=SIZE)
    want = analyze(model, image, size=SIZE)
    (job,) = stand_in.jobs
    assert job.fn is analyze and job.model == runner.key
    assert zerogpu._GPU_MODELS[runner.key] is not model  # the worker's own copy
    np.testing.assert_array_equal(got.logits, want.logits)
    np.testing.assert_array_equal(got.gradcam["block14"], want.gradcam["block14"])
    assert notices == []
    assert runner.clock.visits[-1].call == "analyze"


@pytest.mark.parametrize(
    ("title", "message", "says"),
    [
        ("ZeroGPU quota exceeded", "You have exceeded your free ZeroGPU quota (20s requested "
         "vs. 3s left). Try again in 1:00:00.", "Your free ZeroGPU time for today is used up"),
        ("ZeroGPU quota exceeded", "Space app has reached its GPU limit. Try re-running outside "
         "of examples if it happened after clicking one", "This Space's ZeroGPU time is used up"),
        ("ZeroGPU queue timeout", "No GPU was available after 60s", "No GPU was free"),
        ("ZeroGPU worker error", "GPU task aborted", "The GPU call failed"),
    ],
)  # fmt: skip
def test_a_refusal_is_said_in_one_sentence_and_answered_on_the_cpu(
    gpu, model, image, title, message, says
):
    runner, stand_in, notices = gpu
    stand_in.refuse = gr.Error(message, title=title)  # as spaces/zero/gradio.py raises them
    got = runner(analyze, image, size=SIZE)
    np.testing.assert_array_equal(got.logits, analyze(model, image, size=SIZE).logits)
    (sentence,) = notices
    assert says in sentence and "on the CPU" in sentence
    assert stand_in.jobs == []  # nothing reached the worker


def test_other_errors_are_not_zerogpus_to_explain(gpu, image):
    runner, stand_in, notices = gpu
    stand_in.refuse = gr.Error("Something else", title="Not ours")
    with pytest.raises(gr.Error, match="Something else"):
        runner(analyze, image, size=SIZE)
    stand_in.refuse = RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        runner(analyze, image, size=SIZE)
    assert notices == []


def test_an_xviz_error_in_the_worker_reaches_the_visitor_word_for_word(gpu, image):
    runner, _, _ = gpu
    with pytest.raises(AnalysisError, match="Unknown attribution method 'nope'"):
        runner(attribute, image, size=SIZE, method="nope")


def test_progress_streams_back_and_cancel_stops_the_workers_run(gpu, model, image):
    runner, stand_in, _ = gpu
    seen: list[tuple] = []
    got = runner(
        attribute, image, size=SIZE, method="integrated_gradients", n_steps=4,
        internal_batch_size=2, progress=lambda *a: seen.append(a),
    )  # fmt: skip
    want = attribute(model, image, size=SIZE, method="integrated_gradients", n_steps=4,
                     internal_batch_size=2)  # fmt: skip
    np.testing.assert_allclose(got.map, want.map, rtol=1e-5, atol=1e-7)
    assert seen and seen[-1][0] == pytest.approx(1.0)
    # Cancel after the first progress message: the stream closes, the worker's run ends.
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 1

    closed = stand_in.closed
    with pytest.raises(Cancelled):
        runner(
            attribute, image, size=SIZE, method="integrated_gradients", n_steps=32,
            internal_batch_size=1, progress=lambda *a: None, cancel=cancel,
        )  # fmt: skip
    assert stand_in.closed == closed + 1


def test_calls_outside_a_visitors_request_stay_on_the_cpu(model, monkeypatch, image):
    stand_in = StandIn()
    monkeypatch.setattr(zerogpu, "_decorated", {"run": stand_in.run, "stream": stand_in.stream})
    runner = zerogpu.ZeroGPURunner(model, gpu_device="cpu", for_visitor=lambda: False)
    assert runner(analyze, image, size=SIZE).logits.shape == (1000,)
    assert stand_in.jobs == []


def test_the_explorer_sends_every_computation_through_its_runner(model, image):
    calls: list[str] = []

    class Counting(Runner):
        def _run(self, priority, fn, args, kwargs):
            calls.append((fn.__qualname__, priority))
            return super()._run(priority, fn, args, kwargs)

    explorer = Explorer(model, cache_mb=64, runner=Counting(model))
    session = explorer.start(image, SIZE)
    explorer.analysis(session)
    explorer.attribution(session, "saliency", "block5")
    explorer.ablation(session, "relu_between", ["block5"])
    # An attribution is a job of seconds: it lets the interactive calls pass.
    assert calls == [("analyze", INTERACTIVE), ("attribute", SECONDS), ("ablate", INTERACTIVE)]


def test_a_first_analysis_books_seconds_not_a_minute_and_the_clock_learns():
    clock = zerogpu.BookingClock()
    first = clock.booked(analyze, (None,), {"size": 299})
    assert 2 <= first <= 30  # never the package's default 60 s
    clock.record(analyze, (None,), {"size": 299}, first, used_s=6.0, gpu_s=0.2, cold=True)
    warm = clock.booked(analyze, (None,), {"size": 299})
    assert warm < first
    # A kind of call the worker has not run pays cuDNN's search once: more than a warm repeat.
    ig = {"method": "integrated_gradients", "size": 299, "n_steps": 16}
    new = clock.booked(attribute, (None,), ig)
    clock.record(attribute, (None,), ig, new, used_s=2.0, gpu_s=1.8, cold=False)
    assert clock.booked(attribute, (None,), ig) < new
    # A page of feature visualizations (16 channels, 128 steps) books far more than one.
    page = clock.booked(visualize, ("block5_sepconv1.pointwise", list(range(16)), 150), {})
    one = clock.booked(visualize, ("block5_sepconv1.pointwise", [3], 150), {})
    assert page > 3 * one


def test_measured_gpu_speed_calibrates_the_next_booking():
    slow, fast = zerogpu.BookingClock(), zerogpu.BookingClock()
    ig = {"method": "integrated_gradients", "size": 299, "n_steps": 64}
    for clock, gpu_s in ((slow, 20.0), (fast, 0.5)):
        clock.record(attribute, (None,), ig, 10, used_s=5.0, gpu_s=1.0, cold=True)
        clock.record(attribute, (None,), ig, 10, used_s=gpu_s + 0.3, gpu_s=gpu_s, cold=False)
    assert slow.booked(attribute, (None,), ig) > 2 * fast.booked(attribute, (None,), ig)


def test_zerogpu_is_read_from_the_environment_as_spaces_reads_it(monkeypatch):
    for value, on in (("true", True), ("1", True), ("T", True), ("", False), ("no", False)):
        monkeypatch.setenv("SPACES_ZERO_GPU", value)
        assert zerogpu.enabled() is on
