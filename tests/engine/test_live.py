"""live_maps against what analyze records for the same pixels, the early stop, the prediction,
and bad requests (a layer, a side, a frame a client sends)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from xviz.engine.analysis import analyze
from xviz.engine.hooks import Capture, hook_count
from xviz.engine.live import PER_PAGE, frame_image, live_maps, page_channels
from xviz.errors import AnalysisError, ImageError

SIZE = 96
LAYERS = ("block2_sepconv1", "block4_sepconv1", "block8_sepconv2")  # entry, entry, middle


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 255, SIZE, dtype=np.float32)
    ramp = np.stack([np.add.outer(smooth, smooth) / 2] * 3, axis=-1).astype(np.uint8)
    return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), ramp


@pytest.fixture(scope="module")
def analyses(model, images):
    return [analyze(model, image, size=SIZE) for image in images]


def within_quantization(stored, channels, live_values) -> bool:
    """The live float32 values equal the analysis' uint8 codes, dequantised, to half a step."""
    step = stored.quantization_step[channels][:, None, None]
    return bool((np.abs(stored.channels(channels) - live_values) <= step / 2 + 1e-6).all())


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("page", [1, 2])
def test_the_maps_are_those_the_analysis_records(model, images, analyses, layer, page):
    live = live_maps(model, images[0], layer, page=page, side="depthwise", channel=40)
    pair = analyses[0].sepconvs[layer]
    assert list(live.depthwise_channels) == list(range((page - 1) * PER_PAGE, page * PER_PAGE))
    assert within_quantization(pair.depthwise, live.depthwise_channels, live.depthwise)
    assert within_quantization(pair.pointwise, live.pointwise_channels, live.pointwise)
    assert within_quantization(pair.depthwise, [40], live.large[None])
    assert live.num_depthwise == pair.depthwise.num_channels
    assert live.num_pointwise == pair.pointwise.num_channels
    assert live.top is None and hook_count(model) == 0


def test_another_frame_gives_other_maps(model, images, analyses):
    """The control: the maps of the second image are not those of the first."""
    live = live_maps(model, images[1], "block2_sepconv1")
    first = analyses[0].sepconvs["block2_sepconv1"].pointwise
    second = analyses[1].sepconvs["block2_sepconv1"].pointwise
    assert within_quantization(second, live.pointwise_channels, live.pointwise)
    assert not within_quantization(first, live.pointwise_channels, live.pointwise)


def test_the_pass_stops_at_the_layer_unless_a_prediction_is_asked_for(model, images):
    with Capture({"block14": model.block14}) as later:
        live_maps(model, images[0], "block4_sepconv1")
    assert "block14" not in later.outputs
    with Capture({"block14": model.block14}) as later:
        live = live_maps(model, images[0], "block4_sepconv1", predict=True)
    assert "block14" in later.outputs and live.top is not None


def test_the_prediction_is_the_analysis_top_three(model, images, analyses):
    live = live_maps(model, images[0], "block2_sepconv1", predict=True, top_k=3)
    expected = analyses[0].top[:3]
    assert [p.index for p in live.top] == [p.index for p in expected]
    np.testing.assert_allclose(
        [p.probability for p in live.top], [p.probability for p in expected], rtol=1e-4
    )


def test_a_channel_past_the_end_is_clamped_and_a_page_past_the_end_is_the_last(model, images):
    live = live_maps(model, images[0], "block2_sepconv1", page=99, side="depthwise", channel=10**6)
    assert live.channel == 63  # block2_sepconv1's depthwise half has 64 channels
    assert live.page == live.pages == 4  # its pointwise half has 128: 4 pages of 32
    assert list(live.depthwise_channels) == list(range(32, 64))  # its own last page
    assert list(live.pointwise_channels) == list(range(96, 128))
    assert page_channels(64, 0)[1] == 1


@pytest.mark.parametrize(
    "layer",
    [
        "block1_conv1",  # a layer, but no separable conv
        "block2_residual",
        "block5_sepconv1.depthwise",
        "block99_sepconv1",
        "block2_sepconv1 ",
        "",
        None,
        5,
        ["block2_sepconv1"],
        "<script>alert(1)</script>",
    ],
)
def test_a_layer_that_is_no_separable_conv_is_refused(model, images, layer):
    with pytest.raises(AnalysisError, match="Unknown layer"):
        live_maps(model, images[0], layer)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"side": "left"}, "Unknown side"),
        ({"page": "two"}, "The page must be a whole number"),
        ({"channel": 1.5}, "The channel must be a whole number"),
        ({"channel": True}, "The channel must be a whole number"),
    ],
)
def test_bad_values_are_refused_with_a_message(model, images, kwargs, message):
    with pytest.raises(AnalysisError, match=message):
        live_maps(model, images[0], "block2_sepconv1", **kwargs)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((SIZE, SIZE), np.uint8),
        np.zeros((SIZE, SIZE, 3), np.float32),
        np.zeros((SIZE, SIZE + 1, 3), np.uint8),
        torch.zeros(1, 3, SIZE, SIZE),
        b"\xff\xd8\xff",
    ],
)
def test_a_frame_that_is_not_square_uint8_rgb_is_refused(model, image):
    with pytest.raises(AnalysisError, match="square"):
        live_maps(model, image, "block2_sepconv1")


def test_a_frame_is_decoded_and_resized_as_an_upload_is():
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (200, 30, 10)).save(buffer, format="JPEG")
    pixels = frame_image(buffer.getvalue(), 150)
    assert pixels.shape == (150, 150, 3) and pixels.dtype == np.uint8
    for broken in (b"", b"not an image", buffer.getvalue()[:200]):
        with pytest.raises(ImageError):
            frame_image(broken, 150)
