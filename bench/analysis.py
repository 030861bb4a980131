"""Benchmark of the analysis engine, side by side, on the CPU or a GPU.

    python bench/analysis.py [--device cpu|cuda] [--sizes 299 150] [--repeats 5]
                             [--batches 64 256] [--after-warm-up | --no-after-warm-up]
                             [--clock wall|cpu] [--table-only]

1. The GPU issue's table, one column per input size (a markdown table): plain forward
   (inference), forward + backward, ``analyze`` and its ratio to forward + backward (goal
   <= 1.3 on the CPU, <= 2 on a GPU), the app's upload path (``Explorer``: decode, analyse,
   one sepconv page, the Grad-CAM strip), IntegratedGradients (32 steps) and LayerConductance
   (16 steps, block4): first call in this process, first call in a fresh process after
   ``xviz.engine.warmup.warm_up`` (a child process; default on CUDA only, it costs minutes on a
   CPU) and warm; plain forward throughput at batch 64 @299 / 256 @150 (default on CUDA;
   4 / 16 on the CPU).
2. Unless ``--table-only``: the engine's other ratios (naive 14 x LayerGradCam / analyze
   >= 5; xviz forward / timm ``legacy_xception`` <= 1, CPU only, needs ``timm``), the memory of
   one analysis, rendering one 64-tile page, one ablation, IntegratedGradients' peak memory.

Timed variants run in turn, in rotating order, in one process, on the same input; medians are
shown. On CUDA every timer stops after ``torch.cuda.synchronize()``. On a CPU shared with other
jobs, ``OMP_NUM_THREADS=1 ... --clock cpu`` times this process' CPU time instead of the wall.
Random weights (seeded): the timings do not depend on the weights' values. The device is
resolved by ``xviz.engine.devices.resolve_device``, so CUDA runs with xviz's default float32
precision (TF32 off unless ``XVIZ_TF32=1``); the header says which.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from captum.attr import LayerAttribution, LayerGradCam
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from xviz.app import views
from xviz.app.explorer import Explorer
from xviz.engine.analysis import analyze
from xviz.engine.devices import resolve_device
from xviz.engine.inference import logits
from xviz.engine.warmup import warm_up
from xviz.methods.ablation import Ablation, ablate
from xviz.methods.attribution import DEFAULT_BATCH, attribute
from xviz.model.xception import FLOWS, Xception

ROOT = Path(__file__).resolve().parent.parent
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
EXAMPLE = ROOT / "xviz" / "data" / "examples" / "coffee.jpg"
IG_STEPS = 32
LC_STEPS = 16
LC_BLOCK = "block4"
BATCHES = {"cuda": (64, 256), "cpu": (4, 16)}  # for --sizes 299 150
RATIO_GOAL = {"cuda": 2.0, "cpu": 1.3}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer sees it finish."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Wall-clock by default; --clock cpu (CPU only) counts this process' CPU time instead, which
# a machine shared with other jobs disturbs far less (run it with OMP_NUM_THREADS=1).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def timeit(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    started = clock()
    fn()
    sync(device)
    return clock() - started


def interleaved(
    variants: dict[str, Callable[[], object]],
    repeats: int,
    device: torch.device,
    warm_up_round: bool = True,
) -> dict[str, float]:
    """Median seconds of each variant; one warm-up round (unless the caller has run them
    already), then ``repeats`` rounds in rotating order."""
    if warm_up_round:
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(timeit(variants[name], device))
    return {name: statistics.median(values) for name, values in times.items()}


def make_model(device: torch.device) -> Xception:
    torch.manual_seed(0)
    return Xception(head="imagenet").eval().to(device)


def plain_forward(model: Xception, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            model(x)

    return run


def plain_forward_backward(model: Xception, x: torch.Tensor) -> Callable[[], None]:
    """What any tool pays for one gradient: forward, then backward from the top logit."""

    def run() -> None:
        out = model(x.clone().requires_grad_(True))  # (1, classes)
        out[0, int(out[0].argmax())].backward()
        model.zero_grad(set_to_none=True)

    return run


def upload_path(explorer: Explorer, image: Image.Image, size: int) -> Callable[[], None]:
    """The app's server side for an upload, without the browser: decode and resize, analyse
    (the cache emptied first, so it runs), one separable conv's grids, the Grad-CAM strip."""

    def run() -> None:
        explorer.cache.clear()
        analysis = explorer.analysis(explorer.start(image, size))
        views.layer_view(analysis, "block5_sepconv1")
        views.gradcam_strip(analysis)

    return run


def integrated_gradients(model: Xception, analysis: object) -> Callable[[], object]:
    return lambda: attribute(model, analysis, method="integrated_gradients", n_steps=IG_STEPS)


def layer_conductance(model: Xception, analysis: object) -> Callable[[], object]:
    return lambda: attribute(
        model, analysis, method="layer_conductance", block=LC_BLOCK, n_steps=LC_STEPS
    )


def first_calls(
    model: Xception, device: torch.device, image: Image.Image, sizes: list[int]
) -> dict[int, dict[str, float]]:
    """Seconds of the first IntegratedGradients and LayerConductance call at each size."""
    out = {}
    for size in sizes:
        analysis = analyze(model, image, size=size)
        out[size] = {
            "ig": timeit(integrated_gradients(model, analysis), device),
            "lc": timeit(layer_conductance(model, analysis), device),
        }
    return out


def child_after_warm_up(args: argparse.Namespace) -> dict | None:
    """Run this script as a fresh process that warms up, then times the first calls (None,
    with its error printed, if it fails: the rest of the table still comes out)."""
    command = [sys.executable, __file__, "--device", args.device, "--child-after-warm-up"]
    command += ["--sizes", *map(str, args.sizes), "--clock", args.clock]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"(the warm-up child failed with status {done.returncode}:\n{done.stderr[-2000:]})")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_child(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    model = make_model(device)
    image = Image.open(EXAMPLE).convert("RGB")
    warm_s = timeit(lambda: warm_up(model, sizes=args.sizes, force=True), device)
    result = first_calls(model, device, image, args.sizes)
    print(json.dumps({"warm_up_s": warm_s, "first": {str(k): v for k, v in result.items()}}))


def throughput(model: Xception, device: torch.device, size: int, batch: int) -> dict[str, float]:
    """Images per second of the plain model and of xviz's inference copy (BN folded,
    channels-last) at one batch shape."""
    x = torch.randn(batch, 3, size, size, device=device)
    med = interleaved(
        {"plain": plain_forward(model, x), "fused": lambda: logits(model, x)},
        repeats=3,
        device=device,
    )
    return {name: batch / seconds for name, seconds in med.items()}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def issue_table(model: Xception, device: torch.device, args: argparse.Namespace) -> None:
    image = Image.open(EXAMPLE).convert("RGB")
    explorer = Explorer(model, cache_mb=256, max_age_s=None)
    rows: dict[str, dict[int, str]] = {}

    def put(row: str, size: int, text: str) -> None:
        rows.setdefault(row, {})[size] = text

    first = first_calls(model, device, image, args.sizes)  # before anything else at batch 4
    after = child_after_warm_up(args) if args.after_warm_up else None
    ratio_goal = RATIO_GOAL.get(device.type, RATIO_GOAL["cuda"])
    for size in args.sizes:
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        med = interleaved(
            {
                "forward": plain_forward(model, x),
                "forward+backward": plain_forward_backward(model, x),
                "forward+backward, channels-last": plain_forward_backward(model, x_cl),
                "analyze": lambda size=size: analyze(model, image, size=size),
                "upload": upload_path(explorer, image, size),
            },
            args.repeats,
            device,
        )
        # Against the faster of the two layouts: analyze runs channels-last itself.
        plain = min(med["forward+backward"], med["forward+backward, channels-last"])
        put("forward (inference)", size, ms(med["forward"]))
        put("forward + backward", size, ms(med["forward+backward"]))
        put(
            "forward + backward, channels-last input",
            size,
            ms(med["forward+backward, channels-last"]),
        )
        put(
            f"`analyze` (maps + 14 Grad-CAMs), x the faster fwd+bwd (goal <= {ratio_goal:g})",
            size,
            f"{ms(med['analyze'])} = {med['analyze'] / plain:.2f}x",
        )
        put(
            "`Explorer`: decode, analyse, one sepconv page, Grad-CAM strip", size, ms(med["upload"])
        )
        analysis = analyze(model, image, size=size)
        warm = interleaved(
            {
                "ig": integrated_gradients(model, analysis),
                "lc": layer_conductance(model, analysis),
            },
            max(1, args.repeats // 2),
            device,
            warm_up_round=False,  # first_calls ran them
        )
        for key, label in (
            ("ig", f"IntegratedGradients {IG_STEPS} steps"),
            ("lc", f"LayerConductance {LC_STEPS} steps ({LC_BLOCK})"),
        ):
            cold = s(first[size][key])
            warmed = s(after["first"][str(size)][key]) if after else "not measured"
            put(
                f"{label}: first / first after warm_up / warm",
                size,
                f"{cold} / {warmed} / {s(warm[key])}",
            )
    batches = args.batches or BATCHES.get(device.type, BATCHES["cuda"])
    for size, batch in zip(args.sizes, batches, strict=False):
        rate = throughput(model, device, size, batch)
        put("plain forward, images/s (batch)", size, f"{rate['plain']:,.0f} ({batch})")
        put("xviz inference copy, images/s (batch)", size, f"{rate['fused']:,.0f} ({batch})")

    print(f"| step | {' | '.join(f'{size}x{size}' for size in args.sizes)} |")
    print(f"|---|{'---|' * len(args.sizes)}")
    for row, cells in rows.items():
        print(f"| {row} | {' | '.join(cells.get(size, '') for size in args.sizes)} |")
    if after:
        print(f"\nwarm_up (all methods, sizes {args.sizes}) took {after['warm_up_s']:.1f} s")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB")


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
    started = time.perf_counter()
    fn()
    seconds = time.perf_counter() - started
    peak = _status_kb("VmHWM")
    if before is None or peak is None:
        return seconds, None
    return seconds, (peak - before) / 1024


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
    from xviz.render.maps import channel_grid

    rows = []
    for name in ("block5_sepconv2.depthwise", "block2_sepconv2.pointwise"):
        m = analysis.map(name)
        page = m.order("mean")[:64]
        times = [
            timeit(lambda m=m, page=page: channel_grid(m.array(), page), torch.device("cpu"))
            for _ in range(repeats)
        ]
        rows.append((f"render one 64-tile page of {name} {m.shape}", statistics.median(times)))
    return rows


def engine_checks(model: Xception, device: torch.device, args: argparse.Namespace) -> None:
    """The engine's ratios against naive and timm baselines, memory, render, ablation."""
    size = args.sizes[0]
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x = x.to(device)
    timm_variants, timm_note = timm_forwards(x) if device.type == "cpu" else ({}, "CPU only")
    variants: dict[str, Callable[[], object]] = {
        "plain forward+backward": plain_forward_backward(model, x),
        "analyze (all maps + 14 Grad-CAMs)": lambda: analyze(model, x),
        "naive: forward + 14 LayerGradCam": naive_gradcams(model, x, size),
        "xviz forward (inference.logits)": lambda: logits(model, x),
        **timm_variants,
    }
    print(f"\ninput {size}x{size}; {timm_note}; medians of {args.repeats} interleaved rounds")
    med = interleaved(variants, args.repeats, device)
    for name, seconds in med.items():
        print(f"  {name:<48} {seconds * 1000:8.1f} ms")
    ours = med["analyze (all maps + 14 Grad-CAMs)"]
    checks = [
        (
            "naive 14 x LayerGradCam / analyze",
            med["naive: forward + 14 LayerGradCam"] / ours,
            ">=",
            5.0,
        )
    ]
    if timm_variants:
        timm_best = min(med[name] for name in timm_variants)
        forward = med["xviz forward (inference.logits)"]
        checks.append(
            ("xviz forward / timm forward (faster of the two)", forward / timm_best, "<=", 1.0)
        )
    print(f"\n  {'ratio':<56} {'value':>7}  {'goal':<7} met")
    for name, value, op, limit in checks:
        met = value <= limit if op == "<=" else value >= limit
        print(f"  {name:<56} {value:7.2f}  {op} {limit:<4g} {'yes' if met else 'NO'}")

    print()
    analysis = analyze(model, x)
    print(f"  one analysis in memory at {size}: {analysis.nbytes / 2**20:6.1f} MB (goal <= 64)")
    if size != 150:
        small = analyze(model, torch.nn.functional.interpolate(x, (150, 150), mode="bilinear"))
        print(f"  one analysis in memory at 150: {small.nbytes / 2**20:6.1f} MB")
    for name, seconds in render_page_ms(analysis, repeats=max(args.repeats, 10)):
        print(f"  {name}: {seconds * 1000:.1f} ms (median)")
    ablation = Ablation.relu_between(list(FLOWS["middle"]))
    seconds = timeit(lambda: ablate(model, x, ablation), device)
    print(f"  ablate (ReLU between depthwise and pointwise, middle flow): {seconds:.2f} s")
    seconds, peak = peak_memory_mb(integrated_gradients(model, analysis))
    peak_text = f"{peak:.0f} MB above the level before" if peak is not None else "not measured"
    lifetime = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"  IntegratedGradients, {IG_STEPS} steps, internal batch {DEFAULT_BATCH}: "
        f"{seconds:.1f} s, peak host memory {peak_text} (process lifetime peak {lifetime:.0f} MB)"
    )


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        tf32 = "on" if torch.backends.cudnn.allow_tf32 else "off"
        return f"{torch.cuda.get_device_name(device)}, TF32 convolutions {tf32}"
    cpu = platform.processor() or platform.machine()
    return f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {cpu}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[299, 150])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", help="throughput batch per size")
    parser.add_argument(
        "--after-warm-up",
        action=argparse.BooleanOptionalAction,
        help="time first calls in a fresh process after warm_up (default: on CUDA only)",
    )
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--child-after-warm-up", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.child_after_warm_up:
        run_child(args)
        return
    device = resolve_device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu measures the host's work: use it with --device cpu")
    if args.after_warm_up is None:
        args.after_warm_up = device.type == "cuda"
    model = make_model(device)
    print(
        f"torch {torch.__version__} on {device} ({describe(device)}); coffee example; "
        f"medians of {args.repeats} interleaved rounds after one warm-up round; "
        f"{args.clock} clock\n"
    )
    issue_table(model, device, args)
    if not args.table_only:
        engine_checks(model, device, args)


if __name__ == "__main__":
    main()
