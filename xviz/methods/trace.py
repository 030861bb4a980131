"""How one number of a separable convolution is made: ``explain_value`` and ``sepconv_steps``.

A separable conv computes two maps (see ``xviz.model.xception.SeparableConv2d``):

- depthwise: ``depthwise[m, y, x] = sum over the 3x3 window of input[m] * kernel[m]``, the input
  zero-padded by 1 ('same' padding; for a 3x3 stride-1 conv Keras and PyTorch agree);
- pointwise: ``pointwise[n, y, x] = sum over m of weight[n, m] * depthwise[m, y, x]``.

No bias, BatchNorm or ReLU sits inside a separable conv, so these sums are the whole story.

The analysis stores its maps as uint8 codes, too coarse to add up (728 quantised terms add
their errors), and does not store the sepconv's input at all. Both functions here therefore
rerun the network in float32 up to the sepconv's input (the forward stops there) and keep that
input in a small cache, so consecutive clicks on one layer run the network once.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xviz.checks import whole_number
from xviz.engine.analysis import MAP_NAMES, Analysis, model_device, model_input, weights_name
from xviz.engine.cache import BoundedCache
from xviz.engine.hooks import Capture, eval_mode, model_lock
from xviz.errors import AnalysisError
from xviz.model.xception import BLOCK_SPECS, BLOCKS, SEPCONV_BLOCK, Xception

CACHE_BYTES = 32 * 2**20
"""Float32 sepconv inputs kept for later clicks (block2_sepconv2's at 299 is 11 MB)."""
SIDES: dict[str, str] = {
    "depthwise": "depthwise",
    "pointwise": "pointwise",
    # The app's channel views call a sepconv's two grids "left" and "right".
    "left": "depthwise",
    "right": "pointwise",
}


@dataclass(frozen=True, eq=False)
class ValueTrace:
    """One value of a depthwise or pointwise map, written out as the sum that makes it.

    depthwise (``kind == "depthwise"``): ``inputs`` (3, 3) is the window of the sepconv's input
    channel ``input_channel`` (= ``channel``) around (y, x), zeros where the 'same' padding
    reaches past the border (``padded``); ``weights`` (3, 3) is that channel's depthwise filter.
    pointwise: ``inputs`` (M,) are the M depthwise values at (y, x); ``weights`` (M,) are the
    weights of output channel ``channel``; ``window``, ``padded`` and ``input_channel`` are None.

    ``inputs`` and ``weights`` are float32 as the network holds them; ``terms`` is their
    product in float64 (exact) and ``value`` the sum of ``terms``. ``map_value`` is what the
    stored map shows at (channel, y, x) (within ``map_step / 2`` of the float32 value);
    ``channel_min`` / ``channel_max`` are the channel's float32 range.
    """

    map_name: str
    kind: str
    sepconv: str
    block: str
    channel: int
    y: int
    x: int
    inputs: np.ndarray  # (3, 3) or (M,) float32
    weights: np.ndarray  # (3, 3) or (M,) float32
    terms: np.ndarray  # (3, 3) or (M,) float64
    value: float
    input_channel: int | None
    window: (
        tuple[int, int, int, int] | None
    )  # (top, left, bottom, right) input rows/cols, inclusive
    padded: np.ndarray | None  # (3, 3) bool, True where the window lies in the zero padding
    map_value: float
    map_step: float
    channel_min: float
    channel_max: float
    height: int
    width: int

    def describe(self) -> str:
        """One line of markdown: what was summed and what it came to."""
        where = f"**{self.map_name}** channel {self.channel} at (y={self.y}, x={self.x})"
        if self.kind == "depthwise":
            pads = int(self.padded.sum())
            padding = f", {pads} of them in the zero padding" if pads else ""
            what = (
                f"{self.terms.size} products of input channel {self.input_channel}'s 3x3 window "
                f"and its depthwise filter{padding}"
            )
        else:
            what = f"{self.terms.size} products of the depthwise values and the pointwise weights"
        return (
            f"{where} = sum of {what} = **{self.value:.4g}** "
            f"(the stored map shows {self.map_value:.4g} ± {self.map_step / 2:.2g})"
        )


@dataclass(frozen=True, eq=False)
class SepConvSteps:
    """One separable conv, step by step, for one depthwise and one pointwise channel.

    input channel ``depthwise_channel`` -> its depthwise ``kernel`` -> ``depthwise_map`` ->
    ``pointwise_weights`` of ``pointwise_channel`` over all M depthwise channels ->
    ``pointwise_map``. ``picked`` says which of the two channels the caller chose; the other
    is the one linked to it by the largest absolute pointwise weight unless given.
    All arrays float32, recomputed from the float32 input (not the stored uint8 maps).
    """

    sepconv: str
    block: str
    picked: str  # "depthwise" or "pointwise"
    depthwise_channel: int
    pointwise_channel: int
    input_map: np.ndarray  # (H, W)
    kernel: np.ndarray  # (3, 3)
    depthwise_map: np.ndarray  # (H, W)
    pointwise_weights: np.ndarray  # (M,)
    pointwise_map: np.ndarray  # (H, W)


class _Captured(Exception):
    """Raised by the capture hook to end the forward pass once the input is kept."""


# Float32 sepconv inputs by (model, analysis, sepconv), least recently used out. An entry
# holds weak references to its model and analysis: it never keeps them alive, and one whose
# objects are gone (or whose ids were reused) is never returned.
_CACHE = BoundedCache(budget_mb=CACHE_BYTES / 2**20, size_of=lambda entry: entry[2].nbytes)


def _cached(model: nn.Module, analysis: Analysis, sepconv: str) -> np.ndarray | None:
    entry = _CACHE.get((id(model), id(analysis), sepconv))
    if entry is None:
        return None
    model_ref, analysis_ref, values = entry
    return values if model_ref() is model and analysis_ref() is analysis else None


def _keep(model: nn.Module, analysis: Analysis, sepconv: str, values: np.ndarray) -> None:
    entry = (weakref.ref(model), weakref.ref(analysis), values)
    _CACHE.put((id(model), id(analysis), sepconv), entry)


def clear_cache() -> None:
    """Forget every cached sepconv input."""
    _CACHE.clear()


def _short(value: Any) -> str:
    """``repr`` of a request value, cut short: it may be anything and any length."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _index(value: Any, what: str, count: int, where: str) -> int:
    """A whole number in ``[0, count)`` from a request value, or an AnalysisError."""
    return whole_number(value, what, 0, count - 1, where=where)


def _check_pair(model: Xception, analysis: Analysis) -> None:
    if not isinstance(analysis, Analysis):
        raise AnalysisError("No analysis to explain: analyse an image first.")
    if analysis.weights != weights_name(model):
        raise AnalysisError(
            f"This analysis was made with the {analysis.weights!r} weights but the model has "
            f"{weights_name(model)!r}: analyse the image again."
        )


def _sepconv_of(map_name: Any) -> tuple[str, str]:
    """(sepconv, "depthwise" | "pointwise") of a map name, or an AnalysisError."""
    if not isinstance(map_name, str) or map_name not in MAP_NAMES:
        raise AnalysisError(
            f"Unknown map {_short(map_name)}: use e.g. 'block5_sepconv1.depthwise' or "
            f"'block5_sepconv1.pointwise'."
        )
    if "." not in map_name:
        raise AnalysisError(
            f"{map_name} is not half of a separable conv: only '.depthwise' and '.pointwise' "
            f"maps (e.g. 'block5_sepconv1.depthwise') are traced to their terms."
        )
    sepconv, half = map_name.split(".")
    return sepconv, half


def _input_module(model: Xception, sepconv: str) -> nn.Module:
    """The module whose output is ``sepconv``'s input (see ``SeparableBlock.forward``)."""
    block_name = SEPCONV_BLOCK[sepconv]
    block = getattr(model, block_name)
    short = sepconv.removeprefix(f"{block_name}_")
    position = block.sepconv_names.index(short)
    if not block.act_after and hasattr(block, f"{short}_act"):
        return getattr(block, f"{short}_act")  # blocks 2-13: ReLU, then the sepconv
    if position > 0:
        # block14: the previous sepconv's BN then ReLU.
        return getattr(block, f"{block.sepconv_names[position - 1]}_act")
    # block2_sepconv1 and block14_sepconv1 take the previous block's output as it is.
    return getattr(model, BLOCK_SPECS[BLOCKS[block_name].index - 2].name)


def sepconv_input(model: Xception, analysis: Analysis, sepconv: str) -> np.ndarray:
    """The float32 tensor fed to ``sepconv``'s depthwise conv for the analysed image: (M, H, W).

    Runs ``model`` on the analysis' image only as far as that input (hooked with
    ``xviz.engine.hooks.Capture``; the forward pass ends there), holding the model's lock; cached
    (see ``CACHE_BYTES``). The result is read-only and shared: copy it before changing it.
    The input is rebuilt from ``analysis.image``, as ablations do: for an analysis of an image
    that is the exact input; for one of a preprocessed tensor, its uint8 rounding.
    """
    _check_pair(model, analysis)
    if sepconv not in SEPCONV_BLOCK:
        raise AnalysisError(
            f"Unknown separable conv {_short(sepconv)}: use e.g. 'block5_sepconv1'."
        )
    cached = _cached(model, analysis, sepconv)
    if cached is not None:
        return cached
    kept: dict[str, np.ndarray] = {}

    def keep_and_stop(name: str, output: torch.Tensor) -> None:
        kept[name] = output[0].detach().float().cpu().contiguous().numpy()  # (M, H, W)
        raise _Captured

    x, _ = model_input(model, analysis, None, None)
    with model_lock(model), eval_mode(model), torch.inference_mode():
        x = x.to(model_device(model)).contiguous(memory_format=torch.channels_last)
        hook = Capture({sepconv: _input_module(model, sepconv)}, keep=keep_and_stop)
        with hook, contextlib.suppress(_Captured):
            model(x)
    if sepconv not in kept:
        raise AnalysisError(f"The forward pass never reached {sepconv}.")
    values = kept[sepconv]
    values.flags.writeable = False
    _keep(model, analysis, sepconv, values)
    return values


def _windows(values: np.ndarray, y: int, x: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k x k windows around (y, x) of every channel of ``values`` (C, H, W), zero where
    they reach past the border: ((C, k, k) float32, (k, k) bool True in the padding)."""
    channels, height, width = values.shape
    r = k // 2
    top, left = y - r, x - r
    y0, y1 = max(top, 0), min(top + k, height)
    x0, x1 = max(left, 0), min(left + k, width)
    out = np.zeros((channels, k, k), dtype=np.float32)
    out[:, y0 - top : y1 - top, x0 - left : x1 - left] = values[:, y0:y1, x0:x1]
    padded = np.ones((k, k), dtype=bool)
    padded[y0 - top : y1 - top, x0 - left : x1 - left] = False
    return out, padded


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _numpy(weight: torch.Tensor) -> np.ndarray:
    return weight.detach().float().cpu().numpy()


def explain_value(
    model: Xception, analysis: Analysis, map_name: str, channel: int, y: int, x: int
) -> ValueTrace:
    """The terms that add up to ``map_name[channel, y, x]``, in float32 (see :class:`ValueTrace`).

    Args:
        model: the model that made ``analysis`` (same weights).
        analysis: an :class:`~xviz.engine.analysis.Analysis` of one image.
        map_name: ``"blockN_sepconvK.depthwise"`` or ``"blockN_sepconvK.pointwise"``.
        channel, y, x: the value's channel, row and column in that map.

    The stored uint8 maps are not precise enough to add up, so the sepconv's input is
    recomputed in float32 (a forward pass up to it, cached per analysis and sepconv; see
    :func:`sepconv_input`). The terms add up to the network's float32 value (rounding apart).
    Every argument is checked (they come from requests): bad ones raise ``AnalysisError``.
    """
    _check_pair(model, analysis)
    sepconv, kind = _sepconv_of(map_name)
    stored = analysis.map(map_name)
    channels, height, width = stored.shape
    channel = _index(channel, "channel", channels, map_name)
    y = _index(y, "row", height, map_name)
    x = _index(x, "column", width, map_name)
    module = model.sepconvs[sepconv]
    kernels = _numpy(module.depthwise.weight[:, 0])  # (M, k, k)
    k = kernels.shape[-1]
    values = sepconv_input(model, analysis, sepconv)  # (M, H, W)
    if kind == "depthwise":
        windows, padded = _windows(values[channel : channel + 1], y, x, k)
        inputs, weights = windows[0], kernels[channel]
        window = (y - k // 2, x - k // 2, y + k // 2, x + k // 2)
        input_channel = channel
    else:
        windows, _ = _windows(values, y, x, k)  # (M, k, k)
        depthwise = np.einsum("mij,mij->m", windows.astype(np.float64), kernels)
        inputs = depthwise.astype(np.float32)  # (M,)
        weights = _numpy(module.pointwise.weight[channel, :, 0, 0])  # (M,)
        window = padded = input_channel = None
    # float32 x float32 is exact in float64, so the terms are exactly the products shown.
    terms = inputs.astype(np.float64) * weights.astype(np.float64)
    return ValueTrace(
        map_name=map_name,
        kind=kind,
        sepconv=sepconv,
        block=SEPCONV_BLOCK[sepconv],
        channel=channel,
        y=y,
        x=x,
        inputs=_read_only(np.array(inputs, dtype=np.float32)),
        weights=_read_only(np.array(weights, dtype=np.float32)),
        terms=_read_only(terms),
        value=float(terms.sum()),
        input_channel=input_channel,
        window=window,
        padded=None if padded is None else _read_only(padded),
        map_value=float(stored.channels([channel])[0, y, x]),
        map_step=float(stored.quantization_step[channel]),
        channel_min=float(stored.min[channel]),
        channel_max=float(stored.max[channel]),
        height=height,
        width=width,
    )


def sepconv_steps(
    model: Xception,
    analysis: Analysis,
    layer: str,
    side: str,
    channel: int,
    partner: int | None = None,
) -> SepConvSteps:
    """A separable conv step by step for a picked channel (see :class:`SepConvSteps`).

    Args:
        layer: a separable conv, e.g. ``"block5_sepconv1"``.
        side: ``"depthwise"`` or ``"pointwise"`` (the app's ``"left"`` / ``"right"`` grids).
        channel: the picked channel of that side.
        partner: the channel shown on the other side; default the one joined to ``channel``
            by the largest absolute pointwise weight (a bar of the weights chart sets it).
    """
    _check_pair(model, analysis)
    if not isinstance(layer, str) or layer not in SEPCONV_BLOCK:
        raise AnalysisError(f"Unknown separable conv {_short(layer)}: use e.g. 'block5_sepconv1'.")
    if not isinstance(side, str) or side not in SIDES:
        raise AnalysisError(f"Unknown side {_short(side)}: use 'depthwise' or 'pointwise'.")
    picked = SIDES[side]
    module = model.sepconvs[layer]
    pointwise = _numpy(module.pointwise.weight[:, :, 0, 0])  # (N, M)
    n_out, m_in = pointwise.shape
    if picked == "depthwise":
        d = _index(channel, "channel", m_in, f"{layer}.depthwise")
        default = int(np.argmax(np.abs(pointwise[:, d])))
        p = default if partner is None else _index(partner, "channel", n_out, f"{layer}.pointwise")
    else:
        p = _index(channel, "channel", n_out, f"{layer}.pointwise")
        default = int(np.argmax(np.abs(pointwise[p])))
        d = default if partner is None else _index(partner, "channel", m_in, f"{layer}.depthwise")
    values = sepconv_input(model, analysis, layer)  # (M, H, W)
    weight = module.depthwise.weight.detach().float().cpu()  # (M, 1, k, k)
    with torch.inference_mode():
        depthwise = F.conv2d(
            torch.tensor(values)[None], weight, padding=weight.shape[-1] // 2, groups=m_in
        )[0]  # (M, H, W)
        mixed = torch.einsum("m,mhw->hw", torch.from_numpy(pointwise[p]), depthwise)
    return SepConvSteps(
        sepconv=layer,
        block=SEPCONV_BLOCK[layer],
        picked=picked,
        depthwise_channel=d,
        pointwise_channel=p,
        input_map=_read_only(values[d].copy()),
        kernel=_read_only(weight[d, 0].numpy().copy()),
        depthwise_map=_read_only(depthwise[d].numpy().copy()),
        pointwise_weights=_read_only(pointwise[p].copy()),
        pointwise_map=_read_only(mixed.numpy().copy()),
    )


def linked_channels(
    model: Xception, layer: str, side: str, channel: int | None, count: int = 8
) -> list[int]:
    """The ``count`` channels of the other half of separable conv ``layer`` joined to
    ``channel`` (of the depthwise ``side='left'`` or pointwise ``'right'``) by the largest
    |pointwise weights|, strongest first; [] for no channel or a plain conv."""
    if channel is None or layer not in SEPCONV_BLOCK:
        return []
    weights = model.sepconvs[layer].pointwise.weight[:, :, 0, 0].detach().abs().cpu().numpy()
    if not 0 <= channel < weights.shape[0 if side == "right" else 1]:  # (N, M)
        return []
    row = weights[channel] if side == "right" else weights[:, channel]  # (M,) or (N,)
    return [int(i) for i in np.argsort(-row, kind="stable")[:count]]
