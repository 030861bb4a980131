"""Xception (Chollet 2017, "Deep Learning with Depthwise Separable Convolutions", arXiv 1610.02357).

The Keras reference network (``keras.applications.Xception``), the one the pretrained
ImageNet weights belong to, written for inspection:

- every layer has the Keras name it has in ``xception.py`` (``block5_sepconv2``,
  ``block5_sepconv2_bn``, ``block5_sepconv2_act``), as an attribute of its block module;
- a separable convolution is one module with exactly two children, ``depthwise`` and
  ``pointwise``, and nothing in between;
- no in-place operation anywhere (hooks and Captum see every activation intact);
- max-pooling pads TensorFlow-style in ``"keras"`` mode (asymmetric where TF is) and
  symmetrically in ``"symmetric"`` mode (timm's port).

Layout: block specification table -> layers -> blocks -> ``Xception``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Padding = Literal["keras", "symmetric"]
Head = Literal["imagenet", "kitchenware", "none"]

PADDINGS: tuple[str, ...] = ("keras", "symmetric")
HEADS: tuple[str, ...] = ("imagenet", "kitchenware", "none")
KERAS_BN_EPS = 1e-3
NUM_FEATURES = 2048


@dataclass(frozen=True)
class BlockSpec:
    """One of the 14 blocks of Xception, as the paper's Figure 5 draws it.

    ``sepconvs`` holds ``(name, in_channels, out_channels)`` of its separable convolutions
    in order; ``residual`` is ``"conv"`` (1x1 stride-2 conv + BN), ``"identity"`` or ``None``.
    """

    name: str
    flow: str
    in_channels: int
    out_channels: int
    sepconvs: tuple[tuple[str, int, int], ...]
    residual: str | None
    pool: bool

    @property
    def index(self) -> int:
        return int(self.name.removeprefix("block"))


def _sep(block: int, channels: list[int]) -> tuple[tuple[str, int, int], ...]:
    return tuple(
        (f"block{block}_sepconv{i + 1}", channels[i], channels[i + 1])
        for i in range(len(channels) - 1)
    )


BLOCK_SPECS: tuple[BlockSpec, ...] = (
    BlockSpec("block1", "entry", 3, 64, (), None, False),
    BlockSpec("block2", "entry", 64, 128, _sep(2, [64, 128, 128]), "conv", True),
    BlockSpec("block3", "entry", 128, 256, _sep(3, [128, 256, 256]), "conv", True),
    BlockSpec("block4", "entry", 256, 728, _sep(4, [256, 728, 728]), "conv", True),
    *(
        BlockSpec(f"block{b}", "middle", 728, 728, _sep(b, [728] * 4), "identity", False)
        for b in range(5, 13)
    ),
    BlockSpec("block13", "exit", 728, 1024, _sep(13, [728, 728, 1024]), "conv", True),
    BlockSpec("block14", "exit", 1024, 2048, _sep(14, [1024, 1536, 2048]), None, False),
)
BLOCKS: dict[str, BlockSpec] = {spec.name: spec for spec in BLOCK_SPECS}
FLOWS: dict[str, tuple[str, ...]] = {
    flow: tuple(s.name for s in BLOCK_SPECS if s.flow == flow)
    for flow in ("entry", "middle", "exit")
}
SEPCONV_NAMES: tuple[str, ...] = tuple(name for s in BLOCK_SPECS for name, _, _ in s.sepconvs)
SEPCONV_BLOCK: dict[str, str] = {name: s.name for s in BLOCK_SPECS for name, _, _ in s.sepconvs}


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding of one side of length ``size``: ``(before, after)``.

    The extra pixel, when the total is odd, goes after (bottom/right).
    """
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def block_shapes(size: int) -> OrderedDict[str, tuple[int, int, int]]:
    """Output shape ``(C, H, W)`` of every block for a ``size`` x ``size`` input, without a run."""
    side = (size - 3) // 2 + 1 - 2  # block1: 3x3 stride-2 'valid', then 3x3 'valid'
    shapes: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
    for spec in BLOCK_SPECS:
        if spec.pool:
            side = math.ceil(side / 2)  # stride-2 'same' pool; the symmetric pool agrees
        shapes[spec.name] = (spec.out_channels, side, side)
    return shapes


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 conv (one filter per input channel) then pointwise 1x1 conv, no bias.

    Nothing sits between the two: the paper (Figure 10) finds an intermediate
    non-linearity hurts.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels,
            in_channels,
            kernel_size=kernel_size,
            padding=kernel_size // 2,
            groups=in_channels,
            bias=False,
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, M, H, W) -> depthwise (B, M, H, W) -> pointwise (B, N, H, W)
        return self.pointwise(self.depthwise(x))


class MaxPoolSame(nn.Module):
    """3x3 stride-2 max-pool with Keras' 'same' padding (``"keras"``) or timm's symmetric 1."""

    def __init__(
        self,
        padding: Padding = "keras",
        kernel_size: int = 3,
        stride: int = 2,
    ) -> None:
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, not {padding!r}")
        self.padding = padding
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "symmetric":
            return F.max_pool2d(x, self.kernel_size, self.stride, padding=self.kernel_size // 2)
        k, s = self.kernel_size, self.stride
        top, bottom = tf_same_pads(x.shape[-2], k, s)
        left, right = tf_same_pads(x.shape[-1], k, s)
        if (top, bottom) == (left, right) and top <= k // 2 and bottom in (top, top + 1):
            # PyTorch's own padding says the same without a padded copy: (p, p) is
            # padding=p; (p, p + 1) adds ceil_mode, whose last window hangs over the edge
            # and, like TF's -inf padding, never takes a value from outside.
            return F.max_pool2d(x, k, s, padding=top, ceil_mode=bottom > top)
        # -inf so that padding never wins the max, as in TensorFlow.
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, k, s)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding!r}"


def _bn(channels: int, eps: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps)


class EntryConvBlock(nn.Module):
    """Block 1: two plain 3x3 'valid' convolutions, each followed by BN and ReLU."""

    def __init__(self, bn_eps: float = KERAS_BN_EPS) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, stride=2, bias=False)
        self.conv1_bn = _bn(32, bn_eps)
        self.conv1_act = nn.ReLU()
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, bias=False)
        self.conv2_bn = _bn(64, bn_eps)
        self.conv2_act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1_act(self.conv1_bn(self.conv1(x)))  # (B, 32, 149, 149) at 299
        return self.conv2_act(self.conv2_bn(self.conv2(x)))  # (B, 64, 147, 147)


class SeparableBlock(nn.Module):
    """Blocks 2-14: separable convs with BN and ReLU, optional max-pool, optional residual.

    Attribute names follow Keras without the ``block{b}_`` prefix: ``sepconv1``,
    ``sepconv1_bn``, ``sepconv1_act``, ``pool``, ``residual``, ``residual_bn``.
    In blocks 2-13 each ReLU comes *before* its separable conv (none before block2's
    first); in block 14 each ReLU comes after its BN, as in Keras.
    """

    def __init__(
        self,
        spec: BlockSpec,
        padding: Padding = "keras",
        bn_eps: float = KERAS_BN_EPS,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.act_after = spec.name == "block14"
        self.sepconv_names = tuple(
            name.removeprefix(f"{spec.name}_") for name, _, _ in spec.sepconvs
        )
        for short, (_, c_in, c_out) in zip(self.sepconv_names, spec.sepconvs, strict=True):
            has_act = self.act_after or not (spec.name == "block2" and short == "sepconv1")
            if has_act and not self.act_after:
                self.add_module(f"{short}_act", nn.ReLU())
            self.add_module(short, SeparableConv2d(c_in, c_out))
            self.add_module(f"{short}_bn", _bn(c_out, bn_eps))
            if self.act_after:
                self.add_module(f"{short}_act", nn.ReLU())
        self.pool = MaxPoolSame(padding) if spec.pool else None
        # Ablations switch the residual connection off (see ``xviz.methods.ablation``).
        self.use_residual = True
        if spec.residual == "conv":
            self.residual = nn.Conv2d(
                spec.in_channels, spec.out_channels, kernel_size=1, stride=2, bias=False
            )
            self.residual_bn = _bn(spec.out_channels, bn_eps)
        else:
            self.residual = None
            self.residual_bn = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for short in self.sepconv_names:
            act = getattr(self, f"{short}_act", None)
            if act is not None and not self.act_after:
                y = act(y)
            y = getattr(self, f"{short}_bn")(getattr(self, short)(y))
            if act is not None and self.act_after:
                y = act(y)
        if self.pool is not None:
            y = self.pool(y)
        if not self.use_residual:
            return y
        if self.residual is not None:
            return y + self.residual_bn(self.residual(x))
        if self.spec.residual == "identity":
            return y + x
        return y


def _make_head(head: Head) -> nn.Module | None:
    if head == "imagenet":
        return nn.Linear(NUM_FEATURES, 1000)
    if head == "kitchenware":
        return nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(NUM_FEATURES, 100),
                act=nn.ReLU(),
                fc2=nn.Linear(100, 6),
            )
        )
    if head == "none":
        return None
    raise ValueError(f"head must be one of {HEADS}, not {head!r}")


class Xception(nn.Module):
    """The Keras Xception: entry flow (blocks 1-4), middle flow (5-12), exit flow (13-14).

    Args:
        head: ``"imagenet"`` (GAP -> Linear(2048, 1000)), ``"kitchenware"``
            (GAP -> Linear(2048, 100) -> ReLU -> Linear(100, 6)) or ``"none"``.
        padding: ``"keras"`` (TensorFlow 'same', for Keras weights) or ``"symmetric"``
            (for timm's weights, evaluated that way by timm).
        bn_eps: BatchNorm epsilon; Keras trains with 1e-3, timm's port uses 1e-5.
    """

    def __init__(
        self,
        head: Head = "imagenet",
        padding: Padding = "keras",
        bn_eps: float = KERAS_BN_EPS,
    ) -> None:
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, not {padding!r}")
        self.head_name = head
        self.padding = padding
        self.bn_eps = bn_eps
        self.block1 = EntryConvBlock(bn_eps)
        for spec in BLOCK_SPECS[1:]:
            self.add_module(spec.name, SeparableBlock(spec, padding, bn_eps))
        self.classifier = _make_head(head)
        self.labels: list[str] = []
        self.source = None

    @property
    def num_classes(self) -> int:
        if self.classifier is None:
            return 0
        last = self.classifier if isinstance(self.classifier, nn.Linear) else self.classifier[-1]
        return last.out_features

    @property
    def blocks(self) -> OrderedDict[str, nn.Module]:
        """``"block1"`` .. ``"block14"`` -> the module whose output is that block's output."""
        return OrderedDict((spec.name, getattr(self, spec.name)) for spec in BLOCK_SPECS)

    @property
    def sepconvs(self) -> OrderedDict[str, SeparableConv2d]:
        """The 34 separable convolutions by Keras name, in network order."""
        return OrderedDict(
            (name, getattr(getattr(self, SEPCONV_BLOCK[name]), name.split("_", 1)[1]))
            for name in SEPCONV_NAMES
        )

    @property
    def convs(self) -> OrderedDict[str, nn.Conv2d]:
        """Plain convs: block1_conv1, block1_conv2 and the residual 1x1 convs (block2_residual)."""
        out: OrderedDict[str, nn.Conv2d] = OrderedDict(
            block1_conv1=self.block1.conv1, block1_conv2=self.block1.conv2
        )
        for spec in BLOCK_SPECS:
            if spec.residual == "conv":
                out[f"{spec.name}_residual"] = getattr(self, spec.name).residual
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, 2048, h, w), after block14's last ReLU."""
        for spec in BLOCK_SPECS:
            x = getattr(self, spec.name)(x)
        return x

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 2048, h, w) -> logits (B, classes): global average pool then the classifier."""
        pooled = features.mean(dim=(2, 3))  # (B, 2048)
        if self.classifier is None:
            return pooled
        return self.classifier(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
