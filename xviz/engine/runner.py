"""Where the model's computations run: one warm thread, through one :class:`Runner`, most
urgent first.

A web server runs each request in whichever of its pool's threads is free. PyTorch's CPU
parallelism (the OpenMP thread team, oneDNN's per-thread state) is set up per calling thread,
so a model computation in a thread that has not run one before pays for that set-up: measured
here, an analysis at 299 took 0.55-0.58 s in a fresh thread against 0.42 s in a warm one, and
0.82 s inside the app. Running every computation of a model on one long-lived thread keeps it
warm; the model's lock already lets one computation run at a time, so nothing is lost.

One thread for everyone means one visitor's long job (a page of feature visualizations: minutes)
would hold up every other visitor's upload. So each call has a priority (:data:`INTERACTIVE`,
:data:`SECONDS`, :data:`MINUTES`): the thread takes the most urgent waiting call first, and a
long job started with :meth:`Runner.background` is handed a ``pause()`` that it calls between
its steps, at points where it has left the model as it found it (no hooks, the real weights):
``pause()`` runs every more urgent call that is waiting, there and then, on the same thread,
and returns. An upload therefore waits for at most one step of someone's long job.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
#: ``progress(fraction, message)``: how far a long computation is, 0 to 1, and what it does.
Progress = Callable[[float, str], None]
#: ``cancel()``: true once the caller wants the computation to stop (it raises ``Cancelled``).
CancelCheck = Callable[[], bool]
#: ``pause()``: called by a long job between its steps; runs the more urgent calls waiting.
Pause = Callable[[], None]

#: Priorities, most urgent first: what a visitor waits for with nothing else to do (an
#: analysis, a view, a trace), a job of seconds (an attribution), a job of minutes (feature
#: visualizations, a measurement of every layer).
INTERACTIVE, SECONDS, MINUTES = 0, 1, 2


class ModelThread:
    """Runs callables one at a time on one thread, named ``name``, for as long as it lives:
    the most urgent (lowest priority number) waiting one first, then the oldest."""

    def __init__(self, name: str = "xviz-model") -> None:
        self._waiting: list[tuple[int, int, Callable[[], Any], Future]] = []
        self._order = itertools.count()
        self._ready = threading.Condition()
        self._running: list[int] = []  # priorities of the calls on the thread, innermost last
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, fn: Callable[[], T], priority: int = INTERACTIVE) -> T:
        """``fn()`` on the model's thread; its result, or its exception re-raised here.

        Called from the model's thread itself (a computation that needs another, such as an
        attribution that needs its analysis), ``fn`` runs at once, where it is.
        """
        if threading.current_thread() is self._thread:
            return fn()
        future: Future = Future()
        with self._ready:
            heapq.heappush(self._waiting, (priority, next(self._order), fn, future))
            self._ready.notify()
        return future.result()

    @property
    def waiting(self) -> int:
        """How many calls wait for the thread."""
        with self._ready:
            return len(self._waiting)

    def pause(self) -> int:
        """Run, here and now, every waiting call more urgent than the one running; how many.

        For a long job to call between its steps, on the model's thread (elsewhere, or with
        nothing more urgent waiting, it returns 0 at once). The calls it runs are those waiting
        now and any that arrive meanwhile.
        """
        if threading.current_thread() is not self._thread or not self._running:
            return 0
        mine, ran = self._running[-1], 0
        while True:
            with self._ready:
                if not self._waiting or self._waiting[0][0] >= mine:
                    return ran
                priority, _, fn, future = heapq.heappop(self._waiting)
            self._execute(priority, fn, future)
            ran += 1

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._waiting:
                    self._ready.wait()
                priority, _, fn, future = heapq.heappop(self._waiting)
            self._execute(priority, fn, future)

    def _execute(self, priority: int, fn: Callable[[], Any], future: Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        self._running.append(priority)
        try:
            result = fn()
        except BaseException as error:  # handed to the caller, who re-raises it
            future.set_exception(error)
        else:
            future.set_result(result)
        finally:
            self._running.pop()


class Runner:
    """Where the served model's computations run: ``runner(fn, *args, **kwargs)`` is
    ``fn(model, *args, **kwargs)``, with ``fn`` a module-level function of xviz (``analyze``,
    ``attribute``, ...), run here on one warm :class:`ModelThread`, as :data:`INTERACTIVE`;
    :meth:`background` runs a long job at a lower priority.

    :class:`xviz.engine.zerogpu.ZeroGPURunner` runs the same calls in a ZeroGPU worker process
    instead, which is why a call names a function and its plain arguments rather than a
    closure: those can be sent to another process. ``progress`` and ``cancel`` keyword
    arguments (callables) are passed through.
    """

    def __init__(self, model: Any, thread: ModelThread | None = None) -> None:
        self.model = model
        self.thread = thread or ModelThread()
        #: The device the computations run on, and how the page names it.
        self.device = str(next(model.parameters()).device)
        self.where = "the CPU" if self.device == "cpu" else f"the GPU ({self.device})"
        #: The runner of computations that stay on this machine (a live camera's frames: on
        #: ZeroGPU each would book GPU time); here, this one.
        self.cpu: Runner = self

    def __call__(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return self._run(INTERACTIVE, fn, args, kwargs)

    def background(
        self, fn: Callable[..., T], /, *args: Any, priority: int = SECONDS, **kwargs: Any
    ) -> T:
        """``fn(model, *args, pause=pause, **kwargs)`` at ``priority`` (:data:`SECONDS` or
        :data:`MINUTES`): ``fn`` calls ``pause()`` between its steps, where it has left the
        model as it found it, and more urgent calls run there (see :meth:`ModelThread.pause`)."""
        return self._run(priority, fn, args, {**kwargs, "pause": self._pause})

    def _pause(self) -> int:
        """:meth:`ModelThread.pause`, with the autograd state a call finds on a fresh thread
        (a job may pause inside Captum's ``no_grad`` or its own ``enable_grad``)."""
        import torch

        with torch.inference_mode(False), torch.enable_grad():
            return self.thread.pause()

    def _run(self, priority: int, fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
        # The caller's context (Gradio's request, its progress tracker) goes along.
        context = contextvars.copy_context()
        return self.thread.run(lambda: context.run(fn, self.model, *args, **kwargs), priority)

    def booked_s(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> float | None:
        """GPU seconds the call would book from a visitor's quota; None where there is no
        quota (here)."""
        return None
