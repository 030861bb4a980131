"""Device choice: auto order, $XVIZ_DEVICE, explicit names, clear errors."""

import pytest
import torch

from xviz import devices
from xviz.devices import resolve_device


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
