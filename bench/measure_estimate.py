"""How well the Cost tab's announced duration predicts the measurement, side by side.

    python bench/measure_estimate.py [--sizes 150 299] [--rounds 2] [--device cpu]

Each round, for each size: calibrate (``machine_speed``, as the app does at start-up), predict
how long ``measure_all`` takes (``measure_all_seconds``), then run it with an empty latency
cache and time it. Prints both and their ratio (measured / predicted; goal: between 0.5 and 2
on an otherwise idle machine), then what the app announces after one real measurement: the
next size's prediction scaled by the first's ratio (``MeasureClock``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from xviz.methods.cost import (
    MeasureClock,
    clear_latency_cache,
    layer_costs,
    machine_speed,
    measure_all,
    measure_all_seconds,
)
from xviz.model.xception import Xception


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[150, 299])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model = Xception(head="imagenet").eval()
    print(f"{'round':>5} {'size':>5} {'calibrate s':>11} {'predicted s':>11} {'measured s':>10} "
          f"{'ratio':>6}")  # fmt: skip
    for round_ in range(args.rounds):
        clock = None
        for size in args.sizes:
            started = time.perf_counter()
            speed = machine_speed(args.device)
            calibrate = time.perf_counter() - started
            predicted = measure_all_seconds(layer_costs(model, size), speed)
            learned = clock.predicted_s(size) if clock else None
            clear_latency_cache()
            started = time.perf_counter()
            measure_all(model, args.device, input_size=size)
            measured = time.perf_counter() - started
            print(
                f"{round_:>5} {size:>5} {calibrate:>11.2f} {predicted:>11.1f} {measured:>10.1f} "
                f"{measured / predicted:>6.2f}"
            )
            if learned is not None:
                print(
                    f"{'':>11} after one measurement the app predicts {learned:.1f} s: "
                    f"ratio {measured / learned:.2f}"
                )
            clock = MeasureClock(model, speed)
            clock.record(size, measured)


if __name__ == "__main__":
    main()
