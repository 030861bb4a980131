"""xviz: see inside a pretrained Xception.

Public API: ``load_model``, ``preprocess``, the model and its metadata, errors.
"""

from xviz.devices import resolve_device
from xviz.errors import AnalysisError, Cancelled, ImageError, WeightsError, XvizError
from xviz.model import BLOCK_SPECS, BLOCKS, FLOWS, SEPCONV_NAMES, Xception
from xviz.preprocess import load_image, preprocess
from xviz.weights import (
    WEIGHTS_NAMES,
    WeightsSource,
    load_model,
    locate_weights,
    save_safetensors,
)

__all__ = [
    "BLOCKS",
    "BLOCK_SPECS",
    "FLOWS",
    "SEPCONV_NAMES",
    "WEIGHTS_NAMES",
    "AnalysisError",
    "Cancelled",
    "ImageError",
    "WeightsError",
    "WeightsSource",
    "Xception",
    "XvizError",
    "load_image",
    "load_model",
    "locate_weights",
    "preprocess",
    "resolve_device",
    "save_safetensors",
]
