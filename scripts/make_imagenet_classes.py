"""Write xviz/data/imagenet_classes.txt: the 1000 ImageNet class names in index order.

Source: `_IMAGENET_CATEGORIES` in `torchvision/models/_meta.py` of the torchvision wheel
(BSD-3-Clause). torchvision's list is the usual WordNet first-synonym list with its two
duplicates disambiguated (134 "crane bird" / 517 "crane", 638 "maillot" / 639 "maillot tank
suit"), so every name is unique.

The list is read with `ast.literal_eval` straight from the wheel, so torchvision is never
imported or installed. Usage (a dev-time step; needs pip and network access):

    python scripts/make_imagenet_classes.py              # pip-downloads the pinned wheel
    python scripts/make_imagenet_classes.py WHEEL.whl    # uses a wheel already on disk
"""

import ast
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

TORCHVISION_VERSION = "0.29.1"
META_PATH = "torchvision/models/_meta.py"
OUTPUT = Path(__file__).resolve().parent.parent / "xviz" / "data" / "imagenet_classes.txt"


def download_wheel(directory: Path) -> Path:
    """pip-download the pinned torchvision wheel (no dependencies) into `directory`."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            f"torchvision=={TORCHVISION_VERSION}",
            "--no-deps",
            "--dest",
            str(directory),
        ],
        check=True,
    )
    return next(directory.glob("torchvision-*.whl"))


def read_categories(wheel: Path) -> list[str]:
    """The `_IMAGENET_CATEGORIES` list literal of the wheel's `_meta.py`."""
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read(META_PATH).decode("utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "_IMAGENET_CATEGORIES"
            for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise SystemExit(f"_IMAGENET_CATEGORIES not found in {wheel}:{META_PATH}")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        wheel = Path(sys.argv[1]) if len(sys.argv) > 1 else download_wheel(Path(scratch))
        names = read_categories(wheel)
    if len(names) != 1000 or len(set(names)) != 1000:
        raise SystemExit(f"expected 1000 unique names, got {len(names)} ({len(set(names))} unique)")
    if any("\n" in name or name != name.strip() for name in names):
        raise SystemExit("a class name contains a newline or surrounding whitespace")
    OUTPUT.write_text("\n".join(names) + "\n", encoding="utf-8")
    print(f"wrote {len(names)} names from {wheel.name} to {OUTPUT}")


if __name__ == "__main__":
    main()
