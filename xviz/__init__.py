"""xviz: see inside a pretrained Xception.

Public API: the model (``Xception``), errors. More is re-exported as modules land.
"""

from xviz.errors import AnalysisError, Cancelled, ImageError, WeightsError, XvizError
from xviz.model import BLOCK_SPECS, BLOCKS, FLOWS, SEPCONV_NAMES, Xception

__all__ = [
    "BLOCKS",
    "BLOCK_SPECS",
    "FLOWS",
    "SEPCONV_NAMES",
    "AnalysisError",
    "Cancelled",
    "ImageError",
    "WeightsError",
    "Xception",
    "XvizError",
]
