"""Tests of xviz.methods.cost against FlopCounterMode, the model's own tensors and the paper's
numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from xviz.errors import Cancelled
from xviz.methods.cost import (
    LayerCost,
    MachineSpeed,
    MeasureClock,
    clear_latency_cache,
    layer_costs,
    machine_speed,
    measure_all,
    measure_all_seconds,
    measure_latency,
    network_cost,
)
from xviz.model.xception import SEPCONV_NAMES, Xception

# Output side of each block at 299 and 150 (REFERENCE.md section 1).
BLOCK_SIDES = {
    299: {"block2": 74, "block3": 37, "block4": 19, "block13": 10},
    150: {"block2": 36, "block3": 18, "block4": 9, "block13": 5},
}


@pytest.fixture(scope="module")
def costs(model: Xception) -> list[LayerCost]:
    return layer_costs(model, 299)


@pytest.fixture(scope="module")
def counted(model: Xception) -> tuple[int, dict[str, int]]:
    """FlopCounterMode on one real forward pass at 299: total and per-module FLOPs."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 299, 299))
    per_module = {
        path.removeprefix("Xception."): sum(ops.values())
        for path, ops in counter.get_flop_counts().items()
    }
    return counter.get_total_flops(), per_module


def _module_paths(model: Xception) -> dict[str, str]:
    """Layer name -> module path in the model (``block2_residual`` -> ``block2.residual``)."""
    paths = {module: path for path, module in model.named_modules()}
    named = {**model.sepconvs, **model.convs, "classifier": model.classifier}
    return {name: paths[module] for name, module in named.items()}


def test_rows_in_network_order(costs: list[LayerCost]) -> None:
    names = [c.name for c in costs]
    assert len(costs) == 34 + 2 + 4 + 1
    assert names[:5] == [
        "block1_conv1",
        "block1_conv2",
        "block2_sepconv1",
        "block2_sepconv2",
        "block2_residual",
    ]
    assert names[-1] == "classifier"
    assert [c.name for c in costs if c.kind == "sepconv"] == list(SEPCONV_NAMES)
    assert [c.name for c in costs if c.kind == "residual"] == [
        f"block{b}_residual" for b in (2, 3, 4, 13)
    ]
    assert {c.flow for c in costs} == {"entry", "middle", "exit", "head"}
    assert [c.kind for c in costs].count("dense") == 1


@pytest.mark.parametrize("size", [299, 150])
def test_shapes_match_the_reference_table(model: Xception, size: int) -> None:
    rows = {c.name: c for c in layer_costs(model, size)}
    assert rows["block1_conv2"].output_side == {299: 147, 150: 72}[size]
    for block, side in BLOCK_SIDES[size].items():
        assert rows[f"{block}_residual"].output_side == side
        assert rows[f"{block}_residual"].stride == 2
    assert rows["block5_sepconv1"].input_side == BLOCK_SIDES[size]["block4"]
    assert rows["block14_sepconv2"].output_side == BLOCK_SIDES[size]["block13"]
    for row in rows.values():
        if row.kind == "sepconv":
            assert (row.stride, row.kernel_size, row.input_side) == (1, 3, row.output_side)


def test_madds_equal_flop_counter_per_layer(
    model: Xception, costs: list[LayerCost], counted: tuple[int, dict[str, int]]
) -> None:
    _, flops = counted
    paths = _module_paths(model)
    for row in costs:
        path = paths[row.name]
        assert row.madds * 2 == flops[path], row.name
        if row.kind == "sepconv":
            assert row.depthwise_madds * 2 == flops[f"{path}.depthwise"], row.name
            assert row.pointwise_madds * 2 == flops[f"{path}.pointwise"], row.name


def test_standard_twin_equals_flop_counter_of_a_real_conv(costs: list[LayerCost]) -> None:
    for row in costs:
        if row.kind != "sepconv":
            assert (row.standard_params, row.standard_madds) == (row.params, row.madds)
            continue
        with torch.device("meta"):
            conv = nn.Conv2d(
                row.in_channels, row.out_channels, row.kernel_size, padding=1, bias=False
            )
            x = torch.empty(1, row.in_channels, row.input_side, row.input_side)
        with FlopCounterMode(display=False) as counter:
            y = conv(x)
        assert y.shape[-1] == row.output_side
        assert row.standard_madds * 2 == counter.get_total_flops(), row.name
        assert row.standard_params == conv.weight.numel(), row.name


def test_params_equal_the_model_tensors(model: Xception, costs: list[LayerCost]) -> None:
    rows = {c.name: c for c in costs}
    for name, sep in model.sepconvs.items():
        assert rows[name].depthwise_params == sep.depthwise.weight.numel()
        assert rows[name].pointwise_params == sep.pointwise.weight.numel()
        assert rows[name].params == sum(p.numel() for p in sep.parameters())
    for name, conv in model.convs.items():
        assert rows[name].params == sum(p.numel() for p in conv.parameters())
    head = model.classifier
    assert rows["classifier"].params == head.weight.numel() + head.bias.numel()


def test_formula_ratio_equals_counted_ratio(costs: list[LayerCost]) -> None:
    for row in costs:
        if row.kind == "sepconv":
            assert row.ratio == pytest.approx(row.formula_ratio, rel=1e-12)
            assert row.params / row.standard_params == pytest.approx(row.formula_ratio, rel=1e-12)
        else:
            assert row.ratio == 1 and row.formula_ratio is None


def test_totals_at_299(model: Xception, counted: tuple[int, dict[str, int]]) -> None:
    total_flops, _ = counted
    net = network_cost(model, 299)
    assert net.params == 22_855_952 == sum(p.numel() for p in model.parameters())
    assert net.bn_statistics == 54_528  # Keras' non-trainable params
    assert net.madds * 2 == total_flops
    assert net.madds == pytest.approx(8.36e9, rel=0.005)
    assert net.standard_madds > net.madds and net.standard_params > net.params
    assert net.madds_ratio == pytest.approx(net.madds / net.standard_madds)


def test_kitchenware_head_rows() -> None:
    model = Xception(head="kitchenware")
    net = network_cost(model, 150)
    dense = [c for c in net.layers if c.kind == "dense"]
    assert [c.name for c in dense] == ["classifier_fc1", "classifier_fc2"]
    assert net.params == sum(p.numel() for p in model.parameters())


def test_layer_costs_leaves_no_hooks(model: Xception) -> None:
    layer_costs(model, 150)
    assert not any(m._forward_hooks for m in model.modules())
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_measure_latency_on_a_tiny_shape(model: Xception) -> None:
    clear_latency_cache()
    layer = next(c for c in layer_costs(model, 32) if c.name == "block2_sepconv1")  # 13x13
    result = measure_latency(layer, "cpu", repeats=3, warmup=1)
    assert result.device == "cpu" and result.repeats == 3
    assert result.threads == torch.get_num_threads()
    for value in (
        result.standard_ms,
        result.separable_ms,
        result.depthwise_ms,
        result.pointwise_ms,
    ):
        assert 0 < value < 10_000
    assert result.standard_iqr_ms >= 0 and result.separable_iqr_ms >= 0
    assert result.measured_speedup == result.standard_ms / result.separable_ms
    assert result.theoretical_speedup == layer.speedup
    assert 0 < result.depthwise_time_share < 1
    assert measure_latency(layer, "cpu", repeats=3, warmup=1) == result  # cached
    with pytest.raises(ValueError, match="not a separable conv"):
        measure_latency(layer_costs(model, 32)[0], "cpu")


def test_measure_all_dedupes_shapes_and_reports_progress(model: Xception) -> None:
    calls: list[tuple[int, int, str]] = []
    results = measure_all(
        model, "cpu", input_size=32, repeats=2, warmup=0, progress=lambda *a: calls.append(a)
    )
    assert [r.layer.name for r in results] == list(SEPCONV_NAMES)
    distinct = {(r.layer.in_channels, r.layer.out_channels, r.layer.input_side) for r in results}
    assert len(calls) == len(distinct) + 1 and calls[-1][:2] == (len(distinct), len(distinct))
    middle = [r for r in results if r.layer.flow == "middle"]
    assert len({r.standard_ms for r in middle}) == 1
    with pytest.raises(Cancelled):
        measure_all(model, "cpu", input_size=32, repeats=2, cancel=lambda: True)


# --- how long measure_all takes --------------------------------------------------------------


def test_machine_speed_gives_rates_of_this_device() -> None:
    speed = machine_speed("cpu", runs=2)
    assert speed.device == "cpu"
    assert 0 < speed.madds_per_s < float("inf") and 0 < speed.bytes_per_s < float("inf")


def _by_hand(model: Xception, size: int, speed: MachineSpeed, runs: int) -> float:
    """measure_all's calls, counted from the shapes alone: per distinct (M, N, D_K, D_F), runs
    x (standard conv + separable conv + depthwise alone + pointwise alone), each taking its
    multiply-adds at the compute rate plus the float32 values it reads and writes once at
    the memory rate."""
    seen: set[tuple[int, int, int, int]] = set()
    total = 0.0
    for c in layer_costs(model, size):
        shape = (c.in_channels, c.out_channels, c.kernel_size, c.input_side)
        if c.kind != "sepconv" or shape in seen:
            continue
        seen.add(shape)
        M, N, K, F, G = c.in_channels, c.out_channels, c.kernel_size, c.input_side, c.output_side
        std = (M * N * K * K * G * G, M * F * F + N * G * G + M * N * K * K)
        dw = (M * K * K * G * G, M * F * F + M * G * G + M * K * K)
        pw = (M * N * G * G, M * G * G + N * G * G + M * N)

        def seconds(madds_values: tuple[int, int]) -> float:
            madds, values = madds_values
            return madds / speed.madds_per_s + 4 * values / speed.bytes_per_s

        total += seconds(std) + 2 * (seconds(dw) + seconds(pw))
    assert len(seen) == 10  # the distinct shapes measure_all times
    return runs * total


@pytest.mark.parametrize("size", [150, 299])
def test_measure_all_seconds_counts_every_call_measure_all_makes(model: Xception, size) -> None:
    speed = MachineSpeed("cpu", madds_per_s=2e10, bytes_per_s=3e9)
    predicted = measure_all_seconds(layer_costs(model, size), speed, repeats=10, warmup=2)
    assert predicted == pytest.approx(_by_hand(model, size, speed, runs=12), rel=1e-9)
    assert measure_all_seconds(layer_costs(model, size), speed, repeats=4, warmup=0) == (
        pytest.approx(predicted * 4 / 12, rel=1e-9)
    )


def test_measure_clock_learns_from_a_measurement(model: Xception) -> None:
    speed = MachineSpeed("cpu", madds_per_s=2e10, bytes_per_s=3e9)
    clock = MeasureClock(model, speed)
    first_150, first_299 = clock.predicted_s(150), clock.predicted_s(299)
    assert first_150 == pytest.approx(_by_hand(model, 150, speed, runs=12), rel=1e-9)
    assert clock.took == {}
    clock.record(150, 3 * first_150)  # the machine was 3x slower than calibrated
    assert clock.took == {150: 3 * first_150}
    assert clock.predicted_s(150) == pytest.approx(3 * first_150)
    assert clock.predicted_s(299) == pytest.approx(3 * first_299)  # the same correction
    clock.record(299, first_299)  # a second measurement replaces the correction
    assert clock.predicted_s(150) == pytest.approx(first_150)
    assert clock.took == {150: 3 * first_150, 299: first_299}
