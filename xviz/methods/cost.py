"""What depthwise separable convolutions save: parameters, multiply-adds and measured time.

Vocabulary of seed 004 (REFERENCE.md section 4): an input ``D_F x D_F x M``, an output
``D_G x D_G x N``, a kernel ``D_K``.

- standard convolution: ``M*N*D_K^2`` params, ``M*N*D_K^2*D_G^2`` multiply-adds;
- depthwise separable: ``M*D_K^2 + M*N`` params, ``M*D_K^2*D_G^2 + M*N*D_G^2`` multiply-adds;
- ratio separable / standard ``= 1/N + 1/D_K^2``.

Layout: formulas -> per-layer costs of a model (``layer_costs``) -> network totals
(``network_cost``) -> measured latency of each separable conv against its standard twin
(``measure_latency``, ``measure_all``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import torch
from torch import nn

from xviz.engine.cache import BoundedCache
from xviz.errors import Cancelled
from xviz.model.xception import BLOCKS, SEPCONV_BLOCK, SeparableConv2d, Xception

Kind = Literal["sepconv", "conv", "residual", "dense"]

BYTES_PER_VALUE = 4  # float32


class Cost(NamedTuple):
    """Parameters and multiply-adds (one per MAC, batch 1) of one convolution."""

    params: int
    madds: int


def standard_cost(M: int, N: int, D_K: int, D_G: int) -> Cost:
    """A standard ``D_K x D_K`` convolution from ``M`` to ``N`` channels, output side ``D_G``."""
    return Cost(M * N * D_K**2, M * N * D_K**2 * D_G**2)


def depthwise_cost(M: int, D_K: int, D_G: int) -> Cost:
    """The depthwise stage: one ``D_K x D_K`` filter per input channel."""
    return Cost(M * D_K**2, M * D_K**2 * D_G**2)


def pointwise_cost(M: int, N: int, D_G: int) -> Cost:
    """The pointwise stage: a 1x1 convolution from ``M`` to ``N`` channels."""
    return Cost(M * N, M * N * D_G**2)


def formula_ratio(N: int, D_K: int) -> float:
    """Separable / standard cost, ``1/N + 1/D_K^2`` (same for params and multiply-adds)."""
    return 1 / N + 1 / D_K**2


def madds_per_byte(madds: int, values_moved: int) -> float:
    """Arithmetic intensity: multiply-adds per byte of float32 read or written at least once."""
    return madds / (values_moved * BYTES_PER_VALUE)


@dataclass(frozen=True)
class LayerCost:
    """Cost of one convolution (or the classifier) of the network, batch 1.

    ``params``/``madds`` are what the real network does (separable form for a
    ``"sepconv"``, the layer itself otherwise); ``standard_*`` is a standard convolution
    with the same ``M``, ``N``, ``D_K``, stride and output (the layer itself when it is
    not separable). ``depthwise_*``/``pointwise_*`` are 0 unless ``kind == "sepconv"``.
    Params are weights (and the classifier's bias); BatchNorm is counted in
    ``NetworkCost``. Multiply-adds are ``FlopCounterMode`` FLOPs / 2.
    """

    name: str
    flow: str
    block: str
    kind: Kind
    in_channels: int  # M
    out_channels: int  # N
    kernel_size: int  # D_K
    stride: int
    input_side: int  # D_F
    output_side: int  # D_G
    depthwise_params: int
    pointwise_params: int
    params: int
    depthwise_madds: int
    pointwise_madds: int
    madds: int
    standard_params: int
    standard_madds: int

    @property
    def ratio(self) -> float:
        """Counted multiply-adds of the real layer / its standard twin."""
        return self.madds / self.standard_madds

    @property
    def formula_ratio(self) -> float | None:
        """``1/N + 1/D_K^2`` for a separable conv, ``None`` for the others."""
        if self.kind != "sepconv":
            return None
        return formula_ratio(self.out_channels, self.kernel_size)

    @property
    def speedup(self) -> float:
        """Predicted speed-up of the real layer over its standard twin: standard / real madds."""
        return self.standard_madds / self.madds

    @property
    def depthwise_intensity(self) -> float:
        """Multiply-adds per byte of the depthwise stage (input, output, weights once)."""
        M, D_F, D_G = self.in_channels, self.input_side, self.output_side
        return madds_per_byte(self.depthwise_madds, M * D_F**2 + M * D_G**2 + self.depthwise_params)

    @property
    def pointwise_intensity(self) -> float:
        """Multiply-adds per byte of the pointwise stage (input, output, weights once)."""
        M, N, D_G = self.in_channels, self.out_channels, self.output_side
        return madds_per_byte(self.pointwise_madds, M * D_G**2 + N * D_G**2 + self.pointwise_params)

    @property
    def standard_intensity(self) -> float:
        """Multiply-adds per byte of the standard twin (input, output, weights once)."""
        M, N, D_F, D_G = self.in_channels, self.out_channels, self.input_side, self.output_side
        return madds_per_byte(self.standard_madds, M * D_F**2 + N * D_G**2 + self.standard_params)


@dataclass(frozen=True)
class NetworkCost:
    """Totals of the whole network at one input size, real Xception vs all-standard.

    ``params`` counts conv weights, the classifier and BatchNorm's trainable gamma and beta
    (``bn_params``): 22,855,952 for the ImageNet head, Keras' "trainable params".
    ``bn_statistics`` (running mean and variance, Keras' "non-trainable params") is not in
    ``params``. BN, ReLU, pooling and additions cost no multiply-adds here, as in
    ``FlopCounterMode``.
    """

    input_size: int
    layers: tuple[LayerCost, ...]
    bn_params: int
    bn_statistics: int

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers) + self.bn_params

    @property
    def madds(self) -> int:
        return sum(layer.madds for layer in self.layers)

    @property
    def standard_params(self) -> int:
        """Params of the same network with every separable conv replaced by a standard one."""
        return sum(layer.standard_params for layer in self.layers) + self.bn_params

    @property
    def standard_madds(self) -> int:
        return sum(layer.standard_madds for layer in self.layers)

    @property
    def params_ratio(self) -> float:
        return self.params / self.standard_params

    @property
    def madds_ratio(self) -> float:
        return self.madds / self.standard_madds


def _named_layers(model: Xception) -> dict[nn.Module, str]:
    """The modules ``layer_costs`` reports on, by name: sepconvs, plain convs, classifier."""
    named: dict[nn.Module, str] = {}
    named.update((module, name) for name, module in model.sepconvs.items())
    named.update((module, name) for name, module in model.convs.items())
    if model.classifier is not None:
        for path, module in model.classifier.named_modules(prefix="classifier"):
            if isinstance(module, nn.Linear):
                named[module] = path.replace(".", "_")
    return named


def _traced_shapes(
    model: Xception, modules: Sequence[nn.Module], input_size: int
) -> list[tuple[nn.Module, torch.Size, torch.Size]]:
    """Run ``model`` once on a meta input; ``(module, input shape, output shape)`` in call order."""
    calls: list[tuple[nn.Module, torch.Size, torch.Size]] = []

    def record(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        calls.append((module, args[0].shape, output.shape))

    handles = [module.register_forward_hook(record) for module in modules]
    try:
        model(torch.empty(1, 3, input_size, input_size, device="meta"))  # (B, 3, S, S)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _layer_cost(
    name: str, module: nn.Module, shape_in: torch.Size, shape_out: torch.Size
) -> LayerCost:
    none = Cost(0, 0)
    if isinstance(module, nn.Linear):
        flow = block = "head"
        kind: Kind = "dense"
        M, N, D_K, stride, D_F, D_G = module.in_features, module.out_features, 1, 1, 1, 1
        bias = N if module.bias is not None else 0
        dw, pw, real = none, none, Cost(M * N + bias, M * N)
        std = real
    else:
        block = SEPCONV_BLOCK.get(name, name.split("_")[0])
        flow = BLOCKS[block].flow
        D_F, D_G = shape_in[-1], shape_out[-1]
        if isinstance(module, SeparableConv2d):
            kind = "sepconv"
            M, N = module.depthwise.in_channels, module.pointwise.out_channels
            D_K, stride = module.depthwise.kernel_size[0], module.depthwise.stride[0]
            dw, pw = depthwise_cost(M, D_K, D_G), pointwise_cost(M, N, D_G)
            real = Cost(dw.params + pw.params, dw.madds + pw.madds)
            std = standard_cost(M, N, D_K, D_G)
        else:
            kind = "residual" if name.endswith("_residual") else "conv"
            M, N = module.in_channels, module.out_channels
            D_K, stride = module.kernel_size[0], module.stride[0]
            dw, pw, real = none, none, standard_cost(M, N, D_K, D_G)
            std = real
    return LayerCost(
        name=name,
        flow=flow,
        block=block,
        kind=kind,
        in_channels=M,
        out_channels=N,
        kernel_size=D_K,
        stride=stride,
        input_side=D_F,
        output_side=D_G,
        depthwise_params=dw.params,
        pointwise_params=pw.params,
        params=real.params,
        depthwise_madds=dw.madds,
        pointwise_madds=pw.madds,
        madds=real.madds,
        standard_params=std.params,
        standard_madds=std.madds,
    )


def layer_costs(model: Xception, input_size: int = 299) -> list[LayerCost]:
    """One row per convolution of ``model`` (and classifier layer), in network order.

    The 34 separable convs, block1's two convs, the 4 residual 1x1 convs (at their block,
    after its separable convs, as the forward pass runs them) and the classifier. Shapes
    come from one hooked forward pass at ``input_size`` of a meta-device twin of ``model``
    (same head, padding and layers).
    """
    # A meta-device twin: nothing is computed, and the live model (maybe serving an app
    # request on another thread) is never touched.
    with torch.device("meta"):
        twin = Xception(head=model.head_name, padding=model.padding, bn_eps=model.bn_eps).eval()
    named = _named_layers(twin)
    calls = _traced_shapes(twin, list(named), input_size)
    return [_layer_cost(named[module], module, s_in, s_out) for module, s_in, s_out in calls]


def network_cost(model: Xception, input_size: int = 299) -> NetworkCost:
    """Whole-network totals of ``model`` at ``input_size`` (see ``NetworkCost``)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    return NetworkCost(
        input_size=input_size,
        layers=tuple(layer_costs(model, input_size)),
        bn_params=sum(p.numel() for bn in bns for p in bn.parameters()),
        bn_statistics=sum(bn.running_mean.numel() + bn.running_var.numel() for bn in bns),
    )


@dataclass(frozen=True)
class LatencyResult:
    """Measured time of one separable conv and of its standard twin, batch 1.

    Times are medians over ``repeats`` runs in milliseconds; ``*_iqr_ms`` is the
    interquartile range (spread). ``depthwise_ms``/``pointwise_ms`` time each stage alone.
    """

    layer: LayerCost
    device: str
    threads: int
    repeats: int
    standard_ms: float
    standard_iqr_ms: float
    separable_ms: float
    separable_iqr_ms: float
    depthwise_ms: float
    pointwise_ms: float

    @property
    def measured_speedup(self) -> float:
        return self.standard_ms / self.separable_ms

    @property
    def theoretical_speedup(self) -> float:
        return self.layer.speedup

    @property
    def depthwise_time_share(self) -> float:
        """Fraction of the separable conv's time spent in its depthwise stage (timed alone)."""
        return self.depthwise_ms / (self.depthwise_ms + self.pointwise_ms)

    @property
    def depthwise_madds_share(self) -> float:
        return self.layer.depthwise_madds / self.layer.madds


# Measured latencies by device, shape and settings (a few hundred shapes at most).
_LATENCY_CACHE = BoundedCache(max_entries=512, size_of=lambda _: 0)


def device_label(device: torch.device) -> str:
    """A readable name of the device: ``"cpu"`` or ``"cuda:0 (NVIDIA H100 80GB HBM3)"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return device.type


def _iqr(values: list[float]) -> float:
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1


def _time_ms(
    modules: Sequence[nn.Module],
    x: torch.Tensor,
    repeats: int,
    warmup: int,
    sync: Callable[[], None],
) -> list[list[float]]:
    """Per module, ``repeats`` wall times in ms; modules are interleaved so drift hits all alike."""
    times: list[list[float]] = [[] for _ in modules]
    for run in range(warmup + repeats):
        for module, log in zip(modules, times, strict=True):
            sync()
            start = time.perf_counter()
            module(x)
            sync()
            if run >= warmup:
                log.append((time.perf_counter() - start) * 1e3)
    return times


def measure_latency(
    layer: LayerCost,
    device: str | torch.device = "cpu",
    repeats: int = 10,
    warmup: int = 2,
    use_cache: bool = True,
) -> LatencyResult:
    """Time a separable conv and its standard twin at the layer's real shape on ``device``.

    Builds ``SeparableConv2d(M, N, D_K)`` and ``Conv2d(M, N, D_K, padding=D_K // 2)`` with
    random weights, input ``(1, M, D_F, D_F)``, under ``torch.inference_mode``; runs
    ``warmup`` untimed calls then ``repeats`` timed ones (``torch.cuda.synchronize`` around
    each on CUDA). Results are cached per device, shape, repeats, warm-up and thread count.
    """
    if layer.kind != "sepconv":
        raise ValueError(f"{layer.name} is a {layer.kind}, not a separable conv")
    if repeats < 2:
        raise ValueError(f"repeats must be at least 2 to measure a spread, not {repeats}")
    device = torch.device(device)
    label = device_label(device)
    threads = torch.get_num_threads()
    M, N, D_K = layer.in_channels, layer.out_channels, layer.kernel_size
    key = (label, (M, N, D_K, layer.input_side), repeats, warmup, threads)
    cached = _LATENCY_CACHE.get(key) if use_cache else None
    if cached is not None:
        return replace(cached, layer=layer)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        separable = SeparableConv2d(M, N, D_K).to(device).eval()
        standard = nn.Conv2d(M, N, D_K, padding=D_K // 2, bias=False).to(device).eval()
        x = torch.randn(1, M, layer.input_side, layer.input_side, generator=generator).to(device)
        modules = [standard, separable, separable.depthwise, separable.pointwise]
        std_t, sep_t, dw_t, pw_t = _time_ms(modules, x, repeats, warmup, sync)
    result = LatencyResult(
        layer=layer,
        device=label,
        threads=threads,
        repeats=repeats,
        standard_ms=statistics.median(std_t),
        standard_iqr_ms=_iqr(std_t),
        separable_ms=statistics.median(sep_t),
        separable_iqr_ms=_iqr(sep_t),
        depthwise_ms=statistics.median(dw_t),
        pointwise_ms=statistics.median(pw_t),
    )
    if use_cache:
        _LATENCY_CACHE.put(key, result)
    return result


def measure_all(
    model: Xception,
    device: str | torch.device = "cpu",
    input_size: int = 299,
    repeats: int = 10,
    warmup: int = 2,
    progress: Callable[[int, int, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    pause: Callable[[], object] | None = None,
) -> list[LatencyResult]:
    """``measure_latency`` for the 34 separable convs, in network order.

    Each distinct shape is measured once and shared (the 24 middle-flow sepconvs and
    block13_sepconv1 have one shape). ``progress(done, total, name)`` is called before each
    distinct shape and once at the end with ``done == total``; ``cancel()`` returning True
    raises ``Cancelled`` between shapes, and ``pause()`` (``Runner.background``) is called
    there too: what it runs falls between two shapes' timings, not inside one.
    """
    layers = [layer for layer in layer_costs(model, input_size) if layer.kind == "sepconv"]
    firsts: dict[tuple[int, int, int, int], LayerCost] = {}
    for layer in layers:
        shape = (layer.in_channels, layer.out_channels, layer.kernel_size, layer.input_side)
        firsts.setdefault(shape, layer)
    measured: dict[tuple[int, int, int, int], LatencyResult] = {}
    for done, (shape, layer) in enumerate(firsts.items()):
        if pause is not None:
            pause()
        if cancel is not None and cancel():
            raise Cancelled(f"latency measurement cancelled after {done} of {len(firsts)} shapes")
        if progress is not None:
            progress(done, len(firsts), layer.name)
        measured[shape] = measure_latency(layer, device, repeats, warmup)
    if progress is not None:
        progress(len(firsts), len(firsts), "done")
    return [
        replace(
            measured[(layer.in_channels, layer.out_channels, layer.kernel_size, layer.input_side)],
            layer=layer,
        )
        for layer in layers
    ]


def clear_latency_cache() -> None:
    """Forget every measured latency (for example after changing the thread count)."""
    _LATENCY_CACHE.clear()


# --- how long measure_all takes --------------------------------------------------------------


@dataclass(frozen=True)
class MachineSpeed:
    """What one quick calibration measured on a device: the multiply-add rate of a standard
    convolution and the memory rate of a depthwise one (the stage that is memory-bound)."""

    device: str
    madds_per_s: float
    bytes_per_s: float


# Calibration layers: a compute-bound standard conv and a memory-bound depthwise conv, small
# enough to time in tens of milliseconds on a CPU.
_CALIBRATION_CONV = (256, 19)  # channels in and out, side: 213 M multiply-adds
_CALIBRATION_DEPTHWISE = (128, 96)  # channels, side: 9.4 MB moved


def machine_speed(device: str | torch.device = "cpu", runs: int = 5) -> MachineSpeed:
    """Calibrate ``device``: the median time of ``runs`` calls (after one warm-up) of a
    standard 3x3 conv and of a depthwise 3x3 conv, as rates; medians as ``measure_latency``
    takes them. About 0.1 s on an idle 2-core CPU."""
    device = torch.device(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    channels, side = _CALIBRATION_CONV
    dw_channels, dw_side = _CALIBRATION_DEPTHWISE
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device).eval()
        depthwise = nn.Conv2d(
            dw_channels, dw_channels, 3, padding=1, groups=dw_channels, bias=False
        ).to(device)
        x = torch.randn(1, channels, side, side, generator=generator).to(device)
        y = torch.randn(1, dw_channels, dw_side, dw_side, generator=generator).to(device)
        (conv_t,) = _time_ms([conv], x, runs, 1, sync)
        (dw_t,) = _time_ms([depthwise.eval()], y, runs, 1, sync)
    conv_madds = standard_cost(channels, channels, 3, side).madds
    dw_values = 2 * dw_channels * dw_side**2 + dw_channels * 9  # input, output, weights
    return MachineSpeed(
        device=device_label(device),
        madds_per_s=conv_madds / (statistics.median(conv_t) / 1e3),
        bytes_per_s=dw_values * BYTES_PER_VALUE / (statistics.median(dw_t) / 1e3),
    )


def _distinct_sepconvs(layers: Sequence[LayerCost]) -> list[LayerCost]:
    """The separable convs of ``layers``, one per shape, as ``measure_all`` times them."""
    firsts: dict[tuple[int, int, int, int], LayerCost] = {}
    for layer in layers:
        if layer.kind == "sepconv":
            shape = (layer.in_channels, layer.out_channels, layer.kernel_size, layer.input_side)
            firsts.setdefault(shape, layer)
    return list(firsts.values())


def measure_all_seconds(
    layers: Sequence[LayerCost], speed: MachineSpeed, repeats: int = 10, warmup: int = 2
) -> float:
    """About how long ``measure_all`` takes for ``layers`` on the calibrated device.

    Each distinct shape runs its standard twin, the separable conv and the depthwise and
    pointwise stages alone, ``warmup + repeats`` times; each call is predicted to take its
    multiply-adds at ``speed.madds_per_s`` plus its bytes at ``speed.bytes_per_s`` (bytes
    from the layer's arithmetic intensities).
    """

    def seconds(madds: int, intensity: float) -> float:
        return madds / speed.madds_per_s + madds / intensity / speed.bytes_per_s

    total = 0.0
    for layer in _distinct_sepconvs(layers):
        stages = seconds(layer.depthwise_madds, layer.depthwise_intensity) + seconds(
            layer.pointwise_madds, layer.pointwise_intensity
        )
        # Standard twin, separable conv (both stages), and each stage alone.
        total += seconds(layer.standard_madds, layer.standard_intensity) + 2 * stages
    return (warmup + repeats) * total


class MeasureClock:
    """How long ``measure_all`` takes on this machine, per input size: predicted from a
    calibration (:func:`machine_speed`) times how far off the last measurement's prediction
    was, or, once a measurement ran at that size, what it took."""

    def __init__(self, model: Xception, speed: MachineSpeed) -> None:
        self.model = model
        self.speed = speed
        self.took: dict[int, float] = {}  # input size -> seconds its measurement took
        self.correction = 1.0  # took / predicted, of the last measurement
        self._layers: dict[int, list[LayerCost]] = {}

    def predicted_s(self, input_size: int) -> float:
        """Seconds a measurement at ``input_size`` should take."""
        if input_size not in self._layers:
            self._layers[input_size] = layer_costs(self.model, input_size)
        return measure_all_seconds(self._layers[input_size], self.speed) * self.correction

    def record(self, input_size: int, seconds: float) -> None:
        """A measurement at ``input_size`` took ``seconds``."""
        self.correction = 1.0
        self.correction = seconds / self.predicted_s(input_size)
        self.took[input_size] = seconds
