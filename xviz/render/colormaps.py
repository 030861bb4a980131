"""Perceptually uniform colormaps as 256x3 uint8 lookup tables, and their application.

The tables are matplotlib's, frozen into `xviz/data/colormaps.npz` by
`scripts/make_colormaps.py`, so xviz needs no matplotlib at run time.
"""

from functools import lru_cache

import numpy as np

from xviz.data import data_path

SEQUENTIAL: tuple[str, ...] = ("viridis", "inferno", "magma", "cividis")
DIVERGING: tuple[str, ...] = ("coolwarm",)
COLORMAPS: tuple[str, ...] = SEQUENTIAL + DIVERGING

NAN_RGB = (128, 128, 128)
"""Colour of NaN values: a grey that is not on any of the maps' ends."""

_LUT_FILE = data_path("colormaps.npz")


@lru_cache(maxsize=1)
def _luts() -> dict[str, np.ndarray]:
    with np.load(_LUT_FILE) as data:
        luts = {name: data[name] for name in data.files}
    for lut in luts.values():
        # The tables are shared by every caller; a stray in-place edit must fail loudly.
        lut.flags.writeable = False
    return luts


def get_lut(name: str) -> np.ndarray:
    """The lookup table of colormap `name`: (256, 3) uint8, read-only."""
    if name not in COLORMAPS:
        raise ValueError(f"unknown colormap {name!r}; choose one of {', '.join(COLORMAPS)}")
    return _luts()[name]


def apply(values: np.ndarray, name: str) -> np.ndarray:
    """Colour `values` (..., e.g. (H, W)) in [0, 1] with colormap `name` -> (..., 3) uint8.

    Values are binned like matplotlib does (index floor(v * 256), 1.0 -> 255); values outside
    [0, 1] take the end colours and NaN takes `NAN_RGB`.
    """
    lut = get_lut(name)
    values = np.asarray(values, dtype=np.float32)
    nan = np.isnan(values)
    index = np.clip(np.where(nan, 0.0, values) * 256, 0, 255).astype(np.uint8)
    rgb = np.take(lut, index, axis=0)  # several times faster than lut[index]
    if nan.any():
        rgb[nan] = NAN_RGB
    return rgb
