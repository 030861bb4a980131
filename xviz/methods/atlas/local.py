"""The ``local`` engine: one process, images in batches, the next batch decoded while the
model runs on the current one.

An engine is a context manager with ``scan`` (images -> :class:`~xviz.methods.atlas.topk.TopK`) and
``cut_crops`` (boxes per source -> JPEG crops); the ``ray`` engine
(``xviz.methods.atlas.ray_engine``) has the same two methods and gives the same answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from xviz.engine.runner import Progress
from xviz.methods.atlas.sources import crops_of, decode_all
from xviz.methods.atlas.topk import TopK, empty, merge, scan_batch
from xviz.model.receptive import Box
from xviz.model.xception import Xception


def status(done: int, total: int, skipped: int) -> str:
    """The progress message of a scan (both engines)."""
    return f"atlas: {done}/{total} images ({skipped} skipped)"


class LocalEngine:
    """Runs everything in this process, on the model's own device."""

    name = "local"

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

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
        """Top-k of every channel of ``maps`` over ``sources``."""
        result = empty(maps, k)
        batches = [sources[i : i + batch_size] for i in range(0, len(sources), batch_size)]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="xviz-atlas-decode") as pool:
            pending = pool.submit(decode_all, batches[0], size) if batches else None
            for index in range(len(batches)):
                pixels, kept, skipped = pending.result()
                if index + 1 < len(batches):
                    pending = pool.submit(decode_all, batches[index + 1], size)
                partial = scan_batch(model, pixels, kept, maps, k) if kept else empty(maps, k)
                partial.skipped += skipped
                result = merge(result, partial)
                if progress is not None:
                    done = result.images + len(result.skipped)
                    progress(done / len(sources), status(done, len(sources), len(result.skipped)))
        return result

    def cut_crops(
        self, requests: dict[str, list[Box]], size: int, crop_px: int
    ) -> dict[str, list[bytes | None]]:
        """JPEG crops of the requested boxes, per source (``None`` where unreadable)."""
        return {s: crops_of(s, boxes, size, crop_px) for s, boxes in requests.items()}
