"""Command line: ``python -m xviz predict IMAGE... [--weights W] [--top K] [--json]``.

One subcommand per task (``predict`` for now); each is a ``_cmd_*`` function taking the parsed
arguments and returning the exit status. Errors xviz raises on purpose are printed as one line
on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict

import torch

from xviz.devices import resolve_device
from xviz.errors import WeightsError, XvizError
from xviz.preprocess import preprocess
from xviz.weights import WEIGHTS_NAMES, load_model

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
    return parser


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
