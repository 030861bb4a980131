"""Top-k examples per channel: scan a batch of images, merge partial results exactly.

A :class:`TopK` holds, for every channel of every map, the best ``k`` images so far: score
(the channel's maximum over positions), image (an index into its own source list) and the
flat position of that maximum. Images are ordered by score, highest first, and equal scores
by source path, so the order is total.

Merging two partial results keeps the best ``k`` of their union per channel. Keeping the
best ``k`` under a total order is associative and commutative, so partial results from any
split of the images (batches, workers, machines), merged in any order or as a tree, give
exactly the result of one pass over all images. A merge sorts 2k candidates per channel:
O(channels x k), independent of the number of images behind each side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from xviz.engine.analysis import map_channels, map_modules, model_device
from xviz.engine.hooks import eval_mode, model_lock
from xviz.engine.preprocess import from_uint8
from xviz.engine.truncated import forward_until
from xviz.model.xception import Xception


@dataclass
class TopK:
    """Partial or final top-k per channel. Per map: ``scores`` (r, C) float32, ``ids``
    (r, C) int32 into ``sources``, ``positions`` (r, C) int32 flat index ``row * side +
    column`` into the map; row 0 is the best, r = min(k, images scanned).
    ``skipped`` lists ``(source, reason)`` of the images that could not be used."""

    k: int
    sources: list[str]
    scores: dict[str, np.ndarray]
    ids: dict[str, np.ndarray]
    positions: dict[str, np.ndarray]
    images: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def maps(self) -> tuple[str, ...]:
        return tuple(self.scores)


def empty(maps: Sequence[str], k: int) -> TopK:
    """The result of scanning no image."""
    shapes = {name: (0, map_channels(name)) for name in maps}
    return TopK(
        k=k,
        sources=[],
        scores={n: np.empty(s, np.float32) for n, s in shapes.items()},
        ids={n: np.empty(s, np.int32) for n, s in shapes.items()},
        positions={n: np.empty(s, np.int32) for n, s in shapes.items()},
    )


def merge(a: TopK, b: TopK) -> TopK:
    """The best ``k`` per channel of ``a`` and ``b`` together (their images are distinct)."""
    if a.k != b.k or a.maps != b.maps:
        raise ValueError("cannot merge top-k results of different k or maps")
    sources = a.sources + b.sources
    # rank[i] = position of sources[i] in sorted order, for ties between equal scores.
    rank = np.empty(len(sources), np.int64)
    rank[np.argsort(np.array(sources, dtype=object), kind="stable")] = np.arange(len(sources))
    merged: dict[str, dict[str, np.ndarray]] = {"scores": {}, "ids": {}, "positions": {}}
    for name in a.maps:
        scores = np.concatenate([a.scores[name], b.scores[name]])  # (ra + rb, C)
        ids = np.concatenate([a.ids[name], b.ids[name] + len(a.sources)])
        positions = np.concatenate([a.positions[name], b.positions[name]])
        # lexsort sorts by the last key first: score descending, then source ascending.
        order = np.lexsort((rank[ids], -scores), axis=0)[: a.k]  # (r, C)
        merged["scores"][name] = np.take_along_axis(scores, order, axis=0)
        merged["ids"][name] = np.take_along_axis(ids, order, axis=0)
        merged["positions"][name] = np.take_along_axis(positions, order, axis=0)
    return _compact(
        TopK(
            k=a.k,
            sources=sources,
            scores=merged["scores"],
            ids=merged["ids"],
            positions=merged["positions"],
            images=a.images + b.images,
            skipped=a.skipped + b.skipped,
        )
    )


def _compact(result: TopK) -> TopK:
    """Drop the sources no channel keeps, so a partial result stays O(channels x k)."""
    if not result.sources:
        return result
    used = np.zeros(len(result.sources), bool)
    for ids in result.ids.values():
        used[ids.ravel()] = True
    new_id = np.cumsum(used, dtype=np.int64) - 1
    result.sources = [s for s, keep in zip(result.sources, used, strict=True) if keep]
    result.ids = {name: new_id[ids].astype(np.int32) for name, ids in result.ids.items()}
    return result


def scan_batch(
    model: Xception,
    pixels: np.ndarray,
    sources: Sequence[str],
    maps: Sequence[str],
    k: int,
) -> TopK:
    """Run images (B, S, S, 3) uint8 (the resized inputs, ``xviz.engine.preprocess.to_display``)
    through ``model`` as one batch and keep each channel's maximum and where it is.

    The maximum is over the float32 map exactly as ``xviz.analyze`` computes ``Map.max``;
    its position is the first one (row-major) holding it. An image whose maxima are not all
    finite is skipped. Holds the model's lock; the model is left as it was.
    """
    modules = map_modules(model)

    def channel_max(name: str, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, positions = output.flatten(2).float().max(dim=2)  # (B, C), first maximum
        return values.cpu(), positions.to(torch.int32).cpu()

    device = model_device(model)
    x = from_uint8(pixels).to(device).contiguous(memory_format=torch.channels_last)
    with model_lock(model), eval_mode(model), torch.inference_mode():
        outputs = forward_until(model, x, {n: modules[n] for n in maps}, keep=channel_max)
    finite = np.ones(len(sources), bool)
    for values, _ in outputs.values():
        finite &= torch.isfinite(values).all(dim=1).numpy()
    keep = np.flatnonzero(finite)
    ids = np.arange(len(keep), dtype=np.int32)[:, None]  # (B', 1)
    unsorted = TopK(
        k=k,
        sources=[sources[i] for i in keep],
        scores={n: outputs[n][0].numpy()[keep] for n in maps},
        ids={n: np.repeat(ids, map_channels(n), axis=1) for n in maps},
        positions={n: outputs[n][1].numpy()[keep] for n in maps},
        images=len(keep),
        skipped=[(sources[i], "its activations are not finite") for i in np.flatnonzero(~finite)],
    )
    return merge(empty(maps, k), unsorted)
