"""Feature visualization: an image that makes one channel of one map fire.

``visualize(model, map_name, channels, size=150, steps=None, seed=0) -> Visualization``
optimises one image per channel, all channels together as one batch, so that the channel's
mean activation in the map (exactly the ``mean`` that ``xviz.analyze`` records) is as large
as possible. The method is that of Olah, Mordvintsev and Schubert, "Feature Visualization"
(Distill, 2017), as their Lucid library implements it (github.com/tensorflow/lucid,
``lucid/optvis``), written here with torch operations:

- The image is parameterised by 2D Fourier coefficients scaled by 1 / frequency, so that
  every frequency starts with the energy natural images have and gradient steps do not pile
  up high-frequency noise (``param/spatial.py``, ``fft_image``: normal init with sd 0.01,
  scale ``1 / max(f, 1 / side)``, times ``sqrt(w * h)``, image divided by 4).
- Colours are decorrelated: the three channels are mixed by the square root of ImageNet's
  colour correlation matrix (``param/color.py``, ``color_correlation_svd_sqrt`` normalised by
  its largest column norm) and squashed into [0, 1] by a sigmoid (``to_valid_rgb``).
- Transformation robustness: each step sees the image randomly shifted, scaled and rotated,
  with grey beyond the border (``transform.py``, ``standard_transforms``: pad 12 px with 0.5,
  jitter 8 and 4 px, scale 0.9-1.1, rotation -10..10 degrees). Here all three are one
  ``F.affine_grid`` / ``F.grid_sample`` per step.
- Adam with learning rate 0.05 (``render.py``, ``make_optimizer``).
- For the first 16 steps, a ReLU whose gradient is zero for the whole image lets through
  the gradient that would switch it on (``overrides/redirected_relu_grad.py``): a channel
  fed by a ReLU that a grey start leaves off everywhere (a depthwise channel in the middle
  flow, say) gets no gradient at all otherwise and never takes off.

Each channel draws its initial image and its transformations from its own generator, seeded
from ``seed`` and the channel number, so a channel's picture does not depend on which other
channels share its batch. The network runs only as far as the map (``xviz.engine.truncated``); the
model is left unchanged (eval mode restored, no gradient stored on its weights).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xviz.checks import whole_number
from xviz.engine.analysis import map_channels, map_kind, map_modules, model_device, weights_name
from xviz.engine.cache import BoundedCache, weights_id

# _Hooks is the base of Capture and Rewrite; the ReLU override needs the module's input.
from xviz.engine.hooks import _Hooks, eval_mode, model_lock
from xviz.engine.preprocess import from_uint8
from xviz.engine.runner import CancelCheck, Pause, Progress
from xviz.engine.truncated import forward_until
from xviz.errors import AnalysisError, Cancelled
from xviz.model.xception import Xception

DEFAULT_STEPS = 128
MAX_STEPS = 2048
MAX_CHANNELS = 64  # one batch; a grid page holds 64 channels
MIN_SIZE = 71  # Keras' smallest input for Xception
MAX_SIZE = 512
LEARNING_RATE = 0.05
INIT_SD = 0.01
SPECTRUM_DECAY = 1.0
# Lucid divides the image by 4 after the inverse FFT ("magic constant" in fft_image).
SPECTRUM_DIVISOR = 4.0
JITTER_PX = 8
SCALE_RANGE = (0.9, 1.1)
ROTATION_DEG = 10.0
REDIRECT_STEPS = 16  # Lucid's redirected ReLU gradient: the first 16 steps
# The square root of ImageNet's RGB correlation matrix, from Lucid's param/color.py.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_MIX = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


@dataclass(frozen=True, eq=False)
class Visualization:
    """Feature visualizations of some channels of one map.

    ``images[i]`` (S, S, 3) uint8 is the picture optimised for ``channels[i]``;
    ``objective[i]`` is that channel's mean activation in ``map_name`` on exactly that
    picture (what ``analyze(model, images[i], size=S).map(map_name).mean[channels[i]]`` gives).
    """

    map_name: str
    channels: tuple[int, ...]
    images: np.ndarray  # (k, S, S, 3) uint8
    objective: np.ndarray  # (k,) float32
    size: int
    steps: int
    seed: int
    weights: str
    elapsed_s: float = 0.0

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.objective.nbytes

    def select(self, positions: Sequence[int]) -> Visualization:
        """The visualizations at ``positions`` (indices into ``channels``), in that order."""
        index = list(positions)
        return replace(
            self,
            channels=tuple(self.channels[i] for i in index),
            images=_read_only(self.images[index]),
            objective=_read_only(self.objective[index]),
        )


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


class FourierImage(nn.Module):
    """k RGB images (k, 3, S, S) in [0, 1], parameterised by scaled, colour-decorrelated
    Fourier coefficients ``spectrum`` (k, 2, 3, S, S // 2 + 1): real and imaginary parts."""

    def __init__(self, size: int, generators: Sequence[torch.Generator]) -> None:
        super().__init__()
        self.size = size
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        frequency = torch.sqrt(fx * fx + fy * fy)  # (S, S // 2 + 1), cycles per pixel
        scale = size / frequency.clamp(min=1.0 / size) ** SPECTRUM_DECAY
        self.register_buffer("scale", scale)
        shape = (2, 3, size, size // 2 + 1)
        init = torch.stack([torch.randn(shape, generator=g) for g in generators]) * INIT_SD
        self.spectrum = nn.Parameter(init)
        self.register_buffer("color_mix", COLOR_MIX.clone())

    def forward(self) -> torch.Tensor:
        spectrum = torch.complex(self.spectrum[:, 0], self.spectrum[:, 1]) * self.scale
        decorrelated = torch.fft.irfft2(spectrum, s=(self.size, self.size)) / SPECTRUM_DIVISOR
        rgb = torch.einsum("kchw,dc->kdhw", decorrelated, self.color_mix)  # (k, 3, S, S)
        return torch.sigmoid(rgb)


def robust_view(rgb: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Each image of (k, 3, S, S) randomly shifted by up to ``JITTER_PX`` pixels, scaled and
    rotated (one affine resampling), grey (0.5) where it samples beyond the border."""
    size = rgb.shape[-1]
    draws = torch.stack([torch.rand(4, generator=g) for g in generators])  # (k, 4) in [0, 1)
    low, high = SCALE_RANGE
    scale = low + (high - low) * draws[:, 0]
    angle = math.radians(ROTATION_DEG) * (2 * draws[:, 1] - 1)
    # Normalised coordinates span 2 over the side (align_corners=False).
    shift = (2 * draws[:, 2:] - 1) * JITTER_PX * 2 / size  # (k, 2)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    ).to(rgb)  # (k, 2, 3): output coordinates -> input coordinates
    grid = F.affine_grid(theta, list(rgb.shape), align_corners=False)
    moved = F.grid_sample(
        rgb - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return moved + 0.5


class _RedirectedReLU(torch.autograd.Function):
    """ReLU whose backward, for an image where the ReLU passes no gradient at all, lets
    through the gradient that pushes negative inputs up (Lucid's ``redirected_relu_grad``;
    gradients are of the loss, so "up" is a negative gradient)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        negative = x < 0
        relu_grad = grad.masked_fill(negative, 0)
        redirected = grad.masked_fill(negative & (grad > 0), 0)
        blocked = relu_grad.flatten(1).norm(dim=1) == 0  # (B,): nothing gets through
        return torch.where(blocked.view(-1, *([1] * (grad.dim() - 1))), redirected, relu_grad)


class _RedirectReLUs(_Hooks):
    """Forward hooks that recompute every ``nn.ReLU``'s output with :class:`_RedirectedReLU`
    from its input (so the gradient bypasses the ReLU's own backward); removed on exit."""

    def __init__(self, model: nn.Module) -> None:
        relus = {name: m for name, m in model.named_modules() if isinstance(m, nn.ReLU)}
        super().__init__(relus)

    def _hook(self, name: str) -> Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            return _RedirectedReLU.apply(inputs[0])

        return hook


def _channel_seed(seed: int, channel: int) -> int:
    return (seed * 1_000_003 + channel) % 2**63


def _checked_channels(map_name: str, channels: int | Sequence[int]) -> tuple[int, ...]:
    count = map_channels(map_name)
    chosen = (channels,) if isinstance(channels, (int, np.integer)) else tuple(channels)
    if not 1 <= len(chosen) <= MAX_CHANNELS:
        raise AnalysisError(
            f"Feature visualization takes 1 to {MAX_CHANNELS} channels at once, got {len(chosen)}."
        )
    for channel in chosen:
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
            raise AnalysisError(f"Channels are integers, got {channel!r}.")
        if not 0 <= channel < count:
            raise AnalysisError(
                f"Channel {channel} does not exist: {map_name} has channels 0 to {count - 1}."
            )
    return tuple(int(c) for c in chosen)


def _check_range(name: str, value: int, low: int, high: int) -> int:
    return whole_number(value, name, low, high)


def visualize(
    model: Xception,
    map_name: str,
    channels: int | Sequence[int],
    size: int = 150,
    steps: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
    pause: Pause | None = None,
) -> Visualization:
    """Optimise one image per channel so that the channel's mean activation in ``map_name``
    is as high as possible.

    Args:
        model: an :class:`Xception` (any head, or none).
        map_name: one of ``xviz.MAP_NAMES`` (``"block8_sepconv1.pointwise"``, ``"block5"``).
        channels: one channel or up to ``MAX_CHANNELS``, optimised together as one batch.
        size: the side of the images (the input the model sees), ``MIN_SIZE`` to ``MAX_SIZE``.
        steps: Adam steps (default ``DEFAULT_STEPS``).
        seed: the same seed, channel and settings give the same picture (on the CPU).
        progress: called as ``progress(fraction, message)`` after each step.
        cancel: polled before each step; when it returns true, raises ``Cancelled``.
        pause: called before each step and between its forward and backward pass, when no
            hook is on the model (``Runner.background``: other visitors' calls run there).

    Returns:
        A :class:`Visualization` with images (k, S, S, 3) uint8 and the final objective.
    """
    started = time.perf_counter()
    map_kind(map_name)  # raises AnalysisError for an unknown map
    chosen = _checked_channels(map_name, channels)
    size = _check_range("size", size, MIN_SIZE, MAX_SIZE)
    steps = _check_range("steps", DEFAULT_STEPS if steps is None else steps, 1, MAX_STEPS)
    seed = _check_range("seed", seed, 0, 2**31 - 1)
    device = model_device(model)
    generators = [torch.Generator().manual_seed(_channel_seed(seed, c)) for c in chosen]
    module = {map_name: map_modules(model)[map_name]}
    rows = torch.arange(len(chosen), device=device)
    index = torch.tensor(chosen, device=device)

    def live(name: str, output: torch.Tensor) -> torch.Tensor:
        return output  # not a copy: the objective's gradient flows through it

    with model_lock(model), eval_mode(model), torch.inference_mode(False):
        image = FourierImage(size, generators).to(device)
        optimizer = torch.optim.Adam([image.spectrum], lr=LEARNING_RATE)
        with torch.enable_grad():
            for step in range(steps):
                if pause is not None:
                    pause()
                if cancel is not None and cancel():
                    raise Cancelled(
                        f"Feature visualization was cancelled after {step} of {steps} steps."
                    )
                x = robust_view(image(), generators) * 2 - 1  # (k, 3, S, S) in [-1, 1]
                redirect = _RedirectReLUs(model) if step < REDIRECT_STEPS else nullcontext()
                with redirect:
                    activation = forward_until(model, x, module, keep=live)[map_name]
                objective = activation[rows, index].mean(dim=(1, 2))  # (k,)
                if pause is not None:  # the graph is kept; the hooks are gone
                    pause()
                # Gradient of the image only: nothing is accumulated on the model's weights.
                (image.spectrum.grad,) = torch.autograd.grad(-objective.sum(), [image.spectrum])
                optimizer.step()
                if progress is not None:
                    progress((step + 1) / steps, f"feature visualization: step {step + 1}/{steps}")
        with torch.no_grad():
            rgb = image().permute(0, 2, 3, 1).cpu().numpy()  # (k, S, S, 3) in [0, 1]
            pixels = np.rint(rgb * 255).astype(np.uint8)
            x = from_uint8(pixels).to(device).contiguous(memory_format=torch.channels_last)
            final = forward_until(model, x, module)[map_name][rows, index].float().mean(dim=(1, 2))
    return Visualization(
        map_name=map_name,
        channels=chosen,
        images=_read_only(pixels),
        objective=_read_only(final.cpu().numpy()),
        size=size,
        steps=steps,
        seed=seed,
        weights=weights_name(model),
        elapsed_s=time.perf_counter() - started,
    )


class VisualizationCache:
    """Feature visualizations kept per weights, map, channel, size, steps and seed, within
    ``budget_mb`` (least recently used dropped first; thread-safe: a ``BoundedCache``).

    ``visualize`` answers a list of channels (a grid page) from the cache where it can and
    computes the missing ones together as one batch.
    """

    def __init__(self, budget_mb: float = 64, max_age_s: float | None = None) -> None:
        self._entries = BoundedCache(budget_mb=budget_mb, max_age_s=max_age_s)

    def visualize(
        self,
        model: Xception,
        map_name: str,
        channels: int | Sequence[int],
        size: int = 150,
        steps: int | None = None,
        seed: int = 0,
        progress: Progress | None = None,
        cancel: CancelCheck | None = None,
        run: Callable[..., Visualization] | None = None,
    ) -> Visualization:
        """:func:`visualize`, cached channel by channel; ``elapsed_s`` is this call's time.

        ``run`` computes what is missing as ``run(visualize, map_name, ...)`` (an
        ``xviz.engine.runner.Runner``: the model's thread, or ZeroGPU); default here, directly.
        """
        started = time.perf_counter()
        map_kind(map_name)
        chosen = _checked_channels(map_name, channels)
        steps = DEFAULT_STEPS if steps is None else steps
        weights = weights_id(model)

        def key(channel: int) -> Hashable:
            return ("featurevis", weights, map_name, channel, size, steps, seed)

        found = {c: self._entries.get(key(c)) for c in dict.fromkeys(chosen)}
        missing = [c for c, value in found.items() if value is None]
        if missing:
            args = (map_name, missing, size, steps, seed)
            if run is None:
                fresh = visualize(model, *args, progress=progress, cancel=cancel)
            else:
                fresh = run(visualize, *args, progress=progress, cancel=cancel)
            for position, channel in enumerate(missing):
                single = fresh.select([position])
                found[channel] = self._entries.get_or_compute(key(channel), lambda s=single: s)
        elif progress is not None:
            progress(1.0, "feature visualization: cached")
        parts = [found[c] for c in chosen]
        return replace(
            parts[0],
            channels=chosen,
            images=_read_only(np.concatenate([p.images for p in parts])),
            objective=_read_only(np.concatenate([p.objective for p in parts])),
            elapsed_s=time.perf_counter() - started,
        )

    def cached(
        self,
        model: Xception,
        map_name: str,
        channel: int,
        size: int = 150,
        steps: int | None = None,
        seed: int = 0,
    ) -> Visualization | None:
        """The channel's visualization if it was made before, without computing anything."""
        steps = DEFAULT_STEPS if steps is None else steps
        key = ("featurevis", weights_id(model), map_name, int(channel), size, steps, seed)
        return self._entries.get(key)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
