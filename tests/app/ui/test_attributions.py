"""The Attributions tab through the served app (gradio_client): ``/attribute`` gives the
attribution over the image, its heatmap with values and colourbar, and what it shows."""

import base64
import json

import numpy as np
import pytest
import torch
from captum.attr import GuidedGradCam
from gradio_client import Client, handle_file
from PIL import Image

from xviz.engine.preprocess import from_uint8, load_image, to_display

SIZE = 150
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")


def array(value) -> np.ndarray:
    """A figure JSON's array: a list, or a typed array (dtype, base64 bytes, shape) as Plotly
    writes numpy arrays (plotly.js' typed-array specification)."""
    if isinstance(value, dict):
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return data.reshape([int(n) for n in str(value.get("shape", len(data))).split(",")])
    return np.asarray(value)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    rng = np.random.default_rng(11)
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(rng.integers(0, 256, (140, 170, 3), dtype=np.uint8)).save(path)
    return path


def test_attribute_gives_overlay_heatmap_values_and_text(served_app, photo):
    url, explorer = served_app
    client = Client(url, verbose=False)
    label, *_ = client.predict(
        handle_file(str(photo)), SIZE, "block5_sepconv2", "index", "auto", "shared", 0,
        "block5", 0.5, api_name="/analyze",
    )  # fmt: skip
    overlay, heatmap, text = client.predict("guided_gradcam", "block4", 0.5, api_name="/attribute")
    with Image.open(overlay) as img:
        assert img.format == "PNG" and img.width >= SIZE
    trace = json.loads(heatmap["plot"])["data"][0]
    z = array(trace["z"])

    # Independently: Captum's GuidedGradCam on the served model, summed over colour channels.
    model = explorer.model
    image = to_display(load_image(str(photo)), SIZE)
    x = from_uint8(image[None]).contiguous(memory_format=torch.channels_last)
    target = model.labels.index(label["label"]) if model.labels else int(label["label"][6:])
    reference = (
        GuidedGradCam(model, model.blocks["block4"])
        .attribute(x.requires_grad_(True), target=target, interpolate_mode="bilinear")[0]
        .sum(0)
    )
    scale = reference.abs().max().item()
    assert scale > 0 and z.shape == (SIZE, SIZE)
    assert np.abs(z - reference.detach().numpy()).max() <= 1e-4 * scale
    limit = np.percentile(np.abs(z), 99)
    assert trace["zmax"] == pytest.approx(limit, rel=1e-5)
    assert trace["zmin"] == pytest.approx(-limit, rel=1e-5)
    assert text.startswith(f"**Guided Grad-CAM at block4** for class **{label['label']}**")
