"""The GPU seconds of a visit: what each call books (``xviz.engine.zerogpu.BookingClock``) against
what it uses, call by call, as a visit goes: a first analysis, each attribution method, a
feature visualization, repeats.

Without ZeroGPU's infrastructure the calls go through ``xviz.engine.zerogpu.ZeroGPURunner`` with the
``spaces`` package's two decorated functions replaced by an in-process stand-in: the job is
pickled both ways (as the package's queues do) and run on the worker's copy of the model on
``--device`` (a GPU where one is lent). The first call of the run is cold: the stand-in then
pays what a new ZeroGPU worker pays that this process has not yet paid (moving the weights to
the device; CUDA's set-up comes with the first call). "used" is the call's time in the Space's
process, "in fn" the function's own. On ZeroGPU, fork and the device API add to "used".

    python bench/zerogpu.py --device cuda      # where a GPU is lent
    python bench/zerogpu.py --device cpu --size 150 --page 2   # the mechanics, on a CPU
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image

from bench.common import bench_model
from xviz.engine import zerogpu
from xviz.engine.analysis import analyze
from xviz.methods.attribution import LAYER_METHODS, METHODS, attribute
from xviz.methods.featurevis import visualize

ROOT = Path(__file__).resolve().parents[1]


def stand_in() -> dict:
    """``install()``'s two decorated functions, run here (see the module docstring)."""

    def run(job):
        return pickle.loads(pickle.dumps(zerogpu.run_job(pickle.loads(pickle.dumps(job)))))

    def stream(job):
        for item in zerogpu.stream_job(pickle.loads(pickle.dumps(job))):
            yield pickle.loads(pickle.dumps(item))

    return {"run": run, "stream": stream}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--weights", default="kitchenware")
    parser.add_argument("--page", type=int, default=16, help="channels of the page visualized")
    args = parser.parse_args()
    model = bench_model(args.weights)
    zerogpu._decorated.update(stand_in())
    runner = zerogpu.ZeroGPURunner(model, gpu_device=args.device)
    with Image.open(ROOT / "xviz" / "data" / "examples" / "cat.jpg") as img:
        photo = np.asarray(img.convert("RGB"))
    with Image.open(ROOT / "xviz" / "data" / "examples" / "rocket.jpg") as img:
        other = np.asarray(img.convert("RGB"))
    size = args.size
    progress = {"progress": lambda *a: None}
    calls = [
        ("first analysis", analyze, (photo,), {"size": size}),
        ("another photo", analyze, (other,), {"size": size}),
    ]
    for method in METHODS:
        block = {"block": "block13"} if method in LAYER_METHODS else {}
        calls.append((method, attribute, (photo,), {"size": size, "method": method, **block}))
        calls.append((f"{method}, again", attribute, (other,),
                      {"size": size, "method": method, **block}))  # fmt: skip
    calls.append(("feature visualization, 1 channel", visualize,
                  ("block5_sepconv1.pointwise", [3], 150), {}))  # fmt: skip
    calls.append((f"feature visualization, {args.page} channels", visualize,
                  ("block5_sepconv1.pointwise", list(range(args.page)), 150), {}))  # fmt: skip
    print(f"device {args.device}, input {size}x{size}, weights {args.weights}")
    print(f"{'call':40} {'booked s':>9} {'used s':>8} {'in fn s':>8}  booked/used")
    total_booked = total_used = 0.0
    for name, fn, call_args, kwargs in calls:
        extra = progress if fn is not analyze else {}
        started = time.perf_counter()
        runner(fn, *call_args, **kwargs, **extra)
        visit = runner.clock.visits[-1]
        total_booked += visit.booked_s
        total_used += visit.used_s
        ratio = visit.booked_s / max(visit.used_s, 1e-3)
        print(
            f"{name:40} {visit.booked_s:9d} {visit.used_s:8.2f} {visit.gpu_s:8.2f}  "
            f"{ratio:6.1f}x  ({time.perf_counter() - started:.2f} s wall)"
        )
    print(f"{'all':40} {total_booked:9.0f} {total_used:8.2f}")


if __name__ == "__main__":
    main()
