"""One image through the network, everything captured: ``analyze(model, image) -> Analysis``.

One forward pass with hooks records, for the image:

- every separable convolution's two outputs, ``depthwise`` (M, H, W) and ``pointwise``
  (N, H, W), before its BatchNorm: what each of the two convolutions computes;
- the 6 plain convolutions (block1's two, the 4 residual 1x1 convs), before BatchNorm;
- the output of each of the 14 blocks (after the residual add);
- the logits, and from one backward pass the Grad-CAM of all 14 blocks for the target class.

Each captured tensor becomes a :class:`Map`: per-channel statistics (mean, max, min, fraction
of positive pixels) computed in float32, then the values stored compactly as per-channel
affine uint8 codes (or float16). A 299x299 analysis takes about 46 MB on the host.

Everything is computed on the model's device and nothing is read back until the forward and
backward passes are queued; then two copies bring the results to the host (one of float32
statistics, logits and Grad-CAMs, one of codes). On a GPU every read-back makes the host wait
for the device: one per map and statistic (~880 per analysis) made an analysis cost 6.6x a
forward+backward on an H200.

Map names: ``"block5_sepconv1.depthwise"``, ``"block5_sepconv1.pointwise"``,
``"block1_conv1"``, ``"block2_residual"``, ``"block5"`` (see :data:`MAP_NAMES`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xviz.engine.hooks import Capture, eval_mode, model_lock
from xviz.errors import AnalysisError, short
from xviz.model.xception import BLOCK_SPECS, BLOCKS, SEPCONV_BLOCK, SEPCONV_NAMES, Xception

Storage = Literal["uint8", "float16"]
OrderKey = Literal["mean", "max", "min", "positive", "index"]
STORAGES: tuple[str, ...] = ("uint8", "float16")
ORDER_KEYS: tuple[str, ...] = ("mean", "max", "min", "positive", "index")
MAP_KINDS: tuple[str, ...] = ("depthwise", "pointwise", "conv", "residual", "block")
DEFAULT_SIZE = 299
#: What an analysis holds, in the order a run makes it: the prediction (right after the
#: forward pass), the maps asked for first (``analyze(first=...)``: those a page shows at
#: once), the Grad-CAMs (after the backward pass), then every map (once compacted).
STAGES: tuple[str, ...] = ("prediction", "view", "gradcam", "complete")
# Captum's LayerAttribution.interpolate mode used for the input-resolution Grad-CAM.
GRADCAM_INTERPOLATION = "bilinear"


def _map_names() -> tuple[str, ...]:
    names = ["block1_conv1", "block1_conv2"]
    for spec in BLOCK_SPECS:
        for sepconv, _, _ in spec.sepconvs:
            names += [f"{sepconv}.depthwise", f"{sepconv}.pointwise"]
        if spec.residual == "conv":
            names.append(f"{spec.name}_residual")
        names.append(spec.name)
    return tuple(names)


MAP_NAMES: tuple[str, ...] = _map_names()
"""All 88 captured maps in network order: 68 sepconv halves, 6 convs, 14 blocks."""


def map_kind(name: str) -> str:
    """``"depthwise"``, ``"pointwise"``, ``"conv"``, ``"residual"`` or ``"block"``."""
    if name not in MAP_NAMES:
        raise AnalysisError(f"Unknown map {name!r}: use e.g. 'block5_sepconv1.depthwise'.")
    if "." in name:
        return name.split(".")[1]
    if name.endswith("_residual"):
        return "residual"
    return "conv" if "_conv" in name else "block"


def map_channels(name: str) -> int:
    """Number of channels of map ``name``, from the architecture."""
    kind = map_kind(name)
    if kind in ("depthwise", "pointwise"):
        sepconv, half = name.split(".")
        _, c_in, c_out = next(
            entry for entry in BLOCKS[SEPCONV_BLOCK[sepconv]].sepconvs if entry[0] == sepconv
        )
        return c_in if half == "depthwise" else c_out
    if kind == "conv":
        return 32 if name == "block1_conv1" else 64
    return BLOCKS[name.removesuffix("_residual")].out_channels


def map_modules(model: Xception) -> OrderedDict[str, nn.Module]:
    """Map name -> the module whose output is that map, in network order."""
    sepconvs, convs, blocks = model.sepconvs, model.convs, model.blocks
    out: OrderedDict[str, nn.Module] = OrderedDict()
    for name in MAP_NAMES:
        if "." in name:
            sepconv, half = name.split(".")
            out[name] = getattr(sepconvs[sepconv], half)
        else:
            out[name] = convs[name] if name in convs else blocks[name]
    return out


class Prediction(NamedTuple):
    """One class of a top-k list."""

    label: str
    probability: float
    index: int


@dataclass(frozen=True, eq=False)
class Map:
    """One captured tensor of one image: (C, H, W), stored compactly, with channel statistics.

    ``data`` holds uint8 codes (value = low + code * step, per channel) or float16 values.
    Every stored value is within ``quantization_step / 2`` of the float32 original.
    Statistics are of the float32 original.
    """

    name: str
    kind: str
    data: np.ndarray  # (C, H, W) uint8 or float16
    low: np.ndarray  # (C,) float32, value of code 0 (zeros for float16)
    quantization_step: np.ndarray  # (C,) float32
    mean: np.ndarray  # (C,) float32
    max: np.ndarray  # (C,) float32
    min: np.ndarray  # (C,) float32
    positive: np.ndarray  # (C,) float32, fraction of pixels > 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)

    @property
    def num_channels(self) -> int:
        return self.data.shape[0]

    @property
    def nbytes(self) -> int:
        arrays = (self.data, self.low, self.quantization_step, self.mean, self.max, self.min)
        return sum(a.nbytes for a in arrays) + self.positive.nbytes

    def channels(self, indices: Any) -> np.ndarray:
        """The dequantised maps of ``indices`` (any integer index array): (k, H, W) float32."""
        idx = np.asarray(indices, dtype=np.intp).reshape(-1)
        values = self.data[idx].astype(np.float32)
        if self.data.dtype == np.uint8:
            values *= self.quantization_step[idx, None, None]
            values += self.low[idx, None, None]
        return values

    def channel(self, index: int) -> np.ndarray:
        """One channel's map: (H, W) float32."""
        return self.channels([index])[0]

    def array(self) -> np.ndarray:
        """All channels: (C, H, W) float32."""
        return self.channels(np.arange(self.num_channels))

    def order(self, by: OrderKey = "mean") -> np.ndarray:
        """Channel indices sorted by a statistic, largest first (``"index"``: 0, 1, 2, ...)."""
        if by == "index":
            return np.arange(self.num_channels)
        if by not in ORDER_KEYS:
            raise AnalysisError(f"Cannot order channels by {by!r}: use one of {ORDER_KEYS}.")
        # Stable sort on the negated statistic: ties keep channel order.
        return np.argsort(-getattr(self, by), kind="stable")


@dataclass(frozen=True, eq=False)
class SepConvMaps:
    """The two halves of one separable convolution for one image."""

    name: str
    block: str
    depthwise: Map  # (M, H, W): one 3x3 filter per input channel
    pointwise: Map  # (N, H, W): 1x1 mix of the depthwise channels


@dataclass(frozen=True, eq=False)
class Analysis:
    """Everything :func:`analyze` recorded for one image; its arrays are read-only, so a
    cached analysis can be shared between viewers and threads.

    ``image`` is the (S, S, 3) uint8 picture the model saw. ``gradcam[block]`` is the
    Grad-CAM of the target class at input resolution (S, S), ``gradcam_raw[block]`` the same
    at the block's resolution (h, w), both float32, ReLU applied (as Captum's
    ``LayerGradCam(..., relu_attributions=True)``).
    """

    image: np.ndarray  # (S, S, 3) uint8
    size: int
    weights: str
    labels: list[str]
    logits: np.ndarray  # (classes,) float32
    probabilities: np.ndarray  # (classes,) float32
    top: list[Prediction]
    target: int
    sepconvs: OrderedDict[str, SepConvMaps]
    convs: OrderedDict[str, Map]
    blocks: OrderedDict[str, Map]
    gradcam_raw: OrderedDict[str, np.ndarray]  # block -> (h, w) float32
    gradcam: OrderedDict[str, np.ndarray]  # block -> (S, S) float32
    # sepconv name -> (scale, shift) of the BatchNorm after it, for sepconv_input.
    bn_affine: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)
    elapsed_s: float = 0.0
    device: str = "cpu"  # where it was computed ("cuda" in a ZeroGPU worker)
    # How far the run that made it had got (``analyze(..., on_partial=...)``): "prediction" (the
    # logits, probabilities and target; no maps), "view" (and the maps asked for first),
    # "gradcam" (and the Grad-CAMs), or "complete" (every map). What a stage lacks is empty.
    stage: str = "complete"

    @property
    def complete(self) -> bool:
        return self.stage == "complete"

    def reached(self, stage: str) -> bool:
        """Whether this analysis holds at least ``stage`` (one of :data:`STAGES`)."""
        return STAGES.index(self.stage) >= STAGES.index(stage)

    @property
    def target_label(self) -> str:
        return self.labels[self.target]

    @property
    def target_probability(self) -> float:
        return float(self.probabilities[self.target])

    def has_maps(self, names: Sequence[str]) -> bool:
        """Whether this analysis holds every map in ``names`` (all do once complete)."""
        try:
            for name in names:
                self.map(name)
        except KeyError:
            return False
        return True

    @property
    def maps(self) -> OrderedDict[str, Map]:
        """All 88 maps by name (:data:`MAP_NAMES`), in network order."""
        out: OrderedDict[str, Map] = OrderedDict()
        for name in MAP_NAMES:
            out[name] = self.map(name)
        return out

    def map(self, name: str) -> Map:
        """The map called ``name`` (``"block5_sepconv1.depthwise"``, ``"block2_residual"``, ...)."""
        kind = map_kind(name)
        if kind in ("depthwise", "pointwise"):
            sepconv, half = name.split(".")
            return getattr(self.sepconvs[sepconv], half)
        return self.convs[name] if kind in ("conv", "residual") else self.blocks[name]

    def sepconv_input(self, name: str) -> np.ndarray:
        """The tensor fed to ``name``'s depthwise conv, (M, H, W) float32, derived from stored maps.

        Not captured separately (it would add a third of the storage): it is the previous
        block's output (after a ReLU in blocks 3-13), or ReLU(BN(previous pointwise)). Its
        error is that of the map it comes from, times the BN scale for the latter.
        """
        if name not in self.sepconvs:
            raise AnalysisError(f"Unknown separable conv {name!r}: use e.g. 'block5_sepconv1'.")
        block = SEPCONV_BLOCK[name]
        index = SEPCONV_NAMES.index(name)
        if name.endswith("_sepconv1"):
            previous = self.blocks[BLOCK_SPECS[int(block.removeprefix("block")) - 2].name].array()
            # block2 follows block1's ReLU; block14 starts without one (its ReLUs come after BN).
            return previous if block in ("block2", "block14") else np.maximum(previous, 0)
        previous_name = SEPCONV_NAMES[index - 1]
        scale, shift = self.bn_affine[previous_name]
        values = self.sepconvs[previous_name].pointwise.array()
        return np.maximum(values * scale[:, None, None] + shift[:, None, None], 0)

    @property
    def nbytes(self) -> int:
        """Bytes held by this analysis' arrays."""
        arrays = [self.image, self.logits, self.probabilities]
        arrays += [a for pair in self.bn_affine.values() for a in pair]
        arrays += list(self.gradcam_raw.values()) + list(self.gradcam.values())
        return sum(a.nbytes for a in arrays) + sum(m.nbytes for m in self.maps.values())


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def class_labels(model: Xception) -> list[str]:
    """The model's class names, or ``"class i"`` when it has none."""
    if model.labels and len(model.labels) == model.num_classes:
        return list(model.labels)
    return [f"class {i}" for i in range(model.num_classes)]


def weights_name(model: Xception) -> str:
    """The name of the model's weights source, ``"random"`` when it has none."""
    return model.source.name if model.source is not None else "random"


def input_size(model: Xception) -> int:
    """The side the model's weights expect (299 when it has no weights source)."""
    return model.source.input_size if model.source is not None else DEFAULT_SIZE


def resolve_size(model: Xception, image: Any, size: int | None = None) -> int:
    """The side an input is run at: ``size`` if given, else a tensor's own side, else the
    side the model's weights expect."""
    if size:
        return size
    if isinstance(image, torch.Tensor):
        return image.shape[-1]
    return input_size(model)


def prepare_input(image: Any, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Any image input -> (model input (1, 3, S, S) float32, display image (S, S, 3) uint8).

    A tensor is taken as already preprocessed (values in [-1, 1]); its display image is
    reconstructed as ``(x + 1) * 127.5``.
    """
    # Imported here: decoding images needs PIL, which tensor inputs never touch.
    from xviz.engine.preprocess import from_uint8, load_image, preprocess, to_display

    if isinstance(image, torch.Tensor):
        x = preprocess(image, size)
        display = ((x[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return x, display.permute(1, 2, 0).contiguous().numpy()
    display = to_display(load_image(image), size)
    return from_uint8(display[np.newaxis]), display


def model_input(
    model: Xception, image: Any, target: int | str | None, size: int | None
) -> tuple[torch.Tensor, int | str | None]:
    """The input (1, 3, S, S) and target for a run on ``image``: an :class:`Analysis` gives
    its own pixels, size and (unless ``target`` is given) target."""
    if isinstance(image, Analysis):
        x, _ = prepare_input(image.image, image.size)
        return x, image.target if target is None else target
    x, _ = prepare_input(image, resolve_size(model, image, size))
    return x, target


def resolve_target(target: int | str, labels: list[str]) -> int:
    """A class index from an index or a label, checked against the model's classes."""
    if isinstance(target, str):
        if target not in labels:
            raise AnalysisError(f"Unknown class {target!r}: it is not one of the model's labels.")
        return labels.index(target)
    index = int(target)
    if not 0 <= index < len(labels):
        raise AnalysisError(
            f"Class index {index} is out of range: the model has {len(labels)} classes."
        )
    return index


def top_predictions(probabilities: np.ndarray, labels: list[str], k: int) -> list[Prediction]:
    """The ``k`` most probable classes, most probable first."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [Prediction(labels[i], float(probabilities[i]), int(i)) for i in order]


# The rows of a map's (6, C) statistics, named as Map's fields.
STATISTICS: tuple[str, ...] = ("low", "quantization_step", "mean", "max", "min", "positive")
STORAGE_DTYPES: dict[str, torch.dtype] = {"uint8": torch.uint8, "float16": torch.float16}


class MapArena:
    """The maps of one run, compacted on the model's device into one buffer, then brought to
    the host with two copies (values; statistics and any other float32 tensors).

    On a GPU each read-back makes the host wait for the device, and each kernel launch costs
    more than the work of a small one: so nothing is read back before :meth:`to_host`, and
    the arithmetic on per-channel statistics runs once on all maps' channels together. Each
    map's slot is laid out channels-last, as the model's activations are, so filling it is a
    straight copy; on the host it is a (C, H, W) view.
    """

    def __init__(
        self, shapes: dict[str, tuple[int, ...]], storage: Storage, like: torch.Tensor
    ) -> None:
        """``shapes``: map name -> (C, H, W); the buffer is made on ``like``'s device."""
        if storage not in STORAGES:
            raise AnalysisError(f"Unknown storage {storage!r}: use one of {STORAGES}.")
        self._slots: dict[str, tuple[int, tuple[int, int, int]]] = {}
        total = 0
        for name, shape in shapes.items():
            c, h, w = shape
            self._slots[name] = (total, (c, h, w))
            total += c * h * w
        self.buffer = like.new_empty(total, dtype=STORAGE_DTYPES[storage])
        self.statistics: torch.Tensor | None = None  # (6, channels of all maps) float32

    def _slot(self, name: str) -> torch.Tensor:
        start, (c, h, w) = self._slots[name]
        return self.buffer[start : start + c * h * w].view(h, w, c).permute(2, 0, 1)

    def fill(self, tensors: dict[str, torch.Tensor]) -> None:
        """Compact every map of ``shapes``, given as (C, H, W) float tensors: float32
        statistics, and per-channel affine uint8 codes or float16 values in its slot.

        Device work only: nothing here waits for the device or reads a value back.
        """
        if list(tensors) != list(self._slots):
            raise ValueError("MapArena.fill takes the maps it was made for, in that order")
        # (H*W, C) each: a view of a channels-last map, which the model's maps are (a copy
        # otherwise). Per-channel reductions over its rows, codes written row by row into the
        # slot (laid out the same): no map is transposed. Measured on a 2-core CPU, all 88
        # maps at 299: 75 ms against 97 ms for (C, H*W) copies.
        rows = [
            t.detach().float().permute(1, 2, 0).reshape(-1, t.shape[0]) for t in tensors.values()
        ]
        lows, highs, means, positives = [], [], [], []
        for row in rows:
            # amin and amax: two passes, but together half the time of one aminmax (measured on
            # a 2-core CPU, all 88 maps at 299: 0.023 s against 0.05 s).
            lows.append(row.amin(dim=0))
            highs.append(row.amax(dim=0))
            means.append(row.mean(dim=0))
            # The count of positive values as a sum of exact ones: a third of the time of
            # summing the booleans of ``row > 0`` (15 ms against 42 ms, as above).
            positives.append(row.sign().clamp_(min=0).sum(dim=0) / row.shape[0])
        low, high = torch.cat(lows), torch.cat(highs)  # (channels of all maps,)
        if self.buffer.dtype == torch.uint8:
            step = (high - low) / 255
            inverse = torch.where(step > 0, step.reciprocal(), 0.0)
            # code = round((v - low) / step), as v * inverse + (0.5 - low * inverse) truncated
            # (copy_ into uint8 truncates, as .to(torch.uint8) does).
            offset = 0.5 - low * inverse
            counts = [row.shape[1] for row in rows]
            parts = zip(rows, inverse.split(counts), offset.split(counts), strict=True)
            for name, (row, inv, off) in zip(tensors, parts, strict=True):
                start, (c, h, w) = self._slots[name]
                codes = torch.addcmul(off, row, inv)  # (H*W, C)
                self.buffer[start : start + c * h * w].view(h * w, c).copy_(codes)
            stored_low = low
        else:
            for name, tensor in tensors.items():
                self._slot(name).copy_(tensor.detach())
            # Twice float16's largest rounding error for the channel's largest magnitude.
            step = torch.maximum(high.abs(), low.abs()) * 2.0**-10
            stored_low = torch.zeros_like(low)
        self.statistics = torch.stack(
            [stored_low, step, torch.cat(means), high, low, torch.cat(positives)]
        )

    def to_host(
        self, floats: dict[str, list[torch.Tensor]] | None = None
    ) -> tuple[dict[str, Map], dict[str, list[np.ndarray]]]:
        """Every map as a host :class:`Map`, and ``floats`` (float32 tensors) as host arrays.

        Raises:
            AnalysisError: a map has NaN or infinite values (the first one is named).
        """
        if self.statistics is None:
            raise ValueError("MapArena.to_host before fill")
        host = to_host({"statistics": [self.statistics], **(floats or {})})
        statistics = host.pop("statistics")[0]  # (6, channels of all maps)
        values = self.buffer.cpu().numpy()
        values.flags.writeable = False  # views taken after this are read-only too
        maps, channel = {}, 0
        for name, (start, (c, h, w)) in self._slots.items():
            stats = statistics[:, channel : channel + c]
            channel += c
            if not np.isfinite(stats[3:5]).all():  # max and min
                raise AnalysisError(f"The activations of {name} are not finite (NaN or infinity).")
            data = values[start : start + c * h * w].reshape(h, w, c).transpose(2, 0, 1)
            rows = dict(zip(STATISTICS, stats, strict=True))
            maps[name] = Map(name, map_kind(name), data, **rows)
        return maps, host


def to_host(tensors: dict[str, list[torch.Tensor]]) -> dict[str, list[np.ndarray]]:
    """Tensors of one dtype on one device -> read-only host arrays of the same shapes, by one
    device-to-host copy (views of one buffer, in the order given)."""
    parts = [t.detach().reshape(-1) for group in tensors.values() for t in group]
    flat = torch.cat(parts).cpu().numpy()
    flat.flags.writeable = False
    out: dict[str, list[np.ndarray]] = {}
    start = 0
    for key, group in tensors.items():
        out[key] = []
        for t in group:
            out[key].append(flat[start : start + t.numel()].reshape(t.shape))
            start += t.numel()
    return out


def to_map(name: str, tensor: torch.Tensor, storage: Storage = "uint8") -> Map:
    """(C, H, W) float tensor -> :class:`Map` on the host: float32 statistics, compact values."""
    arena = MapArena({name: tuple(tensor.shape)}, storage, tensor)
    arena.fill({name: tensor})
    maps, _ = arena.to_host()
    return maps[name]


def gradcam_from(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Grad-CAM as Captum's ``LayerGradCam(relu_attributions=True)``: (B, 1, h, w).

    ReLU(sum over channels of (spatial mean of the gradient) x activation).
    """
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    return F.relu((weights * activation).sum(dim=1, keepdim=True))


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode BatchNorm as ``y = x * scale + shift``: (C,), (C,) float32, on its device."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() - bn.running_mean * scale
    return scale.float(), shift.float()


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def analyze(
    model: Xception,
    image: Any,
    target: int | str | None = None,
    size: int | None = None,
    top_k: int = 5,
    storage: Storage = "uint8",
    on_partial: Callable[[Analysis], None] | None = None,
    first: Sequence[str] = (),
) -> Analysis:
    """Run one image through ``model`` and record every map and all 14 Grad-CAMs.

    Args:
        model: an :class:`Xception` with a classifier head.
        image: a PIL image, a path, file bytes, an (H, W, 3) array, or a preprocessed tensor
            (3, S, S) / (1, 3, S, S) in [-1, 1].
        target: the class explained by Grad-CAM (index or label); default the top-1 class.
        size: the side the image is resized to; default a tensor's own side, else the
            weights' input size (else 299).
        top_k: how many classes ``Analysis.top`` lists.
        storage: ``"uint8"`` (per-channel affine codes, ~46 MB at 299) or ``"float16"``.
        on_partial: called with what the run has made so far, while the rest is still to
            run: an ``Analysis`` at ``stage="prediction"`` right after the forward pass (no
            maps), then at ``"view"`` (the maps of ``first``; only if it names any), then at
            ``"gradcam"`` (and the Grad-CAMs). A page shows the prediction at about a third
            of the time of the whole, and a layer's maps soon after.
        first: names of maps (:data:`MAP_NAMES`; a separable conv's two halves together)
            compacted right after the forward pass, before the backward pass: the ones a page
            shows at once. Their numbers are those of any other run.

    One forward pass (hooks keep every map and the live block outputs) and one copy of the
    logits; the maps of ``first`` compacted on the model's device and brought to the host
    (two copies: values, statistics); one backward pass from the target logit to the 14 block
    outputs, and one copy of the Grad-CAMs; then every other map compacted and brought to the
    host with two copies (values; statistics and BatchNorm affines). Nothing else is read back.
    Holds the model's lock (``xviz.engine.hooks.model_lock``) throughout; the model is left as
    it was. Each stage shares the earlier stages' arrays: the same numbers, whichever comes
    first.
    """
    started = time.perf_counter()
    if model.classifier is None:
        raise AnalysisError("This model has no classifier head, so there is no class to explain.")
    if storage not in STORAGES:
        raise AnalysisError(f"Unknown storage {storage!r}: use one of {STORAGES}.")
    size = resolve_size(model, image, size)
    x, display = prepare_input(image, size)
    labels = class_labels(model)
    index = None if target is None else resolve_target(target, labels)
    first = list(dict.fromkeys(first))  # (once each)
    unknown = [name for name in first if name not in MAP_NAMES]
    if unknown:
        raise AnalysisError(f"Unknown map {short(unknown[0], 60)}: not one of the model's.")

    def keep_output(name: str, output: torch.Tensor) -> torch.Tensor:
        # Not a copy: the model has no in-place operations, and autograd keeps these tensors
        # (the block outputs are the ones the Grad-CAM gradients are taken with respect to).
        return output

    with model_lock(model), eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        captured = Capture(map_modules(model), keep=keep_output)
        live = Capture(model.blocks, keep=keep_output)
        with captured, live:
            # Requiring a gradient on the input makes every block output part of the graph
            # even when the parameters are frozen; no gradient reaches it (or the weights).
            # Channels-last activations make the convolutions ~20% faster on a CPU.
            x = x.to(model_device(model)).contiguous(memory_format=torch.channels_last)
            logits = model(x.requires_grad_(True))[0]  # (classes,)
        head = _prediction(model, logits, index, display, size, labels, top_k)
        # The same on the device: the score to explain (a GPU reads nothing back for it).
        score = logits[head.target]
        head = replace(head, elapsed_s=time.perf_counter() - started)
        if on_partial is not None:
            on_partial(head)
        outputs = {name: output[0] for name, output in captured.outputs.items()}
        captured.outputs.clear()
        # The maps the page shows at once, compacted before the backward pass.
        maps = _compacted({name: outputs.pop(name) for name in first}, storage, logits)[0]
        view = replace(
            _with_maps(model, head, maps), elapsed_s=time.perf_counter() - started, stage="view"
        )
        if on_partial is not None and first:
            on_partial(view)
        cams = _gradcams(score, live.outputs)
        with torch.no_grad():
            cam_host = to_host(
                {
                    "gradcam_raw": list(cams.values()),
                    "gradcam": [upsample(cam, size) for cam in cams.values()],
                }
            )
        with_cams = replace(
            view,
            gradcam_raw=OrderedDict(zip(cams, cam_host["gradcam_raw"], strict=True)),
            gradcam=OrderedDict(zip(cams, cam_host["gradcam"], strict=True)),
            elapsed_s=time.perf_counter() - started,
            stage="gradcam",
        )
        if on_partial is not None:
            on_partial(with_cams)
        # Every other map, once the backward pass has freed what it held: one buffer, so
        # they reach the host in one copy, with the BatchNorm affines in another.
        with torch.no_grad():
            affine = [t for name in SEPCONV_NAMES for t in bn_scale_shift(_sepconv_bn(model, name))]
        rest, host = _compacted(outputs, storage, logits, {"bn_affine": affine})
        del outputs
        del cams
        live.outputs.clear()
    whole = _with_maps(model, with_cams, maps | rest, host["bn_affine"])
    return replace(whole, elapsed_s=time.perf_counter() - started, stage="complete")


def _compacted(
    outputs: dict[str, torch.Tensor],
    storage: Storage,
    like: torch.Tensor,
    floats: dict[str, list[torch.Tensor]] | None = None,
) -> tuple[dict[str, Map], dict[str, list[np.ndarray]]]:
    """``outputs`` (name -> (C, H, W) float tensor) as host :class:`Map` objects, through one
    :class:`MapArena`, and ``floats`` as host arrays."""
    if not outputs:
        return {}, to_host(floats) if floats else {}
    arena = MapArena({name: tuple(t.shape) for name, t in outputs.items()}, storage, like)
    with torch.no_grad():
        arena.fill(outputs)
    return arena.to_host(floats)


def _prediction(
    model: Xception,
    logits: torch.Tensor,
    index: int | None,
    display: np.ndarray,
    size: int,
    labels: list[str],
    top_k: int,
) -> Analysis:
    """What the logits give, as an :class:`Analysis` at stage "prediction" (one copy)."""
    with torch.no_grad():
        host = to_host(
            {
                "logits": [logits.detach().float()],
                "probabilities": [torch.softmax(logits.detach().float(), dim=0)],
            }
        )
    probabilities = host["probabilities"][0]
    return Analysis(
        image=_read_only(display),
        size=size,
        weights=weights_name(model),
        labels=labels,
        logits=host["logits"][0],
        probabilities=probabilities,
        top=top_predictions(probabilities, labels, top_k),
        # The top class: the first of the stable order (ties go to the lower index).
        target=int(np.argmax(host["logits"][0])) if index is None else index,
        sepconvs=OrderedDict(),
        convs=OrderedDict(),
        blocks=OrderedDict(),
        gradcam_raw=OrderedDict(),
        gradcam=OrderedDict(),
        bn_affine={},
        device=model_device(model).type,
        stage="prediction",
    )


def _with_maps(
    model: Xception,
    head: Analysis,
    maps: dict[str, Map],
    affine: list[np.ndarray] | None = None,
) -> Analysis:
    """``head`` with the maps of ``maps`` (those there, in network order; a separable conv
    with both halves) and, given them, the BatchNorm affines (in SEPCONV_NAMES order)."""
    sepconvs = OrderedDict(
        (
            name,
            SepConvMaps(
                name, SEPCONV_BLOCK[name], maps[f"{name}.depthwise"], maps[f"{name}.pointwise"]
            ),
        )
        for name in SEPCONV_NAMES
        if f"{name}.depthwise" in maps and f"{name}.pointwise" in maps
    )
    bn_affine = (
        {}
        if affine is None
        else {name: (affine[2 * i], affine[2 * i + 1]) for i, name in enumerate(SEPCONV_NAMES)}
    )
    return replace(
        head,
        sepconvs=sepconvs,
        convs=OrderedDict((name, maps[name]) for name in model.convs if name in maps),
        blocks=OrderedDict((name, maps[name]) for name in BLOCKS if name in maps),
        bn_affine=bn_affine,
    )


def _gradcams(score: torch.Tensor, activations: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Grad-CAM (h, w) of every block from one backward pass of ``score`` (a logit), on the
    activations' device."""
    names = list(BLOCKS)
    gradients = torch.autograd.grad(score, [activations[name] for name in names])
    with torch.no_grad():
        return {
            name: gradcam_from(activations[name], gradient)[0, 0].float()
            for name, gradient in zip(names, gradients, strict=True)
        }


def upsample(cam: torch.Tensor, size: int) -> torch.Tensor:
    """(h, w) -> (S, S), as Captum's ``LayerAttribution.interpolate(..., "bilinear")``."""
    return F.interpolate(cam[None, None], (size, size), mode=GRADCAM_INTERPOLATION)[0, 0]


def _sepconv_bn(model: Xception, name: str) -> nn.BatchNorm2d:
    """The BatchNorm that follows separable conv ``name`` (``block5_sepconv1_bn``)."""
    block = getattr(model, SEPCONV_BLOCK[name])
    return getattr(block, f"{name.split('_', 1)[1]}_bn")
