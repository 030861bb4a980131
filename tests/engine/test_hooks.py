"""hooks: Capture and Rewrite store clones, rewrite outputs and always remove their hooks."""

import threading

import pytest
import torch
from torch import nn

from xviz.engine.hooks import Capture, Rewrite, eval_mode, hook_count, model_lock


class Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def tiny() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 1))


def test_capture_stores_detached_clones_and_removes_hooks():
    net = tiny()
    x = torch.randn(1, 1, 4, 4, requires_grad=True)
    with Capture({"conv": net[0], "relu": net[1]}) as cap:
        assert hook_count(net) == 2
        out = net(x)
    assert hook_count(net) == 0
    stored = cap.outputs["relu"].clone()
    assert not cap.outputs["relu"].requires_grad
    torch.testing.assert_close(cap.outputs["relu"], torch.relu(cap.outputs["conv"]))
    # A later in-place change of the live activation does not reach the stored copy.
    live = net[1](net[0](x)).detach()
    live.zero_()
    torch.testing.assert_close(cap.outputs["relu"], stored)
    assert out.shape == (1, 2, 4, 4)


def test_no_hook_remains_after_an_error_inside_the_forward_pass():
    net = nn.Sequential(nn.Conv2d(1, 1, 1), Boom())
    with pytest.raises(RuntimeError, match="boom"), Capture({"conv": net[0], "boom": net[1]}):
        net(torch.zeros(1, 1, 2, 2))
    assert hook_count(net) == 0
    with pytest.raises(RuntimeError, match="boom"), Rewrite({"conv": net[0]}, lambda n, o: o * 2):
        net(torch.zeros(1, 1, 2, 2))
    assert hook_count(net) == 0


def test_rewrite_replaces_outputs_only_inside_the_block():
    net = tiny()
    x = torch.randn(1, 1, 4, 4)
    before = net(x)
    with Rewrite({"conv": net[0]}, lambda name, out: torch.zeros_like(out)):
        zeroed = net(x)
    torch.testing.assert_close(zeroed, net[2](torch.zeros(1, 2, 4, 4)))
    torch.testing.assert_close(net(x), before)
    assert hook_count(net) == 0


def test_eval_mode_restores_each_module_mode():
    net = tiny().train()
    net[2].eval()
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == [True, True, True, False]


def test_model_lock_is_one_reentrant_lock_per_model():
    a, b = tiny(), tiny()
    assert model_lock(a) is model_lock(a)
    assert model_lock(a) is not model_lock(b)
    with model_lock(a), model_lock(a):  # re-entrant
        free = threading.Event()

        def other_model() -> None:
            with model_lock(b):
                free.set()

        thread = threading.Thread(target=other_model)
        thread.start()
        thread.join(5)
        assert free.is_set()  # another model's lock is not held


def test_hooks_act_only_on_the_runs_of_the_thread_that_registered_them():
    """A plain forward in another thread (a warm-up, a prediction) is neither kept by a
    capture nor changed by a rewrite of this thread; this thread's runs still are."""
    model = tiny()
    x = torch.randn(1, 1, 5, 5)
    plain = model(x)
    elsewhere: dict[str, torch.Tensor] = {}

    def other_thread() -> None:
        elsewhere["out"] = model(x)

    modules = {"first": model[0], "last": model[2]}
    with Capture(modules) as cap, Rewrite({"last": model[2]}, lambda _, out: out * 0):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert cap.outputs == {}  # nothing kept from the other thread's run
        torch.testing.assert_close(elsewhere["out"], plain)  # and nothing changed in it
        mine = model(x)
    assert set(cap.outputs) == {"first", "last"}
    assert torch.count_nonzero(mine) == 0  # this thread's run is rewritten
