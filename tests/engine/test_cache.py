"""cache: LRU by bytes within the budget, keys, single computation per key, safe evictions."""

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from xviz.engine.cache import AnalysisCache, weights_id
from xviz.model.xception import Xception

MB = 2**20


@dataclass
class Item:
    nbytes: int


def test_least_recently_used_is_evicted_first_within_the_budget():
    cache = AnalysisCache(budget_mb=3)
    for key in "abc":
        cache.get_or_compute(key, lambda: Item(MB))
    cache.get("a")  # a is now the most recently used
    cache.get_or_compute("d", lambda: Item(MB))
    assert cache.get("b") is None and cache.get("a") is not None
    stats = cache.stats
    assert stats.entries == 3 and stats.bytes == 3 * MB and stats.evictions == 1
    assert cache.get_or_compute("huge", lambda: Item(4 * MB)).nbytes == 4 * MB  # not kept
    assert cache.get("huge") is None and len(cache) == 3


def test_an_evicted_result_stays_valid_for_its_holder():
    cache = AnalysisCache(budget_mb=1)
    held = cache.get_or_compute("a", lambda: Item(MB))
    cache.get_or_compute("b", lambda: Item(MB))
    assert cache.get("a") is None and held.nbytes == MB


def test_entries_unused_for_max_age_are_dropped():
    now = [0.0]
    cache = AnalysisCache(budget_mb=10, max_age_s=60, clock=lambda: now[0])
    cache.get_or_compute("a", lambda: Item(MB))
    cache.get_or_compute("b", lambda: Item(MB))
    now[0] = 50.0
    assert cache.get("a") is not None  # used again: its age starts over
    now[0] = 100.0  # b unused for 100 s, a for 50 s
    assert cache.stats.entries == 1 and cache.get("b") is None and cache.get("a") is not None
    now[0] = 200.0
    assert cache.stats.entries == 0 and cache.stats.bytes == 0


def test_concurrent_requests_compute_once():
    cache = AnalysisCache(budget_mb=10)
    calls = []
    barrier = threading.Barrier(4)

    def compute() -> Item:
        calls.append(1)
        time.sleep(0.2)
        return Item(10)

    results = []

    def ask() -> None:
        barrier.wait()
        results.append(cache.get_or_compute("k", compute))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1 and len(results) == 4 and all(r is results[0] for r in results)
    assert cache.stats.misses == 1 and cache.stats.hits == 3


def test_a_failed_computation_is_not_cached():
    cache = AnalysisCache(budget_mb=1)
    with pytest.raises(ValueError):
        cache.get_or_compute("k", lambda: (_ for _ in ()).throw(ValueError("no")))
    assert cache.get_or_compute("k", lambda: Item(1)).nbytes == 1


def test_analyze_is_keyed_by_image_weights_target_and_size():
    torch.manual_seed(0)
    model = Xception(head="imagenet").eval()
    image = np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    cache = AnalysisCache(budget_mb=64)
    first = cache.analyze(model, image, size=71)
    assert cache.analyze(model, image.copy(), size=71) is first  # same content: a hit
    targeted = cache.analyze(model, image, target=3, size=71)
    other = image.copy()
    other[0, 0, 0] ^= 255
    changed = cache.analyze(model, other, size=71)
    assert targeted is not first and changed is not first and targeted.target == 3
    stats = cache.stats
    assert stats.hits == 1 and stats.misses == 3 and stats.entries == 3
    assert stats.bytes == first.nbytes + targeted.nbytes + changed.nbytes
    assert weights_id(model) == weights_id(model) != weights_id(Xception(head="none"))


def test_freed_memory_is_given_back_after_an_eviction(monkeypatch):
    import xviz.engine.cache as cache_module

    calls = []
    monkeypatch.setattr(cache_module, "_TRIM", calls.append)
    cache = AnalysisCache(budget_mb=2)
    cache.get_or_compute("a", lambda: Item(MB))
    cache.get_or_compute("b", lambda: Item(MB))
    assert calls == []  # within the budget: nothing freed
    cache.get_or_compute("c", lambda: Item(MB))
    assert calls == [0] and cache.stats.evictions == 1
