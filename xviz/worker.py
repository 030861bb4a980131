"""One thread for a model's computations.

A web server runs each request in whichever of its pool's threads is free. PyTorch's CPU
parallelism (the OpenMP thread team, oneDNN's per-thread state) is set up per calling thread,
so a model computation in a thread that has not run one before pays for that set-up: measured
here, an analysis at 299 took 0.55-0.58 s in a fresh thread against 0.42 s in a warm one, and
0.82 s inside the app. Running every computation of a model on one long-lived thread keeps it
warm; the model's lock already lets one computation run at a time, so nothing is lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


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
