"""Plain prediction, as fast as this model goes on a CPU: ``predict(model, image)``.

For a prediction alone no map is needed, so :func:`inference_copy` folds every BatchNorm
into the convolution before it (``w' = w * scale``, ``b' = shift``), makes the ReLUs whose
input nothing else reads in-place, pools without a padded copy, stores the weights
channels-last, and runs under ``torch.inference_mode``. The copy is made once per model and
rebuilt when the model's parameters, buffers or residual flags change. Analyses, attributions
and ablations never use it: they need the unfused maps.
"""

from __future__ import annotations

import copy
import threading
import weakref
from typing import Any

import torch
from torch import nn

from xviz.engine.analysis import (
    Prediction,
    class_labels,
    model_device,
    prepare_input,
    resolve_size,
    top_predictions,
)
from xviz.engine.hooks import model_lock
from xviz.model.xception import (
    EntryConvBlock,
    SeparableBlock,
    SeparableConv2d,
    Xception,
)

_COPIES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]] = weakref.WeakKeyDictionary()
_COPIES_GUARD = threading.Lock()


def _fingerprint(model: nn.Module) -> tuple:
    """Changes whenever a tensor of the model is replaced or modified, or a flag flips."""
    tensors = tuple((id(t), t._version) for t in model.state_dict(keep_vars=True).values())
    flags = tuple(getattr(m, "use_residual", None) for m in model.modules())
    return tensors, flags


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Make ``conv`` compute ``bn(conv(x))`` (eval-mode BN) by itself, in place."""
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
        shift = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            shift = shift + conv.bias * scale
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(shift, requires_grad=False)


def _inplace_relus(model: nn.Module) -> None:
    """In-place ReLUs, except the one a block applies to its own input (blocks 3-13): that
    input is read again by the residual connection."""
    for module in model.modules():
        if isinstance(module, EntryConvBlock):
            module.conv1_act.inplace = module.conv2_act.inplace = True
        elif isinstance(module, SeparableBlock):
            for i, short in enumerate(module.sepconv_names):
                act = getattr(module, f"{short}_act", None)
                if act is not None and (i > 0 or module.act_after):
                    act.inplace = True


def inference_copy(model: Xception) -> nn.Module:
    """A BN-folded, channels-last, eval-mode copy of ``model`` (cached; read-only)."""
    # The model's lock: a copy taken during a hooked run would copy its hooks too.
    with model_lock(model), _COPIES_GUARD:
        key = _fingerprint(model)
        cached = _COPIES.get(model)
        if cached is not None and cached[0] == key:
            return cached[1]
        fused = copy.deepcopy(model).eval().requires_grad_(False)
        for module in fused.modules():  # hooks (an active ablation's) are not the model's own
            module._forward_hooks.clear()
            module._forward_pre_hooks.clear()
        for module in list(fused.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.BatchNorm2d):
                    conv = getattr(module, name.removesuffix("_bn"))
                    if isinstance(conv, SeparableConv2d):
                        conv = conv.pointwise
                    fold_batchnorm(conv, child)
                    setattr(module, name, nn.Identity())
        _inplace_relus(fused)
        fused = fused.to(memory_format=torch.channels_last)
        _COPIES[model] = (key, fused)
        return fused


def logits(model: Xception, x: torch.Tensor) -> torch.Tensor:
    """Logits (B, classes) of a preprocessed batch (B, 3, S, S), by the inference copy."""
    fused = inference_copy(model)
    with torch.inference_mode():
        x = x.to(model_device(model)).contiguous(memory_format=torch.channels_last)
        return fused(x).float()


def predict(
    model: Xception, image: Any, size: int | None = None, top_k: int = 5
) -> list[Prediction]:
    """The ``top_k`` classes for one image (any input ``analyze`` takes), most probable first."""
    x, _ = prepare_input(image, resolve_size(model, image, size))
    probabilities = torch.softmax(logits(model, x)[0], dim=0).cpu().numpy()
    return top_predictions(probabilities, class_labels(model), top_k)
