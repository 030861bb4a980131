"""Run the network only as far as the maps asked for: ``forward_until(model, x, modules)``.

Feature visualization of an entry-flow map and an atlas of a few early maps need nothing past
those maps. Hooks (``xviz.engine.hooks.Capture``) record the outputs; once the last of the requested
modules has run, the hook raises a private exception that ends the forward pass there. The
caller holds ``model_lock`` and picks eval mode and gradient mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from xviz.engine.hooks import Capture, detached_clone


class _Reached(Exception):
    """Raised by a hook once every requested output is captured; never leaves this module."""


def forward_until(
    model: nn.Module,
    x: torch.Tensor,
    modules: Mapping[str, nn.Module],
    keep: Callable[[str, torch.Tensor], Any] = detached_clone,
) -> dict[str, Any]:
    """``{name: keep(name, output)}`` for each of ``modules`` (name -> module of ``model``),
    running ``model(x)`` no further than the last of them.

    ``keep`` defaults to a detached clone; return the output itself to take gradients
    through it. Every module must run exactly once per forward pass (true of all the maps of
    ``xviz.engine.analysis.map_modules``).
    """
    wanted = set(modules)

    def keep_and_stop(name: str, output: torch.Tensor) -> Any:
        kept = keep(name, output)
        wanted.discard(name)
        if not wanted:
            captured.outputs[name] = kept
            raise _Reached
        return kept

    captured = Capture(modules, keep=keep_and_stop)
    with captured, contextlib.suppress(_Reached):
        model(x)
    return captured.outputs
