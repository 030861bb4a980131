"""The images of an atlas: find them, decode them as the model sees them, cut crops.

Decoding is ``xviz.engine.preprocess``'s (``load_image`` then ``to_display``), so an atlas sees
exactly the pixels ``xviz.analyze`` sees. An image that cannot be read is reported with the
reason, never raised: one broken file must not stop a build over thousands.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from xviz.engine.preprocess import load_image, to_display
from xviz.errors import AtlasError, ImageError

# The formats xviz.engine.preprocess accepts, by the usual file suffixes.
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".gif",
    ".webp",
    ".bmp",
    ".tif",
    ".tiff",
)
CROP_QUALITY = 85


def list_images(directory: str | os.PathLike) -> list[str]:
    """Image files under ``directory`` (recursively, by suffix, hidden files and folders
    left out), as ``directory`` joined with their relative path, sorted."""
    root = Path(directory)
    if not root.is_dir():
        raise AtlasError(f"{directory} is not a directory of images.")
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.append(str(root / relative))
    return sorted(found)


def resolve_images(images: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """A directory (see :func:`list_images`) or paths -> the sources, duplicates dropped."""
    if isinstance(images, (str, os.PathLike)):
        return list_images(images)
    return list(dict.fromkeys(str(p) for p in images))


def decode(image: str | bytes, size: int) -> tuple[np.ndarray | None, str]:
    """``(pixels (S, S, 3) uint8, "")`` of a path or file bytes, or ``(None, reason)``."""
    try:
        return to_display(load_image(image), size), ""
    except ImageError as error:
        return None, str(error)
    except OSError as error:  # unreadable file: permissions, I/O error
        return None, f"it could not be read ({error.strerror or error})."


def decode_all(
    sources: Sequence[str], size: int
) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """Decode ``sources``: (pixels (B', S, S, 3) uint8, their sources, skipped (source, reason))."""
    pixels, kept, skipped = [], [], []
    for source in sources:
        decoded, reason = decode(source, size)
        if decoded is None:
            skipped.append((source, reason))
        else:
            pixels.append(decoded)
            kept.append(source)
    stacked = np.stack(pixels) if pixels else np.empty((0, size, size, 3), np.uint8)
    return stacked, kept, skipped


def crop_jpeg(pixels: np.ndarray, box: Sequence[int], crop_px: int) -> bytes:
    """JPEG bytes of ``pixels[y0:y1, x0:x1]``, shrunk so that its longer side is at most
    ``crop_px`` (small boxes stay at their own size: the display enlarges them)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    crop = Image.fromarray(np.ascontiguousarray(pixels[y0:y1, x0:x1]))
    longer = max(crop.size)
    if longer > crop_px:
        scale = crop_px / longer
        shape = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
        crop = crop.resize(shape, Image.LANCZOS)
    buffer = io.BytesIO()
    # 4:4:4 (no chroma subsampling): small crops keep their colours.
    crop.save(buffer, format="JPEG", quality=CROP_QUALITY, optimize=True, subsampling=0)
    return buffer.getvalue()


def crops_of(
    image: str | bytes, boxes: Sequence[Sequence[int]], size: int, crop_px: int
) -> list[bytes | None]:
    """The JPEG crops of ``boxes`` on one image at ``size``; ``None`` each if it is unreadable."""
    pixels, _ = decode(image, size)
    if pixels is None:
        return [None] * len(boxes)
    return [crop_jpeg(pixels, box, crop_px) for box in boxes]
