"""``build_atlas``: scan an image set with an engine, cut the crops, write the atlas.

The atlas is written into a temporary directory beside ``out`` and renamed to ``out`` only
when complete, so an interrupted build never leaves something that looks like an atlas.
"""

from __future__ import annotations

import datetime
import fnmatch
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from xviz.engine.analysis import MAP_NAMES, weights_name
from xviz.errors import AtlasError
from xviz.methods.atlas.local import LocalEngine, Progress
from xviz.methods.atlas.sources import resolve_images
from xviz.methods.atlas.store import (
    FORMAT,
    SCHEMA_VERSION,
    TABLE_FILE,
    Atlas,
    backbone_digest,
    load_atlas,
    write_atlas,
)
from xviz.methods.atlas.topk import TopK
from xviz.model.receptive import Box, receptive_boxes
from xviz.model.xception import Xception

ENGINES: tuple[str, ...] = ("local", "ray")
DEFAULT_BATCH = 16
DEFAULT_CROP_PX = 64
MAX_TOP_K = 100
MIN_SIZE, MAX_SIZE = 71, 1024
SKIPPED_RECORDED = 20  # (source, reason) pairs kept in the metadata


def select_maps(maps: str | Sequence[str] | None) -> list[str]:
    """All maps (``None``), those matching a glob (``"block1*"``, ``"*.depthwise"``) or the
    named ones, in network order."""
    if maps is None:
        return list(MAP_NAMES)
    if isinstance(maps, str):
        chosen = [name for name in MAP_NAMES if fnmatch.fnmatchcase(name, maps)]
        if not chosen:
            raise AtlasError(
                f"No map matches {maps!r}: maps are named like 'block5_sepconv1.depthwise', "
                "'block2_residual', 'block5' (try 'block5*' or '*.pointwise')."
            )
        return chosen
    unknown = [name for name in maps if name not in MAP_NAMES]
    if unknown or not maps:
        raise AtlasError(f"Unknown maps {unknown or '(none given)'}: see xviz.MAP_NAMES.")
    return [name for name in MAP_NAMES if name in set(maps)]


def _check(name: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise AtlasError(f"{name} must be an integer, got {value!r}.")
    if not low <= value <= high:
        raise AtlasError(f"{name} must be between {low} and {high}, got {value}.")
    return int(value)


def _check_out(out: Path) -> None:
    """Refuse to replace anything but an atlas or an empty directory."""
    if out.is_dir() and not (out / TABLE_FILE).is_file() and any(out.iterdir()):
        raise AtlasError(f"{out} exists and is not an atlas: choose another --out.")
    if out.exists() and not out.is_dir():
        raise AtlasError(f"{out} exists and is a file: choose another --out.")


def _engine(engine: str, ray_address: str | None) -> LocalEngine:
    if engine == "local":
        return LocalEngine()
    if engine == "ray":
        from xviz.methods.atlas.ray_engine import RayEngine  # Ray is optional: only for this engine

        return RayEngine(ray_address)
    raise AtlasError(f"Unknown engine {engine!r}: use one of {', '.join(ENGINES)}.")


def build_atlas(
    model: Xception,
    images: str | os.PathLike | Iterable[str | os.PathLike],
    out: str | os.PathLike,
    size: int = 150,
    top_k: int = 9,
    maps: str | Sequence[str] | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    progress: Progress | None = None,
    batch_size: int = DEFAULT_BATCH,
    crop_px: int = DEFAULT_CROP_PX,
    keep_crop: Callable[[str], bool] | None = None,
) -> Atlas:
    """Find the ``top_k`` images of every channel of ``maps`` over ``images`` and write them
    as an atlas directory ``out``.

    Args:
        model: the :class:`Xception` whose maps are scanned (its weights are recorded).
        images: a directory (image files under it, recursively) or a list of paths; each
            example's ``source`` is the path as given. Unreadable images are skipped and
            counted (``Atlas.skipped``), never fatal.
        out: the atlas directory; an existing atlas there is replaced once the new one is
            complete.
        size: the side images are resized to, as ``xviz.analyze(..., size=size)``.
        top_k: examples kept per channel.
        maps: all 88 (``None``), a glob over ``xviz.MAP_NAMES``, or a list of names.
        engine: ``"local"`` (this process) or ``"ray"`` (a Ray cluster, see
            ``xviz.methods.atlas.ray_engine``); both give the same atlas.
        ray_address: the Ray cluster for ``engine="ray"`` (default: see ``RayEngine``).
        progress: ``progress(fraction, message)``, fraction of images scanned.
        batch_size: images per model run (and per partial top-k on Ray).
        crop_px: the longer side of a stored crop at most.
        keep_crop: which sources to store crops of (default all); the others keep their
            score and box and are re-read for display (``Atlas.image_roots``).
    """
    out = Path(out)
    size = _check("size", size, MIN_SIZE, MAX_SIZE)
    top_k = _check("top_k", top_k, 1, MAX_TOP_K)
    batch_size = _check("batch_size", batch_size, 1, 1024)
    crop_px = _check("crop_px", crop_px, 8, 512)
    chosen = select_maps(maps)
    sources = resolve_images(images)
    if not sources:
        raise AtlasError(f"No images found in {images}.")
    _check_out(out)
    runner = _engine(engine, ray_address)
    with runner:
        result = runner.scan(model, sources, size, chosen, top_k, batch_size, progress)
        if result.images == 0:
            reason = result.skipped[0][1] if result.skipped else "no image was scanned"
            raise AtlasError(f"None of the {len(sources)} images could be read (first: {reason})")
        boxes = {
            name: receptive_boxes(name, ids.ravel(), size, model.padding).reshape(*ids.shape, 4)
            for name, ids in result.positions.items()
        }
        crop_ids, pairs = _crop_pairs(result, boxes, keep_crop)
        requests: dict[str, list[Box]] = {}
        for source, box in pairs:
            requests.setdefault(source, []).append(box)
        if progress is not None:
            progress(1.0, f"atlas: cutting crops from {len(requests)} images")
        cut = runner.cut_crops(requests, size, crop_px)
    crops, renumber = _collect(pairs, cut)
    crop_ids = {name: renumber[ids] for name, ids in crop_ids.items()}
    metadata = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "size": size,
        "top_k": top_k,
        "maps": chosen,
        "images": result.images,
        "skipped": len(result.skipped),
        "skipped_examples": result.skipped[:SKIPPED_RECORDED],
        "weights": weights_name(model),
        "weights_sha256": model.source.sha256 if model.source is not None else None,
        "backbone_sha256": backbone_digest(model),
        "padding": model.padding,
        "crop_px": crop_px,
        "engine": runner.name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    _write_then_rename(out, metadata, result, boxes, crop_ids, crops)
    return load_atlas(out)


def _crop_pairs(
    result: TopK, boxes: dict[str, np.ndarray], keep_crop: Callable[[str], bool] | None
) -> tuple[dict[str, np.ndarray], list[tuple[str, Box]]]:
    """The distinct (source, box) pairs to crop, and per map (r, C) the number of each
    example's pair (-1 where its source keeps no crop)."""
    keep = np.array([keep_crop is None or bool(keep_crop(s)) for s in result.sources])
    names = list(result.ids)
    keys = np.concatenate(
        [np.column_stack([result.ids[n].reshape(-1, 1), boxes[n].reshape(-1, 4)]) for n in names]
    ).astype(np.int64)  # (N, 5): source id, x0, y0, x1, y1
    kept = keep[keys[:, 0]]
    unique, inverse = np.unique(keys[kept], axis=0, return_inverse=True)
    numbers = np.full(len(keys), -1, np.int64)
    numbers[kept] = inverse.ravel()
    crop_ids, start = {}, 0
    for name in names:
        count = result.ids[name].size
        crop_ids[name] = numbers[start : start + count].reshape(result.ids[name].shape)
        start += count
    pairs = [(result.sources[int(u[0])], tuple(int(v) for v in u[1:])) for u in unique]
    return crop_ids, pairs


def _collect(
    pairs: list[tuple[str, Box]], cut: dict[str, list[bytes | None]]
) -> tuple[list[bytes], np.ndarray]:
    """The crops that could be cut, numbered 0..n-1, and pair number -> crop number (-1 if
    none; index -1 also gives -1)."""
    crops: list[bytes] = []
    renumber = np.full(len(pairs) + 1, -1, np.int64)
    seen: dict[str, int] = {}
    for number, (source, _) in enumerate(pairs):
        index = seen[source] = seen.get(source, -1) + 1  # pairs of a source keep their order
        jpeg = cut.get(source, [])[index] if index < len(cut.get(source, [])) else None
        if jpeg is not None:
            renumber[number] = len(crops)
            crops.append(jpeg)
    return crops, renumber


def _write_then_rename(
    out: Path,
    metadata: dict,
    result: TopK,
    boxes: dict[str, np.ndarray],
    crop_ids: dict[str, np.ndarray],
    crops: list[bytes],
) -> None:
    """Write into a temporary sibling directory, then rename it to ``out`` (replacing an
    older atlas there): readers see the old atlas or the new one, never half of one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.parent / f".{out.name}.building-{uuid.uuid4().hex[:12]}"
    temporary.mkdir()
    try:
        write_atlas(
            temporary,
            metadata,
            list(result.maps),
            min(result.k, result.images),
            result.sources,
            result.scores,
            result.ids,
            boxes,
            crop_ids,
            crops,
        )
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(out, old)
            os.rename(temporary, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(temporary, out)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
