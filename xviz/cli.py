"""Command line: ``python -m xviz predict IMAGE... [--weights W] [--top K] [--json]`` and
``python -m xviz atlas IMAGES_DIR --out OUT [--size 150] [--top 9] [--maps GLOB]
[--engine local|ray] [--ray-address ADDR] [--weights NAME|PATH]`` and ``python -m xviz
faithfulness IMAGE_OR_DIR... [--size 150] [--out FILE.json] [--block block14]`` (how far each
attribution can be trusted, per image and as mean and spread) and ``python -m xviz serve``
(the web app, as ``python app.py`` serves it from a checkout).

One subcommand per task; each is a ``_cmd_*`` function taking the parsed
arguments and returning the exit status. Errors xviz raises on purpose are printed as one line
on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from typing import TextIO

import torch

from xviz.engine.devices import resolve_device
from xviz.engine.preprocess import preprocess
from xviz.errors import AnalysisError, AtlasError, WeightsError, XvizError
from xviz.methods.atlas import ENGINES, build_atlas, list_images
from xviz.methods.atlas.ray_engine import INSTALL_HINT
from xviz.methods.faithfulness import faithfulness, summary
from xviz.model.weights import WEIGHTS_NAMES, load_model
from xviz.model.xception import BLOCKS

PROG = "xviz"


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    # Download notices and warnings go to stderr; stdout stays for results.
    logging.basicConfig(level=logging.INFO, format=f"{PROG}: %(message)s", stream=sys.stderr)
    try:
        return args.run(args)
    except XvizError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="See inside a pretrained Xception (Chollet 2017)."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser(
        "predict",
        help="classify images and print the top classes",
        description="Classify images and print the top classes with their probabilities.",
    )
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    predict.add_argument(
        "--weights",
        default="auto",
        help=f"{', '.join(WEIGHTS_NAMES)}, a weights file, or auto (default)",
    )
    predict.add_argument("--top", type=_positive_int, default=5, help="classes to show (5)")
    predict.add_argument("--json", action="store_true", help="print one JSON object")
    predict.add_argument(
        "--device", type=_device, default="auto", help="auto (default), cpu, cuda, cuda:N, mps"
    )
    predict.add_argument(
        "--size",
        type=_positive_int,
        default=None,
        help="input side in pixels (default: the weights' own, 299, or 150 for kitchenware)",
    )
    predict.set_defaults(run=_cmd_predict)

    atlas = commands.add_parser(
        "atlas",
        help="find the images that excite each channel most (a dataset atlas)",
        description="Scan a directory of images and write, for every channel of every map, "
        "its top images with the region each maximum sees (a Parquet atlas directory). "
        "Unreadable images are skipped and counted.",
    )
    atlas.add_argument("images", metavar="IMAGES_DIR", help="directory of images (recursive)")
    atlas.add_argument("--out", required=True, help="atlas directory to write")
    atlas.add_argument("--size", type=_positive_int, default=150, help="input side (150)")
    atlas.add_argument("--top", type=_positive_int, default=9, help="images per channel (9)")
    atlas.add_argument(
        "--maps", default=None, metavar="GLOB", help="maps to cover, e.g. 'block5*' (all 88)"
    )
    atlas.add_argument("--engine", choices=ENGINES, default="local", help="local (default) or ray")
    atlas.add_argument(
        "--ray-address", default=None, help="Ray cluster address (default: start a local one)"
    )
    atlas.add_argument(
        "--weights",
        default="auto",
        help=f"{', '.join(WEIGHTS_NAMES)}, a weights file, or auto (default)",
    )
    atlas.add_argument(
        "--device", type=_device, default="auto", help="auto (default), cpu, cuda, cuda:N, mps"
    )
    atlas.add_argument("--batch", type=_positive_int, default=16, help="images per batch (16)")
    atlas.set_defaults(run=_cmd_atlas)

    faith = commands.add_parser(
        "faithfulness",
        help="score every attribution method on a folder of images (JSON)",
        description="For each image: deletion and insertion areas, Captum's infidelity and "
        "max-sensitivity, and the cascading randomisation check of every attribution method, "
        "then their mean and spread over the images, as JSON (and, with --out, the mean and "
        "spread as a markdown table on stdout). About 20 s an image at 150 on two idle CPU cores.",
    )
    faith.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE_OR_DIR",
        help="image files and directories of images (recursive)",
    )
    faith.add_argument("--size", type=_positive_int, default=150, help="input side (150)")
    faith.add_argument("--out", default=None, help="JSON file to write (default: stdout)")
    faith.add_argument(
        "--block", choices=list(BLOCKS), default="block14", help="Grad-CAM's block (block14)"
    )
    faith.add_argument(
        "--weights",
        default="auto",
        help=f"{', '.join(WEIGHTS_NAMES)}, a weights file, or auto (default)",
    )
    faith.add_argument(
        "--device", type=_device, default="auto", help="auto (default), cpu, cuda, cuda:N, mps"
    )
    faith.set_defaults(run=_cmd_faithfulness)

    serve = commands.add_parser(
        "serve",
        help="serve the web app (http://127.0.0.1:7860)",
        description="Serve the web app. GRADIO_SERVER_NAME, GRADIO_SERVER_PORT and the XVIZ_* "
        "variables of the README are honoured.",
    )
    serve.set_defaults(run=_cmd_serve)
    return parser


def _cmd_serve(args: argparse.Namespace) -> int:
    from xviz.app.ui.page import main as serve_app  # Gradio is imported only for this command

    serve_app()
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _device(text: str) -> torch.device:
    try:
        return resolve_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _cmd_predict(args: argparse.Namespace) -> int:
    model = load_model(args.weights, device=args.device)
    source = model.source
    if model.num_classes == 0:
        raise WeightsError(
            f"The weights {source.name!r} have no classifier head: nothing to predict."
        )
    size = args.size or source.input_size
    results = []
    failed = False
    for image in args.images:
        try:
            x = preprocess(image, size).to(args.device)  # (1, 3, S, S)
        except XvizError as e:
            print(f"{PROG}: error: {image}: {e}", file=sys.stderr)
            results.append({"image": image, "error": str(e)})
            failed = True
            continue
        with torch.inference_mode():
            probs = model(x).softmax(dim=-1)[0].cpu()  # (classes,)
        top = probs.topk(min(args.top, probs.numel()))
        results.append(
            {
                "image": image,
                "top": [
                    {"index": int(i), "label": model.labels[i], "probability": float(p)}
                    for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
                ],
            }
        )
    if args.json:
        summary = {"weights": asdict(source), "device": str(args.device), "size": size}
        print(json.dumps({**summary, "results": results}, indent=2))
    else:
        print(
            f"weights: {source.name} ({source.description}; {source.file or 'no file'}), "
            f"input {size}x{size}, padding {source.padding}, device {args.device}"
        )
        for result in results:
            if "top" in result:
                print(f"\n{result['image']}")
                for entry in result["top"]:
                    print(f"  {entry['probability']:7.2%}  {entry['label']}")
    return 1 if failed else 0


class ProgressBar:
    """A one-line progress bar on ``stream``: done/total, images/s, time left. Redrawn in
    place on a terminal; elsewhere (logs) one line per tenth of the work."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 24) -> None:
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        self.width = width
        self.started = time.monotonic()
        self.interactive = self.stream.isatty()
        self._last_tenth = -1

    def __call__(self, fraction: float, message: str) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done = round(fraction * self.total)
        rate = done / elapsed
        left = (self.total - done) / rate if rate > 0 else float("nan")
        filled = round(fraction * self.width)
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {message} | "
            f"{rate:.1f} images/s | ETA {_duration(left)}"
        )
        if self.interactive:
            self.stream.write(f"\r{line}\033[K")
        elif int(fraction * 10) > self._last_tenth:
            self._last_tenth = int(fraction * 10)
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    if seconds != seconds:  # NaN: no rate yet
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _cmd_atlas(args: argparse.Namespace) -> int:
    if args.engine == "ray" and importlib.util.find_spec("ray") is None:
        raise AtlasError(INSTALL_HINT)
    sources = list_images(args.images)
    if not sources:
        raise AtlasError(f"No images found in {args.images}.")
    model = load_model(args.weights, device=args.device)
    bar = ProgressBar(len(sources))
    try:
        atlas = build_atlas(
            model,
            sources,
            args.out,
            size=args.size,
            top_k=args.top,
            maps=args.maps,
            engine=args.engine,
            ray_address=args.ray_address,
            progress=bar,
            batch_size=args.batch,
        )
    finally:
        bar.close()
    for source, reason in atlas.metadata["skipped_examples"]:
        print(f"{PROG}: skipped {source}: {reason}", file=sys.stderr)
    if atlas.skipped > len(atlas.metadata["skipped_examples"]):
        more = atlas.skipped - len(atlas.metadata["skipped_examples"])
        print(f"{PROG}: ... and {more} more skipped", file=sys.stderr)
    print(
        f"atlas: {atlas.images} images ({atlas.skipped} skipped), {len(atlas.maps)} maps, "
        f"top {atlas.per_channel} per channel, {len(atlas.crops)} crops, weights "
        f"{atlas.metadata['weights']}, {args.size}x{args.size} -> {atlas.path}"
    )
    return 0


def _cmd_faithfulness(args: argparse.Namespace) -> int:
    listed = (list_images(p) if os.path.isdir(p) else [p] for p in args.images)
    sources = list(dict.fromkeys(source for paths in listed for source in paths))
    if not sources:
        raise AnalysisError(f"No images found in {', '.join(args.images)}.")
    model = load_model(args.weights, device=args.device)
    bar = ProgressBar(len(sources))
    images, results = [], []
    try:
        for i, source in enumerate(sources):
            try:
                result = faithfulness(
                    model,
                    source,
                    block=args.block,
                    size=args.size,
                    progress=lambda f, msg, i=i: bar((i + f) / len(sources), msg),
                )
            except XvizError as e:
                print(f"{PROG}: error: {source}: {e}", file=sys.stderr)
                images.append({"image": source, "error": str(e)})
                continue
            results.append(result)
            images.append({"image": source, **result.to_json()})
    finally:
        bar.close()
    report = {
        "weights": model.source.name if model.source is not None else "random",
        "size": args.size,
        "block": args.block,
        "summary": summary(results),
        "images": images,
    }
    text = json.dumps(report, indent=2, allow_nan=False)
    if args.out is None:
        print(text)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        print(
            f"faithfulness: {len(results)} images ({len(images) - len(results)} failed), "
            f"weights {report['weights']}, {args.size}x{args.size} -> {args.out}\n"
        )
        print(summary_table(report["summary"]))
    return 0 if results and len(results) == len(images) else 1


# The summary table's columns: (score, heading); arrows say which way is better.
_TABLE_COLUMNS = (
    ("deletion", "deletion ↓"),
    ("insertion", "insertion ↑"),
    ("infidelity", "infidelity ↓"),
    ("sensitivity", "max-sensitivity ↓"),
    ("spearman_exit", "ρ exit"),
    ("spearman_middle", "ρ middle"),
    ("spearman_entry", "ρ entry"),
    ("ssim_entry", "SSIM entry"),
)


def summary_table(summary: dict[str, dict[str, dict[str, float | int]]]) -> str:
    """:func:`xviz.methods.faithfulness.summary` as a markdown table: mean ± standard
    deviation per method and baseline (rows) and score (columns), "–" where none."""

    def cell(score: dict[str, float | int] | None) -> str:
        return "–" if score is None else f"{score['mean']:.3f} ± {score['std']:.3f}"

    head = ["method", *(title for _, title in _TABLE_COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, scores in summary.items():
        cells = [cell(scores.get(key)) for key, _ in _TABLE_COLUMNS]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)
