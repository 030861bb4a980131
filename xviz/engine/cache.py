"""The one bounded cache (:class:`BoundedCache`: least recently used out, within a byte
budget, an entry count and an age), and the cache of analyses built on it, keyed by image
content, weights, target and size.

Entries are evicted least recently used first once their total ``nbytes`` passes the
budget. An :class:`~xviz.engine.analysis.Analysis` is never modified after it is made, so evicting
one only drops the cache's reference: whoever is viewing it keeps a complete, valid result.
Concurrent requests for the same key compute it once; the others wait for that result.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import hashlib
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from xviz.engine.analysis import (
    MAP_NAMES,
    STAGES,
    Analysis,
    Storage,
    analyze,
    prepare_input,
    resolve_size,
)
from xviz.errors import AnalysisError, short

_RANDOM_WEIGHTS: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()
_RANDOM_GUARD = threading.Lock()


class CacheKey(NamedTuple):
    image: str  # sha256 of the input tensor the model sees
    weights: str
    target: int | str | None
    size: int
    top_k: int
    storage: str


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int
    budget_bytes: int


def weights_id(model: nn.Module) -> str:
    """Identifies the weights: the source's name and sha256, or a per-instance id when the
    model has no source with a digest (a random model's weights are its own)."""
    source = getattr(model, "source", None)
    if source is not None and source.sha256:
        return f"{source.name}:{source.sha256}"
    with _RANDOM_GUARD:
        return _RANDOM_WEIGHTS.setdefault(model, f"unsourced:{uuid.uuid4().hex}")


def tensor_digest(x: torch.Tensor) -> str:
    """sha256 of a tensor's float32 values and shape."""
    data = x.detach().to("cpu", torch.float32).contiguous()
    digest = hashlib.sha256(str(tuple(data.shape)).encode())
    digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc: nothing to do


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Give freed heap pages back to the system. glibc keeps them in per-thread pools, so
    without this a server's memory grows to about ten times the cache budget as analyses are
    evicted (measured by bench/load.py: +1347 MB vs +184 MB after 100 images)."""
    if _TRIM is not None:
        _TRIM(0)


def _nbytes(value: Any) -> int:
    return int(value.nbytes)


class BoundedCache:
    """Thread-safe LRU cache within ``budget_mb`` megabytes (each value's ``size_of``, by
    default its ``nbytes``), at most ``max_entries`` entries, none unused for ``max_age_s``.

    ``get_or_compute(key, fn)`` computes a missing value once however many threads ask;
    ``get`` and ``put`` are the plain lookups. A value larger than the whole budget is
    returned but not kept. Every cache of xviz is one of these (analyses, feature
    visualizations, sepconv inputs, drawn views, latencies, prefetched panels).
    """

    def __init__(
        self,
        budget_mb: float = 512,
        max_age_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int | None = None,
        size_of: Callable[[Any], int] = _nbytes,
    ) -> None:
        if budget_mb <= 0:
            raise ValueError(f"budget_mb must be positive, got {budget_mb}")
        self.budget_bytes = int(budget_mb * 2**20)
        self.max_entries = max_entries
        self._size_of = size_of
        self.max_age_s = max_age_s
        self._clock = clock
        self._used: dict[Hashable, float] = {}
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._pending: dict[Hashable, Future] = {}
        self._lock = threading.Lock()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The cached value for ``key``, else ``compute()`` (run once however many threads ask)."""
        with self._lock:
            self._expire()
            if key in self._entries:
                self._hits += 1
                self._touch(key)
                return self._entries[key]
            pending = self._pending.get(key)
            if pending is None:
                self._misses += 1
                owner = True
                pending = self._pending[key] = Future()
            else:
                self._hits += 1
                owner = False
        if not owner:
            return pending.result()
        try:
            value = compute()
        except BaseException as error:
            with self._lock:
                del self._pending[key]
            pending.set_exception(error)
            raise
        with self._lock:
            del self._pending[key]
            evicted = self._store(key, value)
        pending.set_result(value)
        if evicted:
            release_free_memory()  # outside the lock: it takes ~20 ms
        return value

    def _touch(self, key: Hashable) -> None:
        self._entries.move_to_end(key)
        self._used[key] = self._clock()

    def _drop_oldest(self) -> None:
        key, evicted = self._entries.popitem(last=False)
        self._used.pop(key, None)
        self._bytes -= self._size_of(evicted)
        self._evictions += 1

    def _expire(self) -> None:
        """Drop entries unused for ``max_age_s`` (the LRU end holds the least recently used)."""
        if self.max_age_s is None:
            return
        limit = self._clock() - self.max_age_s
        while self._entries and self._used[next(iter(self._entries))] < limit:
            self._drop_oldest()

    def _store(self, key: Hashable, value: Any) -> bool:
        """Keep ``value``; says whether anything was evicted for it."""
        size = self._size_of(value)
        if size > self.budget_bytes:
            return False
        if key in self._entries:  # replaced: its old size goes
            self._bytes -= self._size_of(self._entries.pop(key))
        self._entries[key] = value
        self._touch(key)
        self._bytes += size
        evicted = False
        while self._bytes > self.budget_bytes or (
            self.max_entries is not None and len(self._entries) > self.max_entries
        ):
            self._drop_oldest()
            evicted = True
        return evicted

    def pop(self, key: Hashable, default: Any = None) -> Any:
        """Remove and return the value for ``key`` (``default`` when there is none)."""
        with self._lock:
            if key not in self._entries:
                return default
            value = self._entries.pop(key)
            self._used.pop(key, None)
            self._bytes -= self._size_of(value)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        """Keep ``value`` under ``key`` (replacing what was there)."""
        with self._lock:
            self._expire()
            self._store(key, value)

    def get(self, key: Hashable) -> Any | None:
        """The cached value or ``None`` (counts as a hit or a miss)."""
        with self._lock:
            self._expire()
            if key not in self._entries:
                self._misses += 1
                return None
            self._hits += 1
            self._touch(key)
            return self._entries[key]

    def clear(self) -> None:
        """Drop every entry (results already handed out stay valid)."""
        with self._lock:
            self._entries.clear()
            self._used.clear()
            self._bytes = 0

    @property
    def stats(self) -> CacheStats:
        with self._lock:
            self._expire()
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                entries=len(self._entries),
                bytes=self._bytes,
                budget_bytes=self.budget_bytes,
            )

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._entries)


class _Wanted(NamedTuple):
    """What a caller of :meth:`AnalysisCache.early` waits for: a stage, and these maps."""

    stage: str
    maps: tuple[str, ...]

    def met(self, analysis: Analysis) -> bool:
        return analysis.reached(self.stage) and analysis.has_maps(self.maps)


class AnalysisCache(BoundedCache):
    """The analyses of the app (and any :class:`BoundedCache` use): ``analyze(model, image,
    ...)``, cached by image content, weights, target, size and settings. With ``max_age_s``,
    what a user uploaded is not kept longer than needed.

    :meth:`early` answers as soon as a run has got as far as asked (its prediction, the maps
    a page shows, its Grad-CAMs: see :data:`~xviz.engine.analysis.STAGES`), :meth:`analyze`
    once it is complete: one computation serves all of them, started by whichever asks first.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per key being computed: the furthest partial analysis, and who waits for which stage.
        # Both go when its computation ends, so they hold no more than the analyses running.
        self._partial: dict[Hashable, Analysis] = {}
        self._waiting: dict[Hashable, list[tuple[str, Future]]] = {}
        self._starter = ThreadPoolExecutor(max_workers=4, thread_name_prefix="xviz-analysis")

    def analyze(
        self,
        model: nn.Module,
        image: Any,
        target: int | str | None = None,
        size: int | None = None,
        top_k: int = 5,
        storage: Storage = "uint8",
        run: Callable[..., Analysis] | None = None,
    ) -> Analysis:
        """:func:`xviz.engine.analysis.analyze`, cached. The image is decoded and resized once here.

        ``run`` runs the computation on a cache miss as ``run(analyze, x, **settings)``, for
        ``analyze(model, x, **settings)`` (an :class:`xviz.engine.runner.Runner`: on the model's
        thread, or on ZeroGPU); a hit is answered in the calling thread.
        """
        key, x, settings = self._request(model, image, target, size, top_k, storage)
        return self._complete(key, model, x, settings, run)

    def early(
        self,
        model: nn.Module,
        image: Any,
        target: int | str | None = None,
        size: int | None = None,
        top_k: int = 5,
        storage: Storage = "uint8",
        run: Callable[..., Analysis] | None = None,
        stage: str = "complete",
        maps: Sequence[str] = (),
        first: Sequence[str] | None = None,
    ) -> Analysis:
        """The analysis :meth:`analyze` gives, or, while it is still running, what it has made
        as soon as that has reached ``stage`` (see :data:`~xviz.engine.analysis.STAGES`:
        "prediction", "gradcam", ...) and holds the maps named in ``maps``. Starts the
        analysis (on another thread) if nobody has; then the maps of ``first`` (default
        ``maps``) are compacted first, before the backward pass (``analyze(first=)``); any
        other map comes with the whole.
        """
        if stage not in STAGES:
            raise ValueError(f"Unknown stage {stage!r}: use one of {STAGES}")
        first = tuple(maps if first is None else first)
        unknown = [name for name in (*maps, *first) if name not in MAP_NAMES]
        if unknown:
            raise AnalysisError(f"Unknown map {short(unknown[0], 60)}: not one of the model's.")
        key, x, settings = self._request(model, image, target, size, top_k, storage)
        with self._lock:
            self._expire()
            if key in self._entries:
                self._hits += 1
                self._touch(key)
                return self._entries[key]
            wanted = _Wanted(stage, tuple(maps))
            partial = self._partial.get(key)
            if partial is not None and wanted.met(partial):
                return partial
            wait: Future = Future()
            self._waiting.setdefault(key, []).append((wanted, wait))
            start = key not in self._pending  # (a run that ends meanwhile answers ``wait``)
        if start:
            # With the caller's context (a request, which ZeroGPU books against).
            context = contextvars.copy_context()
            self._starter.submit(context.run, self._quietly, key, model, x, settings, run, first)
        return wait.result()

    def _quietly(self, *args: Any) -> None:
        """:meth:`_complete` for :meth:`early`, whose caller gets its error from its future."""
        with contextlib.suppress(BaseException):
            self._complete(*args)

    def _complete(
        self,
        key: Hashable,
        model: nn.Module,
        x: torch.Tensor,
        settings: dict[str, Any],
        run: Callable[..., Analysis] | None,
        first: tuple[str, ...] = (),
    ) -> Analysis:
        def arrived(partial: Analysis) -> None:
            with self._lock:
                self._partial[key] = partial
                waiting = self._waiting.get(key, [])
                ready = [future for wanted, future in waiting if wanted.met(partial)]
                waiting[:] = [(s, f) for s, f in waiting if f not in ready]
            for future in ready:
                future.set_result(partial)

        def compute() -> Analysis:
            if run is None:
                return analyze(model, x, **settings, on_partial=arrived, first=first)
            return run(analyze, x, **settings, on_partial=arrived, first=first)

        # Whether this call computed it or waited for another's, the value is kept by now.
        try:
            value = self.get_or_compute(key, compute)
        except BaseException as error:
            self._finish(key, error=error)
            raise
        self._finish(key, value=value)
        return value

    def _finish(
        self, key: Hashable, value: Analysis | None = None, error: BaseException | None = None
    ) -> None:
        """The computation for ``key`` ended: whoever still waits gets its value or error."""
        with self._lock:
            self._partial.pop(key, None)
            waiting = self._waiting.pop(key, [])
        for _, future in waiting:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

    def _request(
        self,
        model: nn.Module,
        image: Any,
        target: int | str | None,
        size: int | None,
        top_k: int,
        storage: Storage,
    ) -> tuple[CacheKey, torch.Tensor, dict[str, Any]]:
        size = resolve_size(model, image, size)
        x, _ = prepare_input(image, size)
        key = CacheKey(tensor_digest(x), weights_id(model), target, size, top_k, storage)
        return key, x, {"target": target, "size": size, "top_k": top_k, "storage": storage}
