"""One analysis exported as a zip: what a user downloads from the Export tab."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from PIL import Image

from xviz.app.views import AUTO_CMAP, gradcam_strip, grid
from xviz.engine.analysis import MAP_NAMES, Analysis
from xviz.render.encode import png_bytes


def export_name(analysis: Analysis) -> str:
    """The file name an export of ``analysis`` gets: weights and class (made file-safe)."""
    return f"xviz-{analysis.weights}-{analysis.target_label}.zip"


def export_zip(analysis: Analysis, path: Path, cmap: str = AUTO_CMAP) -> Path:
    """One analysis as a zip at ``path``: the input, every map's first grid page and
    Grad-CAM as PNG, predictions and per-channel statistics as JSON."""
    stats: dict[str, Any] = {}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("input.png", png_bytes(Image.fromarray(analysis.image)))
        for name in MAP_NAMES:
            m = analysis.map(name)
            z.writestr(f"maps/{name}.png", png_bytes(grid(m, "mean", 1, cmap).image))
            stats[name] = {
                "shape": list(m.shape),
                "mean": m.mean.round(6).tolist(),
                "max": m.max.round(6).tolist(),
                "positive": m.positive.round(6).tolist(),
            }
        for block, (img, _) in zip(analysis.gradcam, gradcam_strip(analysis), strict=True):
            z.writestr(f"gradcam/{block}.png", png_bytes(img))
        summary = {
            "weights": analysis.weights,
            "input_size": analysis.size,
            "target": analysis.target_label,
            "top": [p._asdict() for p in analysis.top],
        }
        z.writestr("predictions.json", json.dumps(summary, indent=2))
        z.writestr("statistics.json", json.dumps(stats))
    return path
