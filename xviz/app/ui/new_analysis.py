"""How a new analysis reaches the tabs: the prediction first, then the open tab's panels,
then the rest in the background; an opened tab fills in from what was drawn ahead. The
events of a new image, a new target class and a tab opening."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import gradio as gr

from xviz.app import explorer as ex
from xviz.app import views
from xviz.app.server import ui_errors
from xviz.app.ui.panels import Panel
from xviz.app.ui.shared import MODEL_EVENTS, RENDER_EVENTS, Shared, status


def _pushed(tab: str) -> str:
    """The key of ``shown`` that says which analysis the pushed panels of ``tab`` show."""
    return f"{tab}/pushed"


def panel_inputs(panels: Sequence[Panel]) -> list[gr.Component]:
    """Every panel's inputs once, in order."""
    seen: dict[int, gr.Component] = {}
    for component in itertools.chain.from_iterable(p.inputs for p in panels):
        seen.setdefault(component._id, component)
    return list(seen.values())


def panel_outputs(panels: Sequence[Panel]) -> set[gr.Component]:
    return {c for p in panels for c in p.outputs}


def render_panels(
    shared: Shared,
    panels: Sequence[Panel],
    session: ex.Session,
    values: dict[gr.Component, Any],
) -> dict[gr.Component, Any]:
    out: dict[gr.Component, Any] = {}
    for panel in panels:
        given = [values[c] for c in panel.inputs]
        rendered = (
            shared.prefetched.render(panel, session, given)
            if panel.prefetch or panel.push
            else (panel.render(session, *given))
        )
        out |= dict(zip(panel.outputs, rendered, strict=True))
    return out


def _waiting(panels: Sequence[Panel]) -> dict[gr.Component, Any]:
    """The waiting faces of the panels that need the backward pass."""
    return {c: v for p in panels if p.backward for c, v in zip(p.outputs, p.waiting, strict=True)}


def _streamed(
    shared: Shared,
    panels: Sequence[Panel],
    session: ex.Session,
    given: dict[gr.Component, Any],
    last: dict[gr.Component, Any] | None = None,
) -> Iterator[dict[gr.Component, Any]]:
    """A panel at a time, each on the page as soon as it is drawn; ``last`` comes with the
    last one (alone if there are none). Panels that need the backward pass show their waiting
    face first if it still runs, and are drawn once it is done."""
    if any(p.backward for p in panels) and not shared.explorer.early(session).reached("gradcam"):
        yield _waiting(panels)
    for panel in panels[:-1]:
        yield render_panels(shared, [panel], session, given)
    yield render_panels(shared, panels[-1:], session, given) | (last or {})


def analysis_events(shared: Shared) -> None:
    """Wire what a new image, size or target does, once every tab has added its panels.

    The eager panels come with the analysis; then the lazy panels of the tab open by then
    (read after the analysis, so a tab opened meanwhile is served too).
    """
    explorer = shared.explorer
    eager = [p for p in shared.panels if p.tab is None]
    lazy = [p for p in shared.panels if p.tab is not None]
    eager_inputs = panel_inputs([*eager, *lazy])

    @ui_errors
    def on_image(image, size, session, tab, shown, *values) -> Iterator[dict]:
        """Analyse a new image (or size), forward pass first: the prediction as soon as the
        forward pass is done, then the panels drawn from the maps (the open tab's, then the
        eager ones: the grids of the layer on screen, whose maps the analysis makes first);
        the panels that need the backward pass (Grad-CAM) once it is done; the other tabs'
        panels are drawn ahead in the background."""
        # Nothing to do: one unchanged output (yielding nothing would clear every output).
        unchanged = {shared.session: gr.skip()}
        if image is None:
            yield unchanged
            return
        new = explorer.start(image, size)
        if session is not None and new.same_input(session):
            yield unchanged  # the same picture again (Gradio reports one upload twice)
            return
        given = dict(zip(eager_inputs, values, strict=True))
        # The maps of the layer on screen come first, before the backward pass.
        try:
            shown_first = views.layer_map_names(given.get(shared.layer))
        except ex.AnalysisError:
            shown_first = ()  # (a client's odd layer: its grids say so)
        first = explorer.early(new, stage="prediction", first=shown_first)
        yield {
            shared.session: new,
            shared.prediction: views.prediction(first),
            shared.target: gr.update(choices=views.target_choices(first), value=first.target_label),
            shared.info: status(first),
        }
        due = [p for p in lazy if p.tab == tab]  # the open tab's own: what the visitor sees
        after = [p for p in due if p.backward]
        if due and len(after) < len(due):
            yield from _streamed(shared, [p for p in due if not p.backward], new, given)
        if after and not first.reached("gradcam"):
            yield _waiting(after)  # not the last image's Grad-CAMs meanwhile
        pushed = [p for p in lazy if p.push and p not in due]
        for panel in pushed:  # drawn on another thread while the eager panels are drawn here
            shared.prefetched.start(panel, new, [given[c] for c in panel.inputs])
        yield render_panels(shared, eager, new, given) | {shared.info: status(explorer.early(new))}
        if after:
            yield from _streamed(shared, after, new, given)
        for panel in lazy:
            if panel.prefetch and panel not in due:
                shared.prefetched.start(panel, new, [given[c] for c in panel.inputs])
        now = {**shown, **({tab: new.key} if due else {})}
        now |= {_pushed(p.tab): new.key for p in pushed}
        # The whole analysis is done once any panel that needs it is drawn.
        done = {shared.info: status(explorer.analysis(new)), shared.shown: now}
        yield render_panels(shared, pushed, new, given) | done

    gr.on(
        [shared.image.change, shared.size.change],
        on_image,
        [shared.image, shared.size, shared.session, shared.tab, shared.shown, *eager_inputs],
        {shared.session, shared.prediction, shared.target, shared.info, shared.shown}
        | panel_outputs(eager)
        | panel_outputs(lazy),
        api_name=False,
        # Progress on the prediction alone, and minimal (a timer in its corner, no overlay):
        # a timer on each of some 20 outputs repaints the page every frame, and on a small
        # machine the browser then takes the CPU the analysis needs. Measured on 2 cores at
        # 299 (bench/browser.py): the prediction came 0.05-0.1 s sooner than with the overlay.
        show_progress_on=[shared.prediction],
        show_progress="minimal",
        **MODEL_EVENTS,
    ).then(**lazy_event(shared))

    retargeted = [p for p in eager if p.on_retarget]
    retarget_inputs = panel_inputs(retargeted)

    @ui_errors
    def on_target(session, label, *values) -> dict:
        if session is None:
            return {shared.session: gr.skip()}
        session = explorer.retarget(session, label)
        analysis = explorer.analysis(session)
        given = dict(zip(retarget_inputs, values, strict=True))
        return {shared.session: session, shared.info: status(analysis)} | render_panels(
            shared, retargeted, session, given
        )

    shared.target.input(
        on_target,
        [shared.session, shared.target, *retarget_inputs],
        {shared.session, shared.info} | panel_outputs(retargeted),
        api_name=False,
        **MODEL_EVENTS,
    ).then(**lazy_event(shared))


def lazy_event(shared: Shared, opened: str | None = None) -> dict[str, Any]:
    """The event that renders the lazy panels of the open tab (``opened``, or the tab the
    session is on) unless they already show the session's analysis."""
    lazy = [p for p in shared.panels if p.tab is not None]
    lazy_inputs = panel_inputs(lazy)

    @ui_errors
    def render(session, tab, shown, *values) -> Iterator[dict]:
        tab = opened or tab
        out: dict[gr.Component, Any] = {shared.tab: tab}
        due = [p for p in lazy if p.tab == tab]
        if session is None or not due or shown.get(tab) == session.key:
            yield out
            return
        given = dict(zip(lazy_inputs, values, strict=True))
        # What a new analysis pushed to the hidden tab is on the page already.
        due = [p for p in due if not (p.push and shown.get(_pushed(tab)) == session.key)]
        yield from _streamed(
            shared, due, session, given, out | {shared.shown: {**shown, tab: session.key}}
        )

    return {
        "fn": render,
        "inputs": [shared.session, shared.tab, shared.shown, *lazy_inputs],
        "outputs": {shared.tab, shared.shown} | panel_outputs(lazy),
        "api_name": False,
        **RENDER_EVENTS,
    }


def on_tab_open(shared: Shared, tab: gr.Tab, tab_id: str) -> None:
    """Remember which tab is open, and render its lazy panels for the current analysis."""
    tab.select(**lazy_event(shared, opened=tab_id))
