"""Where the model's computations run: one warm thread, through one :class:`Runner`.

A web server runs each request in whichever of its pool's threads is free. PyTorch's CPU
parallelism (the OpenMP thread team, oneDNN's per-thread state) is set up per calling thread,
so a model computation in a thread that has not run one before pays for that set-up: measured
here, an analysis at 299 took 0.55-0.58 s in a fresh thread against 0.42 s in a warm one, and
0.82 s inside the app. Running every computation of a model on one long-lived thread keeps it
warm; the model's lock already lets one computation run at a time, so nothing is lost.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
#: ``progress(fraction, message)``: how far a long computation is, 0 to 1, and what it does.
Progress = Callable[[float, str], None]
#: ``cancel()``: true once the caller wants the computation to stop (it raises ``Cancelled``).
CancelCheck = Callable[[], bool]


class ModelThread:
    """Runs callables one at a time on one thread, named ``name``, for as long as it lives."""

    def __init__(self, name: str = "xviz-model") -> None:
        self._ident: int | None = None
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=name, initializer=self._remember
        )

    def _remember(self) -> None:
        self._ident = threading.get_ident()

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the model's thread; its result, or its exception re-raised here.

        Called from the model's thread itself (a computation that needs another, such as an
        attribution that needs its analysis), ``fn`` runs at once, where it is.
        """
        if threading.get_ident() == self._ident:
            return fn()
        return self._pool.submit(fn).result()


class Runner:
    """Where the served model's computations run: ``runner(fn, *args, **kwargs)`` is
    ``fn(model, *args, **kwargs)``, with ``fn`` a module-level function of xviz (``analyze``,
    ``attribute``, ...), run here on one warm :class:`ModelThread`.

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

    def __call__(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        # The caller's context (Gradio's request, its progress tracker) goes along.
        context = contextvars.copy_context()
        return self.thread.run(lambda: context.run(fn, self.model, *args, **kwargs))

    def booked_s(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> float | None:
        """GPU seconds the call would book from a visitor's quota; None where there is no
        quota (here)."""
        return None
