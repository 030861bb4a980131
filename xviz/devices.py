"""Which torch device runs the model: CUDA, else Apple's MPS, else the CPU."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from xviz.errors import AnalysisError

DEVICE_ENV = "XVIZ_DEVICE"
_CHOICES = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The device to run on, checked to exist on this machine.

    Args:
        device: a ``torch.device``, or a name: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``,
            or ``"auto"``, which takes ``$XVIZ_DEVICE`` when set, else the first of CUDA,
            MPS and CPU that is available. An explicit name wins over ``$XVIZ_DEVICE``.

    Raises:
        ValueError: the name is not a device, or that device is not available here.
    """
    if isinstance(device, torch.device):
        return _check_available(device)
    name = device.strip().lower()
    asked = repr(device)
    env = os.environ.get(DEVICE_ENV, "").strip().lower()
    if name == "auto" and env:
        name, asked = env, f"{env!r} (from ${DEVICE_ENV})"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        parsed = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"Unknown device {asked}: use {_CHOICES}.") from e
    return _check_available(parsed)


def _mps_available() -> bool:
    return torch.backends.mps.is_available()


def _check_available(device: torch.device) -> torch.device:
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"Device {str(device)!r} asked for, but CUDA is not available here.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"Device {str(device)!r} asked for, but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
        return device
    if device.type == "mps":
        if not _mps_available():
            raise ValueError("Device 'mps' asked for, but Apple's MPS is not available here.")
        return device
    raise ValueError(f"Unsupported device {str(device)!r}: use {_CHOICES}.")


@contextmanager
def out_of_memory_guard(what: str) -> Iterator[None]:
    """Turn an out-of-memory error inside the block into an ``AnalysisError`` a user can act
    on, after freeing what the failed computation held (the app keeps serving)."""
    try:
        yield
    except torch.OutOfMemoryError as err:
        # The traceback holds the failed frames' tensors: drop it before freeing the cache.
        err.__traceback__ = None
        del err
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise AnalysisError(
            f"Out of memory while computing {what}. Try again with fewer steps or samples, "
            "a smaller input size, or when the server is less busy."
        ) from None
