"""What the app's events do, without Gradio: one ``Explorer`` per served model.

Every method takes plain values (an image, a layer name, a page number) and returns plain
values (PIL images, dicts, markdown), so the UI file only lays out components and wires them.
A session keeps a :class:`Session` (the image it analysed, small); analyses live in one
bounded :class:`~xviz.cache.AnalysisCache` and are recomputed if they were evicted, so a
view never breaks because someone else's upload pushed its analysis out.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from xviz import attribution_figures, gradcam, render
from xviz.ablation import Ablation, AblationResult, ablate
from xviz.analysis import MAP_NAMES, Analysis, Map, class_labels, input_size
from xviz.attribution import LAYER_METHODS, METHODS, Attribution, attribute
from xviz.cache import AnalysisCache
from xviz.colormaps import COLORMAPS
from xviz.devices import out_of_memory_guard
from xviz.errors import AnalysisError, short
from xviz.examples import example_names
from xviz.model import BLOCKS, FLOWS, SEPCONV_BLOCK, Xception
from xviz.preprocess import load_image, to_display
from xviz.worker import Runner

PER_PAGE = 64
# Input sides the explorer runs: at 32 the exit flow is down to 1x1 (below 7 nothing is
# left); above 600 one analysis holds about 190 MB of maps.
MIN_SIZE, MAX_SIZE = 32, 600
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


@dataclass(frozen=True)
class Session:
    """What one browser session analysed: the resized image and the settings, nothing big."""

    image: np.ndarray  # (S, S, 3) uint8, the pixels the model saw
    size: int
    target: int | None = None
    example: str | None = None  # the shipped example it is, by name (for shareable links)

    @functools.cached_property
    def key(self) -> str:
        """Identifies the analysis this session asks for: pixels, size and target."""
        digest = hashlib.sha256(np.ascontiguousarray(self.image).tobytes()).hexdigest()[:32]
        return f"{digest}-{self.size}-{self.target}"

    def same_input(self, other: Session | None) -> bool:
        """The same picture at the same size as ``other`` (whatever the target)."""
        return (
            other is not None
            and other.size == self.size
            and np.array_equal(other.image, self.image)
        )


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


def whole_number(value: Any, what: str) -> int:
    """``value`` (a request's) as an int, or an AnalysisError that names ``what`` it is."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise AnalysisError(f"{what} must be a whole number, not {short(value, 40)}.")
    return int(number)


def fraction(value: Any, what: str, low: float = 0.0, high: float = 1.0) -> float:
    """``value`` (a request's) as a float in [low, high], or an AnalysisError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not low <= number <= high:  # NaN fails too
        raise AnalysisError(f"{what} must be between {low:g} and {high:g}, not {short(value, 40)}.")
    return number


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


def layer_maps(analysis: Analysis, layer: str) -> tuple[Map, Map, str, str]:
    """Left and right map of a layer: depthwise | pointwise for a separable conv; for a plain
    conv, its output | the block output it feeds."""
    if not isinstance(layer, str):
        raise AnalysisError(f"Unknown layer {short(layer, 40)}: pick a separable conv or a conv.")
    if layer in SEPCONV_BLOCK:
        pair = analysis.sepconvs[layer]
        m = pair.depthwise.num_channels
        n = pair.pointwise.num_channels
        return (
            pair.depthwise,
            pair.pointwise,
            f"Depthwise 3x3: {m} channels, one filter per input channel (before BN)",
            f"Pointwise 1x1: {n} channels, each a mix of all {m} depthwise maps (before BN)",
        )
    if layer not in analysis.convs:
        raise AnalysisError(f"Unknown layer {short(layer, 40)}: pick a separable conv or a conv.")
    block = layer.split("_")[0]
    conv = analysis.convs[layer]
    kind = "Residual 1x1 stride-2 conv" if layer.endswith("_residual") else "Conv 3x3"
    return (
        conv,
        analysis.blocks[block],
        f"{kind}: {conv.num_channels} channels (before BN)",
        f"{block} output: {analysis.blocks[block].num_channels} channels",
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
    overlay = fraction(overlay, "The image underlay", 0.0, 0.99)
    order = m.order(sort)
    pages = max(1, -(-m.num_channels // PER_PAGE))
    page = min(max(whole_number(page, "The page"), 1), pages)
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


# Colourbars under 530-pixel grids that a phone shows about 0.6x: 20 px text stays >= 12 px.
BAR_FONT = 20
DIFFERENCE_CMAP = "coolwarm"


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


def tile_at(x: float, y: float, channels: np.ndarray) -> int | None:
    """The channel under pixel (x, y) of a grid drawn by :func:`grid`, or None (padding)."""
    step = TILE + PAD
    col, row = int((x - PAD) // step), int((y - PAD) // step)
    if col < 0 or row < 0 or col >= COLUMNS or (x - PAD) % step >= TILE:
        return None
    i = row * COLUMNS + col
    return int(channels[i]) if 0 <= i < len(channels) and (y - PAD) % step < TILE else None


def channel_stats_markdown(m: Map, channel: int) -> str:
    ranks = {by: int(np.nonzero(m.order(by) == channel)[0][0]) + 1 for by in SORTS[1:]}
    c = m.num_channels
    return (
        f"**{m.name}, channel {channel}** ({m.shape[1]}x{m.shape[2]})  \n"
        f"mean {m.mean[channel]:.4g} (rank {ranks['mean']}/{c}) · "
        f"max {m.max[channel]:.4g} (rank {ranks['max']}/{c}) · min {m.min[channel]:.4g} · "
        f"positive {100 * m.positive[channel]:.1f}% of pixels (rank {ranks['positive']}/{c})"
    )


class Explorer:
    """The app's state shared by all sessions: the model, the analysis cache, cancel flags."""

    def __init__(
        self,
        model: Xception,
        cache_mb: float = 768,
        top_k: int = 5,
        max_age_s: float | None = 3600,
        runner: Runner | None = None,
    ) -> None:
        self.model = model  # its weights are read here; computations go through the runner
        self.max_age_s = max_age_s
        self.cache = AnalysisCache(cache_mb, max_age_s=max_age_s)
        self.top_k = top_k
        self.native_size = input_size(model)
        self._examples = example_names()
        # Every model computation runs through this: on one warm thread (xviz/worker.py),
        # or on ZeroGPU (xviz/zerogpu.py).
        self.runner = runner or Runner(model)
        self._cancel: dict[str, threading.Event] = {}
        self._armed: dict[str, threading.Event] = {}  # runs asked for, still in the queue
        self._cancel_lock = threading.Lock()

    # --- analysing -------------------------------------------------------------------------

    def start(self, image: Any, size: int | None = None) -> Session:
        """Decode and resize an upload (path, PIL, array); raises ImageError when it can't."""
        size = whole_number(size or self.native_size, "The input size")
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise AnalysisError(f"The input size must be {MIN_SIZE} to {MAX_SIZE} pixels.")
        return Session(to_display(load_image(image), size), size, example=self._example(image))

    def _example(self, image: Any) -> str | None:
        """The example's name if ``image`` is the file of a shipped example (or a copy)."""
        if not isinstance(image, (str, os.PathLike)):
            return None
        path = Path(image)
        name = path.stem
        known = self._examples.get(name)
        if known is None or path.stat().st_size != known.stat().st_size:
            return None
        return name if path.read_bytes() == known.read_bytes() else None

    def analysis(self, session: Session) -> Analysis:
        """The session's analysis from the cache, recomputed if it was evicted."""
        if session is None:
            raise AnalysisError("Upload an image (or pick an example) first.")
        with out_of_memory_guard("the analysis"):
            return self.cache.analyze(
                self.model,
                session.image,
                target=session.target,
                size=session.size,
                top_k=self.top_k,
                run=self.runner,
            )

    def retarget(self, session: Session, label: str | None) -> Session:
        if session is None:
            raise AnalysisError("Upload an image (or pick an example) first.")
        labels = self.labels
        if label in (None, ""):
            return Session(session.image, session.size, None, session.example)
        if label not in labels:
            raise AnalysisError(f"Unknown class {label!r}.")
        return Session(session.image, session.size, labels.index(label), session.example)

    @property
    def labels(self) -> list[str]:
        return class_labels(self.model)

    def prediction(self, analysis: Analysis) -> dict[str, float]:
        return {p.label: p.probability for p in analysis.top}

    def target_choices(self, analysis: Analysis) -> list[str]:
        """Top-k classes first, then every other class in index order."""
        top = [p.label for p in analysis.top]
        return top + [label for label in analysis.labels if label not in top]

    # --- activations -----------------------------------------------------------------------

    def layer_view(
        self,
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
            min(max(whole_number(page, "The page"), 1), pages),
        )

    def channel_view(
        self,
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
        channel = whole_number(channel, "The channel")
        overlay = fraction(overlay, "The image underlay", 0.0, 0.99)
        if not 0 <= channel < m.num_channels:
            raise AnalysisError(f"{m.name} has channels 0 to {m.num_channels - 1}.")
        name, signed = resolve_cmap(cmap, m)
        values = m.channel(channel)  # (h, w)
        low, high = (float(v[0]) for v in render.value_range(values[None], "shared", signed))
        if overlay > 0:
            img = render.overlay(
                analysis.image, values, cmap=name, alpha=1.0 - overlay, signed=signed
            )
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
        self,
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
        views = [self.channel_view(a, layer, side, channel, cmap) for a in (first, second)]
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

    # --- attributions ----------------------------------------------------------------------

    def gradcam_strip(
        self,
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
        alpha = fraction(alpha, "The heatmap opacity")
        cams = gradcam.block_cams(analysis)
        limits = gradcam.color_limits(cams, scale)
        tiles = [
            _blend(analysis.image, c.values, "inferno", 0.0, limits[c.block], alpha) for c in cams
        ]
        if side is not None and side < analysis.image.shape[1]:
            tiles = [t.resize((side, side), Image.Resampling.BOX) for t in tiles]  # area means
        return list(zip(tiles, [cam_caption(cam, scale) for cam in cams], strict=True))

    def gradcam_legend(self, analysis: Analysis, scale: str = "shared") -> tuple[str, str]:
        """The strip's colourbar (HTML) and what its colours and captions mean (markdown)."""
        cams = gradcam.block_cams(analysis)
        limits = gradcam.color_limits(cams, scale)
        shared = scale == "shared"
        bar = attribution_figures.legend_html(
            "inferno",
            0.0 if shared else None,
            limits[cams[0].block] if shared else None,
            f"{gradcam.UNIT}, {'one scale for all 14 blocks' if shared else 'each block its own'}",
        )
        notes = [gradcam.SCALE_NOTES[scale], gradcam.AGREEMENT_NOTE]
        blank = " and ".join(cam.block for cam in cams if cam.blank)
        if blank:
            notes.append(f"**Blank**: {gradcam.blank_reason(analysis.target_label, blank)}")
        return bar, "\n\n".join(notes)

    def gradcam_figure(
        self,
        analysis: Analysis,
        block: str,
        alpha: float = 0.5,
        scale: str = "shared",
        dark: bool = False,
    ) -> tuple[go.Figure, str]:
        """One block's Grad-CAM enlarged, at the block's own resolution, on the strip's colour
        scale, with a value per position -> (figure, what it shows in markdown)."""
        alpha = fraction(alpha, "The heatmap opacity")
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
            f"{attribution_figures.number(cam.peak)} ({gradcam.UNIT}); {agrees}."
        )

    def arm(self, session_id: str) -> None:
        """A run was asked for and may wait in the queue: a :meth:`cancel` from now on reaches
        it, and it ends as soon as it starts."""
        with self._cancel_lock:
            self._armed[session_id] = threading.Event()

    def new_run(self, session_id: str) -> threading.Event:
        """The cancel flag of a session's run that starts now (the one :meth:`arm` made for
        it, if any); :meth:`cancel` sets the latest one. A run keeps its own flag, so one that
        starts after a cancel does not undo it."""
        with self._cancel_lock:
            event = self._armed.pop(session_id, None) or threading.Event()
            self._cancel[session_id] = event
        return event

    def cancel(self, session_id: str) -> None:
        """Stop the session's running run and the one it asked for, if any."""
        with self._cancel_lock:
            events = [self._cancel.get(session_id), self._armed.get(session_id)]
        for event in events:
            if event is not None:
                event.set()

    def forget(self, session_id: str) -> None:
        """Release what a finished browser session held."""
        with self._cancel_lock:
            self._cancel.pop(session_id, None)
            self._armed.pop(session_id, None)

    def attribution(
        self,
        session: Session,
        method: str,
        block: str,
        alpha: float = 0.5,
        progress: Callable[[float, str], None] | None = None,
        session_id: str = "",
        dark: bool = False,
    ) -> AttributionView:
        """An on-demand Captum attribution: over the image, as a heatmap, and in words."""
        if method not in METHODS:
            raise AnalysisError(f"Unknown method {short(method, 40)}: use one of {METHODS}.")
        alpha = fraction(alpha, "The heatmap opacity")
        analysis = self.analysis(session)
        cancelled = self.new_run(session_id)
        with out_of_memory_guard(METHOD_TITLES[method]):
            result: Attribution = self.runner(
                attribute,
                analysis.image,
                target=analysis.target,
                size=analysis.size,
                method=method,
                block=block if method in LAYER_METHODS else None,
                progress=progress,
                cancel=cancelled.is_set,
            )
        low, high = attribution_limits(result.map, result.signed)
        cmap = "coolwarm" if result.signed else "inferno"
        over = _blend(analysis.image, result.map, cmap, low, high, alpha, fade=True)
        title = METHOD_TITLES[method].removesuffix(" (at the block)")
        title += f" at {block}" if method in LAYER_METHODS else ""
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

    # --- ablations -------------------------------------------------------------------------

    def ablation(
        self,
        session: Session,
        kind: str,
        blocks: list[str],
        layer: str = "",
        side: str = "left",
        channel: int = 0,
    ) -> AblationResult:
        analysis = self.analysis(session)
        if kind == "relu_between":
            change = Ablation.relu_between(blocks)
        elif kind == "drop_residual":
            change = Ablation.drop_residual(blocks)
        elif kind == "zero_channel":
            left, right, _, _ = layer_maps(analysis, layer)
            m = left if side == "left" else right
            change = Ablation.zero_channel(m.name, whole_number(channel, "The channel"))
        else:
            raise AnalysisError(f"Unknown ablation {short(kind, 40)}.")
        if not change.blocks and kind != "zero_channel":
            raise AnalysisError("Pick at least one block to change.")
        with out_of_memory_guard("the ablation"):
            return self.runner(
                ablate,
                analysis.image,
                change,
                target=analysis.target,
                size=analysis.size,
                top_k=self.top_k,
            )

    # --- export ----------------------------------------------------------------------------

    def export_name(self, session: Session) -> str:
        """The file name an export of ``session`` gets: weights and class (made file-safe)."""
        analysis = self.analysis(session)
        return f"xviz-{analysis.weights}-{analysis.target_label}.zip"

    def export_zip(self, session: Session, path: Path, cmap: str = AUTO_CMAP) -> Path:
        """One analysis as a zip at ``path``: the input, every map's first grid page and
        Grad-CAM as PNG, predictions and per-channel statistics as JSON."""
        analysis = self.analysis(session)
        stats: dict[str, Any] = {}
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("input.png", _png(Image.fromarray(analysis.image)))
            for name in MAP_NAMES:
                m = analysis.map(name)
                z.writestr(f"maps/{name}.png", _png(grid(m, "mean", 1, cmap).image))
                stats[name] = {
                    "shape": list(m.shape),
                    "mean": m.mean.round(6).tolist(),
                    "max": m.max.round(6).tolist(),
                    "positive": m.positive.round(6).tolist(),
                }
            for block, (img, _) in zip(analysis.gradcam, self.gradcam_strip(analysis), strict=True):
                z.writestr(f"gradcam/{block}.png", _png(img))
            summary = {
                "weights": analysis.weights,
                "input_size": analysis.size,
                "target": analysis.target_label,
                "top": [p._asdict() for p in analysis.top],
            }
            z.writestr("predictions.json", json.dumps(summary, indent=2))
            z.writestr("statistics.json", json.dumps(stats))
        return path


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
        parts.append(f"max {attribution_figures.number(cam.peak)}")
    return " · ".join(parts)


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
            f"±{attribution_figures.number(high)} (99% of the values are within) and fade into "
            f"the photo towards 0"
        )
    else:
        reading = (
            f"brighter: {label}'s score is more sensitive to that pixel (no sign); the colours "
            f"run from {attribution_figures.number(low)} to {attribution_figures.number(high)} "
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
    ``alpha``; the colours take ``xviz.render``'s tables. ``fade``: the opacity shrinks with
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


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
