"""Which torch device runs the model: CUDA, else Apple's MPS, else the CPU; and the float32
precision of CUDA convolutions.

TF32: PyTorch lets cuDNN run float32 convolutions in TF32 by default (10-bit mantissa inputs),
which moved the logits 1.2e-5 (relative) away from the CPU's on an H200; with TF32 off they
agree to 8e-8. xviz shows Keras' numbers, so the first time a CUDA device is resolved TF32 is
turned off for convolutions and matrix products, unless ``$XVIZ_TF32=1``; :func:`set_tf32`
changes it at any time.
"""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from xviz.errors import AnalysisError

DEVICE_ENV = "XVIZ_DEVICE"
TF32_ENV = "XVIZ_TF32"
_CHOICES = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The device to run on, checked to exist on this machine.

    Args:
        device: a ``torch.device``, or a name: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``,
            or ``"auto"``, which takes ``$XVIZ_DEVICE`` when set, else the first of CUDA,
            MPS and CPU that is available. An explicit name wins over ``$XVIZ_DEVICE``.

    The first CUDA device resolved also sets CUDA's float32 precision (see the module
    docstring): exact float32 unless ``$XVIZ_TF32=1``.

    Raises:
        ValueError: the name is not a device, or that device is not available here.
    """
    resolved = _resolve(device)
    if resolved.type == "cuda":
        _default_precision()
    return resolved


def _resolve(device: str | torch.device) -> torch.device:
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


def set_tf32(enabled: bool) -> None:
    """TF32 for CUDA float32 convolutions (cuDNN) and matrix products (cuBLAS), on or off.

    On: faster on Ampere and later GPUs, results ~1e-5 (relative) from the CPU's. Off:
    float32 throughout, results within ~1e-7 of the CPU's. No effect on other devices.
    """
    # The legacy flags, not torch.backends.*.fp32_precision: once the new API has set a
    # value, reading the legacy flag raises, and scripts (and older torch) still read it.
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled


@functools.cache
def _default_precision() -> None:
    """Once per process: TF32 as ``$XVIZ_TF32`` says (off unless "1"). Only once, so that a
    later :func:`set_tf32` is not undone by the next ``resolve_device``."""
    set_tf32(os.environ.get(TF32_ENV, "").strip() == "1")


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
