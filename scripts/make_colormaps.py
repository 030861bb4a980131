"""Write `xviz/data/colormaps.npz`: matplotlib colormaps as 256x3 uint8 lookup tables.

xviz does not depend on matplotlib; this dev-time script freezes its tables once. Run it in a
throwaway venv from the repository root:

    python3 -m venv /tmp/mplvenv && /tmp/mplvenv/bin/pip install matplotlib numpy
    /tmp/mplvenv/bin/python scripts/make_colormaps.py

The names must match `xviz.render.colormaps.COLORMAPS` (a test checks it). The package is not
imported here because its `__init__` pulls in torch, which the throwaway venv lacks.
"""

from pathlib import Path

import matplotlib
import numpy as np

NAMES = ("viridis", "inferno", "magma", "cividis", "coolwarm")
OUT = Path(__file__).resolve().parent.parent / "xviz" / "data" / "colormaps.npz"


def main() -> None:
    luts = {}
    for name in NAMES:
        cmap = matplotlib.colormaps[name]
        assert cmap.N == 256, f"{name} has {cmap.N} entries, expected 256"
        # bytes=True is matplotlib's own float->uint8 conversion, so the tables equal what
        # matplotlib itself draws.
        luts[name] = cmap(np.arange(256), bytes=True)[:, :3]  # (256, 3) uint8
    np.savez_compressed(OUT, **luts)
    print(f"wrote {OUT} ({', '.join(NAMES)}) with matplotlib {matplotlib.__version__}")


if __name__ == "__main__":
    main()
