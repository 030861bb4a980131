"""On-demand attributions for one image and one class, all computed by Captum's own classes.

``attribute(model, image, target, method, block=None, progress=None, cancel=None, **params)``
runs one of :data:`METHODS` and returns an :class:`Attribution`: a map at input resolution
(S, S) and Captum's raw output. Costs are bounded (steps, batch sizes, number of windows) so
one call stays within a few seconds to a minute on two CPU cores.

Progress and cancellation: the model is wrapped in :class:`_Counted`, whose forward counts
the images it has run against the expected total, reports ``progress(fraction, message)``
and raises :class:`~xviz.errors.Cancelled` when ``cancel()`` returns true. The wrapper holds
the model itself, so layer methods still hook ``model.blocks[block]``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import (
    GuidedGradCam,
    IntegratedGradients,
    LayerConductance,
    LayerIntegratedGradients,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

from xviz.checks import real_number, whole_number
from xviz.engine.analysis import (
    class_labels,
    model_device,
    model_input,
    resolve_target,
)
from xviz.engine.hooks import eval_mode, model_lock
from xviz.engine.runner import CancelCheck, Pause, Progress
from xviz.errors import AnalysisError, Cancelled
from xviz.model.xception import BLOCKS, Xception

METHODS: tuple[str, ...] = (
    "integrated_gradients",
    "saliency",
    "smoothgrad",
    "occlusion",
    "guided_gradcam",
    "layer_integrated_gradients",
    "layer_conductance",
)
#: Methods that put no hook on the model: between their batches the model is the plain model,
#: so a long one can let other calls run there (``pause``).
PAUSABLE: tuple[str, ...] = ("integrated_gradients", "saliency", "smoothgrad", "occlusion")
LAYER_METHODS: tuple[str, ...] = (
    "guided_gradcam",
    "layer_integrated_gradients",
    "layer_conductance",
)
# Upper bounds on the parameters that set the cost (number of images run) or memory.
MAX_STEPS = 256
MAX_BATCH = 32
MAX_SAMPLES = 64
MAX_WINDOWS = 400
# Defaults, sized for two CPU cores at 299x299.
DEFAULT_STEPS = 16
DEFAULT_BATCH = 4
DEFAULT_SAMPLES = 8
DEFAULT_NOISE = 0.2  # SmoothGrad noise std on the [-1, 1] scale, 10% of the input range
OCCLUSION_WINDOW = 0.2  # of the input side
OCCLUSION_STRIDE = 0.135  # of the input side: 7 x 7 = 49 windows at any size


@dataclass(frozen=True, eq=False)
class Attribution:
    """One attribution map. ``map`` is (S, S) float32: summed over colour channels for input
    methods (mean for occlusion, where the 3 channels are equal), upsampled bilinearly from
    the block's resolution for layer methods. ``raw`` is Captum's output on the CPU.
    ``params`` holds every setting the method ran with, defaults included."""

    method: str
    target: int
    target_label: str
    map: np.ndarray  # (S, S) float32
    raw: torch.Tensor  # (1, 3, S, S) for input methods, (1, C, h, w) for layer methods
    signed: bool
    block: str | None
    elapsed_s: float
    params: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"  # where it was computed


class _Counted(nn.Module):
    """Forward-only wrapper: counts images against ``total``, reports progress, honours cancel."""

    def __init__(
        self,
        model: nn.Module,
        total: int,
        method: str,
        progress: Progress | None,
        cancel: CancelCheck | None,
        pause: Pause | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.total = max(total, 1)
        self.method = method
        self.progress = progress
        self.cancel = cancel
        self.pause = pause
        self.done = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pause is not None:
            self.pause()
        if self.cancel is not None and self.cancel():
            raise Cancelled(
                f"{self.method} was cancelled after {self.done} of {self.total} images."
            )
        out = self.model(x)
        self.done += x.shape[0]
        if self.progress is not None:
            self.progress(
                min(self.done / self.total, 1.0), f"{self.method}: {self.done}/{self.total} images"
            )
        return out


class _Params:
    """The caller's parameters, each checked against its bounds and recorded as used."""

    def __init__(self, given: dict[str, Any]) -> None:
        self.given = dict(given)
        self.used: dict[str, Any] = {}

    def count(self, name: str, default: int, high: int) -> int:
        value = whole_number(self.given.pop(name, default), name, 1, high, text=True)
        self.used[name] = value
        return value

    def real(self, name: str, default: float, high: float) -> float:
        value = real_number(self.given.pop(name, default), name, 0.0, high, above_low=True)
        self.used[name] = value
        return value

    def check_all_used(self, method: str) -> None:
        if self.given:
            raise AnalysisError(
                f"{method} does not take {', '.join(sorted(self.given))}; "
                f"it takes {', '.join(sorted(self.used)) or 'no parameters'}."
            )


def occlusion_window(size: int) -> tuple[int, int]:
    """Default occlusion (window, stride) in pixels for an S x S input: 7 x 7 windows."""
    return max(1, round(size * OCCLUSION_WINDOW)), max(1, round(size * OCCLUSION_STRIDE))


def _conductance_images(steps: int, batch: int) -> int:
    """Images LayerConductance runs: steps + 1 points, in batches that overlap by one point
    (Captum's ``_batch_attribution`` with ``include_endpoint``)."""
    points, per_batch = steps + 1, max(batch, 2)
    images, start = 0, 0
    while start < points:
        end = min(start + per_batch, points)
        images += end - start
        start = end - 1 if end < points else end
    return images


def _run(
    method: str,
    wrapped: _Counted,
    layer: nn.Module | None,
    x: torch.Tensor,
    target: int,
    params: _Params,
) -> torch.Tensor:
    """Set ``wrapped.total`` (images the method will run) and run Captum's method."""
    if method in ("integrated_gradients", "layer_integrated_gradients", "layer_conductance"):
        steps = params.count("n_steps", DEFAULT_STEPS, MAX_STEPS)
        batch = params.count("internal_batch_size", DEFAULT_BATCH, MAX_BATCH)
        params.check_all_used(method)
        if method == "integrated_gradients":
            wrapped.total = steps
            explainer = IntegratedGradients(wrapped)
        elif method == "layer_integrated_gradients":
            wrapped.total = steps + 2  # plus one pass each for the input and the baseline
            explainer = LayerIntegratedGradients(wrapped, layer)
        else:
            wrapped.total = _conductance_images(steps, batch)
            explainer = LayerConductance(wrapped, layer)
        baseline = torch.zeros_like(x)  # a mid-grey image
        return explainer.attribute(
            x, baselines=baseline, target=target, n_steps=steps, internal_batch_size=batch
        )
    if method == "saliency":
        params.check_all_used(method)
        wrapped.total = 1
        return Saliency(wrapped).attribute(x, target=target)
    if method == "smoothgrad":
        samples = params.count("nt_samples", DEFAULT_SAMPLES, MAX_SAMPLES)
        batch = params.count("nt_samples_batch_size", DEFAULT_BATCH, MAX_BATCH)
        noise = params.real("stdevs", DEFAULT_NOISE, 2.0)
        params.check_all_used(method)
        wrapped.total = samples
        return NoiseTunnel(Saliency(wrapped)).attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=samples,
            nt_samples_batch_size=batch,
            stdevs=noise,
            target=target,
        )
    if method == "occlusion":
        size = x.shape[-1]
        default_window, default_stride = occlusion_window(size)
        window = params.count("window", default_window, size)
        stride = params.count("stride", default_stride, window)
        batch = params.count("perturbations_per_eval", DEFAULT_BATCH, MAX_BATCH)
        params.check_all_used(method)
        windows = (math.ceil((size - window) / stride) + 1) ** 2
        if windows > MAX_WINDOWS:
            raise AnalysisError(
                f"Occlusion with window {window} and stride {stride} needs {windows} windows; "
                f"the limit is {MAX_WINDOWS}. Use a larger stride."
            )
        wrapped.total = windows + 1  # plus the unoccluded image
        return Occlusion(wrapped).attribute(
            x,
            sliding_window_shapes=(3, window, window),
            strides=(3, stride, stride),
            baselines=0.0,  # a mid-grey patch
            target=target,
            perturbations_per_eval=batch,
        )
    if method == "guided_gradcam":
        params.check_all_used(method)
        wrapped.total = 2  # Grad-CAM's pass and guided backprop's pass
        return GuidedGradCam(wrapped, layer).attribute(
            x, target=target, interpolate_mode="bilinear"
        )
    raise AnalysisError(f"Unknown attribution method {method!r}: use one of {METHODS}.")


def _to_map(method: str, raw: torch.Tensor, size: int) -> np.ndarray:
    """Captum's output -> (S, S) float32 map."""
    if raw.shape[-1] != size:  # a layer attribution (1, C, h, w)
        summed = raw.sum(dim=1, keepdim=True)
        return F.interpolate(summed, (size, size), mode="bilinear")[0, 0].numpy()
    reduce = torch.mean if method == "occlusion" else torch.sum
    return reduce(raw[0], dim=0).numpy()


def attribute(
    model: Xception,
    image: Any,
    target: int | str | None = None,
    method: str = "integrated_gradients",
    block: str | None = None,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
    size: int | None = None,
    pause: Pause | None = None,
    **params: Any,
) -> Attribution:
    """Attribute the score of class ``target`` to the input pixels (or a block's units).

    Args:
        model: an :class:`Xception` with a classifier head.
        image: an :class:`~xviz.engine.analysis.Analysis` (its image, size and target are reused),
            or any input :func:`~xviz.engine.analysis.analyze` takes.
        target: class index or label; default the analysis' target, else the top-1 class.
        method: one of :data:`METHODS`.
        block: ``"block1"``..``"block14"``, for ``guided_gradcam`` and the layer methods.
        progress: called as ``progress(fraction, message)`` after each batch of images.
        cancel: polled before each batch; returning true raises ``Cancelled``.
        pause: called before each batch of the :data:`PAUSABLE` methods
            (``Runner.background``: other visitors' calls run there); ignored by the others.
        size: input side when ``image`` is not an Analysis; default a tensor's own side,
            else the weights' size.
        **params: the method's settings, bounded: ``n_steps`` (<= 256) and
            ``internal_batch_size`` (<= 32) for the integrated-gradients and conductance
            methods; ``nt_samples`` (<= 64), ``nt_samples_batch_size`` (<= 32) and ``stdevs``
            (<= 2) for smoothgrad; ``window``, ``stride`` (<= 400 windows) and
            ``perturbations_per_eval`` (<= 32) for occlusion. Saliency and guided Grad-CAM
            take none.

    Raises:
        AnalysisError: unknown method, block or parameter, or a parameter out of bounds.
        Cancelled: ``cancel()`` returned true.
    """
    started = time.perf_counter()
    if method not in METHODS:
        raise AnalysisError(f"Unknown attribution method {method!r}: use one of {METHODS}.")
    if method in LAYER_METHODS and block not in BLOCKS:
        raise AnalysisError(f"{method} needs a block, 'block1' to 'block14'; got {block!r}.")
    if model.classifier is None:
        raise AnalysisError("This model has no classifier head, so there is no class to explain.")
    x, target = model_input(model, image, target, size)
    labels = class_labels(model)
    settings = _Params(params)
    with model_lock(model), eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        # Captum needs the input to require a gradient; set here, on our own copy.
        # Channels-last activations make every pass ~20% faster on a CPU.
        x = x.to(model_device(model)).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        if target is None:
            with torch.no_grad():
                target = int(model(x)[0].argmax())
        target = resolve_target(target, labels)
        wrapped = _Counted(
            model, 1, method, progress, cancel, pause if method in PAUSABLE else None
        )
        layer = model.blocks[block] if method in LAYER_METHODS else None
        raw = _run(method, wrapped, layer, x, target, settings)
    raw = raw.detach().float().cpu().contiguous()
    return Attribution(
        method=method,
        target=target,
        target_label=labels[target],
        map=_to_map(method, raw, x.shape[-1]),
        raw=raw,
        signed=method not in ("saliency", "smoothgrad"),
        block=block if method in LAYER_METHODS else None,
        elapsed_s=time.perf_counter() - started,
        params=settings.used,
        device=x.device.type,
    )
