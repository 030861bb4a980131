"""Live ablations: run the same image through a changed network and measure what moves.

Three changes, combinable:

- ``Ablation.relu_between(blocks)``: a ReLU between the depthwise and the pointwise
  convolution of every separable conv in ``blocks``. The paper's Figure 10 trains Xception
  with such a ReLU and finds it worse; here the question is asked of the pretrained network.
- ``Ablation.drop_residual(block)``: the block's output is its separable-conv branch alone,
  without the residual (1x1 conv or identity) added.
- ``Ablation.zero_channel(map, channel)``: one channel of one map (see
  ``xviz.engine.analysis.MAP_NAMES``) set to zero.

Maps are captured after the change: with ``relu_between`` a depthwise map is what the
pointwise conv now receives (its output after the inserted ReLU).

:func:`ablated` applies them for the duration of a ``with`` block (forward hooks through
``xviz.engine.hooks.Rewrite`` and the blocks' ``use_residual`` flags), holding the model's lock, and
restores the model exactly on exit, also when an exception is raised.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xviz.engine.analysis import (
    MAP_NAMES,
    Map,
    Prediction,
    class_labels,
    map_channels,
    map_modules,
    model_device,
    model_input,
    resolve_target,
    to_map,
    top_predictions,
)
from xviz.engine.hooks import Capture, Rewrite, eval_mode, model_lock
from xviz.errors import AnalysisError, short
from xviz.model.xception import BLOCK_SPECS, BLOCKS, Xception

KINDS: tuple[str, ...] = ("relu_between", "drop_residual", "zero_channel")
SEPARABLE_BLOCKS: tuple[str, ...] = tuple(s.name for s in BLOCK_SPECS if s.sepconvs)
RESIDUAL_BLOCKS: tuple[str, ...] = tuple(s.name for s in BLOCK_SPECS if s.residual)
VALID_BLOCKS: dict[str, tuple[str, ...]] = {
    "relu_between": SEPARABLE_BLOCKS,
    "drop_residual": RESIDUAL_BLOCKS,
    "zero_channel": (),  # takes a map and a channel, not blocks
}
"""The blocks each kind of ablation can change."""
_MISSING = {
    "relu_between": "has no separable convolution",
    "drop_residual": "has no residual connection to drop",
}


@dataclass(frozen=True)
class Ablation:
    """One change to the network. Build with the class methods; ``describe()`` says what it is."""

    kind: str
    blocks: tuple[str, ...] = ()
    map: str | None = None
    channel: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise AnalysisError(f"Unknown ablation {self.kind!r}: use one of {KINDS}.")
        allowed = VALID_BLOCKS[self.kind]
        if allowed:
            if not self.blocks:
                raise AnalysisError(f"{self.kind} needs at least one block.")
            for block in self.blocks:
                if block not in allowed:
                    known = isinstance(block, str) and block in BLOCKS
                    why = _MISSING[self.kind] if known else "is not a block of Xception"
                    raise AnalysisError(
                        f"{short(block, 40)} {why}: {self.kind} applies to "
                        f"{allowed[0]} to {allowed[-1]} only."
                    )
        elif self.map not in MAP_NAMES or self.channel is None:
            raise AnalysisError(
                f"zero_channel needs a map name (e.g. 'block5_sepconv1.depthwise') and a "
                f"channel; got {self.map!r}, {self.channel!r}."
            )
        elif not 0 <= self.channel < map_channels(self.map):
            raise AnalysisError(
                f"{self.map} has {map_channels(self.map)} channels (0 to "
                f"{map_channels(self.map) - 1}); there is no channel {self.channel}."
            )

    @classmethod
    def relu_between(cls, blocks: str | Sequence[str]) -> Ablation:
        """A ReLU between depthwise and pointwise in every separable conv of ``blocks``."""
        return cls("relu_between", blocks=(blocks,) if isinstance(blocks, str) else tuple(blocks))

    @classmethod
    def drop_residual(cls, blocks: str | Sequence[str]) -> Ablation:
        """No residual added in ``blocks`` (block2..block13)."""
        return cls("drop_residual", blocks=(blocks,) if isinstance(blocks, str) else tuple(blocks))

    @classmethod
    def zero_channel(cls, map: str, channel: int) -> Ablation:
        """Channel ``channel`` of map ``map`` set to zero."""
        return cls("zero_channel", map=map, channel=int(channel))

    def describe(self) -> str:
        if self.kind == "relu_between":
            return f"ReLU between depthwise and pointwise in {', '.join(self.blocks)}"
        if self.kind == "drop_residual":
            return f"no residual connection in {', '.join(self.blocks)}"
        return f"channel {self.channel} of {self.map} set to zero"

    @property
    def changed_blocks(self) -> tuple[str, ...]:
        """The blocks this change is made in (zero_channel: the block of its map)."""
        if self.kind == "zero_channel":
            return (self.map.split(".")[0].split("_")[0],)
        return self.blocks

    def watched_map(self) -> str:
        """The map that shows this change first (the default map an AblationResult keeps)."""
        if self.kind == "zero_channel":
            return self.map
        if self.kind == "drop_residual":
            return self.blocks[0]
        first = next(s for s in BLOCK_SPECS if s.name == self.blocks[0])
        return f"{first.sepconvs[0][0]}.pointwise"


@dataclass(frozen=True, eq=False)
class AblationResult:
    """The prediction with and without the change, and how far each map moved.

    ``kl_divergence`` is KL(original || ablated) of the class distributions, in nats.
    ``map_change[name]`` is the relative L2 change ||ablated - original|| / ||original|| of
    every map in :data:`~xviz.engine.analysis.MAP_NAMES` that the changed network computes (a
    dropped residual 1x1 conv is not run, so it has none).
    """

    ablations: tuple[Ablation, ...]
    target: int
    target_label: str
    original: list[Prediction]
    ablated: list[Prediction]
    original_probabilities: np.ndarray  # (classes,) float32
    ablated_probabilities: np.ndarray  # (classes,) float32
    kl_divergence: float
    map_change: OrderedDict[str, float]
    watched: str
    original_map: Map
    ablated_map: Map
    elapsed_s: float

    @property
    def target_probability_change(self) -> float:
        """Probability of the target class with the change minus without."""
        return float(
            self.ablated_probabilities[self.target] - self.original_probabilities[self.target]
        )

    @property
    def top1_changed(self) -> bool:
        return self.original[0].index != self.ablated[0].index

    @property
    def block_change(self) -> OrderedDict[str, float]:
        """Relative L2 change of the 14 block outputs."""
        return OrderedDict((name, self.map_change[name]) for name in BLOCKS)


def _as_tuple(ablations: Ablation | Sequence[Ablation]) -> tuple[Ablation, ...]:
    result = (ablations,) if isinstance(ablations, Ablation) else tuple(ablations)
    if not result:
        raise AnalysisError("No ablation was given.")
    return result


@contextmanager
def ablated(model: Xception, ablations: Ablation | Sequence[Ablation]) -> Iterator[Xception]:
    """The model with ``ablations`` applied inside the ``with`` block, restored exactly after."""
    ablations = _as_tuple(ablations)
    modules = map_modules(model)
    depthwise = {
        f"{name}.depthwise": modules[f"{name}.depthwise"]
        for a in ablations
        if a.kind == "relu_between"
        for block in a.blocks
        for name, _, _ in BLOCKS[block].sepconvs
    }
    zeroed: dict[str, list[int]] = {}
    for a in ablations:
        if a.kind == "zero_channel":
            zeroed.setdefault(a.map, []).append(a.channel)
    dropped = [model.blocks[b] for a in ablations if a.kind == "drop_residual" for b in a.blocks]

    def relu(name: str, output: torch.Tensor) -> torch.Tensor:
        return torch.relu(output)

    def zero(name: str, output: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(output.shape[1], dtype=output.dtype, device=output.device)
        mask[zeroed[name]] = 0
        return output * mask[:, None, None]  # a new tensor: the original output stays intact

    with model_lock(model), ExitStack() as stack:
        flags = [(block, block.use_residual) for block in dropped]
        stack.callback(_restore_residuals, flags)
        for block in dropped:
            block.use_residual = False
        stack.enter_context(Rewrite(depthwise, relu))
        stack.enter_context(Rewrite({name: modules[name] for name in zeroed}, zero))
        yield model


def _restore_residuals(flags: list[tuple[Any, bool]]) -> None:
    for block, flag in flags:
        block.use_residual = flag


def _relative_changes(
    model: Xception, x: torch.Tensor, ablations: tuple[Ablation, ...], watched: str
) -> tuple[torch.Tensor, torch.Tensor, OrderedDict[str, float], torch.Tensor, torch.Tensor]:
    """Both runs: (logits, ablated logits, relative change of each map, watched map before,
    watched map after). The ablated run compares each map as it comes, so only the
    original maps are held at once."""
    modules = map_modules(model)

    def keep(name: str, output: torch.Tensor) -> torch.Tensor:
        return output[0].detach().to(torch.float32, copy=True)  # (C, H, W)

    with Capture(modules, keep=keep) as before:
        logits = model(x)[0].float()  # (classes,)
    after: dict[str, torch.Tensor] = {}

    def compare(name: str, output: torch.Tensor) -> torch.Tensor:
        new = output[0].detach().float()
        if name == watched:
            after[name] = new
        reference = before.outputs[name]
        distance = torch.linalg.vector_norm(new - reference)
        return distance / torch.linalg.vector_norm(reference).clamp_min(1e-30)  # on the device

    with ablated(model, ablations), Capture(modules, keep=compare) as changes:
        changed_logits = model(x)[0].float()
    # A dropped residual conv (blocks 2, 3, 4, 13) does not run at all: it has no change.
    names = [name for name in MAP_NAMES if name in changes.outputs]
    # One read-back for all the ratios: a float() per map would make a GPU wait 88 times.
    ratios = torch.stack([changes.outputs[name] for name in names]).cpu().tolist()
    change = OrderedDict(zip(names, ratios, strict=True))
    return logits, changed_logits, change, before.outputs[watched], after[watched]


def ablate(
    model: Xception,
    image: Any,
    ablations: Ablation | Sequence[Ablation],
    target: int | str | None = None,
    watch: str | None = None,
    size: int | None = None,
    top_k: int = 5,
) -> AblationResult:
    """Run ``image`` through ``model`` as it is and with ``ablations``; compare.

    Args:
        model: an :class:`Xception` with a classifier head.
        image: an :class:`~xviz.engine.analysis.Analysis` (its image, size and target are reused)
            or any input :func:`~xviz.engine.analysis.analyze` takes.
        ablations: one :class:`Ablation` or several applied together.
        target: the class whose probability change is reported; default the original top-1.
        watch: the map kept before and after (default: the first ablation's ``watched_map``).
        size: input side when ``image`` is not an Analysis; default a tensor's own side,
            else the weights' size.
        top_k: length of the two top-k lists.

    The model is unchanged afterwards (parameters, flags, hooks).
    """
    started = time.perf_counter()
    ablations = _as_tuple(ablations)
    if model.classifier is None:
        raise AnalysisError(
            "This model has no classifier head, so there is no prediction to change."
        )
    watched = watch or ablations[0].watched_map()
    if watched not in MAP_NAMES:
        raise AnalysisError(f"Unknown map {watched!r}: use e.g. 'block5_sepconv1.depthwise'.")
    x, target = model_input(model, image, target, size)
    labels = class_labels(model)

    with model_lock(model), eval_mode(model), torch.inference_mode():
        x = x.to(model_device(model)).contiguous(memory_format=torch.channels_last)
        logits, changed_logits, change, before, after = _relative_changes(
            model, x, ablations, watched
        )
        original_map, ablated_map = to_map(watched, before), to_map(watched, after)
        log_p = torch.log_softmax(logits.double(), dim=0)
        log_q = torch.log_softmax(changed_logits.double(), dim=0)
        kl = float((log_p.exp() * (log_p - log_q)).sum())

    p = log_p.exp().float().cpu().numpy()
    q = log_q.exp().float().cpu().numpy()
    index = int(p.argmax()) if target is None else resolve_target(target, labels)
    return AblationResult(
        ablations=ablations,
        target=index,
        target_label=labels[index],
        original=top_predictions(p, labels, top_k),
        ablated=top_predictions(q, labels, top_k),
        original_probabilities=p,
        ablated_probabilities=q,
        kl_divergence=kl,
        map_change=change,
        watched=watched,
        original_map=original_map,
        ablated_map=ablated_map,
        elapsed_s=time.perf_counter() - started,
    )
