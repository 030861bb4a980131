"""The Export tab: one analysis as a zip, built for this request alone (see xviz/app/files.py)."""

from __future__ import annotations

import gradio as gr

from xviz.app import archive
from xviz.app.server import ui_errors
from xviz.app.ui.panels import Panel
from xviz.app.ui.shared import Shared


def build(shared: Shared) -> None:
    explorer = shared.explorer
    gr.Markdown(
        "Download this analysis: the input, the first page of every map and the "
        "Grad-CAM overlays as PNG, predictions and per-channel statistics as JSON."
    )
    button = gr.Button("Build zip", elem_id="export-button")
    download = gr.File(label="Analysis (zip)", interactive=False)
    # A new image makes the last zip stale: take it away.
    shared.panels.append(Panel(lambda session: (None,), [], [download], on_retarget=True))

    @ui_errors
    def export(session) -> str:
        """A zip of this session's analysis, in a folder of its own."""
        path = shared.files.new_file(archive.export_name(explorer.analysis(session)))
        return str(archive.export_zip(explorer.analysis(session), path))

    button.click(export, shared.session, download, api_name=False)
