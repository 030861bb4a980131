"""What a channel responds to, as pictures: feature visualizations and atlas examples.

Pure functions from ``xviz.methods.featurevis`` and ``xviz.methods.atlas`` results to PIL images,
for the app's enlarged channel view and for reports; no model and no UI state.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import PurePath

from PIL import Image, ImageDraw, ImageFont

from xviz.methods.atlas.store import Atlas
from xviz.methods.featurevis import Visualization

RGB = tuple[int, int, int]
PLACEHOLDER: RGB = (200, 200, 200)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow's built-in font: no font file to ship.
    return ImageFont.load_default(size=size)


def _captioned(tiles: Sequence[Image.Image], captions: Sequence[str], columns: int) -> Image.Image:
    """Tiles of equal size in a grid, each with its caption (one or two lines) beneath."""
    width, height = tiles[0].size
    font = _font(max(10, min(14, width // 10)))
    line = font.getbbox("Ag")[3] + 3
    lines = max(caption.count("\n") + 1 for caption in captions)
    pad = 4
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    cell_w, cell_h = width + pad, height + lines * line + pad
    sheet = Image.new("RGB", (columns * cell_w + pad, rows * cell_h + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
        x, y = pad + (i % columns) * cell_w, pad + (i // columns) * cell_h
        sheet.paste(tile, (x, y))
        draw.multiline_text((x, y + height + 1), caption, font=font, fill=(0, 0, 0), spacing=2)
    return sheet


def contact_sheet(vis: Visualization, columns: int = 4, tile: int | None = None) -> Image.Image:
    """The visualizations side by side, each labelled with its channel and final objective.

    ``tile`` resizes each picture (default: its own size, ``vis.size``).
    """
    tiles = [Image.fromarray(image) for image in vis.images]
    if tile is not None:
        tiles = [t.resize((tile, tile), Image.BICUBIC) for t in tiles]
    captions = [
        f"channel {channel}\nmean {value:.3g}"
        for channel, value in zip(vis.channels, vis.objective, strict=True)
    ]
    return _captioned(tiles, captions, columns)


def top_examples(
    atlas: Atlas, map_name: str, channel: int, side: int = 128
) -> list[tuple[Image.Image, str]]:
    """The channel's top examples in ``atlas`` as (picture, caption) pairs, best first.

    Each picture is the region the maximum sees, enlarged (nearest neighbour, so tiny
    early-layer regions stay sharp) or shrunk to fit ``side`` x ``side``; a grey square when
    the atlas keeps no crop and the image is not available here. The caption gives the rank,
    the file name and the score (the channel's maximum on that image).
    """
    pairs = []
    for example in atlas.top(map_name, channel):
        crop = atlas.crop_image(example)
        name = PurePath(example.source).name
        caption = f"#{example.rank + 1} {name}\nmax {example.score:.3g}"
        if crop is None:
            picture = Image.new("RGB", (side, side), PLACEHOLDER)
            caption += " (image not here)"
        else:
            picture = _fit(crop, side)
        pairs.append((picture, caption))
    return pairs


def _fit(image: Image.Image, side: int) -> Image.Image:
    """``image`` scaled to fit a ``side`` square (aspect kept), centred on white."""
    scale = side / max(image.size)
    shape = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.NEAREST if scale >= 2 else Image.LANCZOS
    scaled = image.resize(shape, resample)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(scaled, ((side - shape[0]) // 2, (side - shape[1]) // 2))
    return canvas


def examples_strip(pairs: Sequence[tuple[Image.Image, str]], columns: int = 9) -> Image.Image:
    """(picture, caption) pairs of :func:`top_examples` in one captioned row (or grid)."""
    if not pairs:
        raise ValueError("no examples to draw")
    if len({picture.size for picture, _ in pairs}) != 1:
        raise ValueError("examples must have one size (use top_examples)")
    return _captioned([p for p, _ in pairs], [c for _, c in pairs], columns)
