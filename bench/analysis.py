"""Benchmark of the analysis engine against plain and naive baselines, side by side.

    python bench/analysis.py [--size 299] [--repeats 5] [--ig-steps 32]

Every timed variant runs once per repetition, in turn, in one process, on the same input;
the table shows medians and the ratios the engine is held to:

- ``analyze`` / one plain forward + backward of the same model       goal <= 1.3
- naive (forward + 14 separate Captum ``LayerGradCam`` calls) / analyze   goal >= 5
- xviz forward (``xviz.inference.logits``) / timm ``legacy_xception``  goal <= 1.0

then the cost of rendering one 64-tile page, the memory of one analysis, and Captum
IntegratedGradients' time and peak memory. The timm row needs ``timm`` importable (it is not
a dependency of xviz: install it in a separate benchmark environment); without it the row
says so. Random weights: the timings do not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from captum.attr import LayerAttribution, LayerGradCam

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from xviz.ablation import Ablation, ablate
from xviz.analysis import analyze
from xviz.attribution import DEFAULT_BATCH, attribute
from xviz.inference import logits
from xviz.model import FLOWS, Xception

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def timeit(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def interleaved(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each variant; one warm-up, then ``repeats`` rounds in rotating order."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(timeit(variants[name]))
    return {name: statistics.median(values) for name, values in times.items()}


def _status_kb(field: str) -> int | None:
    if not STATUS.exists():
        return None
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def peak_memory_mb(fn: Callable[[], object]) -> tuple[float, float | None]:
    """(seconds, peak resident memory above the level before, in MB) of one call.

    Linux resets the peak on writing 5 to /proc/self/clear_refs; elsewhere the peak is the
    process' lifetime maximum and is not reported.
    """
    try:
        CLEAR_REFS.write_text("5")
        before = _status_kb("VmRSS")
    except OSError:
        before = None
    seconds = timeit(fn)
    peak = _status_kb("VmHWM")
    if before is None or peak is None:
        return seconds, None
    return seconds, (peak - before) / 1024


def plain_forward_backward(model: Xception, x: torch.Tensor) -> Callable[[], None]:
    """What any tool pays for one gradient: forward, then backward from the top logit."""

    def run() -> None:
        out = model(x.clone().requires_grad_(True))  # (1, classes)
        out[0, int(out[0].argmax())].backward()
        model.zero_grad(set_to_none=True)

    return run


def naive_gradcams(model: Xception, x: torch.Tensor, size: int) -> Callable[[], None]:
    """A forward for the top class, then Captum's LayerGradCam once per block, upsampled."""

    def run() -> None:
        with torch.no_grad():
            target = int(model(x)[0].argmax())
        for block in model.blocks.values():
            cam = LayerGradCam(model, block).attribute(x, target, relu_attributions=True)
            LayerAttribution.interpolate(cam, (size, size), "bilinear")

    return run


def timm_forwards(x: torch.Tensor) -> tuple[dict[str, Callable[[], object]], str]:
    if importlib.util.find_spec("timm") is None:
        return {}, "timm not installed (install it in the benchmark environment)"
    try:
        import timm

        net = timm.create_model("legacy_xception", pretrained=False).eval()
    except Exception as error:  # timm's imports (torchvision) can fail in many ways
        return {}, f"timm not importable ({type(error).__name__}: {error})"
    net_cl = timm.create_model("legacy_xception", pretrained=False).eval()
    net_cl = net_cl.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def nchw() -> None:
        with torch.inference_mode():
            net(x)

    def channels_last() -> None:
        with torch.inference_mode():
            net_cl(x_cl)

    variants = {"timm forward, NCHW": nchw, "timm forward, channels_last": channels_last}
    return variants, f"timm {timm.__version__}"


def render_page_ms(analysis, repeats: int) -> list[tuple[str, float]]:
    if importlib.util.find_spec("xviz.render") is None:
        return []
    from xviz.render import channel_grid

    rows = []
    for name in ("block5_sepconv2.depthwise", "block2_sepconv2.pointwise"):
        m = analysis.map(name)
        page = m.order("mean")[:64]
        times = [
            timeit(lambda m=m, page=page: channel_grid(m.array(), page)) for _ in range(repeats)
        ]
        rows.append((f"render one 64-tile page of {name} {m.shape}", statistics.median(times)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ig-steps", type=int, default=32)
    args = parser.parse_args()
    size = args.size

    torch.manual_seed(0)
    model = Xception(head="imagenet").eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def plain_inference() -> None:
        with torch.inference_mode():
            model(x)

    timm_variants, timm_note = timm_forwards(x)
    variants: dict[str, Callable[[], object]] = {
        "plain forward+backward, NCHW": plain_forward_backward(model, x),
        "plain forward+backward, channels_last input": plain_forward_backward(model, x_cl),
        "analyze (all maps + 14 Grad-CAMs)": lambda: analyze(model, x),
        "naive: forward + 14 LayerGradCam": naive_gradcams(model, x, size),
        "xviz forward (inference.logits)": lambda: logits(model, x),
        "xviz model forward, NCHW, inference_mode": plain_inference,
        **timm_variants,
    }
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}; {timm_note}; input {size}x{size}; "
        f"medians of {args.repeats} interleaved rounds"
    )
    med = interleaved(variants, args.repeats)
    for name, seconds in med.items():
        print(f"  {name:<48} {seconds * 1000:8.1f} ms")

    plain = min(
        med["plain forward+backward, NCHW"], med["plain forward+backward, channels_last input"]
    )
    ours = med["analyze (all maps + 14 Grad-CAMs)"]
    naive = med["naive: forward + 14 LayerGradCam"]
    checks = [
        ("analyze / plain forward+backward (faster of the two)", ours / plain, "<=", 1.3),
        ("naive 14 x LayerGradCam / analyze", naive / ours, ">=", 5.0),
    ]
    if timm_variants:
        timm_best = min(med[name] for name in timm_variants)
        forward = med["xviz forward (inference.logits)"]
        checks.append(
            ("xviz forward / timm forward (faster of the two)", forward / timm_best, "<=", 1.0)
        )
    print()
    print(f"  {'ratio':<56} {'value':>7}  {'goal':<7} met")
    for name, value, op, limit in checks:
        met = value <= limit if op == "<=" else value >= limit
        print(f"  {name:<56} {value:7.2f}  {op} {limit:<4g} {'yes' if met else 'NO'}")
    if not timm_variants:
        print(f"  xviz forward / timm forward: skipped ({timm_note})")

    print()
    analysis = analyze(model, x)
    print(f"  one analysis in memory at {size}: {analysis.nbytes / 2**20:6.1f} MB (goal <= 64)")
    if size != 150:
        small = analyze(model, torch.nn.functional.interpolate(x, (150, 150), mode="bilinear"))
        print(f"  one analysis in memory at 150: {small.nbytes / 2**20:6.1f} MB")
    render_rows = render_page_ms(analysis, repeats=max(args.repeats, 10))
    for name, seconds in render_rows:
        print(f"  {name}: {seconds * 1000:.1f} ms (median)")
    if not render_rows:
        print("  render: skipped (xviz.render not available)")

    def integrated_gradients() -> None:
        attribute(
            model, x, target=analysis.target, method="integrated_gradients", n_steps=args.ig_steps
        )

    ablation = Ablation.relu_between(list(FLOWS["middle"]))
    seconds = timeit(lambda: ablate(model, x, ablation))
    print(f"  ablate (ReLU between depthwise and pointwise, middle flow): {seconds:.2f} s")
    seconds, peak = peak_memory_mb(integrated_gradients)
    peak_text = f"{peak:.0f} MB above the level before" if peak is not None else "not measured"
    lifetime = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"  IntegratedGradients, {args.ig_steps} steps, internal batch {DEFAULT_BATCH}: "
        f"{seconds:.1f} s, peak memory {peak_text} (process lifetime peak {lifetime:.0f} MB)"
    )


if __name__ == "__main__":
    main()
