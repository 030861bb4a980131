"""The atlas the app shows: ``default_atlas()``, the one shipped in ``xviz/data/atlas`` or the
one ``XVIZ_ATLAS`` names.

``XVIZ_ATLAS`` is set by whoever runs the app (an operator), never by a request: the path
loaded here is fixed at start-up. The shipped atlas was made by ``scripts/make_atlas.py``
over the shipped examples (sources ``examples/...``, crops stored) and the kitchen photos of
the kitchenware package (sources ``kitchenware/...``, no crops stored: the package states no
licence for them, so xviz does not redistribute them; see ``xviz/data/examples/SOURCES.md``).
Their crops are cut at display time from the installed package, when it is installed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from torch import nn

from xviz.data import data_path
from xviz.data.gallery import SHIPPED, kitchen_examples
from xviz.errors import AtlasError
from xviz.methods.atlas.store import Atlas, load_atlas

logger = logging.getLogger(__name__)

ATLAS_ENV = "XVIZ_ATLAS"
SHIPPED_ATLAS = data_path("atlas")
EXAMPLES_PREFIX = "examples"
KITCHEN_PREFIX = "kitchenware"


def shipped_image_roots() -> dict[str, Path]:
    """Where the shipped atlas' sources live on this machine: ``examples/`` in
    ``xviz/data/examples``, ``kitchenware/`` in the installed kitchenware package (if any)."""
    roots = {EXAMPLES_PREFIX: SHIPPED}
    kitchen = kitchen_examples(per_class=1)
    if kitchen:
        roots[KITCHEN_PREFIX] = kitchen[0][0].parent
    return roots


def default_atlas(model: nn.Module | None = None) -> Atlas | None:
    """The atlas at ``$XVIZ_ATLAS`` if set, else the shipped one; ``None`` (with the reason
    logged) when it cannot be loaded or, given ``model``, was built from other maps than
    ``model`` computes (other backbone weights or padding)."""
    configured = os.environ.get(ATLAS_ENV, "").strip()
    path = Path(configured) if configured else SHIPPED_ATLAS
    try:
        atlas = load_atlas(path, image_roots=None if configured else shipped_image_roots())
    except AtlasError as error:
        logger.warning("no dataset atlas: %s", error)
        return None
    if model is not None and not atlas.fits(model):
        logger.warning(
            "no dataset atlas: %s was built with the weights %r, whose backbone differs from "
            "the model's, so its examples would not match the maps shown",
            path,
            atlas.metadata.get("weights"),
        )
        return None
    return atlas
