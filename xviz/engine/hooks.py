"""Forward hooks that capture named module outputs, and the per-model lock around every run.

All hook registration in xviz goes through two small context managers: :class:`Capture`
(keep what named modules output) and :class:`Rewrite` (replace it, for ablations). Both
register forward hooks by name and remove every handle on exit, so no hook outlives the
run, even when the forward pass raises.

Hooks are attached to the model's modules, but act only on runs of the thread that registered
them, so a plain forward in another thread is neither seen nor changed. Every run that hooks
or temporarily changes a model (analysis, attributions, ablations) holds :func:`model_lock`
for that model: runs on one model are serialised, runs on different models proceed in
parallel.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

_H = TypeVar("_H", bound="_Hooks")
_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock that serialises hooked or modified runs of ``model``."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def detached_clone(name: str, output: torch.Tensor) -> torch.Tensor:
    """Default keep function: a copy that later in-place ops or autograd cannot touch."""
    return output.detach().clone()


class _Hooks:
    """Forward hooks on named modules, registered on enter and all removed on exit."""

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        self.modules = dict(modules)
        self._handles: list[RemovableHandle] = []

    def _hook(self, name: str) -> Callable[[nn.Module, Any, torch.Tensor], Any]:
        raise NotImplementedError

    def _own(
        self, hook: Callable[[nn.Module, Any, torch.Tensor], Any]
    ) -> Callable[[nn.Module, Any, torch.Tensor], Any]:
        """``hook``, for the runs of the thread that registered it only.

        Hooks live on the shared model: without this, a plain forward in another thread
        (a prediction, a warm-up, a test's reference) would overwrite what a capture keeps,
        or be rewritten by an ablation it did not ask for.
        """

        def owned(module: nn.Module, inputs: Any, output: torch.Tensor) -> Any:
            if threading.get_ident() != self._owner:
                return None  # another thread's run: leave its output alone
            return hook(module, inputs, output)

        return owned

    def __enter__(self: _H) -> _H:
        self._owner = threading.get_ident()
        try:
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_hook(self._own(self._hook(name))))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook registered here (idempotent)."""
        while self._handles:
            self._handles.pop().remove()


class Capture(_Hooks):
    """Forward hooks on named modules; ``outputs[name]`` holds ``keep(name, output)``.

    ``keep`` defaults to a detached clone. A keep function that returns the live output
    (to take gradients with respect to it later) is only safe because the model has no
    in-place operations.

    Usage::

        with Capture(model.blocks) as cap:
            model(x)
        cap.outputs["block5"]  # (B, 728, 19, 19)
    """

    def __init__(
        self,
        modules: Mapping[str, nn.Module],
        keep: Callable[[str, torch.Tensor], Any] = detached_clone,
    ) -> None:
        super().__init__(modules)
        self.keep = keep
        self.outputs: dict[str, Any] = {}

    def _hook(self, name: str) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            self.outputs[name] = self.keep(name, output)

        return hook


class Rewrite(_Hooks):
    """Forward hooks that replace each named module's output by ``change(name, output)``.

    ``change`` must return a new tensor (never modify ``output`` in place).
    """

    def __init__(
        self,
        modules: Mapping[str, nn.Module],
        change: Callable[[str, torch.Tensor], torch.Tensor],
    ) -> None:
        super().__init__(modules)
        self.change = change

    def _hook(self, name: str) -> Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            return self.change(name, output)

        return hook


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode (BN uses its running statistics); restore the mode after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def hook_count(model: nn.Module) -> int:
    """Number of forward, forward-pre and backward hooks on ``model`` and its submodules."""
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )
