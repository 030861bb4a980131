"""The HTML of the maps: a button on every tile where the grid drew it, colourbars that read
the colormap and the numbers right, a channel that reports its own size."""

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from xviz.app import views
from xviz.render import html
from xviz.render.colormaps import get_lut
from xviz.render.maps import channel_grid


def parse(fragment: str) -> ET.Element:
    return ET.fromstring(fragment.replace("&", "&amp;").replace("&amp;amp;", "&amp;"))


def style(element: ET.Element) -> dict[str, float]:
    return {
        k.strip(): float(v.strip().rstrip("%"))
        for k, v in (p.split(":") for p in element.get("style").split(";") if p)
    }


def test_every_tile_button_sits_on_its_tile_of_the_drawn_grid():
    rng = np.random.default_rng(0)
    channels = np.array([7, 3, 9, 11, 0, 5, 2, 8, 1, 4])  # 10 tiles: two rows of 8
    maps = rng.normal(size=(12, 9, 9)).astype(np.float32)
    image = channel_grid(maps, channels, tile=views.TILE, columns=views.COLUMNS, pad=views.PAD)
    width, height = image.size
    fragment = html.grid_html(
        "grid.png",
        image.size,
        "title",
        list(channels),
        [f"label {c}" for c in channels],
        "",
        (views.TILE, views.PAD, views.COLUMNS),
        selected=9,
        linked=[0, 5],
    )
    buttons = parse(fragment).findall(".//button")
    assert [int(b.get("data-channel")) for b in buttons] == list(channels)
    for i, button in enumerate(buttons):
        box = style(button)
        x, y = box["left"] / 100 * width, box["top"] / 100 * height
        # Over tile i of the picture: row by row, COLUMNS a row, PAD around each tile.
        step = views.TILE + views.PAD
        assert x == pytest.approx(views.PAD + (i % views.COLUMNS) * step, abs=0.01)
        assert y == pytest.approx(views.PAD + (i // views.COLUMNS) * step, abs=0.01)
        assert box["width"] / 100 * width == pytest.approx(views.TILE, abs=0.01)  # 3 decimals
        assert button.get("aria-label") == f"label {channels[i]}"
    classes = {int(b.get("data-channel")): b.get("class") for b in buttons}
    assert "xviz-selected" in classes[9] and "xviz-linked" in classes[0]
    assert "xviz-linked" in classes[5] and classes[7] == "xviz-tile"


def test_the_gradient_samples_the_colormap_from_end_to_end():
    css = html.gradient_css("viridis", stops=5)
    stops = [tuple(map(int, m)) for m in re.findall(r"rgb\((\d+),(\d+),(\d+)\)", css)]
    lut = get_lut("viridis")
    assert stops[0] == tuple(lut[0]) and stops[-1] == tuple(lut[255])
    assert stops[2] == tuple(lut[round(2 * 255 / 4)])
    assert re.findall(r"(\d+)%", css) == ["0", "25", "50", "75", "100"]


def test_colourbar_ticks_name_the_range_and_zero_of_a_signed_map():
    ticks = html.range_ticks(-2.5, 2.5, signed=True)
    assert ticks == [(0.0, "-2.5"), (0.5, "0"), (1.0, "2.5")]
    bar = parse(html.colorbar_html("coolwarm", ticks, "activation"))
    labels = [(style(t)["left"], t.text) for t in bar.iter("span")]
    assert labels == [(0.0, "-2.5"), (50.0, "0"), (100.0, "2.5")]
    assert bar.get("aria-label") == "activation"


def test_a_shared_grid_colourbar_has_numbers_an_own_scale_one_says_so():
    low, high = np.array([-3.0, -3.0]), np.array([3.0, 3.0])
    shared = html.grid_colorbar("coolwarm", low, high, signed=True, shared=True)
    assert ">-3<" in shared and ">3<" in shared and ">0<" in shared
    own = html.grid_colorbar("viridis", low, high, signed=False, shared=False)
    assert "its own min" in own and ">-3<" not in own


def test_the_channel_view_reports_its_map_size_and_marks_a_position():
    fragment = html.channel_html("c.png", (384, 384), (19, 17), "alt text", "", mark=(3, 4))
    root = parse(fragment)
    box = root.find(".//div[@class='xviz-channel-box']")
    assert (box.get("data-h"), box.get("data-w")) == ("19", "17")
    mark = style(root.find(".//span[@class='xviz-mark']"))
    assert mark["top"] == pytest.approx(100 * 3 / 19, abs=1e-3)
    assert mark["left"] == pytest.approx(100 * 4 / 17, abs=1e-3)
    assert root.find(".//img").get("alt") == "alt text"


def test_the_strip_has_a_button_per_block_that_names_it_and_outlines_the_chosen_one():
    items = [
        (f"block{i}", f"data:image/jpeg;base64,{i}", f"block{i} · 9x9 · <b>&") for i in (1, 2, 3)
    ]
    root = ET.fromstring(html.strip_html(items, "Grad-CAM <per> block", chosen="block2"))
    assert root.find("figcaption").text == "Grad-CAM <per> block"  # escaped, read back as text
    buttons = root.findall(".//button")
    assert [b.get("data-block") for b in buttons] == ["block1", "block2", "block3"]
    assert [b.get("aria-pressed") for b in buttons] == ["false", "true", "false"]
    assert ["xviz-selected" in b.get("class") for b in buttons] == [False, True, False]
    for (_, src, caption), button in zip(items, buttons, strict=True):
        img = button.find("img")
        assert img.get("src") == src and img.get("alt") == caption
        assert button.find("span").text == caption and button.find("span").get("aria-hidden")
