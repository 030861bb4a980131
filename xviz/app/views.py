"""What the app shows of an analysis, as plain values: channel grids, an enlarged channel,
two images compared, the Grad-CAM strip and figure, an attribution drawn over the image, how
far each attribution can be trusted.

Pure functions of an :class:`~xviz.engine.analysis.Analysis` (and of a method's result): no
model, no state, no Gradio. :class:`xviz.app.explorer.Explorer` computes; these draw.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from xviz.checks import real_number, whole_number
from xviz.engine.analysis import MAP_NAMES, Analysis, Map, map_kind
from xviz.errors import AnalysisError, short
from xviz.methods import gradcam
from xviz.methods.attribution import LAYER_METHODS, Attribution
from xviz.methods.faithfulness import CUTS, Faithfulness
from xviz.model.xception import BLOCKS, FLOWS, SEPCONV_BLOCK
from xviz.render import attribution_figures, faithfulness_figures, html
from xviz.render import maps as render
from xviz.render.colormaps import COLORMAPS

PER_PAGE = 64
VIEW_SIZE = 384  # enlarged maps and attributions are shown at least this large
TILE = 64
COLUMNS = 8
PAD = 2
SORTS: tuple[str, ...] = ("index", "mean", "max", "positive")
SCALES: tuple[str, ...] = ("channel", "shared")
AUTO_CMAP = "auto"
METHOD_TITLES: dict[str, str] = {
    "integrated_gradients": "Integrated Gradients",
    "saliency": "Saliency",
    "smoothgrad": "SmoothGrad (NoiseTunnel)",
    "occlusion": "Occlusion",
    "guided_gradcam": "Guided Grad-CAM (at the block)",
    "layer_integrated_gradients": "Layer Integrated Gradients (at the block)",
    "layer_conductance": "Layer Conductance (at the block)",
}
# Colourbars under 530-pixel grids that a phone shows about 0.6x: 20 px text stays >= 12 px.
BAR_FONT = 20
DIFFERENCE_CMAP = "coolwarm"


@dataclass(frozen=True)
class Grid:
    """One page of a map's channel grid and what a reader needs to read its colours.

    ``low[i]`` and ``high[i]`` are the values of ``channels[i]`` at the two ends of ``cmap``
    (the same for every tile on a shared scale; symmetric around 0 when ``signed``).
    """

    image: Image.Image
    map_name: str
    channels: np.ndarray  # (n,) channel numbers, in the order drawn
    pages: int
    page: int  # 1-based, clamped
    low: np.ndarray  # (n,) float32
    high: np.ndarray  # (n,) float32
    cmap: str
    signed: bool
    scale: str


@dataclass(frozen=True)
class ChannelView:
    """One channel enlarged: the picture, its statistics (markdown) and its colour range."""

    image: Image.Image
    text: str
    map_name: str
    channel: int
    shape: tuple[int, int]  # (h, w) of the map itself
    low: float
    high: float
    cmap: str
    signed: bool


@dataclass(frozen=True)
class LayerView:
    """Two channel grids of one layer, side by side, and what they show."""

    left: Grid
    right: Grid
    left_title: str
    right_title: str
    pages: int
    page: int  # 1-based, clamped


def layers_of(block: str) -> list[str]:
    """The layers one can open in ``block``: its separable convs, then its plain convs."""
    if not isinstance(block, str) or block not in BLOCKS:
        raise AnalysisError(f"Unknown block {short(block, 40)}: use 'block1' to 'block14'.")
    if block == "block1":
        return ["block1_conv1", "block1_conv2"]
    names = [name for name, _, _ in BLOCKS[block].sepconvs]
    if BLOCKS[block].residual == "conv":
        names.append(f"{block}_residual")
    return names


def blocks_of(flow: str) -> list[str]:
    if not isinstance(flow, str) or flow not in FLOWS:
        raise AnalysisError(f"Unknown flow {short(flow, 40)}: use one of {tuple(FLOWS)}.")
    return list(FLOWS[flow])


def flow_of(block: str) -> str:
    return BLOCKS[block].flow


def layer_map_names(layer: str) -> tuple[str, str]:
    """The names of a layer's left and right map (see :func:`layer_maps`); the layer checked."""
    if isinstance(layer, str) and layer in SEPCONV_BLOCK:
        return f"{layer}.depthwise", f"{layer}.pointwise"
    if isinstance(layer, str) and layer in MAP_NAMES and map_kind(layer) in ("conv", "residual"):
        return layer, layer.split("_")[0]
    raise AnalysisError(f"Unknown layer {short(layer, 40)}: pick a separable conv or a conv.")


def layer_maps(analysis: Analysis, layer: str) -> tuple[Map, Map, str, str]:
    """Left and right map of a layer: depthwise | pointwise for a separable conv; for a plain
    conv, its output | the block output it feeds."""
    left, right = (analysis.map(name) for name in layer_map_names(layer))
    if layer in SEPCONV_BLOCK:
        m, n = left.num_channels, right.num_channels
        return (
            left,
            right,
            f"Depthwise 3x3: {m} channels, one filter per input channel (before BN)",
            f"Pointwise 1x1: {n} channels, each a mix of all {m} depthwise maps (before BN)",
        )
    kind = "Residual 1x1 stride-2 conv" if layer.endswith("_residual") else "Conv 3x3"
    return (
        left,
        right,
        f"{kind}: {left.num_channels} channels (before BN)",
        f"{right.name} output: {right.num_channels} channels",
    )


def resolve_cmap(cmap: str, m: Map) -> tuple[str, bool]:
    """``"auto"``: a diverging map centred on 0 when the map has negative values."""
    signed = bool((m.min < 0).any())
    if cmap == AUTO_CMAP:
        return ("coolwarm" if signed else "viridis"), signed
    if cmap not in COLORMAPS:
        raise AnalysisError(f"Unknown colormap {cmap!r}: use one of {(AUTO_CMAP, *COLORMAPS)}.")
    return cmap, signed and cmap == "coolwarm"


def grid(
    m: Map,
    sort: str = "index",
    page: int = 1,
    cmap: str = AUTO_CMAP,
    scale: str = "channel",
    image: np.ndarray | None = None,
    overlay: float = 0.0,
) -> Grid:
    """One page of a map's channel grid, with each tile's colour range.

    ``overlay`` in [0, 1) is the weight of ``image`` blended under every tile (0: maps only).
    """
    if sort not in SORTS:
        raise AnalysisError(f"Cannot sort by {short(sort, 40)}: use one of {SORTS}.")
    if scale not in SCALES:
        raise AnalysisError(f"Unknown scale {short(scale, 40)}: use one of {SCALES}.")
    overlay = real_number(overlay, "The image underlay", 0.0, 0.99)
    order = m.order(sort)
    pages = max(1, -(-m.num_channels // PER_PAGE))
    page = min(max(whole_number(page, "The page", text=True), 1), pages)
    channels = order[(page - 1) * PER_PAGE : page * PER_PAGE]
    name, signed = resolve_cmap(cmap, m)
    values = m.channels(channels)  # only this page's channels are dequantised
    low, high = render.value_range(values, scale, signed)
    img = render.channel_grid(
        values,
        np.arange(len(channels)),
        cmap=name,
        scale=scale,
        signed=signed,
        tile=TILE,
        columns=COLUMNS,
        pad=PAD,
        numbers=channels,
        underlay=image if image is not None and overlay > 0 else None,
        alpha=1.0 - overlay,
    )
    return Grid(img, m.name, channels, pages, page, low, high, name, signed, scale)


def compare_grids(
    before: Map, after: Map, cmap: str = AUTO_CMAP
) -> tuple[Image.Image, Image.Image]:
    """The first page of two versions of one map on one colour scale, so colours compare."""
    channels = np.arange(min(PER_PAGE, before.num_channels))
    name, signed = resolve_cmap(cmap, before)
    both = render.channel_grid(
        np.concatenate([before.channels(channels), after.channels(channels)]),
        np.arange(2 * len(channels)),
        cmap=name,
        signed=signed,
        tile=TILE,
        columns=COLUMNS,
        pad=PAD,
        numbers=np.concatenate([channels, channels]),
    )
    rows = -(-len(channels) // COLUMNS)
    cut = rows * (TILE + PAD)
    top = both.crop((0, 0, both.width, cut + PAD))
    return top, both.crop((0, cut, both.width, both.height))


@dataclass(frozen=True)
class ComparedMaps:
    """Original, ablated and difference grids of one map, each with its colourbar below.

    ``scale`` is the value range of the original and ablated colours (one shared scale);
    ``difference_bound`` b gives the difference's symmetric scale [-b, b] (b > 0).
    """

    original: Image.Image
    ablated: Image.Image
    difference: Image.Image
    scale: tuple[float, float]
    difference_bound: float


def compared_maps(before: Map, after: Map, cmap: str = AUTO_CMAP) -> ComparedMaps:
    """The first page of ``before`` and ``after`` as :func:`compare_grids` draws them, and of
    their difference ``after - before`` on a diverging scale symmetric around 0.

    The difference is taken of the stored maps, so each value is within half a quantisation
    step of each map (``Map.quantization_step``) of the float32 difference.
    """
    channels = np.arange(min(PER_PAGE, before.num_channels))
    name, signed = resolve_cmap(cmap, before)
    left, right = compare_grids(before, after, cmap)
    both = np.concatenate([before.channels(channels), after.channels(channels)])
    low, high = render.shared_range(both, signed)
    difference = after.channels(channels) - before.channels(channels)  # (C, H, W)
    _, bound = render.shared_range(difference, signed=True)
    grid = render.channel_grid(
        difference,
        np.arange(len(channels)),
        cmap=DIFFERENCE_CMAP,
        signed=True,
        tile=TILE,
        columns=COLUMNS,
        pad=PAD,
        numbers=channels,
    )
    value = f"{before.name} (one scale for both maps)"
    return ComparedMaps(
        original=render.with_colorbar(left, name, low, high, font_size=BAR_FONT, label=value),
        ablated=render.with_colorbar(right, name, low, high, font_size=BAR_FONT, label=value),
        difference=render.with_colorbar(
            grid, DIFFERENCE_CMAP, -bound, bound, font_size=BAR_FONT, label="ablated - original"
        ),
        scale=(low, high),
        difference_bound=bound,
    )


def channel_stats_markdown(m: Map, channel: int) -> str:
    ranks = {by: int(np.nonzero(m.order(by) == channel)[0][0]) + 1 for by in SORTS[1:]}
    c = m.num_channels
    return (
        f"**{m.name}, channel {channel}** ({m.shape[1]}x{m.shape[2]})  \n"
        f"mean {m.mean[channel]:.4g} (rank {ranks['mean']}/{c}) · "
        f"max {m.max[channel]:.4g} (rank {ranks['max']}/{c}) · min {m.min[channel]:.4g} · "
        f"positive {100 * m.positive[channel]:.1f}% of pixels (rank {ranks['positive']}/{c})"
    )


def prediction(analysis: Analysis) -> dict[str, float]:
    return {p.label: p.probability for p in analysis.top}


def target_choices(analysis: Analysis) -> list[str]:
    """Top-k classes first, then every other class in index order."""
    top = [p.label for p in analysis.top]
    return top + [label for label in analysis.labels if label not in top]


def layer_view(
    analysis: Analysis,
    layer: str,
    sort: str = "index",
    page: int = 1,
    cmap: str = AUTO_CMAP,
    scale: str = "channel",
    overlay: float = 0.0,
) -> LayerView:
    left, right, left_title, right_title = layer_maps(analysis, layer)
    lgrid = grid(left, sort, page, cmap, scale, analysis.image, overlay)
    rgrid = grid(right, sort, page, cmap, scale, analysis.image, overlay)
    pages = max(lgrid.pages, rgrid.pages)
    return LayerView(
        lgrid,
        rgrid,
        f"{left_title}. Page {lgrid.page}/{lgrid.pages}.",
        f"{right_title}. Page {rgrid.page}/{rgrid.pages}.",
        pages,
        min(max(whole_number(page, "The page", text=True), 1), pages),
    )


def channel_view(
    analysis: Analysis,
    layer: str,
    side: str,
    channel: int,
    cmap: str = AUTO_CMAP,
    overlay: float = 0.0,
) -> ChannelView:
    """One channel enlarged (blended with the image, weight ``overlay``) and its statistics."""
    left, right, _, _ = layer_maps(analysis, layer)
    m = left if side == "left" else right
    channel = whole_number(channel, "The channel", text=True)
    overlay = real_number(overlay, "The image underlay", 0.0, 0.99)
    if not 0 <= channel < m.num_channels:
        raise AnalysisError(f"{m.name} has channels 0 to {m.num_channels - 1}.")
    name, signed = resolve_cmap(cmap, m)
    values = m.channel(channel)  # (h, w)
    low, high = (float(v[0]) for v in render.value_range(values[None], "shared", signed))
    if overlay > 0:
        img = render.overlay(analysis.image, values, cmap=name, alpha=1.0 - overlay, signed=signed)
        img = _at_least(img, VIEW_SIZE, Image.BILINEAR)
    else:
        img = render.enlarge(
            values, cmap=name, size=max(analysis.size, VIEW_SIZE), vmin=low, vmax=high
        )
    return ChannelView(
        img, channel_stats_markdown(m, channel), m.name, channel, values.shape,
        low, high, name, signed,
    )  # fmt: skip


def compare_channel(
    first: Analysis,
    second: Analysis,
    layer: str,
    side: str,
    channel: int,
    cmap: str = AUTO_CMAP,
) -> tuple[ChannelView, ChannelView]:
    """One channel of two images, enlarged on one colour scale, so that colours compare."""
    if first.size != second.size:
        raise AnalysisError("Compare two images analysed at the same input size.")
    views = [channel_view(a, layer, side, channel, cmap) for a in (first, second)]
    maps = [layer_maps(a, layer)[0 if side == "left" else 1] for a in (first, second)]
    values = np.stack([m.channel(views[0].channel) for m in maps])  # (2, h, w)
    name, signed = views[0].cmap, views[0].signed or views[1].signed
    low, high = (float(v[0]) for v in render.value_range(values, "shared", signed))
    size = max(first.size, VIEW_SIZE)
    return tuple(
        dataclasses.replace(
            view,
            image=render.enlarge(one, cmap=name, size=size, vmin=low, vmax=high),
            low=low,
            high=high,
            cmap=name,
            signed=signed,
        )
        for view, one in zip(views, values, strict=True)
    )


def gradcam_strip(
    analysis: Analysis,
    alpha: float = 0.5,
    scale: str = "shared",
    side: int | None = None,
) -> list[tuple[Image.Image, str]]:
    """Grad-CAM of the target for all 14 blocks, entry to exit, over the image: one colour
    scale for all (``scale="shared"``) or each block its own (``"block"``); with captions.
    ``side``: tiles at most that many pixels wide (thumbnails; the block's own values are
    in :meth:`gradcam_figure`).
    """
    alpha = real_number(alpha, "The heatmap opacity", 0.0, 1.0)
    cams = gradcam.block_cams(analysis)
    limits = gradcam.color_limits(cams, scale)
    tiles = [_blend(analysis.image, c.values, "inferno", 0.0, limits[c.block], alpha) for c in cams]
    if side is not None and side < analysis.image.shape[1]:
        tiles = [t.resize((side, side), Image.Resampling.BOX) for t in tiles]  # area means
    return list(zip(tiles, [cam_caption(cam, scale) for cam in cams], strict=True))


def gradcam_legend(analysis: Analysis, scale: str = "shared") -> tuple[str, str]:
    """The strip's colourbar (HTML) and what its colours and captions mean (markdown)."""
    cams = gradcam.block_cams(analysis)
    limits = gradcam.color_limits(cams, scale)
    shared = scale == "shared"
    if shared:  # one colour scale: numbers at both ends and the middle
        ticks = html.range_ticks(0.0, limits[cams[0].block], signed=False)
    else:
        ticks = [(0.0, "0"), (1.0, "its largest value")]
    scope = "one scale for all 14 blocks" if shared else "each block its own"
    bar = html.colorbar_html("inferno", ticks, f"{gradcam.UNIT}, {scope}")
    notes = [gradcam.SCALE_NOTES[scale], gradcam.AGREEMENT_NOTE]
    blank = " and ".join(cam.block for cam in cams if cam.blank)
    if blank:
        notes.append(f"**Blank**: {gradcam.blank_reason(analysis.target_label, blank)}")
    return bar, "\n\n".join(notes)


def gradcam_figure(
    analysis: Analysis,
    block: str,
    alpha: float = 0.5,
    scale: str = "shared",
    dark: bool = False,
) -> tuple[go.Figure, str]:
    """One block's Grad-CAM enlarged, at the block's own resolution, on the strip's colour
    scale, with a value per position -> (figure, what it shows in markdown)."""
    alpha = real_number(alpha, "The heatmap opacity", 0.0, 1.0)
    if block not in analysis.gradcam:
        raise AnalysisError(f"Unknown block {short(block, 40)}: use 'block1' to 'block14'.")
    cams = gradcam.block_cams(analysis)
    cam = cams[list(analysis.gradcam).index(block)]
    raw = analysis.gradcam_raw[block]  # (h, w), Captum's values
    h, w = cam.shape
    label = analysis.target_label
    figure = attribution_figures.gradcam_figure(
        analysis.image,
        raw * np.float32(cam.positions),
        raw,
        gradcam.color_limits(cams, scale)[block],
        alpha,
        f"Grad-CAM of {label} at {block}",
        gradcam.UNIT,
        note=f"No positive evidence for {label} here" if cam.blank else None,
        dark=dark,
    )
    head = f"**{block}** ({cam.flow} flow) for **{label}**: "
    if cam.blank:
        return figure, head + gradcam.blank_reason(label, block)
    if block == gradcam.REFERENCE:
        agrees = "the other blocks' agreement is measured against this map"
    elif cam.agreement is None:
        agrees = f"no agreement with {gradcam.REFERENCE} to measure: its map is blank"
    else:
        agrees = f"agreement with {gradcam.REFERENCE} {cam.agreement:.2f}"
    return figure, (
        f"{head}each square is one of the block's {h}x{w} positions (the strip shows the "
        f"same map smoothed over the image); hover one for its value. Largest value "
        f"{html.number(cam.peak)} ({gradcam.UNIT}); {agrees}."
    )


@dataclass(frozen=True)
class AttributionView:
    """An attribution as the app shows it: over the image (at least ``VIEW_SIZE`` wide), as a
    heatmap figure with a colourbar and hover values, and what it shows in markdown."""

    overlay: Image.Image
    figure: go.Figure
    text: str


def cam_caption(cam: gradcam.BlockCam, scale: str) -> str:
    """A strip caption: the block, its map's size, its agreement with block14 or that it is
    blank, and with each block on its own scale the value of its brightest colour."""
    h, w = cam.shape
    parts = [cam.block, f"{h}x{w}"]
    if cam.blank:
        parts.append("blank: no positive evidence")
    elif cam.block == gradcam.REFERENCE:
        parts.append("the reference")
    elif cam.agreement is not None:
        parts.append(f"agreement {cam.agreement:.2f}")
    if scale == "block" and not cam.blank:
        parts.append(f"max {html.number(cam.peak)}")
    return " · ".join(parts)


def attribution_view(
    analysis: Analysis, result: Attribution, alpha: float = 0.5, dark: bool = False
) -> AttributionView:
    """An attribution of ``analysis``' image as the app shows it: over the image, as a heatmap
    figure and in words."""
    alpha = real_number(alpha, "The heatmap opacity", 0.0, 1.0)
    low, high = attribution_limits(result.map, result.signed)
    cmap = "coolwarm" if result.signed else "inferno"
    over = _blend(analysis.image, result.map, cmap, low, high, alpha, fade=True)
    title = METHOD_TITLES[result.method].removesuffix(" (at the block)")
    title += f" at {result.block}" if result.method in LAYER_METHODS else ""
    figure = attribution_figures.attribution_figure(
        result.map,
        low,
        high,
        result.signed,
        f"{title} for {result.target_label}",
        "attribution" if result.signed else "|gradient|",
        dark,
    )
    text = attribution_text(analysis, result, title, low, high)
    return AttributionView(_at_least(over, VIEW_SIZE, Image.BILINEAR), figure, text)


def attribution_limits(values: np.ndarray, signed: bool) -> tuple[float, float]:
    """The values at the two ends of an attribution's colours: ±(99th percentile of |value|)
    when signed, else the 1st and 99th percentiles, so that a few outliers do not wash out the
    rest (as ``render.normalize(..., clip_percentile=99)``). A zero range becomes (-1, 1) or
    (0, 1), so that a blank map takes the neutral colour."""
    if signed:
        high = float(np.percentile(np.abs(values), 99))
        return (-high, high) if high > 0 else (-1.0, 1.0)
    low, high = (float(v) for v in np.percentile(values, [1, 99]))
    return (low, high) if high > low else (0.0, 1.0)


def attribution_text(
    analysis: Analysis, result: Attribution, title: str, low: float, high: float
) -> str:
    """What an attribution shows and how to read its colours (markdown); for a map that is
    zero everywhere, why."""
    label = result.target_label
    where = "the GPU" if result.device == "cuda" else f"the {result.device.upper()}"
    ran = f"{result.elapsed_s:.1f} s on {where}, parameters {json.dumps(result.params)}"
    if not result.map.any():
        why = blank_attribution(analysis, result.method, result.block, title, label)
        return f"{why} ({ran})"
    if result.signed:
        reading = (
            f"red: raises {label}'s score, blue: lowers it; the colours end at "
            f"±{html.number(high)} (99% of the values are within) and fade into "
            f"the photo towards 0"
        )
    else:
        reading = (
            f"brighter: {label}'s score is more sensitive to that pixel (no sign); the colours "
            f"run from {html.number(low)} to {html.number(high)} "
            f"(98% of the values are within) and fade into the photo towards the low end"
        )
    return (
        f"**{title}** for class **{label}**: {reading}. Hover the heatmap for exact values ({ran})."
    )


def blank_attribution(
    analysis: Analysis, method: str, block: str | None, title: str, label: str
) -> str:
    """Why an attribution is zero everywhere, in a sentence or two."""
    if method == "guided_gradcam" and not (analysis.gradcam_raw[block] > 0).any():
        usable = [b for b in analysis.gradcam if (analysis.gradcam_raw[b] > 0).any()]
        hint = f" Pick a block whose Grad-CAM is not blank, e.g. {usable[-1]}." if usable else ""
        return (
            f"**{title} is 0 everywhere**: it is guided backpropagation times {block}'s "
            f"Grad-CAM, and that is blank. {gradcam.blank_reason(label, block)}{hint}"
        )
    return (
        f"**{title} is 0 everywhere**: by this method nothing in the image moves {label}'s score."
    )


def _blend(
    image: np.ndarray,
    values: np.ndarray,
    cmap: str,
    low: float,
    high: float,
    alpha: float,
    fade: bool = False,
) -> Image.Image:
    """A map (S, S) coloured from ``low`` to ``high`` and laid over the image with opacity
    ``alpha``; the colours take ``xviz.render.maps``'s tables. ``fade``: the opacity shrinks with
    the colour's distance from the neutral end (0 when signed, ``low`` otherwise), so that the
    photo shows where the map says nothing."""
    coloured = render.enlarge(values, cmap=cmap, size=image.shape[0], vmin=low, vmax=high)
    if not fade:
        return Image.blend(Image.fromarray(image), coloured, alpha)
    # Signed maps have a symmetric range: 0 is neutral; otherwise the low end is.
    strength = np.abs(values) / high if low < 0 else (values - low) / (high - low)
    weight = alpha * np.clip(strength, 0, 1)[..., None]  # (S, S, 1)
    blended = image * (1 - weight) + np.asarray(coloured, dtype=np.float32) * weight
    return Image.fromarray(np.rint(blended).astype(np.uint8))


def _at_least(img: Image.Image, side: int, resample: int) -> Image.Image:
    """Scale a square display image up so that it is at least ``side`` pixels wide."""
    if img.width >= side:
        return img
    return img.resize((side, round(img.height * side / img.width)), resample)


# --- how far to trust the attributions ----------------------------------------------------------

FAITHFULNESS_TITLES: dict[str, str] = {
    **{m: t.removesuffix(" (at the block)") for m, t in METHOD_TITLES.items()},
    "gradcam": "Grad-CAM",
    "random": "random order (baseline)",
    "centre": "centre first (baseline)",
}
CUT_TITLES: dict[str, str] = {
    "exit": "exit flow random",
    "middle": "+ middle flow random",
    "entry": "all random",
}
# The same cuts in a sentence: each is cumulative (the cuts above it stay random).
CUT_PHRASES: dict[str, str] = {
    "exit": "the head and the exit flow random",
    "middle": "the exit and the middle flow random",
    "entry": "every weight random",
}
# A Spearman correlation with the original this high at some randomisation cut: the map shows
# the image more than the model (Adebayo et al. 2018 read their figures the same way).
SURVIVES = 0.5


@dataclass(frozen=True)
class FaithfulnessView:
    """The faithfulness check as the app shows it: the curves, the randomisation row, a table
    of the scores and a sentence per method (markdown)."""

    curves: go.Figure
    randomisation: go.Figure
    table: str
    text: str


def _fmt(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.3g}"


def faithfulness_cost(images: int, size: int, where: str) -> str:
    """What a check costs, said before it starts."""
    # Measured at 150, kitchenware weights, two CPU cores: 19 s idle (bench/faithfulness.py),
    # 17-47 s an image, median 21 s, beside other jobs (bench/faithfulness_gallery.sh).
    seconds = 20 * (size / 150) ** 2
    return (
        f"Runs about {images:,} images through the model: about {seconds:.0f} s at "
        f"{size}x{size} on two idle CPU cores, more when they are busy (seconds on a GPU); "
        f"here on {where}."
    )


def faithfulness_sentence(result: Faithfulness, method: str) -> str:
    """What one method's numbers mean, in plain words."""
    scores = result.methods[method]
    random = result.baselines["random"]
    title = FAITHFULNESS_TITLES[method]
    deletion = (
        "drops faster than"
        if scores.deletion.area < random.deletion.area
        else "drops no faster than"
    )
    insertion = (
        "rises faster than"
        if scores.insertion.area > random.insertion.area
        else "rises no faster than"
    )
    parts = [
        f"**{title}**: greying the pixels it ranks first, the probability of "
        f"*{result.target_label}* {deletion} in a random order "
        f"({scores.deletion.area:.3g} against {random.deletion.area:.3g}); putting them back "
        f"into a blurred copy, it {insertion} random ({scores.insertion.area:.3g} against "
        f"{random.insertion.area:.3g})."
    ]
    finite = [r for r in scores.randomised if np.isfinite(r.spearman)]
    if scores.randomised and not finite:
        parts.append("Randomised, its map is blank: it needs the trained weights.")
    elif finite:
        most = max(finite, key=lambda r: r.spearman)  # where it changed least
        if most.spearman >= SURVIVES:
            parts.append(
                f"With {CUT_PHRASES[most.cut]} its map still correlates {most.spearman:.2f} "
                "with the original: it shows the image (edges) more than what the model "
                "learnt, so trust it less."
            )
        else:
            parts.append(
                f"Randomised, its map correlates at most {most.spearman:.2f} with the original "
                f"(with {CUT_PHRASES[most.cut]}): it depends on what the model learnt."
            )
    return " ".join(parts)


def faithfulness_table(result: Faithfulness) -> str:
    """Every score as a markdown table, the baselines last."""
    cuts = [c for c in CUTS if c in result.params.get("cuts", CUTS)]
    head = (
        "| method | deletion ↓ | insertion ↑ | infidelity ↓ | max-sensitivity ↓ | "
        + " | ".join(f"ρ, {CUT_TITLES[c]}" for c in cuts)
        + " | SSIM, all random |"
    )
    lines = [head, "|" + "---|" * (6 + len(cuts))]
    rows = {**result.methods, **result.baselines}
    for name, scores in rows.items():
        correlations = {r.cut: r for r in scores.randomised}
        spear = [_fmt(correlations[c].spearman) if c in correlations else "–" for c in cuts]
        ssim = _fmt(correlations["entry"].ssim) if "entry" in correlations else "–"
        lines.append(
            f"| {FAITHFULNESS_TITLES.get(name, name)} | {scores.deletion.area:.3g} | "
            f"{scores.insertion.area:.3g} | {_fmt(scores.infidelity)} | "
            f"{_fmt(scores.sensitivity)} | " + " | ".join(spear) + f" | {ssim} |"
        )
    key = (
        "\n\n↓ lower is better, ↑ higher is better. Deletion and insertion: areas under the "
        "curves above. Infidelity (Captum, normalised): how far the map fails to predict the "
        "score's change under noise. Max-sensitivity (Captum): how much the map moves under "
        "tiny noise. ρ and SSIM: how alike the map stays, in rank and in structure, once the "
        "weights are random (high = it does not depend on the model)."
    )
    return "\n".join(lines) + key


def faithfulness_view(result: Faithfulness, dark: bool = False) -> FaithfulnessView:
    """The faithfulness check of one image and class, drawn."""
    rows = {**result.methods, **result.baselines}
    curves = {
        name: (s.deletion.fractions, s.deletion.scores, s.insertion.scores)
        for name, s in rows.items()
    }
    block = f" (Grad-CAMs at {result.block})"
    figure = faithfulness_figures.curves_figure(
        curves,
        FAITHFULNESS_TITLES,
        list(result.baselines),
        f"Deletion and insertion for {result.target_label}{block}",
        dark,
    )
    grid = []
    for method, scores in result.methods.items():
        if not scores.randomised:
            continue
        maps = [("original", result.maps[method])]
        for r in scores.randomised:
            caption = f"{CUT_TITLES[r.cut]}: ρ {_fmt(r.spearman)}"
            maps.append((caption, result.randomised_maps[r.cut][method]))
        grid.append((FAITHFULNESS_TITLES[method], maps))
    randomisation = faithfulness_figures.randomisation_figure(
        grid,
        "Randomised from the head down: does the map change? (ρ: Spearman with the original)",
        dark,
    )
    text = "\n\n".join(faithfulness_sentence(result, m) for m in result.methods)
    note = (
        f"\n\nChecked in {result.elapsed_s:.0f} s. No single number decides: the metrics often "
        "disagree (Hooker et al. 2019), and the centre guess is hard to beat on photos of one "
        "object."
    )
    return FaithfulnessView(figure, randomisation, faithfulness_table(result), text + note)
