"""Host synchronisations and device-to-host transfers per run, counted on the CPU (see
tests/device_traffic.py for what counts and why a profiler on the CPU would not see them).

On a GPU each of these waits for the device; a run that makes hundreds costs many times its
arithmetic (the GPU issue measured 879 copies and 6.6x a forward+backward per analyze)."""

import numpy as np
import pytest
import torch
from torch import nn

from tests.device_traffic import DeviceTraffic
from xviz.engine.analysis import MAP_NAMES, analyze, to_map
from xviz.engine.inference import predict
from xviz.methods.ablation import Ablation, ablate
from xviz.methods.attribution import attribute

SIZE = 71


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def test_the_counter_counts_each_kind_of_read_and_nothing_on_the_host():
    layer = nn.Linear(4, 3)
    host = torch.arange(4.0)  # made on the host: reading it back is free
    with DeviceTraffic(layer) as traffic:
        y = layer(host * 2)  # computed from the weights: on the device
        assert host.tolist() == [0.0, 1.0, 2.0, 3.0] and float(host[1]) == 1.0
        assert traffic.transfers == traffic.syncs == 0
        copy = y.detach().cpu()  # 1: a copy, no longer on the device
        assert copy.numpy().shape == (3,) and traffic.numpy_on_device == 0
        y.max().item()  # 2
        int(y.argmax())  # 3
        bool((y > 0).any())  # 4
        y.tolist()  # 5
        y.to("cpu", torch.float64)  # 6
        y.to(torch.float16)  # stays on the device
        torch.empty(3).copy_(y.detach())  # 7
        torch.nonzero(y > 0)  # a sync, no transfer
        y.detach().numpy()  # would raise on a GPU
    assert traffic.transfers == 7 and traffic.syncs == 8 and traffic.numpy_on_device == 1
    assert traffic.where["scalar read"] == 3 and traffic.where["aten.nonzero"] == 1
    # float32 vector, float32 scalar, int64 index, bool, tolist, to(float64), copy_
    assert traffic.transferred_bytes == 12 + 4 + 8 + 1 + 12 + 12 + 12
    assert y.cpu() is y  # the patches are gone


def test_the_backward_pass_is_on_the_device_too():
    layer = nn.Linear(4, 3)
    x = torch.ones(1, 4, requires_grad=True)
    with DeviceTraffic(layer) as traffic:
        (gradient,) = torch.autograd.grad(layer(x).sum(), [x])
        assert traffic.marked(gradient)
        gradient.cpu()
    assert traffic.transfers == 1


def test_analyze_reads_the_device_a_few_times_not_once_per_map(model, image):
    with DeviceTraffic(model) as traffic:
        analysis = analyze(model, image, size=SIZE)
    assert len(analysis.maps) == len(MAP_NAMES)
    assert traffic.numpy_on_device == 0, traffic.where
    # One copy per stage a page can show early: the logits (the prediction); the Grad-CAMs;
    # the maps' float32 statistics with the BN affines, and their codes. Not one per map (88).
    assert traffic.transfers <= 4, traffic.where
    assert traffic.syncs <= 4, traffic.where


def test_the_maps_a_page_shows_first_cost_two_copies_more(model, image):
    first = ["block5_sepconv1.depthwise", "block5_sepconv1.pointwise"]
    with DeviceTraffic(model) as traffic:
        analysis = analyze(model, image, size=SIZE, first=first)
    assert len(analysis.maps) == len(MAP_NAMES)
    assert traffic.numpy_on_device == 0, traffic.where
    # The statistics and codes of the maps shown first come in their own two copies.
    assert traffic.transfers <= 6, traffic.where
    assert traffic.syncs <= 6, traffic.where


def test_analyze_with_an_explicit_target_and_float16_storage(model, image):
    with DeviceTraffic(model) as traffic:
        analyze(model, image, size=SIZE, target=3, storage="float16")
    assert traffic.numpy_on_device == 0 and traffic.transfers <= 4 and traffic.syncs <= 4


def test_to_map_is_one_transfer_per_buffer(model):
    with DeviceTraffic(model) as traffic:
        activation = model.block1.conv1(torch.zeros(1, 3, 8, 8))[0]
        m = to_map("block1_conv1", activation)
    assert m.shape == (32, 3, 3) and traffic.transfers <= 2 and traffic.numpy_on_device == 0


def test_predict_reads_the_probabilities_once(model, image):
    with DeviceTraffic(model) as traffic:
        predict(model, image, size=SIZE)
    assert traffic.numpy_on_device == 0 and traffic.transfers == 1, traffic.where


@pytest.mark.parametrize(
    ("method", "params"),
    [("saliency", {}), ("layer_conductance", {"block": "block4", "n_steps": 2})],
)
def test_an_attribution_reads_its_result_once(model, image, method, params):
    analysis = analyze(model, image, size=SIZE)
    with DeviceTraffic(model) as traffic:
        attribute(model, analysis, method=method, **params)
    assert traffic.numpy_on_device == 0 and traffic.transfers == 1, traffic.where


def test_an_ablation_reads_its_changes_in_a_few_copies_not_one_per_map(model, image):
    """Both runs' logits, the 88 relative changes (one stacked copy), and the watched map's
    two versions (to_map's two buffers each): 88 scalar reads before."""
    analysis = analyze(model, image, size=SIZE)
    with DeviceTraffic(model) as traffic:
        ablate(model, analysis, Ablation.relu_between(["block5"]))
    assert traffic.numpy_on_device == 0 and traffic.transfers <= 8, traffic.where
