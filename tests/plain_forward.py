"""The float32 values a plain forward pass computes, captured with PyTorch's own hooks (no
xviz hook code): the reference that the stored maps and the value traces are checked against."""

from __future__ import annotations

import numpy as np
import torch

from xviz.engine.analysis import map_modules
from xviz.model.xception import Xception


def plain_forward(
    model: Xception, image: np.ndarray
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(every map by its name, the input of every ``"....depthwise"`` map by that name) for
    ``image`` (S, S, 3) uint8, preprocessed as Keras does: x / 127.5 - 1."""
    x = torch.tensor(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    outputs, inputs, handles = {}, {}, []
    for name, module in map_modules(model).items():
        handles.append(
            module.register_forward_hook(
                lambda m, i, o, name=name: outputs.__setitem__(name, o[0].detach().clone())
            )
        )
        if name.endswith(".depthwise"):
            handles.append(
                module.register_forward_pre_hook(
                    lambda m, i, name=name: inputs.__setitem__(name, i[0][0].detach().clone())
                )
            )
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, inputs
