"""A corpus of hostile and odd image uploads, generated on demand (nothing large is committed).

Each `Case` is one file: how to build its bytes, and what xviz must do with it. An accepted
case lists `probes`, pixels of the 150 x 150 image the model sees with their expected colour,
worked out by hand from how the file was made; a refused case names a phrase of the
`ImageError` message. `write_corpus` writes every file into a folder, for the tests
(tests/app/test_hostile_inputs.py) and for load benchmarks that replay hostile uploads.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# The side the probes are given for: the app's smallest input size.
SIZE = 150
# "21 MB" of random bytes: over xviz's limit (and the app's upload limit) of 20 MiB.
OVERSIZE_BYTES = 21 * 10**6

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


@dataclass(frozen=True)
class Probe:
    """A pixel (x, y) of the SIZE x SIZE image the model sees, its colour, and a tolerance."""

    x: int
    y: int
    rgb: tuple[int, int, int]
    tolerance: int = 0


@dataclass(frozen=True)
class Case:
    """One hostile or odd upload: a file name, its bytes, and the expected outcome."""

    name: str
    filename: str
    build: Callable[[], bytes]
    refusal: str | None = None  # a phrase of the ImageError message; None: accepted
    probes: tuple[Probe, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.refusal is None


def encoded(img: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def _noise(fmt: str) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return encoded(Image.fromarray(pixels), fmt)


def _truncated(fmt: str) -> bytes:
    data = _noise(fmt)
    return data[: len(data) // 2]


def _png_declaring(width: int, height: int) -> bytes:
    """A valid 1 x 1 PNG whose IHDR is patched to declare width x height, CRC recomputed."""
    data = bytearray(encoded(Image.new("L", (1, 1)), "PNG"))
    # Signature (8 bytes), then IHDR: length (4), type (4) at 12, data (13) at 16, CRC at 29.
    data[16:20] = width.to_bytes(4, "big")
    data[20:24] = height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def _jpeg_cut_keeping_its_end() -> bytes:
    """The first half of a JPEG, then its EOI marker: it ends as a complete JPEG does."""
    data = _noise("JPEG")
    return data[: len(data) // 2] + b"\xff\xd9"


def _declaring(fmt: str, width: int, height: int) -> bytes:
    """A tiny valid file whose header is patched to declare width x height."""
    data = bytearray(encoded(Image.new("RGB", (8, 8), (10, 10, 10)), fmt))
    if fmt == "JPEG":  # SOF0: marker, length (2), precision (1), height (2), width (2)
        at = data.find(b"\xff\xc0") + 5
        data[at : at + 4] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    elif fmt == "GIF":  # logical screen: width, height (2 each, little-endian) after GIF89a
        data[6:10] = width.to_bytes(2, "little") + height.to_bytes(2, "little")
    elif fmt == "BMP":  # BITMAPINFOHEADER: width, height (4 each) at 18
        data[18:26] = width.to_bytes(4, "little") + height.to_bytes(4, "little")
    return bytes(data)


def _jpeg_with_extraneous_bytes() -> bytes:
    """Junk before the EOI marker, as some cameras write: libjpeg warns, the image is whole."""
    data = encoded(Image.new("RGB", (64, 64), (0, 51, 255)), "JPEG", quality=95)
    return data[:-2] + b"\x12\x34\x56" + data[-2:]


def _halves(left: object, right: object, mode: str) -> Image.Image:
    """A 40 x 40 image in `mode`, its left half `left`, its right half `right`."""
    img = Image.new(mode, (40, 40), left)
    img.paste(right, (20, 0, 40, 40))
    return img


def _gray16() -> bytes:
    # 40 * 257 is 40 in 8 bits; a plain convert("RGB") would clip both halves to white.
    img = Image.fromarray(np.array(_halves(40 * 257, 65535, "I"), dtype=np.uint16))
    return encoded(img, "PNG")


def _float_tiff() -> bytes:
    return encoded(_halves(0.2, 1.0, "F"), "TIFF")  # floats in [0, 1]: 0.2 -> 51


def _cmyk_jpeg() -> bytes:
    # Left: no cyan, full magenta and yellow = red; right: full black.
    return encoded(_halves((0, 255, 255, 0), (0, 0, 0, 255), "CMYK"), "JPEG", quality=95)


def _palette_transparent() -> bytes:
    img = _halves(0, 1, "P")
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 - 2) * 3)
    return encoded(img, "PNG", transparency=1)  # the right half is transparent


def _animated(fmt: str, **params: object) -> bytes:
    frames = [Image.new("RGB", (32, 32), colour) for colour in (RED, GREEN, BLUE)]
    return encoded(
        frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **params
    )


def _exif_rotated() -> bytes:
    img = Image.new("RGB", (80, 40), BLUE)
    img.paste(RED, (0, 0, 20, 20))  # marks the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the stored top-left goes top-right
    return encoded(img, "JPEG", exif=exif, quality=95)


def _rgba_transparent() -> bytes:
    img = Image.new("RGBA", (60, 60), (0, 0, 0, 0))  # transparent black
    img.paste((200, 100, 50, 255), (20, 20, 40, 40))
    return encoded(img, "PNG")


def _heic_like() -> bytes:
    return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(1000)


def _random_bytes(n_bytes: int) -> bytes:
    return np.random.default_rng(1).bytes(n_bytes)


# Bigger than the app's upload limit too: Gradio refuses the upload before xviz sees it.
OVER_UPLOAD_LIMIT = Case(
    "over_21mb_random",
    "huge.png",
    lambda: _random_bytes(OVERSIZE_BYTES),
    refusal="files up to 20 MB",
)

CORPUS: tuple[Case, ...] = (
    Case("zero_bytes", "empty.png", lambda: b"", refusal="the file is empty"),
    Case(
        "text_named_png",
        "notes.png",
        lambda: b"shopping list: eggs, milk, bread\n",
        refusal="it looks like a text file",
    ),
    Case("truncated_jpeg", "cut.jpg", lambda: _truncated("JPEG"), refusal="damaged or incomplete"),
    Case("truncated_png", "cut.png", lambda: _truncated("PNG"), refusal="damaged or incomplete"),
    Case(
        "jpeg_cut_keeping_its_end_marker",
        "cut_eoi.jpg",
        _jpeg_cut_keeping_its_end,
        refusal="damaged or incomplete",
    ),
    Case(
        "jpeg_631_bytes_declaring_6300x6300",
        "tiny_big.jpg",
        lambda: _declaring("JPEG", 6300, 6300),
        refusal="too small to hold the 6300x6300 image",
    ),
    Case(
        "gif_declaring_6000x6000",
        "tiny_big.gif",
        lambda: _declaring("GIF", 6000, 6000),
        refusal="too small to hold",
    ),
    Case(
        "bmp_declaring_4000x4000",
        "tiny_big.bmp",
        lambda: _declaring("BMP", 4000, 4000),
        refusal="too small to hold",
    ),
    Case(
        "flat_jpeg_2000x2000",
        "flat.jpg",
        lambda: encoded(Image.new("RGB", (2000, 2000), (128, 128, 128)), "JPEG", optimize=True),
        probes=(Probe(75, 75, (128, 128, 128)),),
    ),
    Case(
        "jpeg_with_extraneous_bytes",
        "camera.jpg",
        _jpeg_with_extraneous_bytes,
        probes=(Probe(75, 75, (0, 51, 255), 3),),
    ),
    Case(
        "bomb_30000x30000_png",
        "bomb.png",
        lambda: _png_declaring(30000, 30000),
        refusal="megapixels",
    ),
    Case(
        "one_pixel",
        "dot.png",
        lambda: encoded(Image.new("RGB", (1, 1), (0, 51, 255)), "PNG"),
        probes=(Probe(0, 0, (0, 51, 255)), Probe(149, 149, (0, 51, 255))),
    ),
    Case(
        "strip_10000x3",
        "strip.png",
        lambda: encoded(Image.new("RGB", (10000, 3), GREEN), "PNG"),
        refusal="3333:1 strip",
    ),
    Case(
        "gray16_png",
        "deep.png",
        _gray16,
        probes=(Probe(10, 75, (40, 40, 40)), Probe(140, 75, WHITE)),
    ),
    Case(
        "float_tiff",
        "float.tif",
        _float_tiff,
        probes=(Probe(10, 75, (51, 51, 51)), Probe(140, 75, WHITE)),
    ),
    Case(
        "cmyk_jpeg",
        "cmyk.jpg",
        _cmyk_jpeg,
        probes=(Probe(10, 75, RED, 3), Probe(140, 75, (0, 0, 0), 3)),
    ),
    Case(
        "palette_transparent_png",
        "palette.png",
        _palette_transparent,
        probes=(Probe(10, 75, (10, 20, 30)), Probe(140, 75, WHITE)),
    ),
    Case("animated_gif", "anim.gif", lambda: _animated("GIF"), probes=(Probe(75, 75, RED),)),
    Case(
        "animated_webp",
        "anim.webp",
        lambda: _animated("WEBP", lossless=True),
        probes=(Probe(75, 75, RED),),
    ),
    Case(
        "exif_rotated_jpeg",
        "phone.jpg",
        _exif_rotated,
        # Shown 40 wide, 80 high; the red 20 x 20 mark at the top right, a quarter of the
        # width and an eighth of the height. Unrotated, the top left would be red.
        probes=(Probe(145, 5, RED, 40), Probe(5, 5, BLUE, 40), Probe(75, 140, BLUE, 40)),
    ),
    Case(
        "rgba_transparent_background",
        "cutout.png",
        _rgba_transparent,
        probes=(Probe(5, 5, WHITE), Probe(75, 75, (200, 100, 50))),
    ),
    Case(
        "svg",
        "drawing.svg",
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        refusal="SVG drawing",
    ),
    Case("heic_like", "photo.heic", _heic_like, refusal="HEIC/HEIF photo"),
    OVER_UPLOAD_LIMIT,
)


def write_corpus(folder: Path, cases: tuple[Case, ...] = CORPUS) -> dict[str, Path]:
    """Write each case's file into `folder`; returns {case name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for case in cases:
        path = folder / case.filename
        path.write_bytes(case.build())
        paths[case.name] = path
    return paths
