"""Receptive fields: which region of the resized input each position of a map sees.

Computed from the architecture (``xviz.model.xception.BLOCK_SPECS``) without running the network.
Along one axis a map position ``i`` sees the input pixels ``i * jump + offset`` to
``i * jump + offset + length - 1``; a layer with kernel ``k``, stride ``s`` and ``p`` pixels
of padding before the first position turns ``(jump, offset, length)`` into
``(jump * s, offset - p * jump, length + (k - 1) * jump)``. Where two paths are added (the
residual connections) the field is the union of both, which here is always one interval.
Padding depends on the side a layer sees (TensorFlow 'same' max-pools, see
``xviz.model.xception.tf_same_pads``), so fields are computed for one input size and padding mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from xviz.errors import AnalysisError
from xviz.model.xception import BLOCK_SPECS, PADDINGS, Padding, tf_same_pads

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Field:
    """The receptive field of every position of one map along one axis (rows and columns
    are the same: inputs are square). ``side`` is the map's side in positions."""

    jump: int
    offset: int
    length: int
    side: int

    def conv(self, kernel: int, stride: int, pad_before: int, side: int) -> Field:
        """The field after a convolution or pooling layer whose output side is ``side``."""
        return Field(
            self.jump * stride,
            self.offset - pad_before * self.jump,
            self.length + (kernel - 1) * self.jump,
            side,
        )

    def union(self, other: Field) -> Field:
        """Both paths of a residual add (same positions, so same jump and side)."""
        if (self.jump, self.side) != (other.jump, other.side):
            raise ValueError(f"cannot add fields {self} and {other}")
        start = min(self.offset, other.offset)
        end = max(self.offset + self.length, other.offset + other.length)
        return Field(self.jump, start, end - start, self.side)

    def interval(self, positions: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Input pixels ``[start, end)`` seen by ``positions`` (int array), clipped to the
        pixels the network sees at all: block1_conv1 (3x3, stride 2, 'valid') never reaches
        the last row and column of an even side."""
        start = positions * self.jump + self.offset
        seen = ((size - 3) // 2) * 2 + 3
        return np.maximum(start, 0), np.minimum(start + self.length, seen)


@lru_cache(maxsize=16)
def receptive_fields(size: int, padding: Padding = "keras") -> dict[str, Field]:
    """Map name (``xviz.engine.analysis.MAP_NAMES``) -> its :class:`Field` at input side
    ``size``."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, not {padding!r}")
    fields: dict[str, Field] = {}
    pixel = Field(jump=1, offset=0, length=1, side=size)
    conv1 = pixel.conv(3, 2, 0, (size - 3) // 2 + 1)  # 'valid': no padding
    fields["block1_conv1"] = conv1
    fields["block1_conv2"] = fields["block1"] = conv1.conv(3, 1, 0, conv1.side - 2)
    block_input = fields["block1"]
    for spec in BLOCK_SPECS[1:]:
        field = block_input
        for sepconv, _, _ in spec.sepconvs:
            field = field.conv(3, 1, 1, field.side)  # depthwise 3x3, 'same' (1, 1)
            fields[f"{sepconv}.depthwise"] = fields[f"{sepconv}.pointwise"] = field
        if spec.pool:
            before = tf_same_pads(field.side, 3, 2)[0] if padding == "keras" else 1
            field = field.conv(3, 2, before, math.ceil(field.side / 2))
        if spec.residual == "conv":
            residual = block_input.conv(1, 2, 0, field.side)
            fields[f"{spec.name}_residual"] = residual
            field = field.union(residual)
        elif spec.residual == "identity":
            field = field.union(block_input)
        fields[spec.name] = block_input = field
    return fields


def receptive_boxes(
    map_name: str, positions: np.ndarray, size: int, padding: Padding = "keras"
) -> np.ndarray:
    """The boxes ``(x0, y0, x1, y1)`` (exclusive ends, as PIL's ``crop``) of the resized
    ``size`` x ``size`` input that flat positions ``row * side + column`` of ``map_name``
    see, clipped to the image (padding is not part of them): (N,) -> (N, 4) int32."""
    fields = receptive_fields(size, padding)
    if map_name not in fields:
        raise AnalysisError(f"Unknown map {map_name!r}: use e.g. 'block5_sepconv1.depthwise'.")
    field = fields[map_name]
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size and not (0 <= positions.min() and positions.max() < field.side**2):
        raise AnalysisError(
            f"A position is outside {map_name}, which is {field.side}x{field.side} "
            f"at {size}x{size}."
        )
    y0, y1 = field.interval(positions // field.side, size)
    x0, x1 = field.interval(positions % field.side, size)
    return np.stack([x0, y0, x1, y1], axis=-1).astype(np.int32)
