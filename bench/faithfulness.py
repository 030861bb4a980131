"""Time of the whole faithfulness check (every method, batched) for one shipped example.

    python bench/faithfulness.py [--weights kitchenware] [--example coffee] [--size 150]

Goal (issue 25): <= 60 s on this 2-core CPU at 150 (the curves, areas, Captum's metrics and the
randomisation correlations of every method together). The model is warmed by one forward first,
as the app's is; the check then runs once, as a visitor runs it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.common import bench_model
from xviz.data.gallery import example_names
from xviz.methods.faithfulness import faithfulness, planned_images

GOAL_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="kitchenware")
    parser.add_argument("--example", default="coffee", choices=sorted(example_names()))
    parser.add_argument("--size", type=int, default=150)
    args = parser.parse_args()
    model = bench_model(args.weights)
    with torch.no_grad():
        model(torch.zeros(1, 3, args.size, args.size))  # warm: the first forward allocates
    started = time.perf_counter()
    result = faithfulness(model, str(example_names()[args.example]), size=args.size)
    elapsed = time.perf_counter() - started
    weights = model.source.name if model.source is not None else "random"
    print(
        f"faithfulness check, {args.example} at {args.size}, {weights} weights, "
        f"{torch.get_num_threads()} CPU threads, {len(result.methods)} methods, "
        f"about {planned_images()} images through the model"
    )
    print(f"{elapsed:.1f} s; {elapsed / GOAL_S:.2f} of the {GOAL_S:.0f} s goal")


if __name__ == "__main__":
    main()
