"""A video file that Chromium plays as its camera (``--use-file-for-fake-video-capture``), and
the camera frames the Live tests send by hand (``jpeg``), named as the page names them
(``page_key``).

Y4M (YUV4MPEG2, https://wiki.multimedia.cx/index.php/YUV4MPEG2): a header line
``YUV4MPEG2 W<w> H<h> F<num>:<den> Ip A1:1 C420jpeg``, then per frame ``FRAME\\n`` and its
I420 planes (Y at full size, then U and V at half width and height). Chromium's
``FileVideoCaptureDevice`` reads this format (``media/capture/video/file_video_capture_device.cc``)
and loops it.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def _i420(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 RGB -> I420 planes (full-range BT.601, as JPEG's YCbCr)."""
    ycbcr = np.asarray(Image.fromarray(rgb).convert("YCbCr"))
    y = ycbcr[..., 0]
    # 4:2:0: each chroma sample is the mean of a 2x2 block.
    cb, cr = (ycbcr[..., c].reshape(rgb.shape[0] // 2, 2, rgb.shape[1] // 2, 2) for c in (1, 2))
    return b"".join(
        plane.astype(np.uint8).tobytes()
        for plane in (y, cb.mean(axis=(1, 3)).round(), cr.mean(axis=(1, 3)).round())
    )


def write_clip(
    path: Path,
    photos: Sequence[Path],
    seconds_each: float = 0.8,
    rounds: int = 3,
    fps: int = 15,
    size: tuple[int, int] = (320, 240),
) -> Path:
    """A clip that shows each of ``photos`` for ``seconds_each``, in turn, ``rounds`` times.

    Each frame carries a small stripe of its number in binary in the lower right corner, so
    that no two frames encode to the same JPEG (the page's meter tells frames apart by their
    bytes); the stripe is 1/40 of the picture, too small to change what the maps show.
    """
    width, height = size
    pictures = [
        np.asarray(Image.open(p).convert("RGB").resize(size, Image.BICUBIC)) for p in photos
    ]
    per_photo = max(1, round(seconds_each * fps))
    cell = 4
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for number in range(rounds * len(pictures) * per_photo):
            frame = pictures[(number // per_photo) % len(pictures)].copy()
            for bit in range(12):
                on = 255 * ((number >> bit) & 1)
                x = width - (bit + 1) * cell
                frame[height - cell :, x : x + cell] = on
            out.write(b"FRAME\n" + _i420(frame))
    return path


def jpeg(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    """A camera frame as the page sends it: random pixels, ``size`` (width, height), as JPEG."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def page_key(frame: bytes, characters: int = 24) -> str:
    """How the page names a frame: the last characters of its base64 ``data:`` URL."""
    return base64.b64encode(frame).decode("ascii")[-characters:]
