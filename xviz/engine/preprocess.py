"""Image -> model input: decode safely, convert to 8-bit RGB, resize, scale to [-1, 1].

Pipeline (one place for each step):
    load_image   file / bytes / PIL / numpy -> PIL RGB, within the limits below
    to_display   PIL RGB -> (S, S, 3) uint8, the exact pixels the model sees (overlays use it)
    from_uint8   (N, H, W, 3) uint8 -> (N, 3, H, W) float32, Keras 'tf' mode x / 127.5 - 1
    to_tensor    to_display + from_uint8
    preprocess   load_image + to_tensor, or a validated pass-through for ready tensors

Decisions (each one a user can see, so each is explicit):
- Resize: bicubic (PIL `Image.BICUBIC`, antialiased when shrinking) straight to S x S, with no
  crop and no padding. The whole picture reaches the model; other aspect ratios are squashed.
  Keras' Xception examples resize the whole image the same way; timm's crop_pct 0.8975 centre
  crop is deliberately not used, so an object near the border is never cut off.
- Transparency is composited on white, the colour a browser shows behind it.
- Animations (GIF, WebP, APNG) and multi-page files (TIFF, MPO) give their first frame.
- EXIF orientation is applied, so a phone photo is seen upright, as a person sees it.
- Sample scaling to 8 bits (rounded to nearest):
    PIL modes I;16, I;16B, I;16L, I;16N   16-bit: v * 255 / 65535 (= v / 257)
    PIL mode I (32-bit integer)            taken as 16-bit, clipped to 0..65535: in practice it
                                           holds 16-bit greyscale (TIFF, older Pillow PNGs)
    PIL mode F (32-bit float)              no file convention exists, so by its maximum:
                                           <= 1 -> [0, 1]; <= 255 -> [0, 255]; else [0, 65535];
                                           negatives clip to 0
    numpy bool                             False -> 0, True -> 255
    numpy uint8                            unchanged
    numpy uint16                           16-bit, as for I;16
    numpy other integers                   must hold 0..255 (refused otherwise): an int64 array
                                           from Python literals is 8-bit data, and scaling it
                                           by the dtype's maximum would make it black
    numpy floats                           [0, 1] (the scikit-image convention), clipped
  NaN or infinite samples are refused.
- No minimum size: a 1 x 1 image is accepted and upsampled to a constant image.
- Refused before decoding, from the header and the file size: more than MAX_PIXELS, an aspect
  ratio over MAX_ASPECT_RATIO, and a file too small for the pixels it declares (truncated or
  forged; `_check_plausible`). A JPEG whose data ends early is refused too, even when it
  still ends with an EOI marker (`_check_jpeg_complete`): it would decode half grey.
"""

import base64
import binascii
import io
import math
import os
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import simplejpeg
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from xviz.errors import ImageError

# Files larger than this are refused before reading: a phone photo is 2-10 MB.
MAX_FILE_BYTES = 20 * 1024 * 1024
# Checked on the size the header declares, before decoding: far below Pillow's own bomb limit
# (89 M pixels warns, 179 M raises), so a small file declaring a huge image costs nothing.
MAX_PIXELS = 40_000_000
# Longer side / shorter side. The model sees a square, so a 3333:1 strip would be squashed
# into unrecognisable texture; up to 50:1 (a wide panorama) still makes sense.
MAX_ASPECT_RATIO = 50
# Pillow format ids tried when opening. Passing them to `Image.open(formats=...)` also keeps
# Pillow's riskier plugins (EPS runs Ghostscript) away from uploads. "JPEG" covers MPO photos.
ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
# Accepted tensors may exceed [-1, 1] by float rounding only; an ImageNet-normalised tensor
# (about [-2.1, 2.6]) or a 0-255 one is refused.
TENSOR_RANGE_TOLERANCE = 1e-3

ImageInput = Image.Image | str | os.PathLike | bytes | bytearray | np.ndarray

_WHITE = (255, 255, 255, 255)
_ORIENTATION = 0x0112  # the EXIF tag
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")
_TRY_INSTEAD = "Try a PNG or JPEG."


def load_image(image: ImageInput | None) -> Image.Image:
    """Read `image` as an 8-bit RGB PIL image, upright, first frame, alpha on white.

    Args:
        image: a PIL image (any mode), a file path, the bytes of a file, or a numpy array
            (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); see the module docstring for dtypes.

    Returns:
        A new PIL image in mode "RGB" of the input's (EXIF-rotated) size.

    Raises:
        ImageError: the input is missing, not a readable image, damaged or over the limits.
    """
    if image is None:
        raise ImageError("No image was given. Upload a picture first.")
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if isinstance(image, Image.Image):
        with _decoding(head=b""):
            _check_size(*image.size)
            return _normalise(image)
    if isinstance(image, (str, os.PathLike)):
        image = _read_file(Path(image))
    if isinstance(image, (bytes, bytearray)):
        return _decode(bytes(image))
    raise TypeError(
        f"load_image takes a PIL image, a path, bytes or a numpy array, not {type(image).__name__}"
    )


def to_display(img: Image.Image, size: int) -> np.ndarray:
    """The resized image the model sees, for overlays: (size, size, 3) uint8.

    `img` must be RGB (use `load_image`); the resize is bicubic to a square, with no crop.
    """
    if img.mode != "RGB":
        raise ValueError(f"to_display needs an RGB image (use load_image), got mode {img.mode}")
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    resized = img.resize((size, size), Image.BICUBIC)
    return np.array(resized, dtype=np.uint8)  # (S, S, 3), a writable copy for overlays


def from_uint8(array: np.ndarray) -> torch.Tensor:
    """Keras `xception.preprocess_input` ('tf' mode): (N, H, W, 3) uint8 -> (N, 3, H, W) float32.

    Computes exactly `x.astype(float32) / 127.5 - 1` in float32, the same operations Keras
    runs, so outputs can be compared with Keras fixtures bit for bit.
    """
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"from_uint8 needs (N, H, W, 3) uint8, got {array.shape} {array.dtype}")
    scaled = array.astype(np.float32) / np.float32(127.5) - np.float32(1.0)  # (N, H, W, 3)
    return torch.from_numpy(scaled).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)


def to_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """RGB PIL image -> model input (1, 3, size, size) float32 in [-1, 1]."""
    return from_uint8(to_display(img, size)[np.newaxis])


def preprocess(image: ImageInput | torch.Tensor | None, size: int = 299) -> torch.Tensor:
    """Any accepted image -> model input (1, 3, size, size) float32 in [-1, 1] on the CPU.

    A torch tensor is taken as already preprocessed: (3, S, S) or (1, 3, S, S) with S == size,
    floating point, finite, within [-1, 1]. It is returned as a float32 batched copy.
    """
    if isinstance(image, torch.Tensor):
        return _check_tensor(image, size)
    return to_tensor(load_image(image), size)


def _check_tensor(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """Validate an already preprocessed tensor and return it as (1, 3, S, S) float32."""
    batched = tensor.unsqueeze(0) if tensor.dim() == 3 else tensor
    if tuple(batched.shape) != (1, 3, size, size):
        raise ImageError(
            f"A tensor input must have shape (3, {size}, {size}) or (1, 3, {size}, {size}), "
            f"got {tuple(tensor.shape)}."
        )
    if not tensor.is_floating_point():
        raise ImageError(
            f"A tensor input must be floating point in [-1, 1], got {tensor.dtype}. "
            "Pass the image itself to have it scaled."
        )
    batched = batched.detach().to(device="cpu", dtype=torch.float32, copy=True)
    if not torch.isfinite(batched).all():
        raise ImageError("A tensor input contains NaN or infinite values.")
    low, high = batched.min().item(), batched.max().item()
    limit = 1 + TENSOR_RANGE_TOLERANCE
    if low < -limit or high > limit:
        raise ImageError(
            f"A tensor input must hold values in [-1, 1] (x / 127.5 - 1), got [{low:.3g}, "
            f"{high:.3g}]. Pass the image itself to have it scaled."
        )
    return batched


def _read_file(path: Path) -> bytes:
    """The bytes of the file at `path`, after checking it exists and is not too large.

    Messages never name the path: it may be a server path that a request named.
    """
    try:
        if not path.is_file():
            raise ImageError("There is no image file there. Upload the picture again.")
        _check_file_bytes(path.stat().st_size)
        return path.read_bytes()
    except OSError as error:
        raise ImageError("The image file could not be read. Upload the picture again.") from error


def data_url_bytes(url: str) -> bytes:
    """The bytes of a ``data:`` URL (RFC 2397), checked against the byte limit before decoding.

    Base64 and percent-encoded payloads are decoded here, by xviz, so that the bytes reach
    :func:`load_image` exactly as they were sent (no re-encoding) and pass the same limits as
    an uploaded file. The media type the URL declares is ignored: the bytes say what they are.
    """
    header, comma, payload = url.partition(",")
    if not header.lower().startswith("data:") or not comma:
        raise ImageError("This is not a data: URL (data:[<type>][;base64],<data>).")
    is_base64 = header.lower().endswith(";base64")
    # Base64 holds 3 bytes per 4 characters: refuse before decoding anything.
    _check_file_bytes(len(payload) * 3 // 4 if is_base64 else len(payload))
    try:
        if is_base64:
            return base64.b64decode(payload.strip(), validate=True)
        return urllib.parse.unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as error:
        raise ImageError(
            "This data: URL does not hold valid base64 data, so no image could be read from it."
        ) from error


def _decode(data: bytes) -> Image.Image:
    """Decode the bytes of an image file, refusing what the header already rules out."""
    _check_file_bytes(len(data))
    with _decoding(head=data[:512]):
        # Not closed after: closing frees the pixels, and an in-memory file holds nothing else.
        opened = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        _check_size(*opened.size)  # header only: nothing decoded yet
        _check_plausible(opened.format, opened.size, data)
        if opened.format in ("JPEG", "MPO"):
            _check_jpeg_complete(data)
        return _normalise(opened, owned=True)


def _check_plausible(fmt: str | None, size: tuple[int, int], data: bytes) -> None:
    """Refuse a file too small to hold the pixels its header declares, before decoding.

    Each bound is half the format's best possible compression, so no complete file is
    refused; a file under it is truncated or forged and would decode to filler (a 632-byte
    JPEG declaring 6300 x 6300 decodes to 99.999% grey, taking seconds and 450 MB):
    - JPEG (ITU T.81, Huffman coding): every 8x8 block of the first component needs a DC code
      of at least 1 bit. Measured: a flat 6300 x 6300 grey JPEG with optimised Huffman tables
      is 155 kB (2 bits a block). Bound: half a bit a block.
    - PNG (deflate): zlib's limit is 1032:1 over the filtered rows (zlib's technical details,
      "the limit case"); measured 903-1013:1 on flat images. Bound: 2064:1, from IHDR's bit
      depth and colour type.
    - GIF (LZW, codes of at most 12 bits): a code stands for at most 4096 pixels, so at least
      12 bits per 4096 pixels (measured: 1341 pixels a byte). Bound: half that.
    - BMP without compression (BI_RGB, BI_BITFIELDS): the rows are stored as they are.
    WebP has no bound (a lossless WebP of one colour is a few bytes at any size), nor TIFF;
    their decoders refuse truncated data.
    """
    width, height = size
    if fmt in ("JPEG", "MPO"):
        minimum = math.ceil(width / 8) * math.ceil(height / 8) / 16
    elif fmt == "PNG" and len(data) >= 26:
        bit_depth, colour_type = data[24], data[25]  # IHDR, right after the signature
        samples = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour_type, 1)
        minimum = height * (1 + math.ceil(width * samples * bit_depth / 8)) / 2064
    elif fmt == "GIF":
        minimum = width * height * 12 / 8 / 4096 / 2
    elif fmt == "BMP" and len(data) >= 34 and int.from_bytes(data[30:34], "little") in (0, 3):
        bits = int.from_bytes(data[28:30], "little")
        offset = int.from_bytes(data[10:14], "little")
        minimum = offset + (width * bits + 31) // 32 * 4 * height
    else:
        return
    if len(data) < minimum:
        raise ImageError(
            f"This file is too small to hold the {width}x{height} image it declares "
            f"({len(data):,} bytes): it is truncated or damaged. Try saving it again as PNG "
            "or JPEG."
        )


def _check_jpeg_complete(data: bytes) -> None:
    """Refuse a JPEG whose compressed data ends early, before Pillow decodes it.

    libjpeg fills the missing blocks of a cut JPEG with grey and only warns (JWRN_HIT_MARKER,
    JWRN_JPEG_EOF), and Pillow discards libjpeg's warnings (its JpegDecode.c makes
    ``output_message`` a no-op), so a photo cut in half that still ends with an EOI marker
    decodes with its lower half grey. simplejpeg's strict mode (TurboJPEG's
    TJFLAG_STOPONWARNING) turns the warning into an error; decoding at 1/8 scale reads every
    coded block at a fraction of the cost. Other warnings (extraneous bytes before a marker,
    common in camera files) are left to Pillow, the decoder of record.
    """
    try:
        simplejpeg.decode_jpeg(
            data, colorspace="GRAY", strict=True, min_factor=8, min_width=1, min_height=1
        )
    except ValueError as error:
        if "premature end" in str(error).lower():
            raise ImageError(
                "This JPEG is damaged or incomplete: its data ends before its last rows, "
                "which would show as grey. Try saving it again as PNG or JPEG."
            ) from error


@contextmanager
def _decoding(head: bytes) -> Iterator[None]:
    """Turn Pillow's failures into ImageError; `head` (the file's first bytes) names the cause."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # The warning arrives as an exception only when warnings are turned into errors.
        raise ImageError(
            "This image declares far more pixels than xviz opens "
            f"(limit {MAX_PIXELS / 1e6:.0f} megapixels), so it was not decoded. "
            "Scale it down first."
        ) from error
    except UnidentifiedImageError as error:
        raise ImageError(
            f"This file is not an image xviz can read ({_describe(head)}). {_TRY_INSTEAD}"
        ) from error
    except (OSError, ValueError, EOFError, SyntaxError) as error:
        # LOAD_TRUNCATED_IMAGES stays off: a truncated file fails here rather than being
        # half-decoded into grey.
        raise ImageError(
            f"This image file is damaged or incomplete ({error}). Try saving it again as PNG "
            "or JPEG."
        ) from error


def _describe(head: bytes) -> str:
    """A person's guess at what an unreadable file is, from its first bytes."""
    if not head:
        return "the file is empty"
    stripped = head.lstrip()
    if stripped.startswith((b"<svg", b"<?xml")) and b"<svg" in head:
        return "it looks like an SVG drawing, which is vector graphics"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "it looks like a HEIC/HEIF photo, the iPhone default; export it as JPEG"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "it looks like an AVIF image"
    if head.startswith(b"%PDF"):
        return "it looks like a PDF document"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "its format was not recognised"
    if all(char.isprintable() or char.isspace() for char in text):
        return "it looks like a text file"
    return "its format was not recognised"


def _check_file_bytes(n_bytes: int) -> None:
    if n_bytes > MAX_FILE_BYTES:
        # Rounded up: a file just over the limit must not read "20.0 MB; ... up to 20 MB".
        size_mb = math.ceil(n_bytes / 2**20 * 10) / 10
        raise ImageError(
            f"This file is {size_mb:.1f} MB; xviz accepts files up to "
            f"{MAX_FILE_BYTES / 2**20:.0f} MB. Save a smaller copy (e.g. a JPEG) first."
        )


def _check_size(width: int, height: int) -> None:
    """Refuse images that are empty, too large or too elongated, from their declared size."""
    if width < 1 or height < 1:
        raise ImageError(f"This image is {width}x{height} pixels: it has no pixels.")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"This image is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels); "
            f"xviz accepts up to {MAX_PIXELS / 1e6:.0f} megapixels. Scale it down first."
        )
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise ImageError(
            f"This image is {width}x{height} pixels, a {ratio:.0f}:1 strip; xviz accepts aspect "
            f"ratios up to {MAX_ASPECT_RATIO}:1 because the model sees a square and the strip "
            "would be squashed beyond recognition. Crop it first."
        )


def _normalise(img: Image.Image, owned: bool = False) -> Image.Image:
    """First frame, decoded, EXIF-rotated, as 8-bit RGB.

    ``owned``: ``img`` was decoded here and nobody else holds it, so it may be returned
    itself; otherwise the result is always a new image. Each step copies only when it must:
    a 40-megapixel photo is 120 MB a copy.
    """
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    img.load()  # decode now, inside the caller's error handling
    if img.getexif().get(_ORIENTATION, 1) != 1:
        img, owned = ImageOps.exif_transpose(img), True
    return _to_rgb(img, owned)


def _to_rgb(img: Image.Image, owned: bool = False) -> Image.Image:
    """Any PIL mode -> 8-bit RGB; high-bit-depth modes scaled as the module docstring says."""
    if img.mode in _SIXTEEN_BIT_MODES:
        return _from_array(_scale_to_uint8(np.asarray(img), 65535))
    if img.mode == "I":
        return _from_array(_scale_to_uint8(np.clip(np.asarray(img), 0, 65535), 65535))
    if img.mode == "F":
        values = _finite(np.asarray(img))
        peak = values.max()
        full_scale = 1 if peak <= 1 else 255 if peak <= 255 else 65535
        return _from_array(_scale_to_uint8(values, full_scale))
    if "A" in img.mode or "a" in img.mode or "transparency" in img.info:
        # LA, La, PA, RGBA, RGBa, and P / L / RGB with a transparent colour (tRNS): composite
        # on white. Pasting through the alpha channel blends as alpha_composite over an opaque
        # white image does, without its two extra full-size RGBA images.
        rgba = img if img.mode == "RGBA" else _convert(img, "RGBA")
        out = Image.new("RGB", img.size, _WHITE[:3])
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    if img.mode == "RGB":
        return img if owned else img.copy()
    return _convert(img, "RGB")


def _convert(img: Image.Image, mode: str) -> Image.Image:
    try:
        return img.convert(mode)
    except ValueError as error:
        raise ImageError(
            f"xviz cannot convert images in colour mode {img.mode} to RGB. {_TRY_INSTEAD}"
        ) from error


def _from_array(array: np.ndarray) -> Image.Image:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array -> 8-bit RGB PIL image."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageError(
            f"An image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {array.shape}."
        )
    _check_size(width=array.shape[1], height=array.shape[0])
    pixels = np.ascontiguousarray(_array_to_uint8(array))
    return _to_rgb(Image.fromarray(pixels))  # uint8 (H, W) -> L, (H, W, 3) -> RGB, 4 -> RGBA


def _array_to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale samples to uint8 by dtype (rules in the module docstring)."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return _scale_to_uint8(array, 65535)
    if np.issubdtype(array.dtype, np.integer):
        low, high = array.min(), array.max()
        if low < 0 or high > 255:
            raise ImageError(
                f"An {array.dtype} image array must hold values 0..255, got {low}..{high}. "
                "Use uint16 for 16-bit data or floats in [0, 1]."
            )
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        return _scale_to_uint8(_finite(array), 1)
    raise ImageError(f"Image arrays of dtype {array.dtype} are not supported.")


def _finite(values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        raise ImageError("This image contains NaN or infinite values.")
    return values


def _scale_to_uint8(values: np.ndarray, full_scale: float) -> np.ndarray:
    """Map [0, full_scale] to 0..255, rounding to nearest; values outside are clipped."""
    scaled = values.astype(np.float32) * np.float32(255 / full_scale)
    return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)
