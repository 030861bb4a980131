"""The network map SVG: every block, the selection, shapes at the input size."""

import re
import xml.etree.ElementTree as ET

from xviz.render.network_map import network_svg


def _blocks(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    return {
        g.get("data-block"): g
        for g in root.iter("{http://www.w3.org/2000/svg}g")
        if g.get("data-block")
    }


def test_all_14_blocks_and_only_the_selected_one_highlighted():
    blocks = _blocks(network_svg("block7", 299))
    assert list(blocks) == [f"block{b}" for b in range(1, 15)]
    widths = {
        name: g.find("{http://www.w3.org/2000/svg}rect").get("stroke-width")
        for name, g in blocks.items()
    }
    assert [n for n, w in widths.items() if w == "3"] == ["block7"]


def test_shapes_follow_the_input_size():
    # REFERENCE.md: block4 is 728 x 19 x 19 at 299 and 728 x 9 x 9 at 150.
    for size, side in ((299, 19), (150, 9)):
        title = _blocks(network_svg(None, size))["block4"].find("{http://www.w3.org/2000/svg}title")
        assert re.search(rf"output 728x{side}x{side}", title.text)


def test_residual_arcs_for_blocks_2_to_13_only():
    svg = network_svg()
    assert svg.count("<title>residual: 1x1 stride-2 conv + BN</title>") == 4
    assert svg.count("<title>residual: identity</title>") == 8
