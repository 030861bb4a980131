"""Grad-CAM read across the 14 blocks: one unit for all blocks, each block's agreement with
block14, and which maps are blank and why.

``Analysis.gradcam`` holds Captum's Grad-CAM of each block, ReLU(sum_c w_c A_c) with w_c the
gradient of the target logit averaged over the block's h x w positions (Selvaraju et al. 2017,
eq. 1-2). Averaging spreads a block's evidence over its positions: for the same total, a 72x72
map (block1 at 150 px) has values about 200 times smaller than a 5x5 map (block14). To compare
blocks, xviz multiplies each map by its number of positions h * w, which is Grad-CAM with the
gradients summed instead of averaged; a map's mean over the image is then the sum of the
block's Grad-CAM, whatever its resolution. These are the values the strip shares one colour
scale for and that the colourbars and hover texts give ("Grad-CAM per image area").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xviz.engine.analysis import Analysis
from xviz.errors import AnalysisError
from xviz.model.xception import BLOCKS

REFERENCE = "block14"
"""The block every map is compared with: the last one, the classifier's input."""
SCALES: tuple[str, ...] = ("shared", "block")
"""``"shared"``: one colour scale for all 14 maps; ``"block"``: each map its own."""

UNIT = "Grad-CAM per image area"
SCALE_NOTES: dict[str, str] = {
    "shared": (
        "**One colour scale for all 14 blocks**: a brighter block gives more evidence. Values "
        "are Grad-CAM times the number of positions of the block's map, so that a coarse 5x5 "
        "map and a fine 72x72 one compare."
    ),
    "block": (
        "**Each block on its own colour scale**, from 0 to its largest value (in its caption): "
        "each map shows its own detail, but colours do not compare between blocks."
    ),
}
AGREEMENT_NOTE = (
    "**Agreement** (in the captions): how much a block looks where block14 looks, the "
    "correlation of the two maps over the image (1: the same places, 0: unrelated, below 0: "
    "elsewhere)."
)


@dataclass(frozen=True)
class BlockCam:
    """One block's Grad-CAM as the Attributions tab shows it.

    ``values`` is the map at input resolution (S, S) in ``UNIT``, ``peak`` its largest value;
    ``agreement`` the Pearson correlation with ``REFERENCE``'s map (None when either is blank).
    """

    block: str
    flow: str
    shape: tuple[int, int]  # (h, w) of the block's own map
    values: np.ndarray  # (S, S) float32
    peak: float
    agreement: float | None

    @property
    def blank(self) -> bool:
        """Zero everywhere: ReLU left nothing (see :func:`blank_reason`)."""
        return self.peak <= 0

    @property
    def positions(self) -> int:
        return self.shape[0] * self.shape[1]


def per_area(analysis: Analysis, block: str) -> np.ndarray:
    """The block's Grad-CAM at input resolution times its number of positions: (S, S)."""
    if block not in analysis.gradcam:
        raise AnalysisError(f"Unknown block {block!r}: use 'block1' to 'block14'.")
    h, w = analysis.gradcam_raw[block].shape
    return analysis.gradcam[block] * np.float32(h * w)


def agreement(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two maps over their pixels; None when one is constant."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    norm = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / norm) if norm > 0 else None


def block_cams(analysis: Analysis) -> list[BlockCam]:
    """All 14 blocks, entry to exit."""
    reference = per_area(analysis, REFERENCE)
    out = []
    for block in analysis.gradcam:
        values = per_area(analysis, block)
        out.append(
            BlockCam(
                block=block,
                flow=BLOCKS[block].flow,
                shape=analysis.gradcam_raw[block].shape,
                values=values,
                peak=float(values.max()),
                agreement=agreement(values, reference),
            )
        )
    return out


def color_limits(cams: list[BlockCam], scale: str) -> dict[str, float]:
    """The value each block's brightest colour stands for: the largest of all 14 maps
    (``"shared"``) or of each map (``"block"``; a blank map takes the shared one), 1 when all
    are blank, so that 0 stays the darkest colour."""
    if scale not in SCALES:
        raise AnalysisError(f"Unknown Grad-CAM scale {scale!r}: use one of {SCALES}.")
    shared = max(cam.peak for cam in cams) or 1.0
    return {cam.block: shared if scale == "shared" else cam.peak or shared for cam in cams}


def blank_reason(label: str, block: str) -> str:
    """Why ``block``'s Grad-CAM for class ``label`` is zero everywhere, in one sentence."""
    return (
        f"No positive evidence for {label} at {block}: Grad-CAM keeps only the places where "
        f"the block's channels, weighted by how much they raise {label}'s score, add up to "
        f"more than 0; here they add up to 0 or less everywhere."
    )
