"""The web app: the page composed of its parts (``xviz/app/ui/``, one module per tab), and its
launch (``python app.py``, or ``xviz serve`` from an installed package).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
from gradio.utils import get_upload_folder

from xviz.app.explorer import Explorer
from xviz.app.files import FileStore
from xviz.app.server import (
    QUEUE_SIZE,
    RETENTION_S,
    XvizBlocks,
    launch_options,
    make_explorer,
    unavailable_demo,
)
from xviz.app.ui import (
    ablations,
    activations,
    api,
    attributions,
    compare,
    cost,
    export,
    links,
    live,
    new_analysis,
    shared,
    tour,
)
from xviz.errors import XvizError


def build_demo(explorer: Explorer | None = None, retention_s: float = RETENTION_S) -> gr.Blocks:
    """The app around one model; ``explorer`` defaults to the weights ``load_model`` picks.

    ``retention_s``: how long uploads and served files (maps, exports) are kept.
    """
    explorer = explorer or make_explorer()
    # Served files live in Gradio's upload folder, so that it serves them without a copy.
    files = FileStore(Path(get_upload_folder()) / "xviz-files", max_age_s=retention_s)
    with XvizBlocks(
        title="xviz: inside Xception",
        delete_cache=(int(min(max(retention_s // 2, 1), 60)), int(retention_s)),
    ) as demo:
        top = shared.build_header(explorer, files)
        tour_buttons = tour.buttons(top)
        with top.main, gr.Tabs() as top.tabs:
            with gr.Tab("Activations", id="activations") as tab:
                views = activations.build(top)
            new_analysis.on_tab_open(top, tab, "activations")
            with gr.Tab("Attributions", id="attributions") as tab:
                attribution = attributions.build(top)
            new_analysis.on_tab_open(top, tab, "attributions")
            with gr.Tab("Ablations", id="ablations") as tab:
                ablations.build(top, views)
            new_analysis.on_tab_open(top, tab, "ablations")
            with gr.Tab("Cost", id="cost") as tab:
                cost.build(top)
            new_analysis.on_tab_open(top, tab, "cost")
            with gr.Tab("Compare", id=compare.TAB) as tab:
                compared = compare.build(top, views.cmap, views.panel.shown)
            new_analysis.on_tab_open(top, tab, compare.TAB)
            compare.on_open(tab, compared)
            with gr.Tab("Export", id="export") as tab:
                export.build(top)
            new_analysis.on_tab_open(top, tab, "export")
            with gr.Tab("Live", id=live.TAB) as tab:
                live.build(top)
            new_analysis.on_tab_open(top, tab, live.TAB)
            with gr.Tab("Guided tour", id=tour.TAB) as tab:
                tour.build(top, tour_buttons)
            new_analysis.on_tab_open(top, tab, tour.TAB)
        api.build(top, views, attribution)
        new_analysis.analysis_events(top)
        links.on_page_load(top, demo)
        shared.quiet_progress(demo, top)

        def forget(request: gr.Request) -> None:
            explorer.forget(request.session_hash)

        demo.unload(forget)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=4)
    return demo


def _stop_on_sigterm() -> None:
    """SIGTERM (``docker stop``, a Space restart) stops the server as Ctrl-C does, so that the
    clean-up at exit runs (served files are deleted) instead of the process just vanishing."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main() -> None:
    # xviz says in the log which weights it tries, downloads (with progress) and skips;
    # other libraries keep their default (warnings only).
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("xviz").setLevel(logging.INFO)
    try:
        demo = build_demo()
    except XvizError as err:  # e.g. corrupt weights: say which file and what is wrong
        if not os.environ.get("SPACE_ID"):
            raise SystemExit(f"xviz cannot start: {err}") from None
        # On Hugging Face Spaces (which sets SPACE_ID) an exit is restarted in a loop: serve
        # a page that says what happened; the details (paths, URLs) stay in the log.
        logging.getLogger("xviz").error("xviz cannot start: %s", err)
        demo = unavailable_demo()
    _stop_on_sigterm()
    demo.launch(**launch_options())


if __name__ == "__main__":
    main()
