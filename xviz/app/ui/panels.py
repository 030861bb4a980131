"""What a tab shows of an analysis (a :class:`Panel`: its render function, inputs and
outputs, when it is drawn), and lazy panels drawn ahead in the background (:class:`Prefetched`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import gradio as gr

from xviz.app import explorer as ex
from xviz.engine.cache import BoundedCache


@dataclass(frozen=True)
class Panel:
    """What one tab shows of an analysis.

    ``render(session, *inputs)`` returns the values of ``outputs``. A panel with a ``tab`` is
    lazy: it is rendered only while that tab is open, and when the tab opens.
    """

    render: Callable[..., Sequence[Any]]
    inputs: Sequence[gr.Component]
    outputs: Sequence[gr.Component]
    tab: str | None = None
    on_retarget: bool = False  # rendered again when the target class changes
    # Lazy and slow to draw: drawn in the background once an analysis is shown, so that
    # opening its tab finds it ready (see ``Prefetched``).
    prefetch: bool = False
    # Lazy, drawn ahead, and then sent to the page while its tab is hidden: the page keeps
    # the value until the tab opens and mounts it (Gradio 6.31 mounts a hidden tab's children
    # only then, ``render_children`` notwithstanding), so opening the tab needs no round trip.
    # For small pictures only: every new analysis sends it.
    push: bool = False
    # Drawn from the backward pass (Grad-CAM): until it is done, ``waiting`` (values of
    # ``outputs``) shows that this image's panel is on its way, not the last image's.
    waiting: Sequence[Any] | None = None

    @property
    def backward(self) -> bool:
        """Whether the panel needs the analysis' backward pass (it has a ``waiting`` face)."""
        return self.waiting is not None


class Prefetched:
    """Lazy panels drawn ahead in a background thread, kept by panel, analysis and inputs
    (a few; the oldest go first). A tab that opens takes its panel from here, waiting for it
    if it is still being drawn, instead of drawing it again."""

    def __init__(self, keep: int = 16) -> None:
        self._done = BoundedCache(max_entries=keep, size_of=lambda _: 0)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xviz-prefetch")

    @staticmethod
    def key(panel: Panel, session: ex.Session, values: Sequence[Any]) -> tuple:
        return (id(panel), session.key, repr(values))

    def start(self, panel: Panel, session: ex.Session, values: Sequence[Any]) -> None:
        self._done.get_or_compute(
            self.key(panel, session, values),
            lambda: self._pool.submit(panel.render, session, *values),
        )

    def render(self, panel: Panel, session: ex.Session, values: Sequence[Any]) -> Sequence[Any]:
        ahead = self._done.get(self.key(panel, session, values))
        if ahead is not None and ahead.exception() is None:  # (waits for it to be drawn)
            return ahead.result()
        # Not drawn ahead, or that failed: drawn here, where an error reaches the page.
        return panel.render(session, *values)
