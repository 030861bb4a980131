"""Architecture of the Keras Xception: names, shapes, parameter count, padding, no in-place ops."""

import pytest
import torch
from torch import nn

from tests.reference import REFERENCE_BLOCKS, REFERENCE_CONVS
from xviz.model.xception import (
    BLOCK_SPECS,
    FLOWS,
    SEPCONV_NAMES,
    MaxPoolSame,
    SeparableConv2d,
    Xception,
    block_shapes,
    tf_same_pads,
)


@pytest.mark.parametrize(("size", "column"), [(299, 1), (150, 2)])
def test_block_output_shapes_match_reference_table(model, size, column):
    x = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        for name, block in model.blocks.items():
            x = block(x)
            channels = REFERENCE_BLOCKS[name][0]
            side = REFERENCE_BLOCKS[name][column]
            assert tuple(x.shape) == (1, channels, side, side), name


def test_parameter_count_with_imagenet_head_is_keras_trainable_count(model):
    assert sum(p.numel() for p in model.parameters()) == 22_855_952
    stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("mean", "var")))
    assert stats == 54_528


def test_flows_and_blocks_follow_the_paper():
    assert FLOWS == {
        "entry": ("block1", "block2", "block3", "block4"),
        "middle": tuple(f"block{b}" for b in range(5, 13)),
        "exit": ("block13", "block14"),
    }
    assert [s.name for s in BLOCK_SPECS] == [f"block{b}" for b in range(1, 15)]
    residual = {s.name: s.residual for s in BLOCK_SPECS}
    assert [b for b, r in residual.items() if r == "conv"] == [
        "block2",
        "block3",
        "block4",
        "block13",
    ]


def test_34_separable_convs_with_depthwise_and_pointwise_only(model):
    expected = [f"block{b}_sepconv{i}" for b in (2, 3, 4) for i in (1, 2)]
    expected += [f"block{b}_sepconv{i}" for b in range(5, 13) for i in (1, 2, 3)]
    expected += [f"block{b}_sepconv{i}" for b in (13, 14) for i in (1, 2)]
    assert list(model.sepconvs) == expected == list(SEPCONV_NAMES)
    assert len(expected) == 34
    for name, sep in model.sepconvs.items():
        assert isinstance(sep, SeparableConv2d)
        assert [n for n, _ in sep.named_children()] == ["depthwise", "pointwise"], name
        dw, pw = sep.depthwise, sep.pointwise
        assert dw.groups == dw.in_channels == dw.out_channels, name
        assert dw.kernel_size == (3, 3) and pw.kernel_size == (1, 1)
        assert dw.bias is None and pw.bias is None


def test_separable_conv_is_depthwise_then_pointwise_with_nothing_between():
    torch.manual_seed(1)
    sep = SeparableConv2d(4, 6)
    x = torch.randn(2, 4, 7, 7)
    # Independent reference: per-channel 2-D correlation, then a channel mix.
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    dw = torch.zeros_like(x)
    for c in range(4):
        k = sep.depthwise.weight[c, 0]
        for i in range(3):
            for j in range(3):
                dw[:, c] += k[i, j] * padded[:, c, i : i + 7, j : j + 7]
    expected = torch.einsum("oc,bchw->bohw", sep.pointwise.weight[:, :, 0, 0], dw)
    torch.testing.assert_close(sep(x), expected, rtol=1e-5, atol=1e-5)


def test_plain_and_residual_convs_are_named(model):
    assert list(model.convs) == REFERENCE_CONVS


@pytest.mark.parametrize(
    ("side", "pads"),
    # REFERENCE.md: the pools see 147, 74, 37, 19 at 299 and 72, 36, 18, 9 at 150.
    [
        (147, (1, 1)),
        (74, (0, 1)),
        (37, (1, 1)),
        (19, (1, 1)),
        (72, (0, 1)),
        (36, (0, 1)),
        (18, (0, 1)),
        (9, (1, 1)),
    ],
)
def test_tf_same_padding_split(side, pads):
    assert tf_same_pads(side, 3, 2) == pads


def test_keras_pool_pads_bottom_right_with_minus_infinity():
    x = torch.arange(16.0).reshape(1, 1, 4, 4) * -1  # all <= 0: zero padding would win
    out = MaxPoolSame("keras")(x)
    # side 4, stride 2 -> total pad 1, all of it after: windows rows/cols {0,1,2} and {2,3}.
    expected = torch.tensor([[[[0.0, -2.0], [-8.0, -10.0]]]])
    torch.testing.assert_close(out, expected)
    sym = MaxPoolSame("symmetric")(x)
    # symmetric pad 1 on every side: windows {0,1} and {1,2,3}.
    torch.testing.assert_close(sym, torch.tensor([[[[0.0, -1.0], [-4.0, -5.0]]]]))


def test_no_inplace_ops(model):
    for name, module in model.named_modules():
        assert not getattr(module, "inplace", False), name


def test_hooked_activations_are_not_overwritten(model):
    """A captured block output must equal a recomputation: nothing later writes into it."""
    seen = {}
    handles = [
        b.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
        for n, b in model.blocks.items()
    ]
    try:
        x = torch.randn(1, 3, 71, 71)
        with torch.inference_mode():
            model(x)
            again = model.block6(seen["block5"])
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(again, seen["block6"])


def test_forward_features_and_heads():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 150, 150)
    kitchen = Xception(head="kitchenware").eval()
    with torch.inference_mode():
        feats = kitchen.forward_features(x)
        logits = kitchen(x)
    assert feats.shape == (2, 2048, 5, 5)
    assert (feats >= 0).all()  # after block14's last ReLU
    assert logits.shape == (2, 6) and kitchen.num_classes == 6
    assert Xception(head="imagenet").num_classes == 1000
    assert Xception(head="none").num_classes == 0


def test_rejects_unknown_options():
    with pytest.raises(ValueError, match="padding"):
        Xception(padding="same")
    with pytest.raises(ValueError, match="head"):
        Xception(head="cifar")


@pytest.mark.parametrize(("size", "column"), [(299, 1), (150, 2)])
def test_block_shapes_without_a_run_match_reference_table(size, column):
    shapes = block_shapes(size)
    assert list(shapes) == list(REFERENCE_BLOCKS)
    for name, (channels, h, w) in shapes.items():
        assert (channels, h, w) == (REFERENCE_BLOCKS[name][0],) + (
            REFERENCE_BLOCKS[name][column],
        ) * 2


def test_keras_pool_equals_explicit_tf_padding_at_every_side():
    """The pool's fast path (PyTorch padding / ceil_mode) against TF's rule spelt out."""
    torch.manual_seed(0)
    for height in range(3, 24):
        for width in (height, height + 1):
            x = torch.randn(1, 2, height, width) - 5  # all negative: padding must never win
            total_h = max((-(-height // 2) - 1) * 2 + 3 - height, 0)
            total_w = max((-(-width // 2) - 1) * 2 + 3 - width, 0)
            padded = nn.functional.pad(
                x,
                (total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2),
                value=float("-inf"),
            )
            expected = nn.functional.max_pool2d(padded, 3, 2)
            torch.testing.assert_close(MaxPoolSame("keras")(x), expected, rtol=0, atol=0)
