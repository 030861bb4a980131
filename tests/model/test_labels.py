"""Tests of xviz.model.labels against the torchvision list it was made from."""

from xviz.model.labels import KITCHENWARE_LABELS, imagenet_labels


def test_imagenet_labels_has_1000_unique_clean_names() -> None:
    names = imagenet_labels()
    assert len(names) == 1000
    # torchvision disambiguates the two WordNet duplicates (crane, maillot), so all are unique.
    assert len(set(names)) == 1000
    assert all(name and name == name.strip() for name in names)


def test_imagenet_labels_known_indices() -> None:
    # Checked against torchvision 0.29.1 `_IMAGENET_CATEGORIES` and the ILSVRC synset order.
    names = imagenet_labels()
    assert names[0] == "tench"
    assert names[1] == "goldfish"
    assert names[134] == "crane bird"
    assert names[207] == "golden retriever"
    assert names[281] == "tabby"
    assert names[504] == "coffee mug"
    assert names[517] == "crane"
    assert names[999] == "toilet tissue"


def test_imagenet_labels_is_read_once() -> None:
    assert imagenet_labels() is imagenet_labels()


def test_kitchenware_labels_in_head_order() -> None:
    assert KITCHENWARE_LABELS == ["cup", "fork", "glass", "knife", "plate", "spoon"]
