"""Serving concerns of the web app: limits, start-up, the upload component, the header."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData
from PIL import Image

from xviz.devices import resolve_device
from xviz.explorer import Explorer
from xviz.model import Xception
from xviz.preprocess import MAX_FILE_BYTES, MAX_PIXELS
from xviz.warmup import start_warm_up
from xviz.weights import load_model

# Pending requests beyond this are refused with Gradio's "queue is full" message.
QUEUE_SIZE = int(os.environ.get("XVIZ_QUEUE_SIZE", "16"))
# A browser session's state (its image, a few hundred kB) is dropped after this long idle.
SESSION_TTL_S = int(os.environ.get("XVIZ_SESSION_TTL_S", "3600"))
# Memory for cached analyses (one analysis is about 46 MB at 299x299, 12 MB at 150x150).
CACHE_MB = float(os.environ.get("XVIZ_CACHE_MB", "768"))
# Analyses and exported zips unused for this long are deleted; so are Gradio's uploads.
RETENTION_S = int(os.environ.get("XVIZ_RETENTION_S", "3600"))

# How the app is launched, in production and in the tests alike. Unexpected errors show
# Gradio's generic message (no internal paths); xviz's own errors always say what is wrong.
LAUNCH_OPTIONS: dict[str, Any] = {
    "max_file_size": MAX_FILE_BYTES,
    # Closed browser sessions Gradio keeps (each ~0.3 MB); its default is 10000.
    "state_session_capacity": int(os.environ.get("XVIZ_SESSIONS", "500")),
    "show_error": False,
    "allowed_paths": [],
    "share": False,
}

# Gradio's own image handling may open uploads with Pillow; keep its limit at ours.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def make_explorer(
    weights: str | None = None, device: str | None = None, cache_mb: float = CACHE_MB
) -> Explorer:
    """Load the weights (``XVIZ_WEIGHTS`` / auto) on the device and wrap them for the app."""
    model = load_model(weights or "auto", device=device or "auto")
    start_warm_up(model)  # on a GPU: every shape the app runs, once, in a daemon thread
    return Explorer(model, cache_mb=cache_mb, max_age_s=RETENTION_S)


class FilePathImage(gr.Image):
    """``gr.Image`` that hands the uploaded file to xviz undecoded.

    Gradio's own preprocessing opens the file with Pillow before the handler runs, so a
    corrupt or hostile upload would fail there with a generic error. xviz's loader checks
    size, format and pixel count itself and says what is wrong.
    """

    @classmethod
    def get_block_name(cls) -> str:
        return "image"  # the browser side is Gradio's own image component

    def preprocess(self, payload: Any) -> str | None:
        if payload is None:
            return None
        if isinstance(payload, dict):
            payload = FileData(**payload)
        if payload.url and payload.url.startswith("data:"):
            return super().preprocess(payload)
        return str(Path(payload.path)) if payload.path else None


def header_markdown(model: Xception) -> str:
    """One line on what this is, then which weights run where."""
    src = model.source
    device = resolve_device(str(next(model.parameters()).device))
    lines = [
        "# xviz: inside Xception",
        "Explore a pretrained **Xception** (Chollet 2017) flow by flow: the **depthwise** and "
        "**pointwise** halves of all 34 separable convolutions, Grad-CAM for every block, "
        "input attributions, live ablations and what separable convolutions cost.",
    ]
    if src is None:
        lines.append("Weights: **random** (for tests only).")
        return "\n\n".join(lines)
    weights = (
        f"Weights: **{src.name}** ({src.description}); {len(model.labels)} classes "
        f"({src.label_set}); native input {src.input_size}x{src.input_size}; "
        f"'{src.padding}' padding; running on **{device.type}**."
    )
    lines.append(weights)
    if src.label_set == "kitchenware":
        lines.append(
            "> These are the offline weights: the backbone is the **ImageNet-trained Keras "
            "Xception** (frozen), and the head knows **6 kitchen classes** (cup, fork, glass, "
            "knife, plate, spoon), trained at 150x150. Every map below is the ImageNet "
            "backbone's; set `XVIZ_WEIGHTS=keras-imagenet` online for the 1000 ImageNet classes."
        )
    return "\n\n".join(lines)
