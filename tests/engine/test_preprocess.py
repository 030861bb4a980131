"""Tests of xviz.engine.preprocess: every input is generated here, expectations computed by hand."""

import importlib
import io
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from xviz.engine.preprocess import (
    MAX_ASPECT_RATIO,
    from_uint8,
    load_image,
    preprocess,
    to_display,
    to_tensor,
)
from xviz.errors import ImageError

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def keras_value(sample: int) -> np.float32:
    """Keras 'tf' preprocessing of one 8-bit sample, in float32 as Keras computes it."""
    return np.float32(sample) / np.float32(127.5) - np.float32(1.0)


def saved(tmp_path: Path, img: Image.Image, name: str, **params) -> Path:
    path = tmp_path / name
    img.save(path, **params)
    return path


def encoded(img: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def stored_mode(path: Path) -> str:
    """The mode Pillow opens `path` in, to check a test file really has the intended mode."""
    with Image.open(path) as img:
        return img.mode


def pixel(img: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    assert img.mode == "RGB"
    return img.getpixel((x, y))


def close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def png_declaring(width: int, height: int) -> bytes:
    """A valid 1x1 greyscale PNG whose IHDR is patched to declare width x height."""
    data = bytearray(encoded(Image.new("L", (1, 1)), "PNG"))
    # Signature (8 bytes), then IHDR: length (4), type (4) at 12, data (13) at 16, CRC at 29.
    assert data[12:16] == b"IHDR"
    data[16:20] = width.to_bytes(4, "big")
    data[20:24] = height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


# ---------------------------------------------------------------- PIL modes, through files


def test_mode_1_png(tmp_path: Path) -> None:
    img = Image.new("1", (8, 4), 0)
    img.paste(1, (4, 0, 8, 4))
    out = load_image(saved(tmp_path, img, "bits.png"))
    assert pixel(out, 0, 0) == (0, 0, 0)
    assert pixel(out, 7, 3) == WHITE


def test_mode_l_png_exact_tensor(tmp_path: Path) -> None:
    x = preprocess(saved(tmp_path, Image.new("L", (10, 10), 51), "grey.png"), size=10)
    assert torch.all(x == float(keras_value(51)))  # 51 / 127.5 - 1 = -0.6 in float32


def test_mode_la_alpha_on_white(tmp_path: Path) -> None:
    img = Image.new("LA", (4, 4), (100, 0))
    img.putpixel((0, 0), (100, 255))
    out = load_image(saved(tmp_path, img, "la.png"))
    assert pixel(out, 0, 0) == (100, 100, 100)
    assert pixel(out, 3, 3) == WHITE


def test_mode_p_palette(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 - 2) * 3)
    img.putpixel((1, 1), 1)
    out = load_image(saved(tmp_path, img, "palette.png"))
    assert pixel(out, 0, 0) == (10, 20, 30)
    assert pixel(out, 1, 1) == (200, 100, 50)


@pytest.mark.parametrize("name", ["palette.png", "palette.gif"])
def test_mode_p_with_transparency(tmp_path: Path, name: str) -> None:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 - 2) * 3)
    img.putpixel((0, 0), 0)
    path = saved(tmp_path, img, name, transparency=1)
    assert stored_mode(path) == "P"
    out = load_image(path)
    assert pixel(out, 0, 0) == (10, 20, 30)
    assert pixel(out, 2, 2) == WHITE


def test_mode_l_with_transparent_colour(tmp_path: Path) -> None:
    img = Image.new("L", (4, 4), 100)
    img.putpixel((0, 0), 7)
    out = load_image(saved(tmp_path, img, "trns.png", transparency=100))
    assert pixel(out, 0, 0) == (7, 7, 7)
    assert pixel(out, 1, 1) == WHITE


def test_mode_rgb_exact_tensor(tmp_path: Path) -> None:
    path = saved(tmp_path, Image.new("RGB", (6, 6), (255, 0, 51)), "rgb.png")
    x = preprocess(path, size=6)
    assert x.shape == (1, 3, 6, 6)
    assert torch.all(x[0, 0] == 1.0)
    assert torch.all(x[0, 1] == -1.0)
    assert torch.all(x[0, 2] == float(keras_value(51)))


def test_mode_rgba_transparent_background_is_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (9, 9), (0, 0, 0, 0))
    img.paste((200, 100, 50, 255), (3, 3, 6, 6))
    img.putpixel((0, 8), (0, 0, 0, 128))
    out = load_image(saved(tmp_path, img, "rgba.png"))
    assert pixel(out, 0, 0) == WHITE
    assert pixel(out, 4, 4) == (200, 100, 50)
    # Half-transparent black over white: 255 * (1 - 128/255) = 127.
    assert close(pixel(out, 0, 8), (127, 127, 127), 1)


def test_mode_cmyk_jpeg(tmp_path: Path) -> None:
    path = saved(tmp_path, Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "cmyk.jpg")
    assert stored_mode(path) == "CMYK"
    # No cyan, full magenta and yellow, no black = red.
    assert close(pixel(load_image(path), 8, 8), RED, 2)


def test_mode_i16_png_scaled_by_257(tmp_path: Path) -> None:
    values = np.array([[0, 257, 25828, 25829, 65535]], dtype=np.uint16)
    path = saved(tmp_path, Image.fromarray(values), "deep.png")
    assert stored_mode(path) == "I;16"
    out = np.asarray(load_image(path))[0, :, 0]
    # 25828 / 257 = 100.498 -> 100; 25829 / 257 = 100.502 -> 101.
    assert out.tolist() == [0, 1, 100, 101, 255]


def test_mode_i16b_big_endian() -> None:
    img = Image.new("I;16B", (3, 3), 257 * 42)
    assert pixel(load_image(img), 1, 1) == (42, 42, 42)


def test_mode_i_taken_as_16_bit(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[257 * 200, 70000, -5]], dtype=np.int32))
    assert img.mode == "I"
    for source in (img, saved(tmp_path, img, "int.tif")):
        assert np.asarray(load_image(source))[0, :, 0].tolist() == [200, 255, 0]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.2, 1.0, -0.5], [51, 255, 0]),  # peak <= 1: [0, 1]
        ([100.0, 255.0, 0.0], [100, 255, 0]),  # peak <= 255: [0, 255]
        ([25700.0, 65535.0, 30000.0], [100, 255, 117]),  # larger: [0, 65535]
    ],
)
def test_mode_f_tiff(tmp_path: Path, values: list[float], expected: list[int]) -> None:
    img = Image.fromarray(np.array([values], dtype=np.float32))
    path = saved(tmp_path, img, "float.tif")
    assert stored_mode(path) == "F"
    assert np.asarray(load_image(path))[0, :, 0].tolist() == expected


def test_mode_ycbcr_matches_jfif_formula() -> None:
    y, cb, cr = 100, 90, 200
    expected = (
        round(y + 1.402 * (cr - 128)),
        round(y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128)),
        round(y + 1.772 * (cb - 128)),
    )
    out = load_image(Image.new("YCbCr", (4, 4), (y, cb, cr)))
    assert close(pixel(out, 2, 2), expected, 1)


# ---------------------------------------------------------------- orientation and animations


def test_exif_orientation_6_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), BLUE)
    img.paste(RED, (0, 0, 10, 10))  # marks the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored image rotated 90 degrees clockwise
    out = load_image(saved(tmp_path, img, "phone.jpg", exif=exif, quality=95))
    assert out.size == (20, 40)
    assert close(pixel(out, 17, 2), RED, 40)  # top-left went to the top-right
    assert close(pixel(out, 2, 2), BLUE, 40)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("anim.gif", {}),
        ("anim.webp", {"lossless": True}),
        ("anim.png", {}),
    ],
)
def test_animation_gives_first_frame(tmp_path: Path, name: str, params: dict) -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in (RED, GREEN, BLUE)]
    path = tmp_path / name
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, **params)
    with Image.open(path) as opened:
        assert opened.n_frames == 3
    assert pixel(load_image(path), 8, 8) == RED


def test_pil_image_seeked_to_later_frame_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in (RED, GREEN)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with Image.open(path) as opened:
        opened.seek(1)
        assert pixel(load_image(opened), 8, 8) == RED


# ---------------------------------------------------------------- unreadable and hostile files


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(path)


def test_text_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("these are my shopping notes, not a picture\n")
    with pytest.raises(ImageError, match=r"not an image xviz can read \(.*text.*PNG or JPEG"):
        load_image(path)


def test_svg(tmp_path: Path) -> None:
    path = tmp_path / "drawing.svg"
    path.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    with pytest.raises(ImageError, match="SVG"):
        load_image(path)


def test_fake_heic() -> None:
    data = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    with pytest.raises(ImageError, match="HEIC"):
        load_image(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_refused(tmp_path: Path, fmt: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encoded(Image.fromarray(noise), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="damaged or incomplete"):
        load_image(path)


def test_unaccepted_format_is_not_tried() -> None:
    # ICO is a real format Pillow can read, but not one xviz accepts.
    with pytest.raises(ImageError, match="not an image xviz can read"):
        load_image(encoded(Image.new("RGB", (16, 16)), "ICO"))


def test_missing_file_is_refused_without_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no image file") as info:
        load_image(tmp_path / "nowhere.png")
    assert str(tmp_path) not in str(info.value)


def test_unreadable_file_is_refused_without_naming_the_path_or_the_os_error(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(ImageError, match="no image file") as info:
        load_image(folder)
    assert str(tmp_path) not in str(info.value) and "Errno" not in str(info.value)


def test_none_is_a_clear_error() -> None:
    with pytest.raises(ImageError, match="No image"):
        load_image(None)


def test_file_over_byte_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = saved(tmp_path, Image.new("RGB", (64, 64)), "big.bmp")
    # The module, not the function ``xviz.engine.preprocess`` that the package exports.
    module = importlib.import_module("xviz.engine.preprocess")
    monkeypatch.setattr(module, "MAX_FILE_BYTES", 1000)
    with pytest.raises(ImageError, match="files up to"):
        load_image(path)
    with pytest.raises(ImageError, match="files up to"):
        load_image(path.read_bytes())


def test_decompression_bomb_30000_squared(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(30000, 30000))
    with pytest.raises(ImageError, match="megapixels"):
        load_image(path)


@pytest.mark.parametrize("side", [8000, 10000])
def test_oversized_header_refused_before_decoding(
    side: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 64 M pixels is under Pillow's own limit, 100 M only warns there: both must stop at
    # xviz's check, before any pixel is decoded.
    def fail_load(self: ImageFile.ImageFile) -> None:
        raise AssertionError("decoded an image that should have been refused")

    monkeypatch.setattr(ImageFile.ImageFile, "load", fail_load)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a leaked DecompressionBombWarning would fail here
        with pytest.raises(ImageError, match="megapixels"):
            load_image(png_declaring(side, side))


def test_one_pixel_image_is_accepted() -> None:
    x = preprocess(Image.new("RGB", (1, 1), (0, 51, 255)), size=5)
    assert x.shape == (1, 3, 5, 5)
    assert torch.all(x[0, 1] == float(keras_value(51)))


def test_thin_strip_is_refused() -> None:
    with pytest.raises(ImageError, match="3333:1 strip"):
        load_image(Image.new("RGB", (10000, 3)))


def test_aspect_ratio_limit_is_inclusive() -> None:
    assert load_image(Image.new("RGB", (MAX_ASPECT_RATIO, 1))).size == (MAX_ASPECT_RATIO, 1)
    with pytest.raises(ImageError, match="aspect"):
        load_image(Image.new("RGB", (1, MAX_ASPECT_RATIO + 1)))


# ---------------------------------------------------------------- numpy arrays


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.array([[0, 51, 255]], dtype=np.uint8), [0, 51, 255]),
        (np.array([[0, 257 * 51, 65535]], dtype=np.uint16), [0, 51, 255]),
        (np.array([[False, True, True]]), [0, 255, 255]),
        (np.array([[0.2, 1.5, -0.5]], dtype=np.float32), [51, 255, 0]),
        (np.array([[0.2, 0.5, 1.0]], dtype=np.float64), [51, 128, 255]),
        (np.array([[0, 51, 255]], dtype=np.int64), [0, 51, 255]),
    ],
)
def test_numpy_dtypes(array: np.ndarray, expected: list[int]) -> None:
    out = np.asarray(load_image(array))
    assert out.shape == (1, 3, 3)
    assert out[0, :, 0].tolist() == expected
    assert (out[..., 0] == out[..., 2]).all()


def test_numpy_channel_layouts() -> None:
    grey = np.full((4, 5), 51, dtype=np.uint8)
    assert np.asarray(load_image(grey[..., None])).tolist() == np.asarray(load_image(grey)).tolist()
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    out = load_image(rgba)
    assert out.size == (5, 4)
    assert pixel(out, 0, 0) == (10, 20, 30)
    assert pixel(out, 4, 3) == WHITE


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 4, 2), dtype=np.uint8), "must be"),
        (np.zeros((2, 4, 4, 3), dtype=np.uint8), "must be"),
        (np.zeros((0, 4, 3), dtype=np.uint8), "no pixels"),
        (np.array([[0, 300]], dtype=np.int64), "0..255"),
        (np.array([[0.0, np.nan]], dtype=np.float32), "NaN"),
        (np.array([[1 + 1j]]), "dtype"),
    ],
)
def test_numpy_refused(array: np.ndarray, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        load_image(array)


# ---------------------------------------------------------------- resize and scaling


def test_from_uint8_layout_and_values() -> None:
    batch = np.zeros((2, 3, 4, 3), dtype=np.uint8)
    batch[1, 1, 2] = (0, 255, 51)
    x = from_uint8(batch)
    assert x.shape == (2, 3, 3, 4)
    assert x.dtype == torch.float32
    assert x[1, :, 1, 2].tolist() == [-1.0, 1.0, float(keras_value(51))]
    assert torch.all(x[0] == -1.0)


def test_from_uint8_refuses_other_dtypes() -> None:
    with pytest.raises(ValueError, match="uint8"):
        from_uint8(np.zeros((1, 2, 2, 3), dtype=np.float32))


def test_same_size_resize_is_identity() -> None:
    noise = np.random.default_rng(1).integers(0, 256, (17, 17, 3), dtype=np.uint8)
    assert np.array_equal(to_display(Image.fromarray(noise), 17), noise)


def test_resize_is_bicubic_square_without_crop() -> None:
    img = Image.new("RGB", (120, 80), BLUE)
    img.paste(RED, (0, 0, 4, 80))  # a thin stripe that a centre crop would remove
    shown = to_display(img, 60)
    assert shown.shape == (60, 60, 3)
    assert shown.dtype == np.uint8
    assert shown[30, 0, 0] > 200 and shown[30, 0, 2] < 60
    assert np.array_equal(shown, np.asarray(img.resize((60, 60), Image.Resampling.BICUBIC)))


def test_to_tensor_is_from_uint8_of_to_display() -> None:
    noise = np.random.default_rng(2).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    img = Image.fromarray(noise)
    assert torch.equal(to_tensor(img, 31), from_uint8(to_display(img, 31)[None]))


def test_to_display_needs_rgb() -> None:
    with pytest.raises(ValueError, match="RGB"):
        to_display(Image.new("L", (4, 4)), 4)


# ---------------------------------------------------------------- tensor pass-through


def test_tensor_pass_through() -> None:
    t = torch.linspace(-1, 1, 3 * 8 * 8, dtype=torch.float64).reshape(3, 8, 8)
    x = preprocess(t, size=8)
    assert x.shape == (1, 3, 8, 8)
    assert x.dtype == torch.float32
    assert torch.allclose(x[0], t.float())
    x[0, 0, 0, 0] = 5.0
    assert t[0, 0, 0] == -1.0  # a copy, not a view of the caller's tensor


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (torch.zeros(1, 3, 8, 9), "shape"),
        (torch.zeros(3, 299, 299), "shape"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "floating point"),
        (torch.full((1, 3, 8, 8), 255.0), r"\[-1, 1\]"),
        (torch.full((3, 8, 8), float("nan")), "NaN"),
    ],
)
def test_tensor_refused(tensor: torch.Tensor, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        preprocess(tensor, size=8)


# ---------------------------------------------------------------- properties

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"]
sides = st.integers(1, 300)
property_settings = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def random_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-1000, 70000, (height, width), dtype=np.int32))
    if mode == "F":
        scale = rng.choice([1.0, 255.0, 65535.0])
        return Image.fromarray((rng.random((height, width)) * scale).astype(np.float32))
    channels = 4 if mode in ("LA", "RGBA") else 3
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def random_array(dtype: str, channels: int | None, width: int, height: int, seed: int):
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels is None else (height, width, channels)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if dtype in ("float32", "float64"):
        return (rng.random(shape) * 1.4 - 0.2).astype(dtype)  # includes values to clip
    high = 65536 if dtype == "uint16" else 256
    return rng.integers(0, high, shape).astype(dtype)


def assert_model_input(x: torch.Tensor, size: int) -> None:
    assert x.shape == (1, 3, size, size)
    assert x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert x.min() >= -1.0 and x.max() <= 1.0


def elongated(width: int, height: int) -> bool:
    return max(width, height) / min(width, height) > MAX_ASPECT_RATIO


@property_settings
@given(
    mode=st.sampled_from(MODES),
    width=sides,
    height=sides,
    size=sides,
    seed=st.integers(0, 2**32 - 1),
)
def test_any_mode_gives_a_valid_model_input(
    mode: str, width: int, height: int, size: int, seed: int
) -> None:
    img = random_image(mode, width, height, seed)
    if elongated(width, height):
        with pytest.raises(ImageError, match="aspect"):
            preprocess(img, size)
    else:
        assert_model_input(preprocess(img, size), size)


@property_settings
@given(
    dtype=st.sampled_from(["uint8", "uint16", "bool", "float32", "float64", "int64"]),
    channels=st.sampled_from([None, 1, 3, 4]),
    width=sides,
    height=sides,
    size=sides,
    seed=st.integers(0, 2**32 - 1),
)
def test_any_array_gives_a_valid_model_input(
    dtype: str, channels: int | None, width: int, height: int, size: int, seed: int
) -> None:
    array = random_array(dtype, channels, width, height, seed)
    if elongated(width, height):
        with pytest.raises(ImageError, match="aspect"):
            preprocess(array, size)
    else:
        assert_model_input(preprocess(array, size), size)


@property_settings
@given(
    colour=st.tuples(*[st.integers(0, 255)] * 3),
    width=sides,
    height=sides,
    size=sides,
    fmt=st.sampled_from([None, "PNG", "BMP", "TIFF", "WEBP"]),
)
def test_constant_colour_maps_to_exact_constant(
    colour: tuple[int, int, int], width: int, height: int, size: int, fmt: str | None
) -> None:
    assume(not elongated(width, height))
    img = Image.new("RGB", (width, height), colour)
    params = {"lossless": True} if fmt == "WEBP" else {}
    source = img if fmt is None else encoded(img, fmt, **params)
    x = preprocess(source, size)
    for channel, sample in enumerate(colour):
        assert torch.all(x[0, channel] == float(keras_value(sample)))
