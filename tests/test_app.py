"""The served app through gradio_client: /predict and /analyze, and bad uploads."""

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

from xviz.preprocess import preprocess


@pytest.fixture(scope="module")
def client(served_app):
    url, _ = served_app
    return Client(url, verbose=False)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)).save(path)
    return path


def _expected_top5(model, path, size):
    """Independently: the model's softmax on the preprocessed image."""
    with torch.inference_mode():
        probs = torch.softmax(model(preprocess(str(path), size)), dim=1)[0]
    top = torch.topk(probs, 5)
    return [
        (f"class {i}", p) for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def test_predict_endpoint_returns_the_models_top5(client, served_app, photo):
    _, explorer = served_app
    result = client.predict(handle_file(str(photo)), 150, api_name="/predict")
    expected = _expected_top5(explorer.model, photo, 150)
    assert list(result) == [label for label, _ in expected]
    for (label, p), got in zip(expected, result.values(), strict=True):
        assert got == pytest.approx(p, rel=1e-4), label


def test_analyze_endpoint_returns_grids_gradcams_and_prediction(client, served_app, photo):
    _, explorer = served_app
    out = client.predict(
        handle_file(str(photo)),
        150,
        "block5_sepconv2",
        "index",
        "auto",
        "shared",
        0,
        "block5",
        0.5,
        api_name="/analyze",
    )
    label, _, depthwise, pointwise, left_title, right_title, page, svg, cams, info, _ = out
    expected = _expected_top5(explorer.model, photo, 150)
    assert label["label"] == expected[0][0]
    side = 8 * 66 + 2  # 64 tiles of 64 px, 2 px apart
    for path in (depthwise, pointwise):
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == (side, side)
    assert "Depthwise" in left_title and "Pointwise" in right_title
    assert len(cams) == 14 and cams[0]["caption"].startswith("block1")
    assert page["value"] == 1 and page["maximum"] == 12  # 728 channels, 64 a page
    assert 'data-block="block5"' in svg and "150x150" in info


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (b"", "empty.png", "empty"),
        (b"hello, this is text", "text.png", "not an image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "drawing.svg", "SVG"),
    ],
)
def test_bad_upload_gives_a_clear_message_and_the_app_keeps_serving(
    client, tmp_path, photo, content, name, message
):
    bad = tmp_path / name
    bad.write_bytes(content)
    with pytest.raises(Exception, match=f"(?i){message}") as info:
        client.predict(handle_file(str(bad)), 150, api_name="/predict")
    assert "Traceback" not in str(info.value)
    assert client.predict(handle_file(str(photo)), 150, api_name="/predict")


def test_startup_with_corrupt_weights_names_the_file_and_stops(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": ')
    env = {**os.environ, "XVIZ_WEIGHTS": str(bad), "XVIZ_OFFLINE": "1"}
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, str(root / "app.py")],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "xviz cannot start" in done.stderr and str(bad) in done.stderr
    assert "Traceback" not in done.stderr
