"""One camera frame through the network as far as one layer: ``live_maps(model, image, layer)``.

The Live tab shows, for every frame, one page of a separable convolution's depthwise and
pointwise maps and one channel of them large. Only that is computed: the forward pass stops
at the layer's pointwise convolution (:func:`xviz.engine.truncated.forward_until`), and only
the page's channels come back from the model's device. When the caller asks for a prediction
(at a lower rate than the frames: the head costs the rest of the network), the pass runs to
the end instead and the same hooks keep the two maps.

The maps are those :func:`xviz.engine.analysis.analyze` records for the same pixels (before
the BatchNorm that follows each half), in float32 rather than uint8 codes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xviz.checks import whole_number
from xviz.engine.analysis import (
    Prediction,
    class_labels,
    map_channels,
    model_device,
    top_predictions,
)
from xviz.engine.hooks import Capture, eval_mode, model_lock
from xviz.engine.preprocess import from_uint8, load_image, to_display
from xviz.engine.truncated import forward_until
from xviz.errors import AnalysisError, short
from xviz.model.xception import SEPCONV_BLOCK, SEPCONV_NAMES, Xception

#: The layers a live view can show: every separable convolution, in network order.
LIVE_LAYERS: tuple[str, ...] = SEPCONV_NAMES
#: Channels per page of each grid.
PER_PAGE = 32
SIDES: tuple[str, ...] = ("depthwise", "pointwise")


def check_layer(layer: Any) -> str:
    """``layer`` if it names a separable convolution, else an ``AnalysisError`` (a client
    names the layer: any value may arrive)."""
    if not isinstance(layer, str) or layer not in SEPCONV_BLOCK:
        raise AnalysisError(
            f"Unknown layer {short(layer, 40)}: live maps are of a separable convolution, "
            "e.g. 'block5_sepconv1'."
        )
    return layer


def page_channels(num_channels: int, page: Any) -> tuple[np.ndarray, int, int]:
    """The channels of ``page`` (1-based, clamped to the pages there are) of a map with
    ``num_channels`` channels: (channels (k,), page, pages)."""
    pages = max(1, -(-num_channels // PER_PAGE))
    page = min(max(whole_number(page, "The page", text=True), 1), pages)
    channels = np.arange((page - 1) * PER_PAGE, min(page * PER_PAGE, num_channels), dtype=np.int64)
    return channels, page, pages


@dataclass(frozen=True)
class LiveMaps:
    """One frame's page of a layer's two maps, the channel shown large and maybe a prediction.

    ``depthwise[i]`` is channel ``depthwise_channels[i]`` of the depthwise map (likewise for
    pointwise), float32, before BatchNorm.
    """

    layer: str
    size: int
    page: int  # 1-based, clamped
    pages: int  # of the longer of the two maps
    depthwise_channels: np.ndarray  # (k,)
    depthwise: np.ndarray  # (k, h, w) float32
    pointwise_channels: np.ndarray  # (n,)
    pointwise: np.ndarray  # (n, h, w) float32
    num_depthwise: int  # M: channels of the whole depthwise map
    num_pointwise: int  # N
    side: str  # of the channel shown large
    channel: int
    large: np.ndarray  # (h, w) float32
    top: list[Prediction] | None  # None when no prediction was asked for
    forward_s: float  # the model's part, on its thread


def frame_image(frame: Any, size: int) -> np.ndarray:
    """A camera frame (the bytes of a JPEG or PNG, or anything ``load_image`` takes) as the
    (size, size, 3) uint8 pixels the model sees, resized as an upload is; ``ImageError`` if it
    is not a readable image within the limits."""
    return to_display(load_image(frame), size)


def live_maps(
    model: Xception,
    image: np.ndarray,
    layer: str,
    page: int = 1,
    side: str = "pointwise",
    channel: int = 0,
    predict: bool = False,
    top_k: int = 3,
) -> LiveMaps:
    """The maps of ``layer`` for ``image`` ((S, S, 3) uint8, as :func:`frame_image` gives):
    the channels of ``page`` of each half, channel ``channel`` of ``side`` large (both
    clamped to the channels there are), and the
    ``top_k`` classes when ``predict`` (the pass then runs to the end).

    Holds the model's lock; runs in inference mode, channels-last.
    """
    layer = check_layer(layer)
    if side not in SIDES:
        raise AnalysisError(f"Unknown side {short(side, 40)}: use one of {SIDES}.")
    if not (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[0] == image.shape[1]
        and image.shape[2] == 3
    ):
        raise AnalysisError("A live frame must be a square (S, S, 3) uint8 image.")
    if predict and model.classifier is None:
        raise AnalysisError("This model has no classifier head, so there is nothing to predict.")
    names = {half: f"{layer}.{half}" for half in SIDES}
    counts = {half: map_channels(names[half]) for half in SIDES}
    # Clamped, not refused: a channel picked on one layer may be past the end of the next.
    chosen = min(max(whole_number(channel, "The channel", text=True), 0), counts[side] - 1)
    shown = {half: page_channels(counts[half], page)[0] for half in SIDES}
    _, page, pages = page_channels(max(counts.values()), page)
    large = {half: np.array([chosen] if half == side else [], dtype=np.int64) for half in SIDES}
    wanted = {half: torch.from_numpy(np.union1d(shown[half], large[half])) for half in SIDES}

    started = time.perf_counter()
    sepconv = model.sepconvs[layer]
    modules = {half: getattr(sepconv, half) for half in SIDES}

    def keep(half: str, output: torch.Tensor) -> torch.Tensor:
        # Only the channels shown leave the pass: (k, h, w) of the batch's one image.
        return output[0].index_select(0, wanted[half].to(output.device)).float()

    with model_lock(model), eval_mode(model), torch.inference_mode():
        x = from_uint8(image[np.newaxis]).to(model_device(model))
        x = x.contiguous(memory_format=torch.channels_last)
        top = None
        if predict:
            with Capture(modules, keep=keep) as captured:
                logits = model(x)[0].float()
            outputs = captured.outputs
            probabilities = torch.softmax(logits, dim=0).cpu().numpy()
            top = top_predictions(probabilities, class_labels(model), top_k)
        else:
            outputs = forward_until(model, x, modules, keep=keep)
        host = {half: outputs[half].cpu().numpy() for half in SIDES}
    forward_s = time.perf_counter() - started

    def rows(half: str, channels: np.ndarray) -> np.ndarray:
        return host[half][np.searchsorted(wanted[half].numpy(), channels)]

    return LiveMaps(
        layer=layer,
        size=image.shape[0],
        page=page,
        pages=pages,
        depthwise_channels=shown["depthwise"],
        depthwise=rows("depthwise", shown["depthwise"]),
        pointwise_channels=shown["pointwise"],
        pointwise=rows("pointwise", shown["pointwise"]),
        num_depthwise=counts["depthwise"],
        num_pointwise=counts["pointwise"],
        side=side,
        channel=chosen,
        large=rows(side, np.array([chosen]))[0],
        top=top,
        forward_s=forward_s,
    )
