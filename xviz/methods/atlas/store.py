"""The atlas on disk and in memory: :class:`Atlas`, :class:`Example`, ``load_atlas``.

An atlas is a directory holding two Apache Parquet files (written with pyarrow):

- ``atlas.parquet``: one row per (map, channel, rank), rows ordered by map (network order),
  channel, rank; columns ``map`` (string), ``channel`` (int32), ``rank`` (int16, 0 = best),
  ``source`` (string, the image path as given to the build), ``score`` (float32, the
  channel's maximum over positions on that image), ``box`` (4 x int16: x0, y0, x1, y1 of the
  resized input, exclusive ends) and ``crop`` (int32 row of ``crops.parquet``, null when no
  crop was kept). Its schema metadata ``xviz.methods.atlas`` is a JSON object: format name, schema
  version, input size, top_k, maps, image counts, weights and their backbone digest.
- ``crops.parquet``: ``crop`` (int32, 0..n-1) and ``jpeg`` (binary): each distinct (source,
  box) once, since many channels share their best image and its box.

Loading checks everything a reader relies on (format, version, columns, row order, counts,
ranges), so a corrupt, partial or foreign directory gives one :class:`AtlasError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from torch import nn

from xviz.engine.analysis import MAP_NAMES, map_channels
from xviz.errors import AtlasError
from xviz.methods.atlas.sources import decode
from xviz.model.receptive import Box

FORMAT = "xviz-atlas"
SCHEMA_VERSION = 1
METADATA_KEY = b"xviz.atlas"  # in every atlas file written: not the module path
TABLE_FILE = "atlas.parquet"
CROPS_FILE = "crops.parquet"
TABLE_SCHEMA = pa.schema(
    [
        ("map", pa.string()),
        ("channel", pa.int32()),
        ("rank", pa.int16()),
        ("source", pa.string()),
        ("score", pa.float32()),
        ("box", pa.list_(pa.int16(), 4)),
        ("crop", pa.int32()),
    ]
)
CROPS_SCHEMA = pa.schema([("crop", pa.int32()), ("jpeg", pa.binary())])

_DIGESTS: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()
_DIGESTS_GUARD = threading.Lock()


def backbone_digest(model: nn.Module) -> str:
    """sha256 of everything that sets the 88 maps: the backbone's parameters and BatchNorm
    statistics (not the classifier head), the pooling padding and the BN epsilon. Two
    weights with the same digest give the same maps, so they can share an atlas."""
    with _DIGESTS_GUARD:
        if model in _DIGESTS:
            return _DIGESTS[model]
    digest = hashlib.sha256(
        f"padding={getattr(model, 'padding', '')};bn_eps={getattr(model, 'bn_eps', '')}".encode()
    )
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith("classifier.") or name.endswith("num_batches_tracked"):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    value = digest.hexdigest()
    with _DIGESTS_GUARD:
        _DIGESTS[model] = value
    return value


@dataclass(frozen=True)
class Example:
    """One of a channel's top images: ``score`` is the channel's maximum activation on it,
    ``box`` the region (x0, y0, x1, y1) of the resized input that the maximum's position
    sees, ``crop`` that region as JPEG bytes (``None`` when the atlas keeps none)."""

    map_name: str
    channel: int
    rank: int
    source: str
    score: float
    box: Box
    crop: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, eq=False)
class Atlas:
    """The top images of every channel of some maps over one image set.

    ``images`` is the number of images scanned, ``skipped`` the number that could not be
    read; ``metadata`` holds the rest of what the build recorded. ``image_roots`` maps a
    source's first path component to a directory to re-read an image from when the atlas
    keeps no crop of it (set by the operator, see ``xviz.methods.atlas.default_atlas``).
    """

    path: Path
    metadata: dict
    scores: np.ndarray = field(repr=False)  # (N,) float32
    boxes: np.ndarray = field(repr=False)  # (N, 4) int16
    source_index: np.ndarray = field(repr=False)  # (N,) int32 into source_names
    source_names: list[str] = field(repr=False)
    crop_index: np.ndarray = field(repr=False)  # (N,) int32, -1 where none
    crops: list[bytes] = field(repr=False)
    offsets: dict[str, int] = field(repr=False)  # map -> first row
    image_roots: dict[str, Path] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.metadata["size"])

    @property
    def top_k(self) -> int:
        return int(self.metadata["top_k"])

    @property
    def maps(self) -> tuple[str, ...]:
        return tuple(self.metadata["maps"])

    @property
    def images(self) -> int:
        return int(self.metadata["images"])

    @property
    def skipped(self) -> int:
        return int(self.metadata["skipped"])

    @property
    def per_channel(self) -> int:
        """Examples kept per channel: ``top_k``, or fewer when fewer images were scanned."""
        return min(self.top_k, self.images)

    def fits(self, model: nn.Module) -> bool:
        """Whether ``model`` computes the maps this atlas was built from."""
        return self.metadata.get("backbone_sha256") == backbone_digest(model)

    def top(self, map_name: str, channel: int) -> list[Example]:
        """The channel's top examples, best first."""
        if map_name not in self.offsets:
            raise AtlasError(
                f"This atlas has no map {map_name!r}; it covers {len(self.maps)} maps "
                f"({', '.join(self.maps[:3])}{', ...' if len(self.maps) > 3 else ''})."
            )
        count = map_channels(map_name)
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
            raise AtlasError(f"Channels are integers, got {channel!r}.")
        if not 0 <= channel < count:
            raise AtlasError(f"Channel {channel} does not exist: {map_name} has 0 to {count - 1}.")
        first = self.offsets[map_name] + int(channel) * self.per_channel
        examples = []
        for rank, row in enumerate(range(first, first + self.per_channel)):
            crop = int(self.crop_index[row])
            examples.append(
                Example(
                    map_name=map_name,
                    channel=int(channel),
                    rank=rank,
                    source=self.source_names[self.source_index[row]],
                    score=float(self.scores[row]),
                    box=tuple(int(v) for v in self.boxes[row]),
                    crop=self.crops[crop] if crop >= 0 else None,
                )
            )
        return examples

    def crop_image(self, example: Example) -> Image.Image | None:
        """The example's region as an RGB image: the stored crop, else cut from the source
        found under ``image_roots``, else ``None``."""
        if example.crop is not None:
            with Image.open(io.BytesIO(example.crop), formats=["JPEG"]) as crop:
                return crop.convert("RGB")
        path = self._rooted(example.source)
        if path is None:
            return None
        pixels, _ = decode(str(path), self.size)
        if pixels is None:
            return None
        x0, y0, x1, y1 = example.box
        return Image.fromarray(np.ascontiguousarray(pixels[y0:y1, x0:x1]))

    def _rooted(self, source: str) -> Path | None:
        """``source`` under its image root, only if it stays inside that root."""
        first, _, rest = source.replace("\\", "/").partition("/")
        root = self.image_roots.get(first)
        if root is None or not rest:
            return None
        root = root.resolve()
        path = (root / rest).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None


def write_atlas(
    directory: Path,
    metadata: dict,
    maps: list[str],
    per_channel: int,
    sources: list[str],
    scores: dict[str, np.ndarray],
    ids: dict[str, np.ndarray],
    boxes: dict[str, np.ndarray],
    crop_ids: dict[str, np.ndarray],
    crops: list[bytes],
) -> None:
    """Write the two Parquet files into ``directory`` (which must exist).

    Per map: ``scores``, ``ids`` (into ``sources``), ``crop_ids`` (into ``crops``, -1 for
    none) are (r, C) with r = ``per_channel``, row 0 best; ``boxes`` is (r, C, 4).
    """
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("map", "channel", "rank", "score")}
    columns |= {"source": [], "box": [], "crop": []}
    for index, name in enumerate(maps):
        channels = scores[name].shape[1]
        # (r, C) -> rows ordered by channel, then rank.
        columns["map"].append(np.full(channels * per_channel, index, np.int32))
        columns["channel"].append(np.repeat(np.arange(channels, dtype=np.int32), per_channel))
        columns["rank"].append(np.tile(np.arange(per_channel, dtype=np.int16), channels))
        columns["score"].append(scores[name].T.ravel())
        columns["source"].append(ids[name].T.ravel())
        columns["box"].append(boxes[name].transpose(1, 0, 2).reshape(-1, 4))
        columns["crop"].append(crop_ids[name].T.ravel())
    joined = {k: np.concatenate(v) if v else np.empty(0) for k, v in columns.items()}
    crop = joined["crop"].astype(np.int32)
    table = pa.table(
        {
            "map": pa.array(np.array(maps, dtype=object)[joined["map"].astype(np.intp)]),
            "channel": pa.array(joined["channel"].astype(np.int32)),
            "rank": pa.array(joined["rank"].astype(np.int16)),
            "source": pa.array(np.array(sources, dtype=object)[joined["source"].astype(np.intp)]),
            "score": pa.array(joined["score"].astype(np.float32)),
            "box": pa.FixedSizeListArray.from_arrays(
                pa.array(joined["box"].astype(np.int16).ravel()), 4
            ),
            "crop": pa.array(crop, mask=crop < 0),
        },
        schema=TABLE_SCHEMA.with_metadata({METADATA_KEY: json.dumps(metadata).encode()}),
    )
    # Map names and sources are dictionary-encoded (each stored once); the float scores
    # compress to about two thirds with byte-stream-split, the sorted integers with deltas.
    pq.write_table(
        table,
        directory / TABLE_FILE,
        compression="zstd",
        compression_level=19,
        use_dictionary=["map", "source"],
        column_encoding={
            "score": "BYTE_STREAM_SPLIT",
            "channel": "DELTA_BINARY_PACKED",
            "crop": "DELTA_BINARY_PACKED",
        },
    )
    crops_table = pa.table(
        {"crop": pa.array(np.arange(len(crops), dtype=np.int32)), "jpeg": pa.array(crops)},
        schema=CROPS_SCHEMA.with_metadata({METADATA_KEY: json.dumps({"format": FORMAT}).encode()}),
    )
    pq.write_table(crops_table, directory / CROPS_FILE, compression="none")


def load_atlas(path: str | Path, image_roots: dict[str, Path] | None = None) -> Atlas:
    """Read and check the atlas in directory ``path``; raises :class:`AtlasError` unless it is
    a complete atlas this version of xviz can read."""
    directory = Path(path)
    if not directory.is_dir():
        raise AtlasError(f"No atlas at {path}: it is not a directory.")
    for name in (TABLE_FILE, CROPS_FILE):
        if not (directory / name).is_file():
            raise AtlasError(
                f"{path} is not a complete xviz atlas: {name} is missing (an interrupted build "
                "leaves no atlas; build it again with `python -m xviz atlas`)."
            )
    table = _read(directory / TABLE_FILE, TABLE_SCHEMA)
    crops_table = _read(directory / CROPS_FILE, CROPS_SCHEMA)
    metadata = _metadata(table.schema, directory / TABLE_FILE)
    try:
        atlas = _from_tables(directory, metadata, table, crops_table, image_roots or {})
    except (KeyError, TypeError, ValueError) as error:
        raise AtlasError(f"{path} is not a valid xviz atlas: {error}") from error
    return atlas


def _read(path: Path, schema: pa.Schema) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise AtlasError(f"{path} is not a readable Parquet file ({error}).") from error
    if table.schema.remove_metadata() != schema:
        raise AtlasError(
            f"{path} is not part of an xviz atlas: its columns are "
            f"{', '.join(f'{f.name} ({f.type})' for f in table.schema)}."
        )
    if METADATA_KEY not in (table.schema.metadata or {}):
        raise AtlasError(f"{path} is not part of an xviz atlas: it has no xviz.atlas metadata.")
    return table


def _metadata(schema: pa.Schema, path: Path) -> dict:
    try:
        metadata = json.loads(schema.metadata[METADATA_KEY])
    except (ValueError, UnicodeDecodeError) as error:
        raise AtlasError(f"{path} has unreadable atlas metadata ({error}).") from error
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise AtlasError(f"{path} is not an xviz atlas (its metadata names another format).")
    version = metadata.get("schema_version")
    if version != SCHEMA_VERSION:
        raise AtlasError(
            f"{path} is an xviz atlas of schema version {version}; this xviz reads version "
            f"{SCHEMA_VERSION}. Build it again with this version."
        )
    return metadata


def _from_tables(
    directory: Path,
    metadata: dict,
    table: pa.Table,
    crops_table: pa.Table,
    image_roots: dict[str, Path],
) -> Atlas:
    """Check the table against its metadata and build the in-memory :class:`Atlas`."""
    maps = list(metadata["maps"])
    size, top_k, images = int(metadata["size"]), int(metadata["top_k"]), int(metadata["images"])
    unknown = [m for m in maps if m not in MAP_NAMES]
    if unknown or len(set(maps)) != len(maps) or not maps:
        raise ValueError(f"its list of maps is wrong ({unknown or 'empty or repeated'})")
    if size < 1 or top_k < 1 or images < 0:
        raise ValueError(f"size {size}, top_k {top_k}, images {images} are out of range")
    per_channel = min(top_k, images)
    nulls = [
        name for name in TABLE_SCHEMA.names if name != "crop" and table.column(name).null_count
    ]
    if nulls:
        raise ValueError(f"its columns {', '.join(nulls)} have empty values")
    expected_rows = sum(map_channels(m) for m in maps) * per_channel
    if table.num_rows != expected_rows:
        raise ValueError(
            f"it has {table.num_rows} rows where {len(maps)} maps x top {per_channel} need "
            f"{expected_rows} (a partial or damaged table)"
        )
    map_column = table.column("map").combine_chunks().dictionary_encode()
    map_ids = np.array(map_column.dictionary.to_pylist(), dtype=object)[
        map_column.indices.to_numpy(zero_copy_only=False)
    ]
    offsets: dict[str, int] = {}
    expected_map, expected_channel, expected_rank = [], [], []
    for name in maps:
        offsets[name] = sum(len(part) for part in expected_map)
        channels = map_channels(name)
        expected_map.append(np.full(channels * per_channel, name, dtype=object))
        expected_channel.append(np.repeat(np.arange(channels), per_channel))
        expected_rank.append(np.tile(np.arange(per_channel), channels))
    if expected_rows and not (
        np.array_equal(map_ids, np.concatenate(expected_map))
        and np.array_equal(table.column("channel").to_numpy(), np.concatenate(expected_channel))
        and np.array_equal(table.column("rank").to_numpy(), np.concatenate(expected_rank))
    ):
        raise ValueError("its rows are not ordered by map, channel and rank")
    scores = table.column("score").to_numpy().astype(np.float32)
    if not np.isfinite(scores).all():
        raise ValueError("it holds scores that are not finite")
    if per_channel > 1 and (np.diff(scores.reshape(-1, per_channel), axis=1) > 0).any():
        raise ValueError("its scores are not best first")
    boxes = table.column("box").combine_chunks().flatten().to_numpy().reshape(-1, 4)
    if (
        (boxes[:, :2] < 0).any()
        or (boxes[:, 2:] > size).any()
        or (boxes[:, 2:] <= boxes[:, :2]).any()
    ):
        raise ValueError("it holds boxes outside the image")
    source_column = table.column("source").combine_chunks().dictionary_encode()
    crop_column = table.column("crop").combine_chunks()
    crop_index = crop_column.fill_null(-1).to_numpy().astype(np.int32)
    crops = crops_table.column("jpeg").to_pylist()
    if not np.array_equal(crops_table.column("crop").to_numpy(), np.arange(len(crops))):
        raise ValueError("its crops are not numbered 0 to n-1")
    if (crop_index >= len(crops)).any() or (crop_index < -1).any():
        raise ValueError("it refers to crops that crops.parquet does not hold")
    return Atlas(
        path=directory,
        metadata=metadata,
        scores=scores,
        boxes=boxes.astype(np.int16),
        source_index=source_column.indices.to_numpy().astype(np.int32),
        source_names=source_column.dictionary.to_pylist(),
        crop_index=crop_index,
        crops=crops,
        offsets=offsets,
        image_roots=dict(image_roots),
    )
