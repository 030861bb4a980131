"""Soak: about 500 analyses and views from 8 simulated sessions through the real server, then
what is left of them once the retention time has passed.

    python bench/soak.py [--clients 8] [--requests 500] [--size N] [--cache-mb 768]
                         [--retention-s 20]

The app (``app.build_demo``, its files kept ``--retention-s`` seconds) is served in this
process; each client is a ``gradio_client.Client`` in its own thread doing what
``bench/load.py`` does for each of its images, no two alike: ``/analyze`` three times (three
blocks and layers), ``/ablate``, ``/attribute`` (saliency) and ``/predict``, six requests, every
top-5 checked against a sequential run outside the server.

Printed: requests and errors (goal 0), mismatched top-5s (goal 0); the server's resident memory
after the first ~50 requests and after all of them (goal: within 10%) with what the analysis
cache holds; and, after the clients closed and the retention time passed, the files left in
the app's folder of served files and in Gradio's upload cache (goal 0).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Gradio's upload cache of this run only, so that the files counted are this server's.
os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="xviz-soak-gradio-")

from gradio.utils import get_upload_folder

from app import build_demo
from bench.common import bench_model
from bench.load import (
    Results,
    cache_line,
    distinct_images,
    free_port,
    print_latency,
    reference_top5,
    rss_mb,
    run_clients,
    split,
)
from xviz.app.explorer import Explorer
from xviz.app.server import launch_options
from xviz.data.gallery import all_examples
from xviz.model.weights import kitchenware_file

PER_IMAGE = 6  # requests per image (bench/load.py's explore)


def files_under(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def visitors_files(folder: Path) -> list[Path]:
    """Files under ``folder`` but the page's own: Gradio's copies of the shipped example photos
    (the Examples row shows them) and the lock of the server's run folder."""
    page = {p.name for p in all_examples()} | {".lock"}
    return [p for p in folder.rglob("*") if p.is_file() and p.name not in page]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--weights", default="kitchenware" if kitchenware_file() else "random")
    parser.add_argument("--size", type=int, default=None, help="input side; default: native")
    parser.add_argument("--cache-mb", type=float, default=768, help="the app's default")
    parser.add_argument("--retention-s", type=float, default=20)
    args = parser.parse_args()
    os.environ.setdefault("XVIZ_OFFLINE", "1")

    explorer = Explorer(bench_model(args.weights), cache_mb=args.cache_mb)
    size = args.size or explorer.native_size
    demo = build_demo(explorer, retention_s=args.retention_s)
    demo.launch(
        server_name="127.0.0.1",
        server_port=free_port(),
        prevent_thread_lock=True,
        quiet=True,
        **launch_options(),
    )
    url = demo.local_url
    uploads = Path(get_upload_folder())
    first_round = -(-50 // PER_IMAGE)  # images whose requests make the first ~50
    total = max(-(-args.requests // PER_IMAGE), first_round + args.clients)
    print(
        f"xviz soak bench: weights {args.weights}, {size}px, {args.clients} clients, "
        f"{total} distinct images x {PER_IMAGE} requests, cache {args.cache_mb:g} MB, "
        f"files kept {args.retention_s:g} s"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="xviz-soak-") as tmp:
            paths = distinct_images(total, Path(tmp), seed=5)
            expected = reference_top5(explorer.model, paths, size)
            began = time.perf_counter()
            # The clients' copies of what they get go elsewhere: what is counted is the server's.
            got = Path(tmp) / "downloads"
            got.mkdir()
            first, _ = run_clients(
                url, split(paths[:first_round], args.clients), size, expected, downloads=got
            )
            gc.collect()
            after_first = rss_mb()
            rest, _ = run_clients(
                url, split(paths[first_round:], args.clients), size, expected, downloads=got
            )
            gc.collect()
            after_all = rss_mb()
            wall = time.perf_counter() - began
            records = first.records + rest.records
            errors = [r for r in records if r.error is not None]
            mismatches = first.mismatches + rest.mismatches
            print(
                f"{len(records)} requests in {wall:.0f} s: {len(errors)} errors, "
                f"{len(mismatches)} mismatched top-5s"
            )
            for r in errors[:5]:
                print(f"  error: {r.endpoint}: {r.error}")
            print_latency(Results(records, first.checked + rest.checked, mismatches), wall)
            growth = after_all / after_first - 1
            print(
                f"RSS after the first {len(first.records)} requests {after_first:.0f} MB, after "
                f"all {after_all:.0f} MB: {growth:+.1%} (goal within 10%: "
                f"{'met' if abs(growth) <= 0.10 else 'MISSED'}); {cache_line(explorer)}"
            )
            print(
                f"files right after: {files_under(uploads)} under {uploads} (Gradio's uploads "
                "and xviz's served pictures)"
            )
            waited = args.retention_s + max(args.retention_s // 2, 1) + 5
            time.sleep(waited)
            left = visitors_files(uploads)
            print(
                f"files {waited:.0f} s later (retention {args.retention_s:g} s): "
                f"{files_under(uploads)}, of which {len(left)} from the visitors (goal 0: "
                f"{'met' if not left else 'MISSED'}), the rest the examples' copies"
            )
            for p in left[:5]:
                print(f"  left: {p.relative_to(uploads)}")
    finally:
        demo.close()


if __name__ == "__main__":
    main()
