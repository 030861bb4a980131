"""Print what separable convolutions cost in Xception: counted, then measured on this device.

    python bench/cost.py [--device cpu|cuda] [--repeats 10] [--size 299] [--threads N]

First the theoretical table (every conv, params and multiply-adds, separable vs standard,
ratio vs 1/N + 1/D_K^2) and the network totals, then the latency of each of the 34
separable convs against its standard twin at the layer's real shape, side by side with
the predicted speed-up.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from xviz.methods.cost import NetworkCost, measure_all, network_cost
from xviz.model.xception import Xception


def print_costs(net: NetworkCost) -> None:
    print(f"# Cost per layer at {net.input_size}x{net.input_size} (batch 1)")
    print(
        f"{'layer':<18} {'kind':<8} {'M':>5} {'N':>5} {'DK':>2} {'s':>1} {'DF->DG':>8} "
        f"{'params':>10} {'std params':>11} {'madds':>13} {'std madds':>14} "
        f"{'ratio':>7} {'1/N+1/DK²':>9}"
    )
    for c in net.layers:
        formula = f"{c.formula_ratio:9.5f}" if c.formula_ratio is not None else f"{'-':>9}"
        print(
            f"{c.name:<18} {c.kind:<8} {c.in_channels:>5} {c.out_channels:>5} "
            f"{c.kernel_size:>2} {c.stride:>1} {f'{c.input_side}->{c.output_side}':>8} "
            f"{c.params:>10,} {c.standard_params:>11,} {c.madds:>13,} {c.standard_madds:>14,} "
            f"{c.ratio:>7.5f} {formula}"
        )
    print(
        f"\nTotals: params {net.params:,} (BN gamma/beta {net.bn_params:,} included; "
        f"+{net.bn_statistics:,} BN statistics) vs all-standard {net.standard_params:,}: "
        f"ratio {net.params_ratio:.4f}"
    )
    print(
        f"        multiply-adds {net.madds:,} vs all-standard {net.standard_madds:,}: "
        f"ratio {net.madds_ratio:.4f} ({1 / net.madds_ratio:.2f}x fewer)\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = Xception()
    print_costs(network_cost(model, args.size))

    def progress(done: int, total: int, name: str) -> None:
        print(f"  measuring {done}/{total} {name}", file=sys.stderr, flush=True)

    results = measure_all(
        model, args.device, args.size, args.repeats, args.warmup, progress=progress
    )
    first = results[0]
    print(
        f"# Measured latency on {first.device}, {first.threads} threads, median of "
        f"{first.repeats} runs (IQR in brackets), ms"
    )
    print(
        f"{'layer':<18} {'M':>5} {'N':>5} {'DG':>4} {'standard':>17} {'separable':>16} "
        f"{'depthwise':>9} {'pointwise':>9} {'measured':>8} {'predicted':>9}"
    )
    for r in results:
        c = r.layer
        print(
            f"{c.name:<18} {c.in_channels:>5} {c.out_channels:>5} {c.output_side:>4} "
            f"{r.standard_ms:>8.3f} ({r.standard_iqr_ms:>6.3f}) "
            f"{r.separable_ms:>7.3f} ({r.separable_iqr_ms:>6.3f}) "
            f"{r.depthwise_ms:>9.3f} {r.pointwise_ms:>9.3f} "
            f"{r.measured_speedup:>7.2f}x {r.theoretical_speedup:>8.2f}x"
        )
    standard = sum(r.standard_ms for r in results)
    separable = sum(r.separable_ms for r in results)
    print(
        f"\nAll 34 sepconvs: standard {standard:.1f} ms, separable {separable:.1f} ms, "
        f"measured {standard / separable:.2f}x"
    )


if __name__ == "__main__":
    main()
