"""What the benchmarks share (run them from anywhere: each puts the repository on sys.path)."""

from __future__ import annotations

import torch

from xviz.model.weights import kitchenware_file, load_model
from xviz.model.xception import Xception


def bench_model(weights: str) -> Xception:
    """The model a benchmark runs, on the CPU: ``weights`` loaded, or an ImageNet-headed model
    with random weights (seed 0) for ``"random"`` and when the kitchenware package is missing."""
    if weights == "random" or (weights == "kitchenware" and kitchenware_file() is None):
        torch.manual_seed(0)
        return Xception(head="imagenet").eval()
    return load_model(weights, device="cpu")
