"""Device choice: auto order, $XVIZ_DEVICE, explicit names, clear errors."""

import pytest
import torch

from xviz.engine import devices
from xviz.engine.devices import resolve_device


@pytest.fixture
def machine(monkeypatch):
    """A machine with neither CUDA nor MPS, and no $XVIZ_DEVICE; tests switch them on."""
    monkeypatch.delenv("XVIZ_DEVICE", raising=False)
    state = {"cuda": False, "mps": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: state["cuda"])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: int(state["cuda"]))
    monkeypatch.setattr(devices, "_mps_available", lambda: state["mps"])
    return state


def test_auto_order_cuda_then_mps_then_cpu(machine):
    assert resolve_device() == torch.device("cpu")
    machine["mps"] = True
    assert resolve_device("auto") == torch.device("mps")
    machine["cuda"] = True
    assert resolve_device("auto") == torch.device("cuda")


def test_environment_overrides_auto_only(machine, monkeypatch):
    machine["cuda"] = True
    monkeypatch.setenv("XVIZ_DEVICE", "cpu")
    assert resolve_device() == torch.device("cpu")
    assert resolve_device("cuda:0") == torch.device("cuda:0")


def test_explicit_names_and_devices(machine):
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gpu", "Unknown device 'gpu'"),
        ("cuda", "CUDA is not available"),
        ("mps", "MPS is not available"),
        ("meta", "Unsupported device 'meta'"),
    ],
)
def test_bad_or_missing_device(machine, name, message):
    with pytest.raises(ValueError, match=message):
        resolve_device(name)


def test_bad_environment_value(machine, monkeypatch):
    monkeypatch.setenv("XVIZ_DEVICE", "tpu")
    with pytest.raises(ValueError, match=r"Unknown device 'tpu' \(from \$XVIZ_DEVICE\)"):
        resolve_device()


def test_cuda_index_out_of_range(machine):
    machine["cuda"] = True
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="1 CUDA device"):
        resolve_device("cuda:1")


@pytest.fixture
def precision(monkeypatch):
    """TF32 flags as PyTorch starts (TF32 on for cuDNN), restored after; the once-per-process
    default is forgotten before and after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    monkeypatch.delenv("XVIZ_TF32", raising=False)
    devices._default_precision.cache_clear()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    yield
    devices._default_precision.cache_clear()
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def tf32() -> tuple[bool, bool]:
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def test_resolving_cuda_turns_tf32_off_once(machine, precision):
    assert resolve_device("cpu") == torch.device("cpu") and tf32() == (True, True)
    machine["cuda"] = True
    resolve_device("auto")
    assert tf32() == (False, False)
    assert torch.backends.cudnn.conv.fp32_precision != "tf32"  # what cuDNN's convs consult
    assert torch.backends.cuda.matmul.fp32_precision != "tf32"
    devices.set_tf32(True)  # the caller's choice is not undone by a later resolve
    resolve_device("cuda:0")
    assert tf32() == (True, True)


def test_xviz_tf32_keeps_it_on(machine, precision, monkeypatch):
    machine["cuda"] = True
    monkeypatch.setenv("XVIZ_TF32", "1")
    resolve_device("cuda")
    assert tf32() == (True, True)
    # The new-style flags agree: cuDNN convolutions run TF32, cuBLAS matmuls too.
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
