"""The network map: Xception's three flows and 14 blocks as an SVG, one block highlighted."""

from __future__ import annotations

from html import escape

from xviz.model import BLOCK_SPECS, block_shapes
from xviz.plots import FLOW_COLORS  # one colour per flow, the same in every figure

FLOW_TITLES = {
    "entry": "Entry flow",
    "middle": "Middle flow (8 identical blocks)",
    "exit": "Exit flow",
}

_BOX_W, _BOX_H, _GAP, _FLOW_GAP = 62, 58, 8, 22
_TOP = 44  # room for flow titles and residual arcs


def _box_positions() -> list[float]:
    xs, x, flow = [], 10.0, BLOCK_SPECS[0].flow
    for spec in BLOCK_SPECS:
        if spec.flow != flow:
            x += _FLOW_GAP
            flow = spec.flow
        xs.append(x)
        x += _BOX_W + _GAP
    return xs


def network_svg(selected: str | None = None, size: int = 299) -> str:
    """An SVG of blocks 1-14 grouped by flow, ``selected`` highlighted, shapes at ``size``.

    Residual connections are arcs over the blocks: dashed for a 1x1 stride-2 conv,
    solid for the identity. Each box says its output channels and side.
    """
    shapes = block_shapes(size)
    xs = _box_positions()
    width = xs[-1] + _BOX_W + 10
    height = _TOP + _BOX_H + 34
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height}" '
        f'role="img" aria-label="Xception network map" class="xviz-netmap" '
        f'style="width:100%;height:auto;font-family:sans-serif">'
    ]
    for flow in FLOW_TITLES:
        members = [x for x, s in zip(xs, BLOCK_SPECS, strict=True) if s.flow == flow]
        x0, x1 = members[0], members[-1] + _BOX_W
        color = FLOW_COLORS[flow]
        parts.append(
            f'<rect x="{x0 - 4}" y="{_TOP - 30}" width="{x1 - x0 + 8}" height="{_BOX_H + 40}" '
            f'rx="8" fill="{color}" fill-opacity="0.08" stroke="{color}" stroke-opacity="0.4"/>'
            f'<text x="{(x0 + x1) / 2}" y="{_TOP - 17}" text-anchor="middle" font-size="11" '
            f'font-weight="bold" fill="{color}">{FLOW_TITLES[flow]}</text>'
        )
    for x, spec in zip(xs, BLOCK_SPECS, strict=True):
        c, h, w = shapes[spec.name]
        color = FLOW_COLORS[spec.flow]
        chosen = spec.name == selected
        if spec.residual is not None:
            dash = ' stroke-dasharray="3,2"' if spec.residual == "conv" else ""
            parts.append(
                f'<path d="M{x + 6},{_TOP} C{x + 12},{_TOP - 12} {x + _BOX_W - 12},{_TOP - 12} '
                f'{x + _BOX_W - 6},{_TOP}" fill="none" stroke="{color}" stroke-width="1.5"{dash}>'
                f"<title>residual: {'1x1 stride-2 conv + BN' if dash else 'identity'}</title>"
                "</path>"
            )
        n_sep = len(spec.sepconvs)
        detail = f"{n_sep} sepconv" if n_sep else "2 conv"
        parts.append(
            f'<g class="xviz-block" data-block="{spec.name}">'
            f"<title>{escape(spec.name)} ({spec.flow} flow): {detail}, "
            f"output {c}x{h}x{w}</title>"
            f'<rect x="{x}" y="{_TOP}" width="{_BOX_W}" height="{_BOX_H}" rx="6" '
            f'fill="{color}" fill-opacity="{0.9 if chosen else 0.18}" '
            f'stroke="{color}" stroke-width="{3 if chosen else 1}"/>'
            f'<text x="{x + _BOX_W / 2}" y="{_TOP + 18}" text-anchor="middle" font-size="12" '
            f'font-weight="bold" fill="{"#fff" if chosen else color}">{spec.name}</text>'
            f'<text x="{x + _BOX_W / 2}" y="{_TOP + 34}" text-anchor="middle" font-size="10" '
            f'fill="{"#fff" if chosen else "currentColor"}">{c}</text>'
            f'<text x="{x + _BOX_W / 2}" y="{_TOP + 48}" text-anchor="middle" font-size="10" '
            f'fill="{"#fff" if chosen else "currentColor"}">{h}x{w}</text>'
            "</g>"
        )
    parts.append(
        f'<text x="10" y="{height - 8}" font-size="10" fill="currentColor">'
        f"input {size}x{size}x3 \u2192 boxes show output channels and side; arcs are residual "
        "connections (dashed: 1x1 conv). Exit \u2192 global average pool \u2192 classifier.</text>"
    )
    parts.append("</svg>")
    return "".join(parts)
