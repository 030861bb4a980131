"""The ``ray`` engine: the atlas scan on a Ray cluster, with Ray Data.

Pipeline: ``ray.data.read_binary_files`` reads the files (local paths on every node, or
cloud URIs) -> ``map_batches`` tasks decode them with ``xviz.engine.preprocess`` (the pixels
``xviz.analyze`` sees) -> ``map_batches`` with a pool of actors, each holding one copy of
the model (one GPU each when the cluster has GPUs, else CPU threads), turns every batch into
a partial top-k (``xviz.methods.atlas.topk.scan_batch``) -> the driver merges the partial results as
they arrive. Top-k per channel is associative, so the merged result is exactly the local
engine's, whatever the batches and their order (ties are broken by source path).

Ray is optional (``pip install "xviz[ray]"``) and imported only here, only when this engine
is used: never by ``import xviz`` or by the app. The driver's own ``xviz`` package is shipped
to the workers (``runtime_env`` ``py_modules``), so the cluster runs the same code.
"""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xviz.engine.runner import Progress
from xviz.errors import AtlasError
from xviz.methods.atlas.local import status
from xviz.methods.atlas.sources import crops_of, decode
from xviz.methods.atlas.topk import TopK, empty, merge, scan_batch
from xviz.model.receptive import Box
from xviz.model.xception import Xception

INSTALL_HINT = (
    'The ray engine needs Ray: pip install "xviz[ray]" (or pip install "ray[data]==2.60.0"), '
    "or use --engine local."
)
XVIZ_PACKAGE = Path(__file__).resolve().parents[2]  # the xviz package
# Logical CPUs a read or decode task asks for: light work that must not wait behind the
# model actors, which take the rest.
READ_CPUS = 0.25
DECODE_CPUS = 0.5


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise AtlasError(INSTALL_HINT) from error
    return ray


def _lookup(sources: Sequence[str]) -> dict[str, str]:
    """The path Ray Data reports for a file -> the source as given (Ray may report a local
    path made absolute, or a URI without its scheme)."""
    table: dict[str, str] = {}
    for source in sources:
        scheme, sep, rest = source.partition("://")
        if sep and scheme.isalnum():
            table[rest] = source
        else:
            table[os.path.abspath(source)] = source
            table[os.path.normpath(source)] = source
        table[source] = source
    return table


def _decode_batch(batch: dict[str, np.ndarray], size: int, lookup: dict[str, str]) -> dict:
    """Ray Data task: file bytes -> pixels (B, S, S, 3) uint8, source, reason ("" if fine)."""
    pixels = np.zeros((len(batch["path"]), size, size, 3), np.uint8)
    reasons = []
    for i, data in enumerate(batch["bytes"]):
        decoded, reason = decode(bytes(data), size)
        if decoded is not None:
            pixels[i] = decoded
        reasons.append(reason)
    sources = [lookup.get(str(path), str(path)) for path in batch["path"]]
    return {
        "source": np.array(sources, dtype=object),
        "pixels": pixels,
        "reason": np.array(reasons, dtype=object),
    }


class _ScanActor:
    """Ray Data actor: holds one copy of the model, turns a batch into a pickled partial top-k."""

    def __init__(self, model_ref: list, maps: list[str], k: int, threads: int) -> None:
        import ray
        import torch

        torch.set_num_threads(threads)
        model = ray.get(model_ref[0])
        use_gpu = torch.cuda.is_available() and len(ray.get_gpu_ids()) > 0
        self.model = model.to("cuda" if use_gpu else "cpu").eval()
        self.maps = maps
        self.k = k

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        ok = batch["reason"] == ""
        sources = [str(s) for s in batch["source"][ok]]
        if sources:
            partial = scan_batch(self.model, batch["pixels"][ok], sources, self.maps, self.k)
        else:
            partial = empty(self.maps, self.k)
        partial.skipped += [
            (str(s), str(r))
            for s, r in zip(batch["source"][~ok], batch["reason"][~ok], strict=True)
        ]
        seen = [str(s) for s in batch["source"]]
        return {"partial": np.array([pickle.dumps((partial, seen))], dtype=object)}


def _crop_batch(
    batch: dict[str, np.ndarray],
    requests: dict[str, list[Box]],
    lookup: dict[str, str],
    size: int,
    crop_px: int,
) -> dict:
    """Ray Data task: file bytes -> the requested crops of each file, pickled."""
    sources = [lookup.get(str(path), str(path)) for path in batch["path"]]
    crops = [
        pickle.dumps(crops_of(bytes(data), requests[source], size, crop_px))
        for source, data in zip(sources, batch["bytes"], strict=True)
    ]
    return {"source": np.array(sources, dtype=object), "crops": np.array(crops, dtype=object)}


class RayEngine:
    """Connects to a Ray cluster (``address``; default: the one this process is connected
    to, else ``RAY_ADDRESS``, else a new local one) and disconnects from what it started."""

    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self._ray: Any = None
        self._started = False

    def __enter__(self) -> RayEngine:
        ray = _import_ray()
        if not ray.is_initialized():
            ray.init(
                address=self.address,
                runtime_env={"py_modules": [str(XVIZ_PACKAGE)]},
                log_to_driver=False,
            )
            self._started = True
        ray.data.DataContext.get_current().enable_progress_bars = False
        self._ray = ray
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self._ray.shutdown()
        self._started = False

    def _options(self) -> dict[str, Any]:
        return {"batch_format": "numpy"}

    def scan(
        self,
        model: Xception,
        sources: Sequence[str],
        size: int,
        maps: Sequence[str],
        k: int,
        batch_size: int,
        progress: Progress | None,
    ) -> TopK:
        """Top-k of every channel of ``maps`` over ``sources`` on the cluster."""
        ray = self._ray
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 1))
        batches = -(-len(sources) // batch_size)
        if gpus:
            actors, threads, placement = min(gpus, batches), 1, {"num_gpus": 1, "num_cpus": 1}
        else:
            # One CPU stays for reading and decoding; torch threads use what actors leave.
            actors = max(1, min(int(cpus) - 1, batches))
            threads = max(1, int(cpus // actors))
            placement = {"num_cpus": 1}
        model_ref = ray.put(copy.deepcopy(model).cpu())
        lookup = _lookup(sources)
        data = ray.data.read_binary_files(
            list(sources), include_paths=True, ignore_missing_paths=True, num_cpus=READ_CPUS
        )
        decoded = data.map_batches(
            _decode_batch,
            fn_kwargs={"size": size, "lookup": lookup},
            batch_size=batch_size,
            num_cpus=DECODE_CPUS,
            **self._options(),
        )
        partials = decoded.map_batches(
            _ScanActor,
            fn_constructor_kwargs={
                "model_ref": [model_ref],
                "maps": list(maps),
                "k": k,
                "threads": threads,
            },
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=actors),
            **placement,
            **self._options(),
        )
        result, seen = empty(maps, k), set()
        for row in partials.iter_rows():
            partial, batch_sources = pickle.loads(row["partial"])
            result = merge(result, partial)
            seen.update(batch_sources)
            if progress is not None:
                done = len(seen)
                progress(done / len(sources), status(done, len(sources), len(result.skipped)))
        result.skipped += [
            (source, "it could not be read (no such file)")
            for source in sources
            if source not in seen
        ]
        return result

    def cut_crops(
        self, requests: dict[str, list[Box]], size: int, crop_px: int
    ) -> dict[str, list[bytes | None]]:
        """JPEG crops of the requested boxes, per source, cut on the cluster."""
        if not requests:
            return {}
        ray = self._ray
        data = ray.data.read_binary_files(
            list(requests), include_paths=True, ignore_missing_paths=True, num_cpus=READ_CPUS
        )
        crops = data.map_batches(
            _crop_batch,
            fn_kwargs={
                "requests": requests,
                "lookup": _lookup(list(requests)),
                "size": size,
                "crop_px": crop_px,
            },
            batch_size=16,
            num_cpus=DECODE_CPUS,
            **self._options(),
        )
        found = {str(row["source"]): pickle.loads(row["crops"]) for row in crops.iter_rows()}
        return {
            source: found.get(source, [None] * len(boxes)) for source, boxes in requests.items()
        }
