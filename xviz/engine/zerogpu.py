"""Hugging Face ZeroGPU: every model computation inside ``@spaces.GPU``, the CPU when refused.

On a ZeroGPU Space (``$SPACES_ZERO_GPU`` set) a GPU exists only during a call of a function
decorated with ``spaces.GPU`` (the ``spaces`` package, 0.51.3: ``spaces/zero/wrappers.py``):
the package books a GPU from the Space's device API (``POST /schedule`` with the call's
``durationSeconds``; a 429 means the visitor's daily quota is spent), runs the function in a
forked worker process, pickles its result back and releases the GPU. Outside such calls torch
runs in an emulation mode whose ``cuda`` tensors are stand-ins, packed to disk at launch and
moved to the GPU inside the worker (``spaces/zero/torch/patching.py``); reaching real CUDA
raises (``torch._C._cuda_init`` is replaced).

So the app keeps two copies of the weights (90 MB each): the served model on the CPU, whose
weights the pages read and which answers when ZeroGPU refuses, and a copy moved to ``cuda``
before launch, on the main thread (where the package's torch mode is entered). A call names a
module-level function and plain arguments, which pickle by reference and by value; the worker
runs it on the GPU copy and sends back its result (numpy and plain Python) or its
``XvizError``. ``progress`` and ``cancel`` (callables, which cannot be pickled) become a stream:
the worker yields progress messages, and closing the stream on cancel stops its run.

Each call books a duration from :class:`BookingClock`, a calibrated estimate of that call
(never a blanket maximum, which costs visitors queue priority and can exceed what they have
left). When ZeroGPU refuses or fails (quota spent, no GPU in time, the worker died), the
visitor reads one sentence saying so and the same call runs on the CPU.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from xviz.engine.runner import SECONDS, ModelThread, Runner
from xviz.errors import Cancelled, XvizError

logger = logging.getLogger(__name__)

T = TypeVar("T")
ENV = "SPACES_ZERO_GPU"


def enabled() -> bool:
    """Whether this process runs on ZeroGPU: ``$SPACES_ZERO_GPU`` read as the ``spaces``
    package reads it (``spaces/config.py``: "1", "t" or "true", any case)."""
    return os.environ.get(ENV, "").strip().lower() in ("1", "t", "true")


# Forward+backward passes of a 299x299 image a call needs: the unit BookingClock counts in.
def _area(size: Any) -> float:
    try:
        side = float(size)
    except (TypeError, ValueError):
        side = 299.0
    return max(side, 32.0) ** 2 / 299.0**2


def _analyze_units(args: tuple, kwargs: dict) -> float:
    return 1.2 * _area(kwargs.get("size", 299))


def _attribute_units(args: tuple, kwargs: dict) -> float:
    # Images each method runs with the app's defaults or the call's parameters
    # (xviz.methods.attribution: DEFAULT_STEPS 16, DEFAULT_SAMPLES 8, 7 x 7 occlusion windows).
    method = kwargs.get("method", "integrated_gradients")
    steps = float(kwargs.get("n_steps", 16))
    images = {
        "integrated_gradients": steps,
        "layer_integrated_gradients": steps,
        "layer_conductance": 1.5 * steps,
        "smoothgrad": float(kwargs.get("nt_samples", 8)),
        "saliency": 1.0,
        "guided_gradcam": 2.0,
        "occlusion": 0.4 * 50,  # forward passes only, 49 windows and the original
    }.get(method, steps)
    return images * _area(kwargs.get("size", 299))


def _visualize_units(args: tuple, kwargs: dict) -> float:
    # visualize(model, map_name, channels, size, steps, ...): steps x channels passes.
    channels = args[1] if len(args) > 1 else kwargs.get("channels", [0])
    count = len(channels) if hasattr(channels, "__len__") else 1
    size = args[2] if len(args) > 2 else kwargs.get("size", 150)
    steps = args[3] if len(args) > 3 and args[3] is not None else kwargs.get("steps") or 128
    return 0.5 * count * float(steps) * _area(size)


def _faithfulness_units(args: tuple, kwargs: dict) -> float:
    # planned_images counts forward passes; a forward+backward unit is about three of them.
    from xviz.methods.faithfulness import planned_images

    return planned_images() / 3 * _area(kwargs.get("size", 299))


def _units(fn: Callable[..., Any], args: tuple, kwargs: dict) -> float:
    """Work of ``fn(model, *args, **kwargs)`` in forward+backward passes at 299."""
    counted = _UNITS.get(f"{fn.__module__}.{fn.__qualname__}")
    return counted(args, kwargs) if counted is not None else 2.0


_UNITS: dict[str, Callable[[tuple, dict], float]] = {
    "xviz.engine.analysis.analyze": _analyze_units,
    "xviz.methods.attribution.attribute": _attribute_units,
    "xviz.methods.ablation.ablate": lambda args, kwargs: 1.0 * _area(kwargs.get("size", 299)),
    "xviz.methods.featurevis.visualize": _visualize_units,
    "xviz.methods.faithfulness.faithfulness": _faithfulness_units,
    # 17 distinct sepconv shapes, each timed 12 times as a standard and a separable conv.
    "xviz.methods.cost.measure_all": lambda args, kwargs: (
        40.0 * _area(kwargs.get("input_size", 299))
    ),
}


def _shape(fn: Callable[..., Any], kwargs: dict) -> tuple:
    """What makes a call's kernels new to a worker: the function, the method, the input."""
    return (fn.__qualname__, kwargs.get("method"), kwargs.get("size"), kwargs.get("input_size"))


@dataclass(frozen=True)
class Visit:
    """One GPU call as booked and as it went (the README's numbers of a visit)."""

    call: str
    booked_s: int
    used_s: float  # from the call to its result, in the Space's process
    gpu_s: float  # inside the worker, in the function itself
    cold: bool  # the worker process was new (forked, CUDA set up, weights moved)


@dataclass
class BookingClock:
    """How many seconds to book for a call, calibrated by the calls that ran.

    ``booked = margin * (start-up + units * unit_s)`` rounded up, within [minimum, maximum]:
    ``units`` is the call's work in forward+backward passes of a 299x299 image (counted per
    function from its arguments), ``unit_s`` the GPU's measured time per unit, and the
    start-up is ``cold_s`` when no worker is known to be warm (a new worker forks, sets up
    CUDA and moves the weights to the GPU), ``new_shape_s`` when the worker is warm but has
    not run these kernels (cuDNN's algorithm search), else ``warm_s``.

    The priors are from an H200 (``xviz.engine.analysis.analyze`` 0.1 s and Integrated Gradients
    3.7 s for a first run, 0.13 s after; a forward+backward at 299 0.015 s), with room for
    the slice of one that ZeroGPU lends. Each successful call updates them with what it
    measured, so a Space learns its own GPU: a longer time is taken at once (a call that
    outlives its booking may be stopped), a shorter one halves the gap (a booking that is too
    long only costs queue priority).
    """

    unit_s: float = 0.06
    cold_s: float = 12.0
    new_shape_s: float = 4.0
    warm_s: float = 0.5
    margin: float = 1.5
    minimum_s: int = 2
    maximum_s: int = 240
    warm_for_s: float = 60.0  # how long after a call its worker is taken to be warm
    visits: list[Visit] = field(default_factory=list)
    _warm_until: float = 0.0
    _shapes: set = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def booked(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> int:
        """Seconds to book for ``fn(model, *args, **kwargs)``."""
        with self._lock:
            if time.monotonic() >= self._warm_until:
                start = self.cold_s
            elif _shape(fn, kwargs) not in self._shapes:
                start = self.new_shape_s
            else:
                start = self.warm_s
            seconds = self.margin * (start + _units(fn, args, kwargs) * self.unit_s)
        return int(min(max(math.ceil(seconds), self.minimum_s), self.maximum_s))

    def record(
        self, fn: Callable[..., Any], args: tuple, kwargs: dict, booked: int, used_s: float,
        gpu_s: float, cold: bool,
    ) -> Visit:  # fmt: skip
        """Learn from a call that ran on the GPU."""
        shape = _shape(fn, kwargs)
        visit = Visit(fn.__qualname__, booked, used_s, gpu_s, cold)
        with self._lock:
            units = _units(fn, args, kwargs)
            # A cold or first-of-its-shape call: what it took beyond the work itself.
            extra = max(used_s - units * self.unit_s, 0.0)
            if cold:
                self.cold_s = _learn(self.cold_s, extra)
            elif shape in self._shapes:
                self.unit_s = _learn(self.unit_s, gpu_s / max(units, 1e-3))
                self.warm_s = _learn(self.warm_s, max(used_s - gpu_s, 0.0))
            else:
                self.new_shape_s = _learn(self.new_shape_s, extra)
            self._shapes.add(shape)
            self._warm_until = time.monotonic() + self.warm_for_s
            self.visits.append(visit)
            del self.visits[:-1000]
        return visit


def _learn(estimate: float, measured: float) -> float:
    """A longer measurement at once, a shorter one half-way (see :class:`BookingClock`)."""
    return measured if measured > estimate else (estimate + measured) / 2


# --- what runs in the worker process ----------------------------------------------------------

# Name -> the model's copy on ``cuda``. Filled before launch; the forked worker inherits it,
# with its tensors moved to the GPU by the ``spaces`` package.
_GPU_MODELS: dict[str, Any] = {}
_calls_here = 0  # calls this process has run (0 in a worker that was just forked)


@dataclass(frozen=True)
class Job:
    """One call for the worker: ``fn(model, *args, **kwargs)`` on the model named ``model``."""

    model: str
    fn: Callable[..., Any]
    args: tuple
    kwargs: dict
    booked_s: int


@dataclass(frozen=True)
class Outcome:
    """What the worker sends back: the value or the XvizError, and how the call went."""

    value: Any = None
    error: XvizError | None = None
    gpu_s: float = 0.0
    cold: bool = False


def booked_seconds(job: Job, **extra: Any) -> int:
    """The duration ``spaces.GPU`` books: a callable with the decorated function's signature."""
    return job.booked_s


def _execute(job: Job, **extra: Any) -> Outcome:
    global _calls_here
    cold, _calls_here = _calls_here == 0, _calls_here + 1
    started = time.perf_counter()
    try:
        value = job.fn(_GPU_MODELS[job.model], *job.args, **job.kwargs, **extra)
    except XvizError as error:  # the visitor's message, intact (spaces would keep its class only)
        return Outcome(error=error, gpu_s=time.perf_counter() - started, cold=cold)
    return Outcome(value=value, gpu_s=time.perf_counter() - started, cold=cold)


def run_job(job: Job) -> Outcome:
    """A call without progress (decorated as ``spaces.GPU`` by :func:`install`)."""
    return _execute(job)


def stream_job(job: Job) -> Iterator[tuple[str, Any]]:
    """A call with progress and cancel (decorated by :func:`install`): yields
    ``("progress", args)`` for each progress call, then ``("done", Outcome)``. Closing the
    stream (the visitor cancelled) makes the call's ``cancel()`` true, and it stops."""
    events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    stop = threading.Event()

    def work() -> None:
        try:
            events.put(
                ("done", _execute(job, progress=lambda *a: events.put(("progress", a)),
                                  cancel=stop.is_set))
            )  # fmt: skip
        except BaseException as error:  # re-raised below, in the stream: spaces reports it
            events.put(("raise", error))

    thread = threading.Thread(target=work, name="xviz-gpu-job", daemon=True)
    thread.start()
    try:
        while True:
            kind, payload = events.get()
            if kind == "raise":
                raise payload
            yield kind, payload
            if kind == "done":
                return
    finally:
        stop.set()
        thread.join()


_decorated: dict[str, Callable[..., Any]] = {}


def install() -> dict[str, Callable[..., Any]]:
    """Decorate :func:`run_job` and :func:`stream_job` with ``spaces.GPU`` (once). Must run
    before the app launches: the package reports its decorated functions at launch, and a
    Space without one is stopped."""
    if not _decorated:
        import spaces  # imported before torch by app.py; present on every Gradio Space

        _decorated["run"] = spaces.GPU(duration=booked_seconds)(run_job)
        _decorated["stream"] = spaces.GPU(duration=booked_seconds)(stream_job)
    return _decorated


# --- the Space's side -------------------------------------------------------------------------


def refusal(error: BaseException) -> str | None:
    """The sentence a visitor reads when ZeroGPU refused or failed a call (``error`` is the
    ``gr.Error`` the ``spaces`` package raised, titled "ZeroGPU ..."); None for any other
    error, which is not ZeroGPU's to explain."""
    title = str(getattr(error, "title", "") or "")
    if not title.startswith("ZeroGPU"):
        return None
    message = str(getattr(error, "message", error))
    then = "so xviz computed this on the CPU instead (slower, same numbers)"
    if "Space app has reached its GPU limit" in message:  # no visitor named: the Space's own
        return f"This Space's ZeroGPU time is used up for now, {then}. Try again later."
    if "quota" in title.lower() or "limit" in message.lower():
        return (
            f"Your free ZeroGPU time for today is used up ({message.strip()}), {then}. Log in "
            "to Hugging Face for a larger daily quota, or come back later for the GPU."
        )
    if "queue" in title.lower() or "No GPU" in message:
        return f"No GPU was free in time on this Space, {then}. Try again in a minute."
    if "duration" in title.lower():
        return f"This job needs more GPU time than ZeroGPU grants at once, {then}."
    return f"The GPU call failed ({title}: {message.strip()}), {then}."


class ZeroGPURunner(Runner):
    """Runs each model computation in a ZeroGPU worker (see the module docstring), and on the
    CPU when ZeroGPU refuses; ``notify(sentence)`` tells the visitor why.

    ``for_visitor()`` says whether the calling thread serves a visitor's request: ZeroGPU
    books a GPU on the visitor's quota (the package reads it from the request), so a call
    outside any request (the first screen's analysis at start-up) runs on the CPU.
    """

    def __init__(
        self,
        model: Any,
        notify: Callable[[str], None] | None = None,
        thread: ModelThread | None = None,
        clock: BookingClock | None = None,
        gpu_device: str = "cuda",
        for_visitor: Callable[[], bool] = lambda: True,
    ) -> None:
        """``gpu_device``: where the worker's copy goes ("cuda"; tests of this class without
        ZeroGPU use "cpu")."""
        super().__init__(model, thread)  # the CPU copy: read by the pages, and the fallback
        self.cpu = Runner(model, self.thread)
        self.device, self.where = "cuda", "ZeroGPU's GPU (the CPU when ZeroGPU refuses)"
        self.key = f"model-{id(model)}"
        # Under the package's emulation mode this makes stand-in tensors, moved to the GPU in
        # the worker; it must run before launch, on the main thread.
        _GPU_MODELS[self.key] = copy.deepcopy(model).to(gpu_device)
        self.notify = notify or (lambda sentence: logger.warning("%s", sentence))
        self.clock = clock or BookingClock()
        self.for_visitor = for_visitor
        self._gpu = install()

    def booked_s(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> float:
        kwargs = {k: v for k, v in kwargs.items() if k not in ("progress", "cancel")}
        return float(self.clock.booked(fn, args, kwargs))

    def background(
        self, fn: Callable[..., T], /, *args: Any, priority: int = SECONDS, **kwargs: Any
    ) -> T:
        """A long job: in a worker of its own, which has no other call to let through (it
        gets no ``pause``); on the CPU, at ``priority``, as :meth:`Runner.background`."""

        def on_cpu(*passed: Any, **named: Any) -> T:
            return self.cpu.background(fn, *passed, priority=priority, **named)

        return self._call(fn, args, kwargs, on_cpu)

    def __call__(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return self._call(fn, args, kwargs, lambda *passed, **named: self.cpu(fn, *passed, **named))

    def _call(self, fn: Callable[..., T], args: tuple, kwargs: dict, on_cpu: Callable[..., T]) -> T:
        """``fn`` in a ZeroGPU worker, or ``on_cpu(*args, **kwargs)`` outside a visitor's
        request and when ZeroGPU refuses."""
        if not self.for_visitor():
            return on_cpu(*args, **kwargs)
        progress, cancel = kwargs.pop("progress", None), kwargs.pop("cancel", None)
        # A callback cannot go to the worker: an analysis' early stages come with the whole.
        passed = {
            "progress": progress,
            "cancel": cancel,
            "on_partial": kwargs.pop("on_partial", None),
        }
        booked = self.clock.booked(fn, args, kwargs)
        job = Job(self.key, fn, args, kwargs, booked)
        started = time.perf_counter()
        try:
            if progress is None and cancel is None:
                outcome = self._gpu["run"](job)
            else:
                outcome = self._streamed(job, progress, cancel)
        except Cancelled:
            raise
        except Exception as error:  # only ZeroGPU's own refusals fall back; others re-raise
            sentence = refusal(error)
            if sentence is None:
                raise
            logger.warning("ZeroGPU: %s: %s", fn.__qualname__, sentence)
            self.notify(sentence)
            return on_cpu(*args, **kwargs, **{k: v for k, v in passed.items() if v})
        visit = self.clock.record(
            fn, args, kwargs, booked, time.perf_counter() - started, outcome.gpu_s, outcome.cold
        )
        logger.info(
            "ZeroGPU: %s booked %d s, used %.2f s (%.2f s in the worker%s)",
            visit.call, visit.booked_s, visit.used_s, visit.gpu_s, ", new worker" * visit.cold,
        )  # fmt: skip
        if outcome.error is not None:
            raise outcome.error
        return outcome.value

    def _streamed(
        self,
        job: Job,
        progress: Callable[..., None] | None,
        cancel: Callable[[], bool] | None,
    ) -> Outcome:
        stream = self._gpu["stream"](job)
        try:
            for kind, payload in stream:
                if kind == "done":
                    return payload
                if progress is not None:
                    progress(*payload)
                if cancel is not None and cancel():
                    raise Cancelled(f"{job.fn.__qualname__} was cancelled.")
        finally:
            stream.close()  # on cancel: the worker's run sees cancel() and stops
        raise RuntimeError("The GPU job ended without a result.")
