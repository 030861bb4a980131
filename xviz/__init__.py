"""xviz: see inside a pretrained Xception.

Public API: ``load_model``, ``preprocess``, ``analyze``, ``attribute``, ``ablate``,
``predict``, ``explain_value``, ``visualize`` (feature visualization), ``faithfulness``
(which attribution to trust), ``build_atlas`` / ``load_atlas`` (dataset atlas), the model and
its metadata, errors.
"""

from xviz.engine.analysis import MAP_NAMES, Analysis, Map, Prediction, SepConvMaps, analyze
from xviz.engine.cache import AnalysisCache
from xviz.engine.devices import resolve_device
from xviz.engine.hooks import Capture, model_lock
from xviz.engine.inference import predict
from xviz.engine.preprocess import load_image, preprocess
from xviz.errors import (
    AnalysisError,
    AtlasError,
    Cancelled,
    ImageError,
    WeightsError,
    XvizError,
)
from xviz.methods.ablation import Ablation, AblationResult, ablate, ablated
from xviz.methods.atlas import Atlas, Example, build_atlas, default_atlas, load_atlas
from xviz.methods.attribution import LAYER_METHODS, METHODS, Attribution, attribute
from xviz.methods.faithfulness import Faithfulness, faithfulness
from xviz.methods.featurevis import Visualization, VisualizationCache, visualize
from xviz.methods.trace import ValueTrace, explain_value
from xviz.model.weights import (
    WEIGHTS_NAMES,
    WeightsSource,
    load_model,
    locate_weights,
    save_safetensors,
)
from xviz.model.xception import BLOCK_SPECS, BLOCKS, FLOWS, SEPCONV_NAMES, Xception

__all__ = [
    "BLOCKS",
    "BLOCK_SPECS",
    "FLOWS",
    "LAYER_METHODS",
    "MAP_NAMES",
    "METHODS",
    "SEPCONV_NAMES",
    "WEIGHTS_NAMES",
    "Ablation",
    "AblationResult",
    "Analysis",
    "AnalysisCache",
    "AnalysisError",
    "Atlas",
    "AtlasError",
    "Attribution",
    "Cancelled",
    "Capture",
    "Example",
    "Faithfulness",
    "ImageError",
    "Map",
    "Prediction",
    "SepConvMaps",
    "ValueTrace",
    "Visualization",
    "VisualizationCache",
    "WeightsError",
    "WeightsSource",
    "Xception",
    "XvizError",
    "ablate",
    "ablated",
    "analyze",
    "attribute",
    "build_atlas",
    "default_atlas",
    "explain_value",
    "faithfulness",
    "load_atlas",
    "load_image",
    "load_model",
    "locate_weights",
    "model_lock",
    "predict",
    "preprocess",
    "resolve_device",
    "save_safetensors",
    "visualize",
]
