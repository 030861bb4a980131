"""A dataset atlas: for every channel of every map, the images of an image set that excite
it most, with the region each maximum sees.

``build_atlas(model, images, out, ...)`` scans the images (``engine="local"`` in this
process, or ``"ray"`` on a Ray cluster; same answer) and writes a directory of Parquet
files; ``load_atlas(path)`` reads it back; ``Atlas.top(map_name, channel)`` lists the
channel's :class:`Example` s, best first. Top-k per channel is associative, so partial
results over any split of the images merge exactly in O(channels x k)
(``xviz.methods.atlas.topk``).
"""

from xviz.methods.atlas.build import ENGINES, build_atlas, select_maps
from xviz.methods.atlas.shipped import ATLAS_ENV, SHIPPED_ATLAS, default_atlas
from xviz.methods.atlas.sources import list_images
from xviz.methods.atlas.store import Atlas, Example, backbone_digest, load_atlas

__all__ = [
    "ATLAS_ENV",
    "ENGINES",
    "SHIPPED_ATLAS",
    "Atlas",
    "Example",
    "backbone_digest",
    "build_atlas",
    "default_atlas",
    "list_images",
    "load_atlas",
    "select_maps",
]
