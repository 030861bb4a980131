"""The model's thread and the panels drawn ahead: one thread for every computation, results
and errors handed back to the caller, a panel drawn once whether ahead or on demand."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from xviz.app.ui.panels import Panel, Prefetched
from xviz.engine.runner import ModelThread


def test_every_computation_runs_on_one_thread_and_returns_its_result():
    thread = ModelThread()
    callers = []

    def run_from_a_new_thread(i: int) -> None:
        callers.append(thread.run(lambda: (i * i, threading.get_ident())))

    workers = [threading.Thread(target=run_from_a_new_thread, args=(i,)) for i in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(v for v, _ in callers) == [0, 1, 4, 9, 16, 25]
    idents = {ident for _, ident in callers}
    assert len(idents) == 1 and threading.get_ident() not in idents


def test_an_error_reaches_the_caller_and_the_thread_keeps_serving():
    thread = ModelThread()

    def fail() -> None:
        raise ValueError("bad layer")

    with pytest.raises(ValueError, match="bad layer"):
        thread.run(fail)
    assert thread.run(lambda: 3) == 3


def test_a_computation_that_needs_another_runs_it_in_place():
    thread = ModelThread()
    inner = thread.run(lambda: (threading.get_ident(), thread.run(threading.get_ident)))
    assert inner[0] == inner[1]  # no deadlock: the nested call ran on the same thread


def _panel(calls: list, fail_first: bool = False) -> Panel:
    def render(session, value):
        calls.append(value)
        if fail_first and len(calls) == 1:
            raise RuntimeError("drawing failed")
        return (f"{session.key}:{value}",)

    return Panel(render, [], [], tab="t", prefetch=True)


def test_a_panel_drawn_ahead_is_not_drawn_again():
    calls: list = []
    panel = _panel(calls)
    session = SimpleNamespace(key="a")
    ahead = Prefetched()
    ahead.start(panel, session, [1])
    ahead.start(panel, session, [1])  # the same inputs: not queued twice
    assert ahead.render(panel, session, [1]) == ("a:1",)
    assert calls == [1]
    # Other inputs (or another analysis) are drawn when asked.
    assert ahead.render(panel, session, [2]) == ("a:2",)
    assert ahead.render(panel, SimpleNamespace(key="b"), [1]) == ("b:1",)
    assert calls == [1, 2, 1]


def test_a_failed_draw_ahead_is_drawn_again_where_its_error_can_be_shown():
    calls: list = []
    panel = _panel(calls, fail_first=True)
    ahead = Prefetched()
    ahead.start(panel, SimpleNamespace(key="a"), [1])
    assert ahead.render(panel, SimpleNamespace(key="a"), [1]) == ("a:1",)
    assert calls == [1, 1]


def test_only_the_newest_draws_are_kept():
    calls: list = []
    panel = _panel(calls)
    ahead = Prefetched(keep=2)
    for value in range(3):
        ahead.start(panel, SimpleNamespace(key="a"), [value])
    ahead.render(panel, SimpleNamespace(key="a"), [2])
    assert len(calls) == 3
    ahead.render(panel, SimpleNamespace(key="a"), [0])  # dropped: drawn again
    assert calls[-1] == 0 and len(calls) == 4
