"""The app's state and computations, without Gradio: one ``Explorer`` per served model.

It holds the model, the analysis cache, the runner every computation goes through and the
per-session cancel flags; what is drawn of the results is ``xviz.app.views``, the export
``xviz.app.archive``. Methods take plain values (an image, a layer name) and return plain
values, so the UI files only lay out components and wire them. A session keeps a
:class:`Session` (the image it analysed, small); analyses live in one bounded
:class:`~xviz.engine.cache.AnalysisCache` and are recomputed if they were evicted, so a view
never breaks because someone else's upload pushed its analysis out.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xviz.app import views
from xviz.checks import real_number, whole_number
from xviz.data.gallery import example_names
from xviz.engine.analysis import Analysis, class_labels, input_size
from xviz.engine.cache import AnalysisCache, BoundedCache
from xviz.engine.devices import out_of_memory_guard
from xviz.engine.preprocess import load_image, to_display
from xviz.engine.runner import MINUTES, SECONDS, Progress, Runner
from xviz.errors import AnalysisError, short
from xviz.methods.ablation import Ablation, AblationResult, ablate
from xviz.methods.attribution import LAYER_METHODS, METHODS, Attribution, attribute
from xviz.methods.faithfulness import Faithfulness, faithfulness
from xviz.model.xception import BLOCKS, Xception

# Input sides the explorer runs: at 32 the exit flow is down to 1x1 (below 7 nothing is
# left); above 600 one analysis holds about 190 MB of maps.
MIN_SIZE, MAX_SIZE = 32, 600
# Sessions whose cancel flags are kept (the oldest go first), and how much of a session id
# is a key: a client may name any session, fresh or long, in every request.
MAX_SESSIONS = 4096
LONG_BUSY = (
    "Your last long job (a feature visualization, a measurement or a check) is still running "
    "or waiting: it goes on, and its result will appear. Cancel it to start another."
)
SESSION_KEY = 64


def _session_key(session_id: object) -> str:
    return str(session_id)[:SESSION_KEY]


@dataclass(frozen=True)
class Session:
    """What one browser session analysed: the resized image and the settings, nothing big."""

    image: np.ndarray  # (S, S, 3) uint8, the pixels the model saw
    size: int
    target: int | None = None
    example: str | None = None  # the shipped example it is, by name (for shareable links)

    @functools.cached_property
    def key(self) -> str:
        """Identifies the analysis this session asks for: pixels, size and target."""
        digest = hashlib.sha256(np.ascontiguousarray(self.image).tobytes()).hexdigest()[:32]
        return f"{digest}-{self.size}-{self.target}"

    def same_input(self, other: Session | None) -> bool:
        """The same picture at the same size as ``other`` (whatever the target)."""
        return (
            other is not None
            and other.size == self.size
            and np.array_equal(other.image, self.image)
        )


class Explorer:
    """The app's state shared by all sessions: the model, the analysis cache, cancel flags."""

    def __init__(
        self,
        model: Xception,
        cache_mb: float = 768,
        top_k: int = 5,
        max_age_s: float | None = 3600,
        runner: Runner | None = None,
    ) -> None:
        self.model = model  # its weights are read here; computations go through the runner
        self.max_age_s = max_age_s
        self.cache = AnalysisCache(cache_mb, max_age_s=max_age_s)
        self.top_k = top_k
        self.native_size = input_size(model)
        self._examples = example_names()
        # Every model computation runs through this: on one warm thread (xviz/engine/runner.py),
        # or on ZeroGPU (xviz/engine/zerogpu.py).
        self.runner = runner or Runner(model)
        # Cancel flags by session: bounded in count and age, and keyed by at most
        # SESSION_KEY characters of what a client names as its session (any string).
        flags = {"max_entries": MAX_SESSIONS, "max_age_s": max_age_s, "size_of": lambda _: 0}
        self._cancel = BoundedCache(**flags)
        self._armed = BoundedCache(**flags)  # runs asked for, still in the queue
        self._long = BoundedCache(**flags)  # sessions with a long job asked for or running
        self._cancel_lock = threading.Lock()

    # --- analysing -------------------------------------------------------------------------

    def start(self, image: Any, size: int | None = None) -> Session:
        """Decode and resize an upload (path, PIL, array); raises ImageError when it can't."""
        size = whole_number(size or self.native_size, "The input size", text=True)
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise AnalysisError(f"The input size must be {MIN_SIZE} to {MAX_SIZE} pixels.")
        return Session(to_display(load_image(image), size), size, example=self._example(image))

    def _example(self, image: Any) -> str | None:
        """The example's name if ``image`` is the file of a shipped example (or a copy)."""
        if not isinstance(image, (str, os.PathLike)):
            return None
        path = Path(image)
        name = path.stem
        known = self._examples.get(name)
        if known is None or path.stat().st_size != known.stat().st_size:
            return None
        return name if path.read_bytes() == known.read_bytes() else None

    def analysis(self, session: Session) -> Analysis:
        """The session's analysis from the cache, recomputed if it was evicted."""
        return self._analysis(session, self.cache.analyze)

    def early(
        self,
        session: Session,
        stage: str = "prediction",
        maps: Sequence[str] = (),
        first: Sequence[str] | None = None,
    ) -> Analysis:
        """The session's analysis, or, while it still runs, what it has made once that has
        reached ``stage`` and holds ``maps`` (see
        :meth:`xviz.engine.cache.AnalysisCache.early`, and ``first`` there):
        "prediction" (about a third of the time of the whole), "gradcam" (all but the maps
        not asked for). For what needs no more."""
        get = functools.partial(self.cache.early, stage=stage, maps=tuple(maps), first=first)
        return self._analysis(session, get)

    def layer(self, session: Session, layer: str) -> Analysis:
        """The session's analysis, early if it still runs, once it holds ``layer``'s two maps
        (:func:`xviz.app.views.layer_maps`): a run this starts makes them first, before its
        backward pass. ``layer`` is checked first."""
        return self.early(session, maps=views.layer_map_names(layer))

    def _analysis(self, session: Session, get: Callable[..., Analysis]) -> Analysis:
        if session is None:
            raise AnalysisError("Upload an image (or pick an example) first.")
        with out_of_memory_guard("the analysis"):
            return get(
                self.model,
                session.image,
                target=session.target,
                size=session.size,
                top_k=self.top_k,
                run=self.runner,
            )

    def retarget(self, session: Session, label: str | None) -> Session:
        if session is None:
            raise AnalysisError("Upload an image (or pick an example) first.")
        labels = self.labels
        if label in (None, ""):
            return Session(session.image, session.size, None, session.example)
        if label not in labels:
            raise AnalysisError(f"Unknown class {label!r}.")
        return Session(session.image, session.size, labels.index(label), session.example)

    @property
    def labels(self) -> list[str]:
        return class_labels(self.model)

    # --- activations -----------------------------------------------------------------------

    # --- attributions ----------------------------------------------------------------------

    def arm(self, session_id: str, long: bool = False) -> None:
        """A run was asked for and may wait in the queue: a :meth:`cancel` from now on reaches
        it, and it ends as soon as it starts.

        A ``long`` job (run inside :meth:`long_run`) is refused with an ``AnalysisError`` while
        the session has another one asked for or running: one visitor's jobs do not stack.
        """
        key = _session_key(session_id)
        with self._cancel_lock:
            if long and self._long.get(key) is not None:
                raise AnalysisError(LONG_BUSY)
            self._armed.put(key, threading.Event())
            if long:
                self._long.put(key, True)

    @contextlib.contextmanager
    def long_run(self, session_id: str) -> Iterator[threading.Event]:
        """``with explorer.long_run(session_id) as cancelled:`` the session's long job that
        starts now (:meth:`new_run`'s flag); once it ends, however it ends, the session may
        ask for another."""
        try:
            yield self.new_run(session_id)
        finally:
            with self._cancel_lock:
                self._long.pop(_session_key(session_id))

    def new_run(self, session_id: str) -> threading.Event:
        """The cancel flag of a session's run that starts now (the one :meth:`arm` made for
        it, if any); :meth:`cancel` sets the latest one. A run keeps its own flag, so one that
        starts after a cancel does not undo it."""
        key = _session_key(session_id)
        with self._cancel_lock:
            event = self._armed.pop(key) or threading.Event()
            self._cancel.put(key, event)
        return event

    def cancel(self, session_id: str) -> None:
        """Stop the session's running run and the one it asked for, if any."""
        key = _session_key(session_id)
        with self._cancel_lock:
            events = [self._cancel.get(key), self._armed.get(key)]
            self._long.pop(key)  # the cancelled job ends at its next step: another may queue
        for event in events:
            if event is not None:
                event.set()

    def forget(self, session_id: str) -> None:
        """Release what a finished browser session held."""
        key = _session_key(session_id)
        with self._cancel_lock:
            self._cancel.pop(key)
            self._armed.pop(key)
            self._long.pop(key)

    def attribution(
        self,
        session: Session,
        method: str,
        block: str,
        alpha: float = 0.5,
        progress: Progress | None = None,
        session_id: str = "",
        dark: bool = False,
    ) -> views.AttributionView:
        """An on-demand Captum attribution: over the image, as a heatmap, and in words."""
        if method not in METHODS:
            raise AnalysisError(f"Unknown method {short(method, 40)}: use one of {METHODS}.")
        alpha = real_number(alpha, "The heatmap opacity", 0.0, 1.0)
        analysis = self.analysis(session)
        # A job of seconds: between the batches of a method that hooks nothing, the calls of
        # other visitors that are more urgent run (Runner.background).
        with (
            self.long_run(session_id) as cancelled,
            out_of_memory_guard(views.METHOD_TITLES[method]),
        ):
            result: Attribution = self.runner.background(
                attribute,
                analysis.image,
                target=analysis.target,
                size=analysis.size,
                method=method,
                block=block if method in LAYER_METHODS else None,
                progress=progress,
                cancel=cancelled.is_set,
                priority=SECONDS,
            )
        return views.attribution_view(analysis, result, alpha, dark)

    def faithfulness(
        self,
        session: Session,
        block: str,
        progress: Progress | None = None,
        session_id: str = "",
        dark: bool = False,
    ) -> views.FaithfulnessView:
        """How far each attribution can be trusted for the session's image and class: a job of
        a minute, run in the background (more urgent calls go first at its pauses)."""
        if block not in BLOCKS:
            raise AnalysisError(f"Unknown block {short(block, 40)}: use 'block1' to 'block14'.")
        # Only the pixels and the class: no need to wait for the maps of the analysis.
        analysis = self.early(session, stage="prediction")
        with (
            self.long_run(session_id) as cancelled,
            out_of_memory_guard("the faithfulness check"),
        ):
            result: Faithfulness = self.runner.background(
                faithfulness,
                analysis.image,
                target=analysis.target,
                size=analysis.size,
                block=block,
                progress=progress,
                cancel=cancelled.is_set,
                priority=MINUTES,
            )
        return views.faithfulness_view(result, dark)

    # --- ablations -------------------------------------------------------------------------

    def ablation(
        self,
        session: Session,
        kind: str,
        blocks: list[str],
        layer: str = "",
        side: str = "left",
        channel: int = 0,
    ) -> AblationResult:
        analysis = self.analysis(session)
        if kind == "relu_between":
            change = Ablation.relu_between(blocks)
        elif kind == "drop_residual":
            change = Ablation.drop_residual(blocks)
        elif kind == "zero_channel":
            left, right, _, _ = views.layer_maps(analysis, layer)
            m = left if side == "left" else right
            change = Ablation.zero_channel(m.name, whole_number(channel, "The channel", text=True))
        else:
            raise AnalysisError(f"Unknown ablation {short(kind, 40)}.")
        if not change.blocks and kind != "zero_channel":
            raise AnalysisError("Pick at least one block to change.")
        with out_of_memory_guard("the ablation"):
            return self.runner(
                ablate,
                analysis.image,
                change,
                target=analysis.target,
                size=analysis.size,
                top_k=self.top_k,
            )

    # --- export ----------------------------------------------------------------------------
