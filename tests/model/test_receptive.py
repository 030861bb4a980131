"""Receptive fields against the network itself: map sides from a real forward pass, and the
region each position sees from the support of input gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xviz.engine.analysis import MAP_NAMES, map_modules
from xviz.engine.truncated import forward_until
from xviz.errors import AnalysisError
from xviz.model.receptive import receptive_boxes, receptive_fields
from xviz.model.xception import Xception


def receptive_box(name: str, position: tuple[int, int], size: int) -> tuple[int, ...]:
    """The box of one (row, column) of ``name``, through ``receptive_boxes``' flat positions."""
    field = receptive_fields(size).get(name)
    row, column = position
    flat = row * (field.side if field else 1) + column
    return tuple(int(v) for v in receptive_boxes(name, np.array([flat]), size)[0])


@pytest.fixture(scope="module")
def frozen_model():
    torch.manual_seed(0)
    model = Xception(head="none").eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


@pytest.mark.parametrize(("size", "padding"), [(150, "keras"), (299, "keras"), (150, "symmetric")])
def test_sides_match_a_forward_pass(size, padding):
    torch.manual_seed(0)
    model = Xception(head="none", padding=padding).eval()
    with torch.no_grad():
        outputs = forward_until(model, torch.zeros(1, 3, size, size), map_modules(model))
    fields = receptive_fields(size, padding)
    assert set(fields) == set(MAP_NAMES)
    for name in MAP_NAMES:
        assert outputs[name].shape[-2:] == (fields[name].side, fields[name].side), name


def _gradient_support(model, name, position, size, samples=16):
    """Bounding box (x0, y0, x1, y1) of the input pixels with a non-zero gradient of the
    map's value at ``position`` (all channels summed), over random inputs: max-pools and
    ReLUs route gradients differently for each input, so together they cover the field."""
    torch.manual_seed(1)
    x = torch.randn(samples, 3, size, size, requires_grad=True)
    output = forward_until(model, x, {name: map_modules(model)[name]}, keep=lambda n, o: o)[name]
    (gradient,) = torch.autograd.grad(output[:, :, position[0], position[1]].sum(), x)
    support = (gradient.abs().sum(dim=(0, 1)) > 0).nonzero()
    (y0, x0), (y1, x1) = support.min(0).values.tolist(), (support.max(0).values + 1).tolist()
    return x0, y0, x1, y1


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "block1_conv1",
        "block1_conv2",
        "block2_sepconv1.depthwise",
        "block2_sepconv2.pointwise",
        "block2_residual",
        "block2",
        "block3",
        "block4_residual",
    ],
)
def test_boxes_equal_gradient_support(frozen_model, name):
    size = 150
    side = receptive_fields(size)[name].side
    for position in [(0, 0), (side // 2, side // 3), (side - 1, side - 1)]:
        expected = _gradient_support(frozen_model, name, position, size)
        assert receptive_box(name, position, size) == expected, (name, position)


def test_box_at_299_where_pool_padding_differs(frozen_model):
    # At 299 block2's pool sees 147 and pads (1, 1); at 150 it sees 72 and pads (0, 1).
    assert receptive_box("block2", (10, 10), 299) == _gradient_support(
        frozen_model, "block2", (10, 10), 299, samples=8
    )


def test_deep_maps_see_the_whole_image():
    # Hand computation: block5 at 150 has jump 16 and length 187 > 150 (see module docstring).
    field = receptive_fields(150)["block5"]
    assert (field.jump, field.length) == (16, 187)
    assert receptive_box("block14", (2, 2), 150) == (0, 0, 149, 149)


def test_bad_map_or_position():
    with pytest.raises(AnalysisError, match="Unknown map"):
        receptive_box("block99", (0, 0), 150)
    with pytest.raises(AnalysisError, match="outside block14"):
        receptive_box("block14", (5, 0), 150)
