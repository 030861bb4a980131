"""The network map: Xception's three flows and 14 blocks as an SVG, one block highlighted.

Two layouts of the same map: ``"wide"`` puts the 14 blocks in one row (a laptop screen);
``"narrow"`` gives each flow a row (a phone), so that its text stays at least 11 px high at
390 px. Every block is a keyboard-focusable button (``data-block``, ``tabindex``,
``aria-label``) that the app turns into a selection.
"""

from __future__ import annotations

from html import escape

from xviz.model.xception import BLOCK_SPECS, BlockSpec, block_shapes
from xviz.render.cost_figures import FLOW_COLORS  # one colour per flow, the same in every figure

FLOW_TITLES = {
    "entry": "Entry flow",
    "middle": "Middle flow (8 identical blocks)",
    "exit": "Exit flow",
}
FLOW_ORDER = tuple(FLOW_TITLES)
SVG_NS = "http://www.w3.org/2000/svg"


class _Layout:
    """Box sizes, font sizes and where each block goes."""

    def __init__(self, name: str) -> None:
        self.name = name
        narrow = name == "narrow"
        self.box_w, self.box_h = (44, 66) if narrow else (62, 58)
        self.gap, self.flow_gap = (4, 0) if narrow else (8, 22)
        self.top = 44  # room for flow titles and residual arcs
        self.row_h = self.top + self.box_h + 14
        # Narrow: the block's number only (the row says "blocks 5-12"), larger text.
        # Narrow: drawn about 315 px wide on a 390 px phone, 0.75 of its 416 units.
        self.font = {"name": 17, "detail": 15, "title": 15} if narrow else {
            "name": 12, "detail": 10, "title": 11,
        }  # fmt: skip

    def positions(self) -> dict[str, tuple[float, float]]:
        """(x, y) of each block's box."""
        out: dict[str, tuple[float, float]] = {}
        if self.name == "narrow":
            for row, flow in enumerate(FLOW_ORDER):
                x = 10.0
                for spec in (s for s in BLOCK_SPECS if s.flow == flow):
                    out[spec.name] = (x, row * self.row_h + self.top)
                    x += self.box_w + self.gap
            return out
        x, flow = 10.0, BLOCK_SPECS[0].flow
        for spec in BLOCK_SPECS:
            if spec.flow != flow:
                x += self.flow_gap
                flow = spec.flow
            out[spec.name] = (x, self.top)
            x += self.box_w + self.gap
        return out


def _label(spec: BlockSpec, shape: tuple[int, int, int]) -> str:
    c, h, w = shape
    detail = f"{len(spec.sepconvs)} separable convs" if spec.sepconvs else "2 convs"
    return f"{spec.name}, {spec.flow} flow: {detail}, output {c}x{h}x{w}"


def network_svg(selected: str | None = None, size: int = 299, layout: str = "wide") -> str:
    """An SVG of blocks 1-14 grouped by flow, ``selected`` highlighted, shapes at ``size``.

    Residual connections are arcs over the blocks: dashed for a 1x1 stride-2 conv,
    solid for the identity. Each box says its output channels and side.
    """
    if layout not in ("wide", "narrow"):
        raise ValueError(f"layout must be 'wide' or 'narrow', not {layout!r}")
    lay = _Layout(layout)
    shapes = block_shapes(size)
    xy = lay.positions()
    width = max(x for x, _ in xy.values()) + lay.box_w + 10
    rows = len(FLOW_ORDER) if layout == "narrow" else 1
    height = rows * lay.row_h + 26
    parts = [
        f'<svg xmlns="{SVG_NS}" viewBox="0 0 {width:.0f} {height}" role="group" '
        f'aria-label="Xception network map: pick a block" class="xviz-netmap-{layout}" '
        f'style="width:100%;height:auto;font-family:sans-serif">'
    ]
    font = lay.font
    lines = (20, 40, 58) if layout == "narrow" else (18, 35, 50)  # baselines in a box
    for flow in FLOW_ORDER:
        members = [xy[s.name] for s in BLOCK_SPECS if s.flow == flow]
        x0, y0 = members[0]
        x1 = members[-1][0] + lay.box_w
        color = FLOW_COLORS[flow]
        title = FLOW_TITLES[flow]
        if layout == "narrow":
            names = [s.name for s in BLOCK_SPECS if s.flow == flow]
            title = f"{title.split(' (')[0]}: blocks {names[0][5:]}-{names[-1][5:]}"
        # Narrow rows differ in length: titles start at the left, where they always fit.
        anchor, tx = ("start", x0) if layout == "narrow" else ("middle", (x0 + x1) / 2)
        parts.append(
            f'<rect x="{x0 - 4}" y="{y0 - 30}" width="{x1 - x0 + 8}" height="{lay.box_h + 40}" '
            f'rx="8" fill="{color}" fill-opacity="0.08" stroke="{color}" stroke-opacity="0.4"/>'
            f'<text x="{tx}" y="{y0 - 17}" text-anchor="{anchor}" '
            f'font-size="{font["title"]}" font-weight="bold" fill="{color}">{title}</text>'
        )
    for spec in BLOCK_SPECS:
        x, y = xy[spec.name]
        c, h, w = shapes[spec.name]
        color = FLOW_COLORS[spec.flow]
        chosen = spec.name == selected
        if spec.residual is not None:
            dash = ' stroke-dasharray="3,2"' if spec.residual == "conv" else ""
            bw = lay.box_w
            parts.append(
                f'<path d="M{x + 6},{y} C{x + 12},{y - 12} {x + bw - 12},{y - 12} '
                f'{x + bw - 6},{y}" fill="none" stroke="{color}" stroke-width="1.5"{dash}>'
                f"<title>residual: {'1x1 stride-2 conv + BN' if dash else 'identity'}</title>"
                "</path>"
            )
        label = _label(spec, shapes[spec.name])
        name = spec.name if layout == "wide" else spec.name.removeprefix("block")
        side = f"{h}x{w}" if layout == "wide" or h != w else f"{h}\u00b2"
        ink = "#fff" if chosen else "currentColor"
        cx = x + lay.box_w / 2
        parts.append(
            f'<g class="xviz-block" data-block="{spec.name}" tabindex="0" role="button" '
            f'aria-label="{escape(label)}" aria-pressed="{str(chosen).lower()}">'
            f"<title>{escape(label)}</title>"
            f'<rect x="{x}" y="{y}" width="{lay.box_w}" height="{lay.box_h}" rx="6" '
            f'fill="{color}" fill-opacity="{0.9 if chosen else 0.18}" '
            f'stroke="{color}" stroke-width="{3 if chosen else 1}"/>'
            f'<text x="{cx}" y="{y + lines[0]}" text-anchor="middle" '
            f'font-size="{font["name"]}" font-weight="bold" '
            f'fill="{"#fff" if chosen else color}">{name}</text>'
            f'<text x="{cx}" y="{y + lines[1]}" text-anchor="middle" '
            f'font-size="{font["detail"]}" fill="{ink}">{c}</text>'
            f'<text x="{cx}" y="{y + lines[2]}" text-anchor="middle" '
            f'font-size="{font["detail"]}" fill="{ink}">{side}</text>'
            "</g>"
        )
    caption = (
        f"input {size}x{size}x3 \u2192 boxes: output channels and side; arcs: residual "
        "connections (dashed: 1x1 conv). Exit \u2192 average pool \u2192 classifier."
        if layout == "wide"
        else f"input {size}x{size}x3; boxes: channels and side"
    )
    parts.append(
        f'<text x="10" y="{height - 8}" font-size="{font["detail"]}" fill="currentColor">'
        f"{caption}</text></svg>"
    )
    return "".join(parts)


def network_map_html(selected: str | None = None, size: int = 299) -> str:
    """Both layouts; the page's style shows the one that fits the screen."""
    return (
        '<div class="xviz-netmap">'
        f"{network_svg(selected, size, 'wide')}{network_svg(selected, size, 'narrow')}</div>"
    )
