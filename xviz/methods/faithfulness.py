"""How far each attribution can be trusted for one image: deletion and insertion curves
(Petsiuk et al. 2018, RISE), Captum's infidelity and max-sensitivity, and the cascading
randomisation check (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

``faithfulness(model, image, target=None, block="block14", ...) -> Faithfulness`` runs, for
each method of :data:`CHECKED` (Captum's input methods with the app's defaults, guided Grad-CAM
and Grad-CAM at ``block``, upsampled to the input):

- **deletion**: pixels replaced by mid-grey (0, the baseline of Integrated Gradients and
  occlusion) in the order the map ranks them, most positive first; the target's probability
  after each step. A low area means the map finds what the model uses.
- **insertion**: from a blurred copy (RISE's start), the original pixels put back in the same
  order. A high area is good.
- both for a random ordering and a centred Gaussian (the plain "objects are in the middle"
  guess): a map is only informative where it beats these.
- Captum's ``infidelity`` (normalised, Gaussian noise) and ``sensitivity_max`` (uniform
  noise), as Captum computes them; max-sensitivity re-runs the method per sample, so it is
  computed for the methods of :data:`SENSITIVITY_METHODS` only.
- **randomisation**: the weights re-initialised from the head down to the end of the exit
  flow, then the middle flow, then the entry flow (cascading, as the paper), each method's
  map recomputed and compared with the original: Spearman rank correlation and SSIM of the
  absolute maps. A map that stays the same explains the image, not the model. The served
  model is never changed: the check randomises a deep copy.

Every curve is a few batched forwards. Between them the job calls ``pause()`` (see
:meth:`xviz.engine.runner.Runner.background`), where the served model has no hooks and its own
weights; ``progress(fraction, message)`` and ``cancel()`` as in :mod:`xviz.methods.attribution`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam
from captum.metrics import infidelity, sensitivity_max
from torch import nn

from xviz.engine.analysis import class_labels, model_device, model_input, resolve_target
from xviz.engine.hooks import eval_mode, model_lock
from xviz.engine.runner import CancelCheck, Pause, Progress
from xviz.errors import AnalysisError, Cancelled
from xviz.methods.attribution import LAYER_METHODS, attribute
from xviz.model.xception import BLOCKS, FLOWS, Xception

#: The methods checked, in the order they are shown: Captum's input methods with the app's
#: defaults, then guided Grad-CAM and Grad-CAM at the chosen block. The layer methods that
#: explain a block's positions (Layer IG, Layer Conductance) answer another question.
CHECKED: tuple[str, ...] = (
    "saliency",
    "smoothgrad",
    "integrated_gradients",
    "occlusion",
    "guided_gradcam",
    "gradcam",
)
#: Orderings every map is compared with: a random one and a centred Gaussian.
BASELINES: tuple[str, ...] = ("random", "centre")
#: Cascading randomisation cut points, from the head down (the paper's three flows): at
#: ``"exit"`` the head and the exit flow are random, at ``"middle"`` the middle flow too, at
#: ``"entry"`` every weight.
CUTS: tuple[str, ...] = ("exit", "middle", "entry")
#: Max-sensitivity re-runs the method per noisy sample: only for these (1-2 passes each).
SENSITIVITY_METHODS: tuple[str, ...] = ("saliency", "guided_gradcam", "gradcam")
#: The methods whose maps are recomputed at each randomisation cut: all of them (at 150 on
#: two idle CPU cores the whole check takes 19 s with the kitchenware weights:
#: bench/faithfulness.py).
RANDOMISED_METHODS: tuple[str, ...] = CHECKED
DEFAULT_STEPS = 16  # curve steps: 17 points from 0 to 1
MAX_STEPS = 64
DEFAULT_BATCH = 16  # images per batched forward of a curve
INFIDELITY_SAMPLES = 8
INFIDELITY_NOISE = 0.1  # std of the Gaussian perturbation, on the [-1, 1] scale
SENSITIVITY_SAMPLES = 4
SENSITIVITY_RADIUS = 0.02  # Captum's default
BLUR_SIGMA = 0.05  # of the input side: the blurred start of the insertion curve
CENTRE_SIGMA = 0.25  # of the input side: the centre baseline's Gaussian
# SSIM constants and window as Wang et al. 2004 (Gaussian 11 x 11, sigma 1.5).
SSIM_K1, SSIM_K2, SSIM_WINDOW, SSIM_SIGMA = 0.01, 0.03, 11, 1.5
# Occlusion's 49 windows are forwards only: batched here as the curves are (a speed setting).
OCCLUSION_BATCH = 16

#: ``explainer(model, x, target) -> (S, S) map`` for an input x (1, 3, S, S).
Explainer = Callable[[nn.Module, torch.Tensor, int], np.ndarray]
Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve: the target's probability after removing (or putting
    back) ``fractions`` of the pixels, and its area (trapezoid on [0, 1])."""

    fractions: tuple[float, ...]
    scores: tuple[float, ...]
    area: float


@dataclass(frozen=True)
class Randomised:
    """One method's map after one randomisation cut, compared with the original (absolute
    values): Spearman rank correlation and SSIM; NaN where a map is constant."""

    cut: str
    spearman: float
    ssim: float


@dataclass(frozen=True)
class MethodScores:
    """Every score of one method (or baseline ordering) for one image and class."""

    method: str
    deletion: Curve
    insertion: Curve
    infidelity: float | None = None
    sensitivity: float | None = None
    randomised: tuple[Randomised, ...] = ()
    elapsed_s: float = 0.0


@dataclass(frozen=True, eq=False)
class Faithfulness:
    """The checks of one image and class. ``maps[method]`` is the (S, S) float32 map that was
    scored; ``randomised_maps[cut][method]`` the same method's map after that cut."""

    target: int
    target_label: str
    size: int
    block: str
    methods: dict[str, MethodScores]
    baselines: dict[str, MethodScores]
    maps: dict[str, np.ndarray] = field(repr=False)  # method -> (S, S) float32
    randomised_maps: dict[str, dict[str, np.ndarray]] = field(repr=False)
    params: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """Every number as plain JSON types (NaN as None); the maps are left out."""
        return {
            "target": self.target,
            "target_label": self.target_label,
            "size": self.size,
            "block": self.block,
            "params": dict(self.params),
            "elapsed_s": self.elapsed_s,
            "methods": {m: _scores_json(s) for m, s in self.methods.items()},
            "baselines": {m: _scores_json(s) for m, s in self.baselines.items()},
        }


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _scores_json(scores: MethodScores) -> dict[str, Any]:
    def curve(c: Curve) -> dict[str, Any]:
        return {"fractions": list(c.fractions), "scores": list(c.scores), "area": c.area}

    return {
        "deletion": curve(scores.deletion),
        "insertion": curve(scores.insertion),
        "infidelity": _number(scores.infidelity),
        "sensitivity": _number(scores.sensitivity),
        "randomised": {
            r.cut: {"spearman": _number(r.spearman), "ssim": _number(r.ssim)}
            for r in scores.randomised
        },
        "elapsed_s": scores.elapsed_s,
    }


# --- orderings and curves --------------------------------------------------------------------


def pixel_ranks(values: np.ndarray) -> np.ndarray:
    """(S, S) map -> (S, S) int64 rank of each pixel, 0 for the highest value; ties keep
    raster order."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(flat).all():
        raise AnalysisError("The map has NaN or infinite values: it cannot rank pixels.")
    order = np.argsort(-flat, kind="stable")
    ranks = np.empty_like(order)
    ranks[order] = np.arange(order.size)
    return ranks.reshape(np.shape(values))


def random_map(size: int, seed: int = 0) -> np.ndarray:
    """A random ordering as a map: (S, S) float32 uniform noise."""
    return np.random.default_rng(seed).random((size, size), dtype=np.float32)


def centre_map(size: int) -> np.ndarray:
    """The centre guess: a (S, S) float32 Gaussian centred on the image."""
    axis = (np.arange(size, dtype=np.float32) - (size - 1) / 2) / (CENTRE_SIGMA * size)
    return np.exp(-0.5 * (axis[:, None] ** 2 + axis[None, :] ** 2)).astype(np.float32)


def blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, S, S) -> the same blurred by a Gaussian of ``sigma`` pixels (reflected edges)."""
    radius = max(1, min(math.ceil(3 * sigma), x.shape[-1] - 1))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).repeat(x.shape[1], 1, 1)  # (C, 1, k)
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel[:, :, None, :], groups=x.shape[1])
    return F.conv2d(rows, kernel[:, :, :, None], groups=x.shape[1])


def fractions(steps: int) -> np.ndarray:
    """(steps + 1,) fractions 0, 1/steps, ..., 1."""
    return np.linspace(0.0, 1.0, steps + 1)


def curve_inputs(
    x: torch.Tensor, ranks: np.ndarray, start: torch.Tensor, end: torch.Tensor, steps: int
) -> torch.Tensor:
    """The images of a curve, (steps + 1, C, S, S): point i shows ``end`` at the
    ``round(i / steps * S * S)`` best-ranked pixels and ``start`` elsewhere.

    Deletion: start = the image, end = the grey baseline; insertion: start = the blurred
    image, end = the image.
    """
    counts = np.round(fractions(steps) * ranks.size).astype(np.int64)
    rank = torch.as_tensor(ranks, device=x.device)
    masks = rank[None] < torch.as_tensor(counts, device=x.device)[:, None, None]  # (P, S, S)
    return torch.where(masks[:, None], end, start)


def target_scores(
    forward: Forward,
    images: torch.Tensor,
    target: int,
    batch: int,
    pause: Pause | None = None,
    cancel: CancelCheck | None = None,
) -> np.ndarray:
    """The softmax probability of ``target`` for each image (N, C, S, S): (N,) float64, in
    batches of ``batch``, pausing between them."""
    out = []
    for start in range(0, images.shape[0], batch):
        if cancel is not None and cancel():
            raise Cancelled("The faithfulness check was cancelled.")
        with torch.no_grad():
            logits = forward(images[start : start + batch])  # (b, classes)
            out.append(torch.softmax(logits.float(), dim=1)[:, target].double().cpu())
        if pause is not None:
            pause()
    return torch.cat(out).numpy()


def area(scores: Sequence[float], steps: int) -> float:
    """Trapezoid area under ``scores`` sampled at :func:`fractions` on [0, 1]."""
    return float(np.trapezoid(np.asarray(scores, dtype=np.float64), fractions(steps)))


def curves(
    forward: Forward,
    x: torch.Tensor,
    maps: dict[str, np.ndarray],
    target: int,
    steps: int = DEFAULT_STEPS,
    batch: int = DEFAULT_BATCH,
    pause: Pause | None = None,
    cancel: CancelCheck | None = None,
    progress: Callable[[int, str], None] | None = None,
) -> dict[str, tuple[Curve, Curve]]:
    """Deletion and insertion curves of each map for input x (1, C, S, S).

    The curves' shared end points (the image, the grey image, the blurred image) run once;
    the other points of every map run in batches of ``batch``. ``progress(images, name)`` is
    told how many images ran after each map.
    """
    with torch.no_grad():
        grey = torch.zeros_like(x)
        blur = blurred(x, BLUR_SIGMA * x.shape[-1])
        ends = target_scores(forward, torch.cat([x, grey, blur]), target, batch, pause, cancel)
    whole, baseline, blurry = (float(v) for v in ends)
    points = fractions(steps)
    out: dict[str, tuple[Curve, Curve]] = {}
    for name, values in maps.items():
        ranks = pixel_ranks(values)
        with torch.no_grad():
            deleted = curve_inputs(x, ranks, x, grey, steps)[1:-1]
            inserted = curve_inputs(x, ranks, blur, x, steps)[1:-1]
        middle = target_scores(
            forward, torch.cat([deleted, inserted]), target, batch, pause, cancel
        )
        deletion = (whole, *middle[: steps - 1], baseline)
        insertion = (blurry, *middle[steps - 1 :], whole)
        out[name] = (
            Curve(tuple(points), tuple(map(float, deletion)), area(deletion, steps)),
            Curve(tuple(points), tuple(map(float, insertion)), area(insertion, steps)),
        )
        if progress is not None:
            progress(2 * (steps - 1), name)
    return out


# --- Captum's metrics ------------------------------------------------------------------------


def gaussian_perturbation(std: float, seed: int) -> Callable[[torch.Tensor], tuple]:
    """Captum infidelity's ``perturb_func``: Gaussian noise I of ``std`` from a seeded
    generator; returns (I, inputs - I) as Captum's convention asks."""
    generator = torch.Generator().manual_seed(seed)

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(inputs.shape, generator=generator).to(inputs) * std
        return noise, inputs - noise

    return perturb


def uniform_perturbation(seed: int) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """Captum max-sensitivity's ``perturb_func``: uniform noise in [-radius, radius] from a
    seeded generator, kept inside the model's [-1, 1] input range."""
    generator = torch.Generator().manual_seed(seed)

    def perturb(inputs: torch.Tensor, perturb_radius: float) -> torch.Tensor:
        noise = (torch.rand(inputs.shape, generator=generator) * 2 - 1) * perturb_radius
        return (inputs + noise.to(inputs)).clamp(-1.0, 1.0)

    return perturb


def as_attribution(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A (S, S) map as an input-shaped attribution (1, C, S, S): a third in each channel, so
    that a pixel's channels sum to the map (the map, not a method's raw output, is scored)."""
    spread = torch.as_tensor(values, dtype=like.dtype, device=like.device) / like.shape[1]
    return spread.expand(like.shape).contiguous()


def infidelity_of(
    forward: Forward, x: torch.Tensor, values: np.ndarray, target: int, samples: int, seed: int
) -> float:
    """Captum's ``infidelity`` of a map for input x (1, C, S, S), normalised (the best scale
    of the map is taken, so maps in different units compare)."""
    with torch.no_grad():
        score = infidelity(
            forward,
            gaussian_perturbation(INFIDELITY_NOISE, seed),
            x,
            as_attribution(values, x),
            target=target,
            n_perturb_samples=samples,
            max_examples_per_batch=samples,
            normalize=True,
        )
    return float(score[0])


def sensitivity_of(
    explainer: Explainer, model: nn.Module, x: torch.Tensor, target: int, samples: int, seed: int
) -> float:
    """Captum's ``sensitivity_max`` of an explainer for input x (1, C, S, S): the largest
    relative change of its map under uniform noise of :data:`SENSITIVITY_RADIUS`."""

    def explanation(inputs: Any, target: int) -> Any:
        # In the format it is given, as Captum's own methods answer: a tuple for a tuple.
        batch = inputs[0] if isinstance(inputs, tuple) else inputs  # (B, C, S, S)
        maps = [explainer(model, batch[i : i + 1], target) for i in range(batch.shape[0])]
        out = torch.as_tensor(np.stack(maps))  # (B, S, S)
        return (out,) if isinstance(inputs, tuple) else out

    score = sensitivity_max(
        explanation,
        x.detach(),
        perturb_func=uniform_perturbation(seed),
        perturb_radius=SENSITIVITY_RADIUS,
        n_perturb_samples=samples,
        max_examples_per_batch=samples,
        target=target,
    )
    return float(score[0])


# --- comparing maps --------------------------------------------------------------------------


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values`` (flattened), ties given their average rank."""
    _, inverse, counts = np.unique(values.reshape(-1), return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # the 1-based rank of each distinct value's last copy
    return (last - (counts - 1) / 2.0)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two arrays of one shape (average ranks for ties); NaN
    where either is constant."""
    if np.shape(a) != np.shape(b):
        raise AnalysisError(f"Cannot correlate maps of shapes {np.shape(a)} and {np.shape(b)}.")
    ra = _average_ranks(np.asarray(a, dtype=np.float64))
    rb = _average_ranks(np.asarray(b, dtype=np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    norm = math.sqrt(float((ra * ra).sum()) * float((rb * rb).sum()))
    return float((ra * rb).sum() / norm) if norm > 0 else math.nan


def normalised(values: np.ndarray) -> np.ndarray:
    """A map scaled to [0, 1] by its minimum and maximum (all zeros if constant)."""
    v = np.asarray(values, dtype=np.float64)
    low, high = float(v.min()), float(v.max())
    return (v - low) / (high - low) if high > low else np.zeros_like(v)


def _gaussian_window() -> np.ndarray:
    taps = np.arange(SSIM_WINDOW, dtype=np.float64) - (SSIM_WINDOW - 1) / 2
    window = np.exp(-0.5 * (taps / SSIM_SIGMA) ** 2)
    return window / window.sum()


def _filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """(H, W) -> (H - k + 1, W - k + 1): the separable window over every full position."""
    k = window.size
    rows = np.lib.stride_tricks.sliding_window_view(image, k, axis=1) @ window
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=0) @ window


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM (Wang et al. 2004) of two (H, W) images with values in a range of
    ``data_range``: Gaussian window 11 x 11, sigma 1.5, K1 = 0.01, K2 = 0.03, over every
    position where the window fits (as Wang's ``ssim_index.m``, ``filter2(..., 'valid')``)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise AnalysisError(f"SSIM needs two maps of one (H, W) shape, not {a.shape}, {b.shape}.")
    if min(a.shape) < SSIM_WINDOW:
        raise AnalysisError(f"SSIM needs maps of at least {SSIM_WINDOW} x {SSIM_WINDOW}.")
    window = _gaussian_window()
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, window), _filter_valid(b, window)
    var_a = _filter_valid(a * a, window) - mu_a**2
    var_b = _filter_valid(b * b, window) - mu_b**2
    cov = _filter_valid(a * b, window) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(index.mean())


def compare(original: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(Spearman, SSIM) of two maps' absolute values, SSIM on each scaled to [0, 1]."""
    a, b = np.abs(original), np.abs(other)
    return spearman(a, b), ssim(normalised(a), normalised(b))


# --- randomisation ---------------------------------------------------------------------------


def cut_modules(model: Xception, cut: str) -> list[nn.Module]:
    """The modules re-initialised at ``cut`` beyond the previous cut: ``"exit"`` the head and
    blocks 14, 13; ``"middle"`` blocks 12..5; ``"entry"`` blocks 4..1 (top down)."""
    if cut not in CUTS:
        raise AnalysisError(f"Unknown randomisation cut {cut!r}: use one of {CUTS}.")
    head = [model.classifier] if cut == "exit" and model.classifier is not None else []
    return head + [model.blocks[name] for name in reversed(FLOWS[cut])]


def reinitialise(module: nn.Module, generator: torch.Generator) -> None:
    """Fresh weights for every layer of ``module``, drawn as PyTorch's own initialisation
    draws them (``nn.Conv2d`` / ``nn.Linear.reset_parameters``: Kaiming uniform with a =
    sqrt(5), bias uniform in +-1/sqrt(fan_in)) from ``generator``; BatchNorm reset to the
    identity (weight 1, bias 0, running mean 0, variance 1)."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                if layer.bias is not None:
                    fan_in = layer.weight[0].numel()
                    bound = 1 / math.sqrt(fan_in)
                    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
            elif isinstance(layer, nn.BatchNorm2d):
                layer.reset_parameters()


def cascade(
    model: Xception,
    x: torch.Tensor,
    target: int,
    explainers: dict[str, Explainer],
    originals: dict[str, np.ndarray],
    cuts: Sequence[str] = CUTS,
    seed: int = 0,
    pause: Pause | None = None,
    cancel: CancelCheck | None = None,
    progress: Callable[[str, str], None] | None = None,
) -> tuple[dict[str, list[Randomised]], dict[str, dict[str, np.ndarray]]]:
    """The cascading randomisation check on a deep copy of ``model`` (never the model itself:
    other computations may run on it at the pauses in between).

    Returns (method -> one :class:`Randomised` per cut, cut -> method -> (S, S) map).
    """
    scores: dict[str, list[Randomised]] = {name: [] for name in explainers}
    maps: dict[str, dict[str, np.ndarray]] = {}
    if not cuts or not explainers:
        return scores, maps
    with model_lock(model):
        copied = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    deepest = max(CUTS.index(cut) for cut in cuts)
    for cut in CUTS[: deepest + 1]:  # cascading: what an earlier cut made random stays so
        for module in cut_modules(copied, cut):
            reinitialise(module, generator)
        if cut not in cuts:
            continue
        maps[cut] = {}
        for name, explainer in explainers.items():
            if cancel is not None and cancel():
                raise Cancelled("The faithfulness check was cancelled.")
            values = explainer(copied, x, target)
            maps[cut][name] = values
            scores[name].append(Randomised(cut, *compare(originals[name], values)))
            if progress is not None:
                progress(cut, name)
            if pause is not None:
                pause()
    return scores, maps


# --- the methods -----------------------------------------------------------------------------


def gradcam_map(model: nn.Module, x: torch.Tensor, target: int, block: str) -> np.ndarray:
    """Grad-CAM of ``block`` at input resolution: Captum's ``LayerGradCam`` with ReLU,
    upsampled bilinearly, as :func:`xviz.engine.analysis.analyze` computes it. (S, S)."""
    with model_lock(model), eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        inputs = x.detach().to(model_device(model)).contiguous(memory_format=torch.channels_last)
        cam = LayerGradCam(model, model.blocks[block]).attribute(
            inputs.requires_grad_(True), target=target, relu_attributions=True
        )  # (1, 1, h, w)
        up = LayerAttribution.interpolate(cam, x.shape[-2:], interpolate_mode="bilinear")
    return up[0, 0].detach().float().cpu().numpy()


def method_explainer(
    method: str,
    block: str,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
    seed: int = 0,
) -> Explainer:
    """The map of ``method`` (one of :data:`CHECKED`) with the app's defaults, as an
    :data:`Explainer`. SmoothGrad's noise is drawn from ``seed`` each time: the same image
    gives the same map, and a randomised model is compared under the same noise."""
    if method == "gradcam":
        return lambda model, x, target: gradcam_map(model, x, target, block)
    params = {"perturbations_per_eval": OCCLUSION_BATCH} if method == "occlusion" else {}

    def explain(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
        # Captum's NoiseTunnel draws with torch.normal from the global generators (of every
        # device): seeded here, and put back as they were afterwards.
        cuda = list(range(torch.cuda.device_count())) if method == "smoothgrad" else []
        with torch.random.fork_rng(devices=cuda, enabled=method == "smoothgrad"):
            if method == "smoothgrad":
                torch.manual_seed(seed)
            return attribute(
                model,
                x.detach().cpu(),
                target,
                method,
                block=block if method in LAYER_METHODS else None,
                progress=progress,
                cancel=cancel,
                **params,
            ).map

    return explain


# Images each check runs (forward passes; a forward+backward counts 3), for the stated cost.
_MAP_IMAGES = {
    "saliency": 3,
    "smoothgrad": 24,
    "integrated_gradients": 48,
    "occlusion": 50,
    "guided_gradcam": 6,
    "gradcam": 3,
}


def planned_images(
    steps: int = DEFAULT_STEPS,
    methods: Sequence[str] = CHECKED,
    randomised: Sequence[str] = RANDOMISED_METHODS,
    cuts: Sequence[str] = CUTS,
    sensitivity: Sequence[str] = SENSITIVITY_METHODS,
) -> int:
    """About how many forward passes (a backward counts as two) the check runs."""
    maps = sum(_MAP_IMAGES[m] for m in methods)
    curve = 3 + (len(methods) + len(BASELINES)) * 2 * (steps - 1)
    fidelity = len(methods) * (INFIDELITY_SAMPLES + 1)
    sensitive = sum(_MAP_IMAGES[m] * (SENSITIVITY_SAMPLES + 1) for m in sensitivity)
    cascaded = len(cuts) * sum(_MAP_IMAGES[m] for m in randomised)
    return maps + curve + fidelity + sensitive + cascaded


def _checked(names: Sequence[str], allowed: Sequence[str], what: str) -> tuple[str, ...]:
    names = tuple(names)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise AnalysisError(f"Unknown {what} {unknown[0]!r}: use any of {tuple(allowed)}.")
    return names


def faithfulness(
    model: Xception,
    image: Any,
    target: int | str | None = None,
    block: str = "block14",
    size: int | None = None,
    steps: int = DEFAULT_STEPS,
    methods: Sequence[str] = CHECKED,
    randomised: Sequence[str] | None = None,
    cuts: Sequence[str] = CUTS,
    sensitivity: Sequence[str] | None = None,
    seed: int = 0,
    batch: int = DEFAULT_BATCH,
    pause: Pause | None = None,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> Faithfulness:
    """Deletion/insertion curves, infidelity, max-sensitivity and the cascading randomisation
    check of each method's map for one image and class (see the module's docstring).

    Args:
        model: an :class:`Xception` with a classifier head; left exactly as it was.
        image: an :class:`~xviz.engine.analysis.Analysis` or any input ``analyze`` takes.
        target: class index or label; default the analysis' target, else the top-1 class.
        block: the block of Grad-CAM and guided Grad-CAM.
        size: the input side when ``image`` is not an Analysis.
        steps: curve steps (2 to 64): ``steps + 1`` points from 0 to 1.
        methods, randomised, sensitivity: which methods get the curves and infidelity, the
            randomisation check, max-sensitivity (subsets of :data:`CHECKED`; by default
            those of ``methods`` in :data:`RANDOMISED_METHODS`, :data:`SENSITIVITY_METHODS`).
        cuts: randomisation cut points, of :data:`CUTS`.
        seed: of the random ordering, the metrics' noise and the random weights.
        batch: images per batched forward of a curve (1 to 64).
        pause, progress, cancel: see :meth:`xviz.engine.runner.Runner.background`.

    Raises:
        AnalysisError: an unknown method, block or cut, a bad setting or a model without head.
        Cancelled: ``cancel()`` returned true.
    """
    started = time.perf_counter()
    methods = _checked(methods, CHECKED, "method")
    if randomised is None:
        randomised = [m for m in RANDOMISED_METHODS if m in methods]
    if sensitivity is None:
        sensitivity = [m for m in SENSITIVITY_METHODS if m in methods]
    randomised = _checked(randomised, methods, "randomised method")
    sensitivity = _checked(sensitivity, methods, "sensitivity method")
    cuts = _checked(cuts, CUTS, "randomisation cut")
    if not methods:
        raise AnalysisError("Pick at least one method to check.")
    if block not in BLOCKS:
        raise AnalysisError(f"Grad-CAM needs a block, 'block1' to 'block14'; got {block!r}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= MAX_STEPS:
        raise AnalysisError(f"The curves need 2 to {MAX_STEPS} steps; got {steps!r}.")
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 64:
        raise AnalysisError(f"The batch must be 1 to 64 images; got {batch!r}.")
    if model.classifier is None:
        raise AnalysisError("This model has no classifier head, so there is no class to explain.")
    x, target = model_input(model, image, target, size)  # (1, 3, S, S)
    labels = class_labels(model)
    if target is None:
        with model_lock(model), eval_mode(model), torch.no_grad():
            target = int(model(x.to(model_device(model)))[0].argmax())
    target = resolve_target(target, labels)
    side = x.shape[-1]
    total = planned_images(steps, methods, randomised, cuts, sensitivity)
    done = 0

    def report(images: int, message: str) -> None:
        nonlocal done
        done += images
        if progress is not None:
            progress(min(done / total, 1.0), message)

    def stage(name: str, images: int) -> Progress:
        """A method's own progress (fraction of its images) as progress of the whole."""
        base = done

        def inner(fraction: float, message: str) -> None:
            if progress is not None:
                progress(min((base + fraction * images) / total, 1.0), f"{name}: {message}")

        return inner

    def forward(batch_x: torch.Tensor) -> torch.Tensor:
        # Only the forward holds the lock: other calls run at the pauses, between batches.
        with model_lock(model), eval_mode(model), torch.no_grad():
            device = model_device(model)
            return model(batch_x.to(device).contiguous(memory_format=torch.channels_last))

    maps: dict[str, np.ndarray] = {}
    elapsed: dict[str, float] = {}
    for method in methods:
        began = time.perf_counter()
        explain = method_explainer(method, block, stage(method, _MAP_IMAGES[method]), cancel, seed)
        maps[method] = explain(model, x, target)
        elapsed[method] = time.perf_counter() - began
        report(_MAP_IMAGES[method], f"{method}: map")
        if pause is not None:
            pause()
    ordering = {"random": random_map(side, seed), "centre": centre_map(side)}
    scored = curves(
        forward,
        x,
        {**maps, **ordering},
        target,
        steps,
        batch,
        pause,
        cancel,
        lambda images, name: report(images, f"{name}: deletion and insertion"),
    )
    fidelity: dict[str, float] = {}
    for method in methods:
        if cancel is not None and cancel():
            raise Cancelled("The faithfulness check was cancelled.")
        fidelity[method] = infidelity_of(forward, x, maps[method], target, INFIDELITY_SAMPLES, seed)
        report(INFIDELITY_SAMPLES + 1, f"{method}: infidelity")
        if pause is not None:
            pause()
    sensitive: dict[str, float] = {}
    for method in sensitivity:
        images = _MAP_IMAGES[method] * (SENSITIVITY_SAMPLES + 1)
        explain = method_explainer(method, block, None, cancel, seed)
        sensitive[method] = sensitivity_of(explain, model, x, target, SENSITIVITY_SAMPLES, seed)
        report(images, f"{method}: max-sensitivity")
        if pause is not None:
            pause()
    explainers = {m: method_explainer(m, block, None, cancel, seed) for m in randomised}
    random_scores, random_maps = cascade(
        model,
        x,
        target,
        explainers,
        maps,
        cuts,
        seed,
        pause,
        cancel,
        lambda cut, name: report(_MAP_IMAGES[name], f"{name}: randomised to the {cut} flow"),
    )
    results = {
        m: MethodScores(
            m,
            *scored[m],
            infidelity=fidelity[m],
            sensitivity=sensitive.get(m),
            randomised=tuple(random_scores.get(m, ())),
            elapsed_s=elapsed[m],
        )
        for m in methods
    }
    return Faithfulness(
        target=target,
        target_label=labels[target],
        size=side,
        block=block,
        methods=results,
        baselines={name: MethodScores(name, *scored[name]) for name in ordering},
        maps=maps,
        randomised_maps=random_maps,
        params={
            "steps": steps,
            "batch": batch,
            "seed": seed,
            "cuts": list(cuts),
            "randomised": list(randomised),
            "sensitivity": list(sensitivity),
            "infidelity_samples": INFIDELITY_SAMPLES,
            "infidelity_noise": INFIDELITY_NOISE,
            "sensitivity_samples": SENSITIVITY_SAMPLES,
            "sensitivity_radius": SENSITIVITY_RADIUS,
        },
        elapsed_s=time.perf_counter() - started,
    )


def _score_values(scores: MethodScores) -> dict[str, float | None]:
    """One method's scores as flat names: deletion, insertion, infidelity, sensitivity,
    spearman_<cut>, ssim_<cut>."""
    out: dict[str, float | None] = {
        "deletion": scores.deletion.area,
        "insertion": scores.insertion.area,
        "infidelity": scores.infidelity,
        "sensitivity": scores.sensitivity,
    }
    for r in scores.randomised:
        out[f"spearman_{r.cut}"] = r.spearman
        out[f"ssim_{r.cut}"] = r.ssim
    return out


def summary(results: Sequence[Faithfulness]) -> dict[str, dict[str, dict[str, float | int]]]:
    """Mean, standard deviation (ddof 1; 0 for one image) and count of every score over
    images, per method and baseline: ``{name: {score: {"mean", "std", "n"}}}``. NaN and
    missing scores are left out of their score's count."""
    values: dict[str, dict[str, list[float]]] = {}
    for result in results:
        for name, scores in {**result.methods, **result.baselines}.items():
            for key, value in _score_values(scores).items():
                kept = values.setdefault(name, {}).setdefault(key, [])
                if value is not None and math.isfinite(value):
                    kept.append(float(value))
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    for name, by_score in values.items():
        out[name] = {}
        for key, kept in by_score.items():
            if not kept:
                continue
            a = np.asarray(kept)
            std = float(a.std(ddof=1)) if a.size > 1 else 0.0
            out[name][key] = {"mean": float(a.mean()), "std": std, "n": int(a.size)}
    return out
